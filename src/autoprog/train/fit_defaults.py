"""Defaults that fit small data (issue 21): fewer stages, a smaller batch, said in one line each.

The defaults (4 stages, batch 128 for ``pretrain``; 4 stages, batch 32 for ``finetune``) trip a
first run on small data: 2 epochs cannot hold 4 stages, a 108-image folder not one batch of 128.
:func:`fit_defaults` lowers such a value to what the data and the budget hold, unless it was given
explicitly: then the configuration's clear refusal stays. It is a pure function of the
configuration, the training images and the explicitly given options; the command line calls it
(it knows which options were typed). A :class:`PretrainConfig` built in Python keeps the refusals;
library users opt in by calling :func:`fit_defaults` themselves, with ``given`` the fields they
set.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import TypeVar

from autoprog.train.config import (
    GROWTH_METHODS,
    PROGRESSIVE_FINETUNE_METHODS,
    FinetuneConfig,
    PretrainConfig,
)

C = TypeVar("C", PretrainConfig, FinetuneConfig)

#: The options :func:`fit_defaults` may lower.
FITTED_OPTIONS: tuple[str, ...] = ("stages", "batch_size")
#: Methods whose search needs a stage before the full model's (at least 2 stages).
_TWO_STAGE_METHODS = ("autoprog-one", "autoprog-zero")


def fit_defaults(
    cfg: C, train_images: int | None, given: Collection[str], world_size: int = 1
) -> tuple[C, list[str]]:
    """``cfg`` with the defaults the data cannot hold lowered, and one line per change.

    * ``stages``: a progressive method's stages become the budget (``epochs`` of ``pretrain``,
      ``steps`` of ``finetune``) when there are more stages than that; not below 2 for the
      searched methods (their refusal then stays).
    * ``batch_size``: halved until the training images of one process (``train_images`` /
      ``world_size``) hold one batch; ``None`` (not known yet) leaves it.

    Args:
        cfg: the configuration (a :class:`PretrainConfig` or :class:`FinetuneConfig`; not changed).
        train_images: images in the training split, or ``None``.
        given: names of the fields given explicitly (``"stages"``, ``"batch_size"``, ...): those
            are never changed.
        world_size: processes the training images are sharded over.

    Returns:
        ``(fitted configuration, lines saying what changed and why)``.
    """
    changes: dict[str, int] = {}
    notes: list[str] = []
    budget_name = "epochs" if isinstance(cfg, PretrainConfig) else "steps"
    budget = getattr(cfg, budget_name)
    progressive = cfg.method in (GROWTH_METHODS if isinstance(cfg, PretrainConfig) else PROGRESSIVE_FINETUNE_METHODS)
    floor = 2 if cfg.method in _TWO_STAGE_METHODS else 1
    if "stages" not in given and progressive and _int(budget) and _int(cfg.stages) and cfg.stages > budget >= floor:
        changes["stages"] = budget
        notes.append(f"--stages {budget} instead of {cfg.stages} (the default): {budget} {budget_name} "
                     f"cannot hold {cfg.stages} stages; give --stages to choose")  # fmt: skip
    if "batch_size" not in given and train_images is not None and _int(cfg.batch_size) and world_size >= 1:
        per_process = train_images // world_size
        batch = cfg.batch_size
        while batch > 1 and per_process < batch:
            batch //= 2
        if batch != cfg.batch_size and per_process >= batch:
            changes["batch_size"] = batch
            shard = f" per process ({world_size})" if world_size > 1 else ""
            notes.append(f"--batch-size {batch} instead of {cfg.batch_size} (the default): the training set has "
                         f"{per_process} images{shard}, less than one batch; give --batch-size to choose")  # fmt: skip
    return (replace(cfg, **changes) if changes else cfg), notes


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


__all__ = ["FITTED_OPTIONS", "fit_defaults"]
