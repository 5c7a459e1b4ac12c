"""Growth space and growth schedules (paper Sec. 3.1.2 and Sec. 3.2.2).

A *sub-network* of the full model is fixed by two numbers: the input resolution (which fixes the
number of patches, ``(resolution / patch_size) ** 2``) and the depth (number of blocks). A
:class:`GrowthSchedule` is a plain list of :class:`Stage` records, one per stage, that says which
sub-network trains during which epochs. It serialises to the ``schedule`` list of ``summary.json``
and back, so a searched schedule can be replayed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from autoprog.errors import ConfigError


@dataclass(frozen=True, order=True)
class SubnetConfig:
    """One sub-network of the growth space: input resolution (pixels) and depth (blocks)."""

    resolution: int
    depth: int


@dataclass(frozen=True)
class Stage:
    """One stage of a growth schedule: the sub-network trained for epochs ``[start_epoch, end_epoch)``."""

    stage: int
    start_epoch: int
    end_epoch: int
    resolution: int
    depth: int

    @property
    def config(self) -> SubnetConfig:
        return SubnetConfig(self.resolution, self.depth)

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch


def _round_to_multiple(value: float, step: int) -> int:
    """Nearest multiple of ``step`` (halves round up), never below ``step``."""
    return max(step, int(math.floor(value / step + 0.5)) * step)


def stage_boundaries(epochs: int, num_stages: int) -> list[int]:
    """Epochs at which each stage starts, plus the total: ``linspace(0, E, S + 1)`` truncated to ints.

    For 100 epochs and 4 stages this is ``[0, 25, 50, 75, 100]`` (reference facts, AutoProg code).
    """
    if num_stages < 1:
        raise ConfigError(f"number of stages must be >= 1, got {num_stages}")
    if epochs < num_stages:
        raise ConfigError(f"{num_stages} stages need at least {num_stages} epochs, got {epochs}")
    return [int(e) for e in np.linspace(0, epochs, num_stages + 1)]


@dataclass(frozen=True)
class GrowthSpace:
    """The per-axis values sub-networks may take (Sec. 3.1.2).

    Each axis is ``linspace(ratio, 1, num_stages) * full_value``, rounded to valid values:
    resolution to a multiple of ``resolution_step`` (the patch size for a ViT), depth to an integer.

    Example (paper, DeiT-S, ratio 0.5, 4 stages): resolution 224 / patch 16 gives
    ``[112, 144, 192, 224]`` and depth 12 gives ``[6, 8, 10, 12]``.

    Args:
        full_resolution: input size of the full model.
        full_depth: number of blocks of the full model.
        resolution_step: resolutions are multiples of this (patch size).
        ratio: initial scaling ratio ``r_0`` in (0, 1].
        num_stages: number of values per axis (= number of stages of a uniform schedule).
    """

    full_resolution: int
    full_depth: int
    resolution_step: int
    ratio: float = 0.5
    num_stages: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.num_stages < 1:
            raise ConfigError(f"number of stages must be >= 1, got {self.num_stages}")
        if self.resolution_step < 1 or self.full_resolution % self.resolution_step:
            raise ConfigError(
                f"resolution {self.full_resolution} is not a multiple of the patch size {self.resolution_step}"
            )
        if self.full_depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.full_depth}")

    @property
    def resolutions(self) -> list[int]:
        values = np.linspace(self.ratio, 1.0, self.num_stages) * self.full_resolution
        out = [min(self.full_resolution, _round_to_multiple(v, self.resolution_step)) for v in values]
        return _monotone(out)

    @property
    def depths(self) -> list[int]:
        values = np.linspace(self.ratio, 1.0, self.num_stages) * self.full_depth
        out = [min(self.full_depth, max(1, int(math.floor(v + 0.5)))) for v in values]
        return _monotone(out)

    @property
    def full(self) -> SubnetConfig:
        return SubnetConfig(self.full_resolution, self.full_depth)

    def contains(self, config: SubnetConfig) -> bool:
        return config.resolution in self.resolutions and config.depth in self.depths


def _monotone(values: list[int]) -> list[int]:
    return [max(values[: i + 1]) for i in range(len(values))]


@dataclass
class GrowthSchedule:
    """A plain, serialisable list of stages. ``stages[k]`` trains from its start to its end epoch."""

    stages: list[Stage]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("a growth schedule needs at least one stage")
        prev_end = 0
        for i, s in enumerate(self.stages):
            if s.stage != i:
                raise ConfigError(f"stage {i} is numbered {s.stage}")
            if s.start_epoch != prev_end or s.end_epoch <= s.start_epoch:
                raise ConfigError(f"stage {i} covers epochs [{s.start_epoch}, {s.end_epoch}): not contiguous")
            if s.depth < 1 or s.resolution < 1:
                raise ConfigError(f"stage {i} has depth {s.depth} and resolution {s.resolution}")
            prev_end = s.end_epoch

    @property
    def epochs(self) -> int:
        return self.stages[-1].end_epoch

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self):
        return iter(self.stages)

    def __getitem__(self, i: int) -> Stage:
        return self.stages[i]

    def stage_at(self, epoch: int) -> Stage:
        """The stage that trains during ``epoch`` (a pure function of the epoch: resumable)."""
        for s in self.stages:
            if s.start_epoch <= epoch < s.end_epoch:
                return s
        raise ValueError(f"epoch {epoch} is outside the schedule [0, {self.epochs})")

    def to_list(self) -> list[dict[str, int]]:
        return [asdict(s) for s in self.stages]

    @classmethod
    def from_list(cls, items: Iterable[dict]) -> GrowthSchedule:
        keys = ("stage", "start_epoch", "end_epoch", "resolution", "depth")
        try:
            return cls([Stage(**{k: int(d[k]) for k in keys}) for d in items])
        except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: int(inf)
            raise ConfigError(f"not a growth schedule (each stage needs {', '.join(keys)}): {e}") from e

    @classmethod
    def from_configs(cls, configs: Sequence[SubnetConfig], boundaries: Sequence[int]) -> GrowthSchedule:
        if len(boundaries) != len(configs) + 1:
            raise ConfigError("need one more boundary than stages")
        return cls(
            [
                Stage(i, boundaries[i], boundaries[i + 1], c.resolution, c.depth)
                for i, c in enumerate(configs)
            ]
        )


def full_schedule(space: GrowthSpace, epochs: int) -> GrowthSchedule:
    """The baseline: the full model for all epochs, as one stage."""
    return GrowthSchedule.from_configs([space.full], [0, epochs])


def prog_schedule(space: GrowthSpace, epochs: int) -> GrowthSchedule:
    """The manual uniform linear schedule **Prog** (Sec. 3.1.2).

    All axes scale by the same ratio at each stage ("uniform"), and the ratio rises linearly from
    ``r_0`` to 1 over ``num_stages`` equal stages ("linear").
    """
    bounds = stage_boundaries(epochs, space.num_stages)
    configs = [SubnetConfig(r, d) for r, d in zip(space.resolutions, space.depths, strict=True)]
    return GrowthSchedule.from_configs(configs, bounds)


def progstack_schedule(full_resolution: int, full_depth: int, epochs: int) -> GrowthSchedule:
    """Progressive stacking baseline (Appendix C, Tab. XVI): depth L/4 -> L/2 -> L, steps 1:2:5.

    Resolution stays at full size; depth grows by Stacking (rounded when L is not divisible by 4).
    """
    if full_depth < 3:
        raise ConfigError(f"progressive stacking needs a depth of at least 3, got {full_depth}")
    if epochs < 8:
        raise ConfigError(f"progressive stacking's 1:2:5 split needs at least 8 epochs, got {epochs}")
    e1 = max(1, round(epochs * 1 / 8))
    e2 = max(e1 + 1, round(epochs * 3 / 8))
    d2 = max(2, round(full_depth / 2))
    depths = [max(1, round(full_depth / 4)), d2, full_depth]
    return GrowthSchedule.from_configs(
        [SubnetConfig(full_resolution, d) for d in depths], [0, e1, e2, epochs]
    )
