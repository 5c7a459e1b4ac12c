"""Adapter for timm Vision Transformers (ViT, DeiT): depth and number of patches (Sec. 3.1.2).

Depth: the model's ``blocks`` (an ``nn.Sequential``) are replaced by the current sub-network's.
Number of patches: the input is resized to the stage's resolution; the model is built with
``dynamic_img_size=True`` so timm resamples the absolute position embedding on its 2-D grid
(bicubic, class token kept) for whatever grid the input gives.
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.layers import DropPath, resample_abs_pos_embed
from timm.models import named_apply
from timm.models.vision_transformer import VisionTransformer, init_weights_vit_timm
from torch import nn

from autoprog.adapters.base import AdapterFamily, register_adapter, resize_input
from autoprog.errors import ConfigError
from autoprog.growth.schedule import SubnetConfig


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Resample an absolute position embedding ``(1, prefix + H*W, D)`` to another patch grid.

    The prefix (class / register) tokens are kept as they are; the grid part is interpolated
    bicubically on its 2-D layout (timm's ``resample_abs_pos_embed``). Sec. 3.1.2: "we adaptively
    interpolate the positional encoding to match with the number of patches".
    """
    return resample_abs_pos_embed(
        pos_embed,
        new_size=list(new_grid),
        old_size=list(old_grid) if old_grid is not None else None,
        num_prefix_tokens=num_prefix_tokens,
        interpolation="bicubic",
        antialias=True,
    )


class TimmViTAdapter:
    """Growable timm ``VisionTransformer`` (any ``vit_*`` / ``deit_*`` name).

    Args:
        model_name: timm model name, e.g. ``"vit_tiny_patch16_224"``.
        img_size: full input resolution.
        in_chans: input channels.
        num_classes: classifier outputs.
        patch_size: patch size override (``None`` keeps the name's).
        depth: full depth override (``None`` keeps the name's).
        drop_path_rate: stochastic depth rate of the full model.
        embed_dim: token width override (``None`` keeps the name's), e.g. 96 for a narrower
            ``vit_tiny_patch16_224``.
        num_heads: attention heads override (``None`` keeps the name's); must divide the width.
        model_args: further ``timm.create_model`` arguments (a saved model's ``model_args``, e.g.
            ``embed_dim``, ``num_heads``, ``class_token``); the arguments above win.
    """

    def __init__(
        self,
        model_name: str,
        *,
        img_size: int,
        in_chans: int,
        num_classes: int,
        patch_size: int | None = None,
        depth: int | None = None,
        drop_path_rate: float = 0.0,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        model_args: Mapping[str, Any] | None = None,
    ) -> None:
        if model_name not in timm.list_models():
            raise ConfigError(
                f"unknown timm model {model_name!r}; e.g. {', '.join(timm.list_models('vit_*')[:5])}, ..."
            )
        self.model_name = model_name
        self.kwargs: dict = {
            **(model_args or {}),
            "img_size": img_size,
            "in_chans": in_chans,
            "num_classes": num_classes,
            "patch_size": patch_size,
            "drop_path_rate": drop_path_rate,
            "embed_dim": embed_dim,
            "num_heads": num_heads,
            "dynamic_img_size": True,
        }
        self.kwargs = {k: v for k, v in self.kwargs.items() if v is not None}
        probe = self._create(depth)
        p = probe.patch_embed.patch_size
        self.patch_size = int(p[0] if isinstance(p, tuple | list) else p)
        if img_size % self.patch_size:
            raise ConfigError(f"resolution {img_size} is not a multiple of the patch size {self.patch_size}")
        self.resolution_step = self.patch_size
        self.full = SubnetConfig(resolution=img_size, depth=len(probe.blocks))

    def _create(self, depth: int | None) -> VisionTransformer:
        kwargs = dict(self.kwargs)
        if depth is not None:
            kwargs["depth"] = depth
        try:
            model = timm.create_model(self.model_name, pretrained=False, **kwargs)
        except TypeError as e:
            raise ConfigError(
                f"timm model {self.model_name!r} does not take the options autoprog needs to grow it ({e}); "
                "use a plain timm VisionTransformer such as vit_tiny_patch16_224 or deit_small_patch16_224"
            ) from e
        except AssertionError as e:  # timm's Attention: dim should be divisible by num_heads
            raise ConfigError(
                f"timm model {self.model_name!r}: width {kwargs.get('embed_dim', 'of the name')} is not divisible "
                f"by {kwargs.get('num_heads', 'the name')}'s heads; give --embed-dim a multiple of --num-heads"
            ) from e
        if not isinstance(model, VisionTransformer) or not isinstance(getattr(model, "blocks", None), nn.Sequential):
            raise ConfigError(
                f"model {self.model_name!r} is not a timm VisionTransformer with a `blocks` Sequential: "
                "autoprog cannot grow its depth"
            )
        return model

    def create_model(self, depth: int | None = None) -> nn.Module:
        return self._create(self.full.depth if depth is None and hasattr(self, "full") else depth)

    def get_blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)  # type: ignore[arg-type]

    def set_blocks(self, model: nn.Module, blocks: list[nn.Module] | nn.Sequential) -> None:
        model.blocks = blocks if isinstance(blocks, nn.Sequential) else nn.Sequential(*blocks)

    def get_block_container(self, model: nn.Module) -> nn.Sequential:
        return model.blocks  # type: ignore[return-value]

    def new_block(self, model: nn.Module) -> nn.Module:
        block = copy.deepcopy(self.get_blocks(model)[0])
        named_apply(init_weights_vit_timm, block)
        return block

    def prepare_input(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        if resolution % self.patch_size:
            raise ConfigError(f"resolution {resolution} is not a multiple of the patch size {self.patch_size}")
        return resize_input(x, resolution)

    def grid(self, resolution: int) -> tuple[int, int]:
        """Patch grid of an input of ``resolution`` pixels."""
        return (resolution // self.patch_size, resolution // self.patch_size)

    # Block state beyond the weights (adapters.base.DescribesBlocks) --------------------------
    def block_state(self, block: nn.Module) -> dict[str, Any]:
        """The block's stochastic-depth rates, one per ``drop_path*`` slot (0 for an ``Identity``):
        growth sets them per block (``set_drop_path``), a fresh block has the model's defaults."""
        rates = [
            float(m.drop_prob) if isinstance(m, DropPath) else 0.0
            for name, m in block.named_modules()
            if name.rsplit(".", 1)[-1].startswith("drop_path")
        ]
        return {"drop_path": rates}

    def restore_block_state(self, block: nn.Module, state: dict[str, Any]) -> None:
        """Put :meth:`block_state`'s rates back into the block's ``drop_path*`` slots (``DropPath``
        for a positive rate, ``Identity`` otherwise, as timm builds them)."""
        slots = [
            (parent, name)
            for parent in block.modules()
            for name, child in parent.named_children()
            if name.startswith("drop_path") and isinstance(child, nn.Identity | DropPath)
        ]
        for (parent, name), rate in zip(slots, state.get("drop_path", []), strict=False):
            setattr(parent, name, DropPath(rate) if rate > 0 else nn.Identity())


#: Name prefixes of the timm models :class:`TimmViTAdapter` takes.
VIT_PREFIXES: tuple[str, ...] = ("vit_", "deit_", "deit3_")


def check_vit_name(model: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` is a registered timm model (builds nothing)."""
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models([p + "*" for p in VIT_PREFIXES]), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown timm model {model!r}; {hint}any timm ViT/DeiT name works "
            "(list them with: python -c \"import timm; print(timm.list_models('vit_*'))\")"
        )


@functools.lru_cache(maxsize=16)
def own_patch_size(model: str) -> int:
    """The patch size the timm name ``model`` builds with, read from a copy on the meta device
    (no memory, no weights)."""
    with torch.device("meta"):
        probe = timm.create_model(model, pretrained=False)
    p = probe.patch_embed.patch_size
    return int(p[0] if isinstance(p, tuple | list) else p)


register_adapter(
    AdapterFamily(
        name="timm ViT/DeiT",
        matches=lambda model: model.startswith(VIT_PREFIXES),
        check=check_vit_name,
        create=TimmViTAdapter,
        options=frozenset({"patch_size", "depth", "drop_path_rate", "embed_dim", "num_heads"}),
        hint="a timm Vision Transformer name such as vit_tiny_patch16_224, vit_small_patch16_224 or deit_tiny_patch16_224",
        resolution_step=lambda model, patch_size: patch_size or own_patch_size(model),
    )
)

__all__ = ["VIT_PREFIXES", "TimmViTAdapter", "check_vit_name", "resample_pos_embed"]
