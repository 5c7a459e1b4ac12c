"""Fine-tuning tasks: what ``autoprog finetune`` knows about each model family (:class:`FinetuneTask`).

:func:`create_finetune_task` looks at the source and picks the family, from its files alone:

* a diffusers DiT (``config.json`` of a ``DiTTransformer2DModel``), or a ``DiTPipeline`` folder with
  ``transformer/`` (and, for a latent DiT, ``vae/`` + ``scheduler/``, as ``facebook/DiT-XL-2-256``)
  -> :class:`autoprog.tasks.dit.DiTTask` (class-conditional generation, stage embedding SID);
* a text-to-image pipeline (``unet/`` + ``text_encoder/``, as Stable Diffusion v1.x)
  -> :class:`autoprog.tasks.text_to_image.TextToImageTask` (caption SID, DreamBooth);
* a timm ViT classifier -> :class:`autoprog.tasks.classifier.ClassifierTask` (transfer to the target
  data): an ``autoprog pretrain`` run folder (``summary.json`` + ``model.pt``), a timm hub folder
  (``config.json`` naming an ``architecture`` + ``model.safetensors`` / ``pytorch_model.bin``), or
  ``timm:NAME`` with ``--weights FILE``.

A timm folder and a diffusers folder both hold a ``config.json``; a diffusers one names its
``_class_name``, a timm one its ``architecture``, and that decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from autoprog.errors import ConfigError
from autoprog.tasks.base import FinetuneTask

if TYPE_CHECKING:
    from autoprog.train.config import FinetuneConfig

#: Every source layout, as the refusal of an unknown one lists them.
SOURCE_LAYOUTS = (
    "a diffusers DiT folder (config.json + diffusion_pytorch_model.safetensors), a DiTPipeline folder "
    "(model_index.json, transformer/, vae/, scheduler/), a text-to-image pipeline (unet/ + text_encoder/), "
    "a timm folder (config.json with architecture + model.safetensors), an `autoprog pretrain` run "
    "(summary.json + model.pt) or timm:NAME --weights FILE"
)


def source_kind(path: str | Path) -> str:
    """``"dit"``, ``"text-to-image"`` or ``"classifier"``: the family of the source ``path``, from
    its files alone (nothing is built). Raises :class:`ConfigError` for anything else."""
    from autoprog.tasks.classifier import classifier_layout, is_timm_name

    if is_timm_name(path):
        return "classifier"
    p = Path(path)
    if p.is_file():
        raise ConfigError(
            f"--model {str(p)!r} is a file: weights alone do not say which network they are; pass "
            f"--model timm:NAME --weights {p} (NAME: its timm ViT architecture) or the folder holding them"
        )
    if (p / "unet").is_dir() and (p / "text_encoder").is_dir():
        return "text-to-image"
    if classifier_layout(p) is not None:
        return "classifier"
    if (p / "config.json").is_file() or (p / "transformer" / "config.json").is_file():
        return "dit"
    if (p / "model_index.json").is_file():
        return "dit"  # a pipeline without its transformer: the DiT checks name what is missing
    raise ConfigError(
        f"--model {str(p)!r} is not a fine-tuning source: expected {SOURCE_LAYOUTS}; make the default "
        "source with `autoprog source`"
    )


def check_source(
    path: str | Path, *, weights_file: str | None = None, img_size: int | None = None
) -> str:
    """:func:`source_kind` plus the family's own checks of the source (no model is built).

    ``weights_file`` (``--weights``) goes with ``timm:NAME`` only; ``img_size`` (``--img-size``, the
    fine-tuning resolution) with classifier sources only.
    """
    kind = source_kind(path)
    if kind != "classifier" and weights_file is not None:
        raise ConfigError(f"--weights goes with --model timm:NAME; {path} is a {kind} source with its own weights")
    if kind != "classifier" and img_size is not None:
        raise ConfigError(
            f"--img-size sets a classifier's fine-tuning resolution; the {kind} source {path} fine-tunes at its own"
        )
    if kind == "dit":
        from autoprog.adapters.diffusers_dit import check_dit_source

        check_dit_source(path)
    elif kind == "classifier":
        from autoprog.tasks.classifier import read_classifier_source

        read_classifier_source(path, weights_file)
    elif kind == "text-to-image":
        from autoprog.adapters.diffusers_unet import check_text_to_image_folder

        check_text_to_image_folder(path)
    return kind


def create_finetune_task(
    model_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device
) -> FinetuneTask:
    """The :class:`FinetuneTask` for the source ``model_dir`` (see the module docstring).

    The source is checked here (:func:`check_source`) with the options that depend on its family
    (:meth:`~autoprog.train.config.FinetuneConfig.check_source_kind`), so a configuration validated
    without ``check_source`` gets the same errors here."""
    kind = check_source(model_dir, weights_file=cfg.weights_file, img_size=cfg.img_size)
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


__all__ = ["SOURCE_LAYOUTS", "FinetuneTask", "check_source", "create_finetune_task", "source_kind"]
