"""Fine-tuning tasks: what ``autoprog finetune`` knows about each model family (:class:`FinetuneTask`).

:func:`create_finetune_task` looks at the source folder and picks the family:

* a diffusers DiT (``config.json`` of a ``DiTTransformer2DModel``, or a pipeline with ``transformer/``)
  -> :class:`autoprog.tasks.dit.DiTTask` (class-conditional generation, stage embedding SID);
* a text-to-image pipeline (``unet/`` + ``text_encoder/``, as Stable Diffusion v1.x)
  -> :class:`autoprog.tasks.text_to_image.TextToImageTask` (caption SID, DreamBooth);
* an ``autoprog pretrain`` run folder (``summary.json`` + ``model.pt``) -> :class:`autoprog.tasks.classifier.ClassifierTask`
  (a timm ViT classifier transferred to the target data).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from autoprog.errors import ConfigError
from autoprog.tasks.base import FinetuneTask

if TYPE_CHECKING:
    from autoprog.train.config import FinetuneConfig


def source_kind(path: str | Path) -> str:
    """``"dit"``, ``"text-to-image"`` or ``"classifier"``: the family of the source folder ``path``,
    from its files alone (nothing is built). Raises :class:`ConfigError` for anything else."""
    p = Path(path)
    if (p / "unet").is_dir() and (p / "text_encoder").is_dir():
        return "text-to-image"
    if (p / "summary.json").is_file() and (p / "model.pt").is_file():
        return "classifier"
    if (p / "config.json").is_file() or (p / "transformer" / "config.json").is_file():
        return "dit"
    raise ConfigError(
        f"--model {str(p)!r} is not a fine-tuning source: expected a diffusers DiT folder (config.json), a "
        "text-to-image pipeline (unet/ + text_encoder/) or an `autoprog pretrain` run (summary.json + model.pt); "
        "make the default source with `autoprog source`"
    )


def check_source(path: str | Path) -> str:
    """:func:`source_kind` plus the family's own checks of the folder (no model is built)."""
    kind = source_kind(path)
    if kind == "dit":
        from autoprog.adapters.diffusers_dit import check_dit_folder

        check_dit_folder(path)
    elif kind == "classifier":
        from autoprog.tasks.classifier import check_pretrain_run

        check_pretrain_run(path)
    elif kind == "text-to-image":
        from autoprog.adapters.diffusers_unet import check_text_to_image_folder

        check_text_to_image_folder(path)
    return kind


def create_finetune_task(
    model_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device
) -> FinetuneTask:
    """The :class:`FinetuneTask` for the source folder ``model_dir`` (see the module docstring).

    The options that depend on the source's family are checked here
    (:meth:`~autoprog.train.config.FinetuneConfig.check_source_kind`), and each family's task checks
    its folder, so a configuration validated without ``check_source`` gets the same errors here."""
    kind = source_kind(model_dir)
    cfg.check_source_kind(kind)
    if kind == "classifier":
        from autoprog.tasks.classifier import create_classifier_task

        return create_classifier_task(model_dir, cfg, num_stages=num_stages, device=device)
    if kind == "dit":
        from autoprog.tasks.dit import create_dit_task

        return create_dit_task(model_dir, cfg, num_stages=num_stages, device=device)
    if kind == "text-to-image":
        from autoprog.tasks.text_to_image import create_text_to_image_task

        return create_text_to_image_task(model_dir, cfg, num_stages=num_stages, device=device)
    raise ConfigError(f"--model {str(model_dir)!r}: {kind} sources are not supported yet")


__all__ = ["FinetuneTask", "check_source", "create_finetune_task", "source_kind"]
