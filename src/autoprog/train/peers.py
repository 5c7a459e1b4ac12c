"""The peers of progressive learning as methods of ``autoprog pretrain``: what the loop asks of them.

A user choosing a faster way to train a ViT would pick one of these instead of AutoProg; they run
through the same loop, data, FLOPs accounting, resume and logs as every other method:

- ``full-equal-time``: the full model trained for fewer epochs, its cosine schedule decayed over
  them, matching another method's wall-clock ("No Train No Gain", Kaddour et al., NeurIPS 2023).
- ``progressive-resizing``: the full model on inputs that grow from half size (Composer's
  ``ProgressiveResizing``, :class:`~autoprog.growth.input_schedule.ProgressiveResizing`).
- ``efficienttrain``: the full model on low-frequency crops that grow, with RandAugment growing
  stronger (EfficientTrain++, :class:`~autoprog.growth.input_schedule.EfficientTrain`).

The input transform (``--input-transform``) is orthogonal to all of them: ``prog`` and
``autoprog-one`` with ``lowfreq`` make every downsizing of their data a low-frequency crop.

The loop asks four things (each a pure function of the configuration): :func:`plan_method` (the
growth plan to build: ``full`` for every peer), :func:`trained_epochs`, :func:`create_input_schedule`
and :func:`input_transform` / :func:`batch_downsize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from autoprog.data.resize import low_frequency_crop, resize_batch
from autoprog.errors import ConfigError
from autoprog.growth.input_schedule import EfficientTrain, InputSchedule, ProgressiveResizing, resolutions
from autoprog.growth.schedule import SubnetConfig
from autoprog.train.config import INPUT_SCHEDULE_METHODS, PEER_METHODS, PretrainConfig

#: The transform each method downsizes with when ``--input-transform`` is not given.
DEFAULT_INPUT_TRANSFORM = {"progressive-resizing": "nearest", "efficienttrain": "lowfreq"}


def plan_method(method: str) -> str:
    """The growth plan a method trains through (:func:`~autoprog.controller.create_plan`): the peers
    train the full model throughout."""
    return "full" if method in PEER_METHODS else method


def equal_time_epochs(epochs: int, time_ratio: float) -> int:
    """``round(epochs * time_ratio)``, halves rounded up, at least 1: the epochs of full training whose
    wall-clock matches a method that took ``time_ratio`` of full training's time over ``epochs``."""
    if not (math.isfinite(time_ratio) and time_ratio > 0):
        raise ConfigError(f"the equal-time ratio must be a finite number > 0, got {time_ratio}")
    return max(1, math.floor(epochs * time_ratio + 0.5))


def trained_epochs(cfg: PretrainConfig) -> int:
    """The epochs the run trains: ``--epochs``, or for ``full-equal-time`` ``--equal-time-epochs`` /
    :func:`equal_time_epochs` of ``--equal-time-ratio`` (``--epochs`` is then the budget that
    ``full_flops`` and the FLOPs ratio refer to)."""
    if cfg.method != "full-equal-time":
        return cfg.epochs
    if cfg.equal_time_epochs is not None:
        return cfg.equal_time_epochs
    assert cfg.equal_time_ratio is not None  # validate() insists on one of the two
    return equal_time_epochs(cfg.epochs, cfg.equal_time_ratio)


def input_transform(cfg: PretrainConfig) -> str:
    """How inputs are brought to a smaller size: ``--input-transform``, else the method's own."""
    return cfg.input_transform or DEFAULT_INPUT_TRANSFORM.get(cfg.method, "bilinear")


def create_input_schedule(cfg: PretrainConfig, full_resolution: int, resolution_step: int) -> InputSchedule | None:
    """The run's input schedule (``None`` for the methods that have none).

    Raises:
        ConfigError: ``--size-increment`` is not a multiple of the model's resolution step (the
            patch size): the model could not take the sizes.
    """
    if cfg.method == "progressive-resizing":
        if cfg.size_increment % resolution_step:
            raise ConfigError(
                f"--size-increment {cfg.size_increment} is not a multiple of the model's resolution step "
                f"{resolution_step} (its patch size): the model cannot take those sizes"
            )
        return ProgressiveResizing(full_resolution, cfg.initial_scale, cfg.delay_fraction, cfg.finetune_fraction,
                                   cfg.size_increment, randaug=cfg.randaug)  # fmt: skip
    if cfg.method == "efficienttrain":
        return EfficientTrain(full_resolution, resolution_step, cfg.efficienttrain_schedule, randaug=cfg.randaug)
    return None


def input_configs(schedule: InputSchedule | None, epochs: int, depth: int) -> set[SubnetConfig]:
    """The (side, depth) configurations an input schedule trains at (their FLOPs are counted once,
    before the clock starts)."""
    return set() if schedule is None else {SubnetConfig(r, depth) for r in resolutions(schedule, epochs)}


def batch_downsize(cfg: PretrainConfig) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    """What the data sources downsize with (``None``: their default, antialiased bilinear on uint8).

    ``lowfreq`` serves float images (the low-frequency crop is not an integer image); a whole
    in-memory dataset is cropped in chunks of 1,024 images.
    """
    transform = input_transform(cfg)
    if transform == "bilinear" or cfg.method in INPUT_SCHEDULE_METHODS:
        return None  # an input schedule downsizes each batch itself (peers: the source serves full size)
    if transform == "lowfreq":
        return _chunked(low_frequency_crop)
    return lambda x, size: resize_batch(x, size, "nearest")


def _chunked(fn: Callable[[torch.Tensor, int], torch.Tensor], chunk: int = 1024) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def apply(x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-2:] == (size, size) or len(x) <= chunk:
            return fn(x, size)
        return torch.cat([fn(x[i : i + chunk], size) for i in range(0, len(x), chunk)])

    return apply


__all__ = [
    "DEFAULT_INPUT_TRANSFORM",
    "batch_downsize",
    "create_input_schedule",
    "equal_time_epochs",
    "input_configs",
    "input_transform",
    "plan_method",
    "trained_epochs",
]
