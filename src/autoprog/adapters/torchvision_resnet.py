"""Adapter for torchvision ResNets: depth = residual blocks, resolution = input size (Sec. 5, CNNs).

Depth. Each stage (``layer1`` ... ``layer4``) keeps its first block (which changes resolution and
width) fixed; the identity-shaped blocks after it are the *growable* blocks. The adapter shows them
as one flat list, input side first, so every growth operator and the elastic supernet work on a
ResNet unchanged. A block's stage follows from its width, so a copy always lands in its source's
stage (Interpolation inserts it beside the source; Stacking puts it at the end of that stage);
RandInit's fresh blocks sit at the input end, as Appendix A's indexing from the classifier puts
them, in the first stage.

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
        self.resolution_step = 4
        if img_size % self.resolution_step:
            raise ConfigError(f"resolution {img_size} is not a multiple of {self.resolution_step}")
        self.full = SubnetConfig(resolution=img_size, depth=full_depth)

    def stage_depths(self, depth: int) -> list[int]:
        """Growable blocks per stage for a total ``depth``: proportional to the full model's, later stages first."""
        full = self.growable_full
        total = sum(full)
        out = [int(depth * f / total) for f in full]
        order = sorted(range(len(full)), key=lambda i: (-(depth * full[i] / total - out[i]), -i))
        for i in order[: depth - sum(out)]:
            out[i] += 1
        return out

    def create_model(self, depth: int | None = None) -> nn.Module:
        depth = self.full.depth if depth is None else depth
        return self.create_model_from_layout(self.stage_depths(depth))

    def block_layout(self, model: nn.Module) -> list[int]:
        """Growable blocks per stage. A grown ResNet's split need not be :meth:`stage_depths`' (copies
        stay in their source's stage), so checkpoints record it to rebuild the model's shape."""
        widths = [_width(self._first(model, name)) for name in _STAGES]
        blocks = [_width(b) for b in self.get_blocks(model)]
        return [blocks.count(w) for w in widths]

    def create_model_from_layout(self, layout: list[int]) -> nn.Module:
        """A freshly initialised model with ``layout[i]`` growable blocks in stage ``i``."""
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

    def new_block(self, model: nn.Module) -> nn.Module:
        """A freshly initialised identity-shaped block of the first stage (RandInit)."""
        first = self._first(model, "layer1")
        width = _width(first)
        planes = width // self.block_cls.expansion
        block = self.block_cls(width, planes)
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
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
    )
)

__all__ = ["TorchvisionResNetAdapter", "check_resnet_name"]
