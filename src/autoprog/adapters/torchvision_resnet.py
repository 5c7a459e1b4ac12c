"""Adapter for torchvision ResNets: depth = residual blocks, resolution = input size (Sec. 5, CNNs).

Depth. Each stage (``layer1`` ... ``layer4``) keeps its first block (which changes resolution and
width) fixed; the identity-shaped blocks after it are the *growable* blocks. The adapter shows them
as one flat list, input side first, stage by stage, so every growth operator and the elastic
supernet work on a ResNet unchanged; it also says how many growable blocks each stage has at each
depth (:meth:`TorchvisionResNetAdapter.stage_depths`), and the operators grow every stage towards
its own count (:func:`autoprog.growth.operators.layout_sources`). So the full depth is exactly the
named torchvision model: same blocks per stage ([2, 2, 2, 2] for resnet18, [3, 4, 6, 3] for
resnet34/50, [3, 4, 23, 3] for resnet101), same parameter names (``layer3.5.conv2.weight``), and
its ``state_dict`` loads into ``torchvision.models.<name>()`` with ``strict=True`` (for a 3-channel
input of 64 px or more, where the stem is torchvision's).

Blocks per stage at depth ``d`` (growable blocks, stages in order): the first ``d`` blocks handed
out one at a time by Webster's (Sainte-Laguë) divisor method over the full counts: the next block
goes to the stage with the largest ``full / (blocks + 1/2)`` among those not yet full, ties to the
later stage (the paper indexes from the classifier). The rule is nested (depth ``d + 1`` adds one
block to depth ``d``'s layout) and close to proportional. For example::

    resnet18  (full [1, 1, 1, 1]):  d=2 [0, 0, 1, 1], d=3 [0, 1, 1, 1], d=4 [1, 1, 1, 1]
    resnet50  (full [2, 3, 5, 2]):  d=6 [1, 1, 3, 1], d=8 [1, 2, 4, 1], d=10 [2, 2, 4, 2], d=12 [2, 3, 5, 2]
    resnet101 (full [2, 3, 22, 2]): d=15 [1, 2, 11, 1], d=22 [1, 2, 17, 2], d=29 [2, 3, 22, 2]

(``--depth`` above the named model's count keeps handing out blocks by the same rule, uncapped.)
A stage that has no growable block yet and grows gets fresh blocks; under a copying operator
(Interpolation, MoGrow, Stacking, Identity) their last BatchNorm's scale starts at zero
(``zero_init_residual``, Goyal et al. 2017), so each computes the identity and growth keeps the
network's function; RandInit's fresh blocks are random, as Eq. 20 has them.

Checkpoints of ResNets grown by autoprog before this rule (copies kept in their source's stage, so
the blocks per stage drifted: [3, 3, 7, 3] for a grown resnet50) are refused on ``--resume`` with one
line; start such runs afresh.

Resolution. Convolutions and global pooling take any input size: the batch is resized.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from autoprog.adapters.base import AdapterFamily, register_adapter, resize_input
from autoprog.errors import ConfigError
from autoprog.growth.schedule import SubnetConfig

_SPECS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (tv_resnet.Bottleneck, [3, 4, 23, 3]),
}
_STAGES = ("layer1", "layer2", "layer3", "layer4")
#: Input sizes come in steps of 4 px.
RESOLUTION_STEP = 4


def _width(block: nn.Module) -> int:
    """Output channels of a residual block (identifies its stage); works through wrappers (ReZero)."""
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return int(norms[-1].num_features)


class _StageView(nn.Module):
    """A ResNet stage run from its fixed first block plus the active growable blocks of its width.

    The growable blocks live in the model's shared ``ElasticBlocks`` (``model.autoprog_blocks``);
    the view only refers to it (it is not a submodule here, so parameters are registered once).
    """

    def __init__(self, first: nn.Module, width: int, shared: nn.Sequential) -> None:
        super().__init__()
        self.first = first
        self.width = width
        object.__setattr__(self, "_shared", shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        shared = self._shared
        for p in getattr(shared, "active", range(len(shared))):
            if _width(shared[p]) == self.width:
                x = shared[p](x)
        return x


class TorchvisionResNetAdapter:
    """Growable torchvision ResNet (``resnet18/34/50/101``).

    Args:
        model_name: torchvision ResNet name.
        img_size: full input resolution.
        in_chans: input channels (the stem is rebuilt when not 3).
        num_classes: classifier outputs.
        depth: number of growable blocks of the full model (default: the name's, e.g. 4 for resnet18).
        small_input: a 3x3 stride-1 stem without max-pooling, for images under 64 px (CIFAR habit);
            default on when ``img_size < 64``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        img_size: int,
        in_chans: int,
        num_classes: int,
        depth: int | None = None,
        small_input: bool | None = None,
    ) -> None:
        if model_name not in _SPECS:
            raise ConfigError(f"unknown ResNet {model_name!r}; choose from {', '.join(_SPECS)}")
        self.model_name = model_name
        self.block_cls, layers = _SPECS[model_name]
        self.growable_full = [n - 1 for n in layers]
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.small_input = img_size < 64 if small_input is None else small_input
        full_depth = sum(self.growable_full) if depth is None else depth
        if full_depth < 1:
            raise ConfigError(f"depth must be >= 1, got {full_depth}")
        self.resolution_step = RESOLUTION_STEP
        if img_size % self.resolution_step:
            raise ConfigError(f"resolution {img_size} is not a multiple of {self.resolution_step}")
        self.full = SubnetConfig(resolution=img_size, depth=full_depth)

    def stage_depths(self, depth: int) -> list[int]:
        """Growable blocks per stage of the sub-network of ``depth`` growable blocks (module docstring)."""
        full = self.growable_full
        out = [0] * len(full)
        for _ in range(depth):
            open_stages = [i for i in range(len(full)) if out[i] < full[i]] or list(range(len(full)))
            i = max(open_stages, key=lambda i: (full[i] / (out[i] + 0.5), i))
            out[i] += 1
        return out

    def create_model(self, depth: int | None = None) -> nn.Module:
        depth = self.full.depth if depth is None else depth
        return self._build(self.stage_depths(depth))

    def block_layout(self, model: nn.Module) -> list[int]:
        """Growable blocks per stage of ``model`` (checkpoints record it to rebuild the model's shape)."""
        widths = [_width(self._first(model, name)) for name in _STAGES]
        blocks = [_width(b) for b in self.get_blocks(model)]
        return [blocks.count(w) for w in widths]

    def create_model_from_layout(self, layout: list[int]) -> nn.Module:
        """A freshly initialised model with ``layout[i]`` growable blocks in stage ``i``: a checkpoint's.

        Raises:
            ConfigError: ``layout`` is not :meth:`stage_depths` of its depth, as in a checkpoint of a
                ResNet grown by an older autoprog (copies kept in their source's stage).
        """
        layout = [int(n) for n in layout]
        if layout != self.stage_depths(sum(layout)):
            sizes = [1 + n for n in layout]
            raise ConfigError(
                f"the checkpoint's {self.model_name} has {sizes} blocks per stage, which this autoprog never "
                f"grows (at depth {sum(layout)} it has {[1 + n for n in self.stage_depths(sum(layout))]}): it was "
                "written by an older autoprog that kept copies in their source's stage; start the run afresh "
                "(without --resume)"
            )
        return self._build(layout)

    def _build(self, layout: list[int]) -> nn.Module:
        layers = [1 + g for g in layout]
        model = tv_resnet.ResNet(self.block_cls, layers, num_classes=self.num_classes)
        if self.small_input or self.in_chans != 3:
            k, s, p = (3, 1, 1) if self.small_input else (7, 2, 3)
            model.conv1 = nn.Conv2d(self.in_chans, 64, kernel_size=k, stride=s, padding=p, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        if self.small_input:
            model.maxpool = nn.Identity()
        return model

    # The flat list of growable blocks --------------------------------------------------------
    def get_blocks(self, model: nn.Module) -> list[nn.Module]:
        shared = getattr(model, "autoprog_blocks", None)
        if shared is not None:
            return list(shared)
        return [b for name in _STAGES for b in list(getattr(model, name))[1:]]

    def get_block_container(self, model: nn.Module) -> nn.Sequential:
        return model.autoprog_blocks  # type: ignore[return-value]

    def set_blocks(self, model: nn.Module, blocks: list[nn.Module] | nn.Sequential) -> None:
        firsts = [self._first(model, name) for name in _STAGES]
        if isinstance(blocks, nn.Sequential) and hasattr(blocks, "active"):
            # an elastic container: stages become views onto the one shared container
            model.autoprog_blocks = blocks
            for name, first in zip(_STAGES, firsts, strict=True):
                setattr(model, name, _StageView(first, _width(first), blocks))
            return
        if hasattr(model, "autoprog_blocks"):
            del model.autoprog_blocks
        for name, first in zip(_STAGES, firsts, strict=True):
            mine = [b for b in blocks if _width(b) == _width(first)]
            setattr(model, name, nn.Sequential(first, *mine))

    @staticmethod
    def _first(model: nn.Module, name: str) -> nn.Module:
        stage = getattr(model, name)
        return stage.first if isinstance(stage, _StageView) else stage[0]

    def new_block(self, model: nn.Module, stage: int = 0, identity: bool = False) -> nn.Module:
        """A freshly initialised identity-shaped block of ``stage`` (0 = ``layer1``), as torchvision
        initialises one; with ``identity`` its last BatchNorm's scale is zero, so it computes the
        identity on the stage's (non-negative) activations."""
        first = self._first(model, _STAGES[stage])
        width = _width(first)
        planes = width // self.block_cls.expansion
        block = self.block_cls(width, planes)
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if identity:
            last = block.bn3 if isinstance(block, tv_resnet.Bottleneck) else block.bn2
            nn.init.zeros_(last.weight)
        return block.to(next(first.parameters()).device)

    def prepare_input(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        if resolution % self.resolution_step:
            raise ConfigError(f"resolution {resolution} is not a multiple of {self.resolution_step}")
        return resize_input(x, resolution)


def resnet_from_model(model: nn.Module) -> list[int]:
    """Blocks per stage of a (possibly grown) ResNet, for reports."""
    return [len(list(getattr(model, n))) if not isinstance(getattr(model, n), _StageView) else -1 for n in _STAGES]


def check_resnet_name(model: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` is one of the ResNets the adapter builds."""
    if model not in _SPECS:
        raise ConfigError(f"unknown ResNet {model!r}; choose from {', '.join(_SPECS)}")


register_adapter(
    AdapterFamily(
        name="torchvision ResNet",
        matches=lambda model: model.startswith("resnet"),
        check=check_resnet_name,
        create=TorchvisionResNetAdapter,
        options=frozenset({"depth"}),
        hint=f"a torchvision ResNet ({', '.join(_SPECS)})",
        resolution_step=lambda model, patch_size: RESOLUTION_STEP,
    )
)

__all__ = ["TorchvisionResNetAdapter", "check_resnet_name"]
