"""The small protocol every model adapter implements, and the adapter factory.

The core (schedules, operators, search) knows nothing of any one model: it asks the adapter for
the model's blocks, for a fresh block, and to run the model at a resolution. One file per model
family implements it (``timm_vit.py`` for timm ViT / DeiT).
"""

from __future__ import annotations

import difflib
from typing import Protocol, runtime_checkable

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


def resize_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize an image batch ``(N, C, H, W)`` to ``resolution``² (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    shrink = resolution < x.shape[-1] or resolution < x.shape[-2]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


def create_adapter(
    model: str,
    *,
    img_size: int,
    in_chans: int,
    num_classes: int,
    patch_size: int | None = None,
    depth: int | None = None,
    drop_path_rate: float = 0.0,
) -> ModelAdapter:
    """Adapter factory for a model name.

    Any timm Vision Transformer name (``vit_*``, ``deit_*``) is accepted, with ``img_size``,
    ``patch_size``, ``depth`` and ``in_chans`` overrides, and torchvision ResNets (``resnet18``,
    ``resnet34``, ``resnet50``, ``resnet101``; ``depth`` = growable residual blocks, ``patch_size``
    ignored). ``None`` arguments keep the model's defaults.
    """
    from autoprog.adapters.timm_vit import TimmViTAdapter
    from autoprog.adapters.torchvision_resnet import TorchvisionResNetAdapter

    check_model_name(model)
    if model.startswith("resnet"):
        return TorchvisionResNetAdapter(model, img_size=img_size, in_chans=in_chans, num_classes=num_classes, depth=depth)
    return TimmViTAdapter(
        model,
        img_size=img_size,
        in_chans=in_chans,
        num_classes=num_classes,
        patch_size=patch_size,
        depth=depth,
        drop_path_rate=drop_path_rate,
    )


#: Name prefixes of the timm models :class:`~autoprog.adapters.timm_vit.TimmViTAdapter` takes.
VIT_PREFIXES: tuple[str, ...] = ("vit_", "deit_", "deit3_")


def check_model_name(model: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` names a model family an adapter exists for.

    Cheap (builds nothing), so configurations check names before any data is read: a torchvision
    ResNet name, or a registered timm ViT/DeiT name. Whether a timm model can really be grown is
    only known once its adapter builds it (see :class:`~autoprog.adapters.timm_vit.TimmViTAdapter`).
    """
    if not isinstance(model, str):
        raise ConfigError(f"--model must be a model name, got {model!r}")
    if model.startswith("resnet"):
        from autoprog.adapters.torchvision_resnet import _SPECS

        if model not in _SPECS:
            raise ConfigError(f"unknown ResNet {model!r}; choose from {', '.join(_SPECS)}")
        return
    if model.startswith(VIT_PREFIXES):
        import timm

        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models([p + "*" for p in VIT_PREFIXES]), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"unknown timm model {model!r}; {hint}any timm ViT/DeiT name works "
                "(list them with: python -c \"import timm; print(timm.list_models('vit_*'))\")"
            )
        return
    raise ConfigError(
        f"unknown model {model!r}: use a timm Vision Transformer name such as vit_tiny_patch16_224, "
        "vit_small_patch16_224 or deit_tiny_patch16_224, or a torchvision ResNet (resnet18, resnet34, resnet50, resnet101)"
    )


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
