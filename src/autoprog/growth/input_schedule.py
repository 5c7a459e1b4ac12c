"""Input schedules: the full model's input size (and augmentation strength) as a function of the epoch.

Two peers of progressive learning keep the network whole and grow only its input. Their schedules
are pure functions of the elapsed part of training (Composer's habit), so a resumed run needs no
state; the loop asks :meth:`at_epoch` at each epoch's start and brings every training batch to
that size with :func:`autoprog.data.resize.resize_batch`.

- :class:`ProgressiveResizing` (Composer's ``ProgressiveResizing``, after fast.ai): the side is
  ``initial_scale`` of the full one for the first ``delay_fraction`` of training, rises linearly
  to full until ``1 - finetune_fraction``, then stays full; rounded to ``size_increment``.
- :class:`EfficientTrain` (EfficientTrain++, Wang et al., TPAMI 2024; EfficientTrain, ICCV 2023):
  training is cut into equal segments; segment ``i`` trains on the low-frequency band of side
  ``B_i`` (a fraction of the full side) with RandAugment of magnitude ``m_i`` (a fraction of the
  run's own magnitude), both rising from segment to segment.

Both return :class:`EpochInput` records; :func:`input_stages` lists a whole run's as stages
(``summary.json``'s ``input_schedule``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autoprog.errors import ConfigError


@dataclass(frozen=True)
class EpochInput:
    """What one epoch's training batches look like: their side in pixels and the RandAugment
    string of the epoch's augmentation (``None``: no RandAugment)."""

    resolution: int
    randaug: str | None = None


class InputSchedule(Protocol):
    """An input schedule: ``at_epoch(epoch, epochs)`` for every epoch of an ``epochs``-epoch run."""

    def at_epoch(self, epoch: int, epochs: int) -> EpochInput: ...


# -- Composer's ProgressiveResizing ---------------------------------------------------------------


def progressive_resizing_scale(
    elapsed: float, initial_scale: float = 0.5, delay_fraction: float = 0.5, finetune_fraction: float = 0.2
) -> float:
    """The side's scale factor after ``elapsed`` (in [0, 1]) of training (Composer's ``apply``).

    ``initial_scale`` while ``elapsed < delay_fraction``; then
    ``initial_scale + (1 - initial_scale) * min(1, (elapsed - delay_fraction) / (1 - finetune_fraction - delay_fraction))``,
    which reaches 1 at ``elapsed = 1 - finetune_fraction``. When the ramp has no length
    (``delay_fraction + finetune_fraction == 1``, where Composer would divide by zero) the scale
    jumps to 1 at ``delay_fraction``.
    """
    if elapsed < delay_fraction:
        ramp = 0.0
    else:
        span = 1.0 - finetune_fraction - delay_fraction
        ramp = 1.0 if span <= 0 else min((elapsed - delay_fraction) / span, 1.0)
    return initial_scale + (1.0 - initial_scale) * ramp


def pin_size(full: int, scale: float, increment: int) -> int:
    """Composer's "pinned" width: ``round(full * scale / increment) * increment`` (Python's ``round``,
    halves to even, as Composer), at least one increment and at most ``full``."""
    return min(full, max(increment, round(full * scale / increment) * increment))


@dataclass(frozen=True)
class ProgressiveResizing:
    """Composer's progressive resizing (``composer/algorithms/progressive_resizing``), resolution only.

    Composer evaluates the schedule at its elapsed duration, counted in the unit of the run's
    ``max_duration``; for a duration in epochs that is the finished epochs over all of them. So
    here: epoch ``e`` of ``E`` trains at ``pin_size(full, progressive_resizing_scale(e / E))``.
    Composer's defaults are the defaults (mode ``resize`` is the loop's ``--input-transform nearest``).

    Args:
        full_resolution: the full input side.
        initial_scale: the side's scale at the start, in (0, 1].
        delay_fraction: the part of training at ``initial_scale`` before the ramp starts.
        finetune_fraction: the last part of training at full size.
        size_increment: sides are multiples of this (the patch size for a ViT).
        randaug: the run's RandAugment string, the same every epoch.
    """

    full_resolution: int
    initial_scale: float = 0.5
    delay_fraction: float = 0.5
    finetune_fraction: float = 0.2
    size_increment: int = 4
    randaug: str | None = None

    def __post_init__(self) -> None:
        check_progressive_resizing(self.initial_scale, self.delay_fraction, self.finetune_fraction, self.size_increment)

    def resolution_at(self, elapsed: float) -> int:
        scale = progressive_resizing_scale(elapsed, self.initial_scale, self.delay_fraction, self.finetune_fraction)
        return pin_size(self.full_resolution, scale, self.size_increment)

    def at_epoch(self, epoch: int, epochs: int) -> EpochInput:
        return EpochInput(self.resolution_at(epoch / epochs), self.randaug)


def check_progressive_resizing(
    initial_scale: float, delay_fraction: float, finetune_fraction: float, size_increment: int
) -> None:
    """Composer's checks (``initial_scale`` also > 0: a zero side cannot train).

    Raises:
        ConfigError: naming the option (``--initial-scale``, ...) and the value.
    """
    for name, value, low_open in (("initial-scale", initial_scale, True), ("delay-fraction", delay_fraction, False),
                                  ("finetune-fraction", finetune_fraction, False)):  # fmt: skip
        if not (_finite(value) and (value > 0 if low_open else value >= 0) and value <= 1):
            shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."
            raise ConfigError(f"--{name} must be in {'(' if low_open else '['}0, 1], got {shown}")
    if delay_fraction + finetune_fraction > 1:
        raise ConfigError(
            f"--delay-fraction + --finetune-fraction must be <= 1, got {delay_fraction} + {finetune_fraction}"
        )
    if size_increment < 1:
        raise ConfigError(f"--size-increment must be >= 1, got {size_increment}")


def _finite(value: float) -> bool:
    """``math.isfinite`` that is False (not an ``OverflowError``) for an int too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# -- EfficientTrain++ -----------------------------------------------------------------------------

#: Per segment: (band side as a fraction of the full side, RandAugment magnitude as a fraction of
#: the run's). From the authors' launch scripts (LeapLabTHU/EfficientTrain), whose sides are pixels
#: of 224 and whose magnitudes end at DeiT's m9:
#: ``deit``: EfficientTrain++ for DeiT (``_ET_pp_main_deitS.py``, "tailored for DeiT"): 10 segments,
#: B = 96, 96, 160 x 4, 192, 192, 224, 224 and ``rand-m{i}`` for segment i = 0..9;
#: ``generic``: EfficientTrain++ for the other models (``_ET_pp_main_swinT.py``, ``_res50``, ...):
#: B = 96, 96, 160 x 4, 224 x 4, same magnitudes;
#: ``v1``: EfficientTrain (ICCV 2023, ``ET_training.py``): 5 segments, B = 160 x 3, 192, 224 and
#: ``rand-m{2i+1}``.
EFFICIENTTRAIN_SCHEDULES: dict[str, tuple[tuple[float, float], ...]] = {
    "deit": tuple((b / 224, i / 9) for i, b in enumerate([96] * 2 + [160] * 4 + [192] * 2 + [224] * 2)),
    "generic": tuple((b / 224, i / 9) for i, b in enumerate([96] * 2 + [160] * 4 + [224] * 4)),
    "v1": tuple((b / 224, (2 * i + 1) / 9) for i, b in enumerate([160] * 3 + [192, 224])),
}


def segment_ends(epochs: int, num_segments: int) -> list[int]:
    """The epoch each segment ends at: ``(epochs * (i + 1)) // num_segments`` (the scripts'
    ``--end_epoch int(epochs / 10 * (i + 1))``, in exact integer arithmetic). When ``epochs`` is
    smaller than the number of segments some segments get no epoch; the last always ends at ``epochs``."""
    return [(epochs * (i + 1)) // num_segments for i in range(num_segments)]


def segment_of_epoch(epoch: int, epochs: int, num_segments: int) -> int:
    """The segment epoch ``epoch`` trains in: the first whose end lies beyond it."""
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} is outside 0..{epochs - 1}")
    return next(i for i, end in enumerate(segment_ends(epochs, num_segments)) if epoch < end)


def band_size(full: int, fraction: float, step: int) -> int:
    """``fraction * full`` rounded to the nearest multiple of ``step`` (halves up), within ``[step, full]``."""
    return min(full, max(step, int(math.floor(fraction * full / step + 0.5)) * step))


@dataclass(frozen=True)
class EfficientTrain:
    """EfficientTrain++'s curriculum (Wang et al., TPAMI 2024), scaled to ``E`` epochs and our image size.

    The authors' scripts give each of 10 segments a band side ``B_i`` (pixels of 224) and a
    RandAugment magnitude ``m_i`` (``rand-m{i}-mstd0.5-inc1``, ending at DeiT's m9). We scale both
    as fractions: segment ``i`` trains at ``band_size(full, B_i / 224, step)`` on the low-frequency
    crop, with the run's ``--randaug`` at magnitude ``round(M * m_i / 9)`` (``M`` the run's magnitude;
    no ``--randaug``: no RandAugment, only the band ramp), and the segments split the ``E`` epochs
    as the scripts split theirs (:func:`segment_ends`). At 28 px and patch 4 the DeiT bands are
    exactly 12, 20, 24 and 28 px (3/7, 5/7, 6/7 and 1 of the side, as 96, 160, 192, 224 of 224).

    One deviation: EfficientTrain++'s scripts give every segment the same *computation* (the
    epochs at ``B`` are ``(224 / B)^2`` times more, and the learning rate follows the computation),
    so a run makes more passes over the data than the baseline it replaces. Here every segment gets
    the same number of *epochs* (as EfficientTrain's own 300-epoch ``ET_training.py`` does), so it
    compares with every other method at the same epochs, data and learning-rate schedule.

    Args:
        full_resolution: the full input side.
        resolution_step: sides are multiples of this (the patch size for a ViT).
        schedule: ``deit`` (default, for ViTs), ``generic`` or ``v1`` (:data:`EFFICIENTTRAIN_SCHEDULES`),
            or ``segments``, a tuple of ``(band fraction, magnitude fraction)``.
        randaug: the run's RandAugment string (its magnitude is the last segment's).
    """

    full_resolution: int
    resolution_step: int = 4
    schedule: str = "deit"
    randaug: str | None = None
    segments: tuple[tuple[float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.segments:
            if self.schedule not in EFFICIENTTRAIN_SCHEDULES:
                raise ConfigError(
                    f"unknown EfficientTrain schedule {self.schedule!r}; choose from {', '.join(EFFICIENTTRAIN_SCHEDULES)}"
                )
            object.__setattr__(self, "segments", EFFICIENTTRAIN_SCHEDULES[self.schedule])

    def at_epoch(self, epoch: int, epochs: int) -> EpochInput:
        band, magnitude = self.segments[segment_of_epoch(epoch, epochs, len(self.segments))]
        randaug = None
        if self.randaug is not None:
            randaug = randaug_with_magnitude(self.randaug, round(randaug_magnitude(self.randaug) * magnitude))
        return EpochInput(band_size(self.full_resolution, band, self.resolution_step), randaug)


# -- RandAugment strings (timm's ``rand-m9-mstd0.5-inc1`` format) -----------------------------------

_MAGNITUDE = re.compile(r"^m(\d+)$")
_DEFAULT_MAGNITUDE = 10  # timm's _LEVEL_DENOM: the magnitude of a string without an m section


def randaug_magnitude(text: str) -> int:
    """The magnitude ``M`` of a timm RandAugment string (``rand-m9-mstd0.5`` -> 9; none given: 10)."""
    for part in text.split("-")[1:]:
        match = _MAGNITUDE.match(part)
        if match:
            return int(match.group(1))
    return _DEFAULT_MAGNITUDE


def randaug_with_magnitude(text: str, magnitude: int) -> str:
    """``text`` with its magnitude section set to ``m{magnitude}`` (added after ``rand`` if it has none)."""
    parts = text.split("-")
    for i, part in enumerate(parts[1:], start=1):
        if _MAGNITUDE.match(part):
            parts[i] = f"m{magnitude}"
            return "-".join(parts)
    return "-".join([parts[0], f"m{magnitude}", *parts[1:]])


# -- a whole run ------------------------------------------------------------------------------------


def input_stages(schedule: InputSchedule, epochs: int) -> list[dict[str, int | str | None]]:
    """The run's epochs grouped into runs of equal input: ``[{start_epoch, end_epoch, resolution,
    randaug}, ...]`` (``end_epoch`` exclusive), as ``summary.json`` records it."""
    out: list[dict[str, int | str | None]] = []
    for epoch in range(epochs):
        spec = schedule.at_epoch(epoch, epochs)
        if out and (out[-1]["resolution"], out[-1]["randaug"]) == (spec.resolution, spec.randaug):
            out[-1]["end_epoch"] = epoch + 1
        else:
            out.append({"start_epoch": epoch, "end_epoch": epoch + 1, "resolution": spec.resolution,
                        "randaug": spec.randaug})  # fmt: skip
    return out


def resolutions(schedule: InputSchedule, epochs: int) -> Sequence[int]:
    """Every side the run trains at (for counting their FLOPs before the clock starts)."""
    return sorted({schedule.at_epoch(e, epochs).resolution for e in range(epochs)})


__all__ = [
    "EFFICIENTTRAIN_SCHEDULES",
    "EfficientTrain",
    "EpochInput",
    "InputSchedule",
    "ProgressiveResizing",
    "band_size",
    "check_progressive_resizing",
    "input_stages",
    "pin_size",
    "progressive_resizing_scale",
    "randaug_magnitude",
    "randaug_with_magnitude",
    "resolutions",
    "segment_ends",
    "segment_of_epoch",
]
