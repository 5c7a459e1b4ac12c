"""The small protocol every model adapter implements, and the registry of adapter families.

The core (schedules, operators, search) knows nothing of any one model: it asks the adapter for
the model's blocks, for a fresh block, and to run the model at a resolution. One file per model
family implements it (``timm_vit.py`` for timm ViT / DeiT, ``torchvision_resnet.py``) and registers
the family (:func:`register_adapter`), so :func:`create_adapter` and :func:`check_model_name` find it
by name without this module knowing any family.

Two optional method pairs describe a grown model's shape beyond its weights, for checkpoints
(:mod:`autoprog.growth.structure`): :class:`DescribesBlocks` (per-block state the adapter's
family has, such as a ViT block's drop-path rates) and :class:`HasBlockLayout` (blocks split in
groups, such as a ResNet's stages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from autoprog.errors import ConfigError
from autoprog.growth.schedule import SubnetConfig


@runtime_checkable
class ModelAdapter(Protocol):
    """What autoprog needs to know about a growable model family.

    Attributes:
        full: the full model's configuration (input resolution, depth).
        resolution_step: valid resolutions are multiples of this (the patch size for a ViT).
    """

    full: SubnetConfig
    resolution_step: int

    def create_model(self, depth: int | None = None) -> nn.Module:
        """A freshly initialised model with ``depth`` blocks (the full depth when ``None``)."""
        ...

    def get_blocks(self, model: nn.Module) -> list[nn.Module]:
        """The model's growable blocks, input side first."""
        ...

    def set_blocks(self, model: nn.Module, blocks: list[nn.Module] | nn.Sequential) -> None:
        """Replace the model's blocks (a list, or a ready container such as ``ElasticBlocks``)."""
        ...

    def get_block_container(self, model: nn.Module) -> nn.Sequential:
        """The module that holds the blocks (``model.blocks`` for a ViT)."""
        ...

    def new_block(self, model: nn.Module) -> nn.Module:
        """A randomly initialised block like the model's own (RandInit growth)."""
        ...

    def prepare_input(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        """Resize a batch to ``resolution`` for a model trained at that size."""
        ...


@runtime_checkable
class DescribesBlocks(Protocol):
    """Optional: an adapter whose blocks hold state beyond their weights that a fresh block of the
    same kind lacks (a ViT block's drop-path rates, set at growth). Checkpoints record it per block
    and a restored model gets it back; a model without such state needs neither method."""

    def block_state(self, block: nn.Module) -> dict[str, Any]:
        """Plain values (for ``torch.load(weights_only=True)``) describing ``block``."""
        ...

    def restore_block_state(self, block: nn.Module, state: dict[str, Any]) -> None:
        """Give a freshly created ``block`` the :meth:`block_state` it had (in place)."""
        ...


@runtime_checkable
class HasBlockLayout(Protocol):
    """Optional: an adapter whose blocks are split in groups a grown model need not split as a fresh
    one of the same depth (a ResNet's stages: copies stay in their source's stage)."""

    def block_layout(self, model: nn.Module) -> list[int]:
        """Blocks per group of ``model``."""
        ...

    def create_model_from_layout(self, layout: list[int]) -> nn.Module:
        """A freshly initialised model with ``layout[i]`` blocks in group ``i``."""
        ...


def resize_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize an image batch ``(N, C, H, W)`` to ``resolution``² (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    shrink = resolution < x.shape[-1] or resolution < x.shape[-2]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


#: The options of :func:`create_adapter` beyond the data's shape; a family takes some of them.
ADAPTER_OPTIONS: frozenset[str] = frozenset({"patch_size", "depth", "drop_path_rate", "embed_dim", "num_heads"})


@dataclass(frozen=True)
class AdapterFamily:
    """A family of models an adapter exists for, as its module registers it (:func:`register_adapter`).

    Attributes:
        name: the family, for messages (``"timm ViT/DeiT"``).
        matches: ``matches(model) -> bool``, whether a model name belongs to the family (a cheap
            test, such as a name prefix).
        check: ``check(model)`` raises :class:`ConfigError` unless the name is one of the family's
            models; cheap (builds nothing), so configurations check names before any work.
        create: ``create(model, *, img_size, in_chans, num_classes, **options) -> ModelAdapter``.
        options: which of :data:`ADAPTER_OPTIONS` the family takes (the others are not passed).
        hint: how the message for an unknown model names the family (``"a torchvision ResNet (...)"``).
        resolution_step: ``resolution_step(model, patch_size) -> int``, the step the family's input
            sizes come in (a ViT's patch size, ``patch_size`` or the name's; 4 for a ResNet), known
            before the adapter is built so that a default input size can be rounded to it
            (:func:`input_size_step`); ``None``: any size.
    """

    name: str
    matches: Callable[[str], bool]
    check: Callable[[str], None]
    create: Callable[..., ModelAdapter]
    options: frozenset[str]
    hint: str
    resolution_step: Callable[[str, int | None], int] | None = None


_FAMILIES: dict[str, AdapterFamily] = {}


def register_adapter(family: AdapterFamily) -> AdapterFamily:
    """Make ``family`` known to :func:`create_adapter` and :func:`check_model_name` (timm's
    ``register_model`` habit): each adapter module registers its own family when imported, and
    ``autoprog.adapters`` imports them all. Registering a name again replaces the family."""
    if not family.options <= ADAPTER_OPTIONS:
        raise ValueError(f"unknown adapter options {sorted(family.options - ADAPTER_OPTIONS)}")
    _FAMILIES[family.name] = family
    return family


def adapter_family(model: str) -> AdapterFamily | None:
    """The registered family whose names include ``model`` (``None`` when none does)."""
    return next((f for f in _FAMILIES.values() if f.matches(model)), None)


def create_adapter(
    model: str,
    *,
    img_size: int,
    in_chans: int,
    num_classes: int,
    patch_size: int | None = None,
    depth: int | None = None,
    drop_path_rate: float = 0.0,
    embed_dim: int | None = None,
    num_heads: int | None = None,
) -> ModelAdapter:
    """Adapter factory for a model name, through the registered families.

    Any timm Vision Transformer name (``vit_*``, ``deit_*``) is accepted, with ``img_size``,
    ``patch_size``, ``depth`` and ``in_chans`` overrides, and torchvision ResNets (``resnet18``,
    ``resnet34``, ``resnet50``, ``resnet101``; ``depth`` = growable residual blocks, ``patch_size``
    ignored). ``embed_dim``/``num_heads`` set a ViT's width (ignored by a ResNet, whose
    configuration refuses them). ``None`` arguments keep the model's defaults; options a family does
    not take are not passed to it.
    """
    check_model_name(model)
    family = adapter_family(model)
    assert family is not None  # check_model_name found it
    options = {"patch_size": patch_size, "depth": depth, "drop_path_rate": drop_path_rate,
               "embed_dim": embed_dim, "num_heads": num_heads}  # fmt: skip
    taken = {k: v for k, v in options.items() if k in family.options}
    return family.create(model, img_size=img_size, in_chans=in_chans, num_classes=num_classes, **taken)


def input_size_step(model: str, patch_size: int | None = None) -> int:
    """The step a model's input sizes come in (:attr:`AdapterFamily.resolution_step`; 1 when the
    family says none): a size given by default is rounded down to it."""
    check_model_name(model)
    family = adapter_family(model)
    step = family.resolution_step if family is not None else None
    return 1 if step is None else int(step(model, patch_size))


def check_model_name(model: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` names a model family an adapter exists for.

    Cheap (builds nothing), so configurations check names before any data is read: the family
    whose names include ``model`` checks it (a torchvision ResNet name, a registered timm ViT/DeiT
    name). Whether a timm model can really be grown is only known once its adapter builds it (see
    :class:`~autoprog.adapters.timm_vit.TimmViTAdapter`).
    """
    if not isinstance(model, str):
        raise ConfigError(f"--model must be a model name, got {model!r}")
    family = adapter_family(model)
    if family is None:
        hints = ", or ".join(f.hint for f in _FAMILIES.values())
        raise ConfigError(f"unknown model {model!r}: use {hints}")
    family.check(model)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
