"""Learnable sub-networks, unfreezing spaces and unfreezing schedules (paper Sec. 4.1.1, 4.2).

A *learnable sub-network* of a pretrained model is fixed by two numbers: the input resolution and
the unfreezing **level**. Level ``k`` of ``L`` makes the transformer blocks with ``i % L < k``
learnable, interleaved over the depth as the authors' code does (level 1 = every ``L``-th block, the
last level = all blocks); parameters outside the blocks (embedders, final layer) always learn.
Blocks are selected by their exact module path (``blocks.1`` never matches ``blocks.10``), fixing
the substring match of the released code (reference facts).

An :class:`UnfreezeSchedule` is a plain list of :class:`FinetuneStage` records over training
*steps*; it serialises to the ``schedule`` list of ``summary.json`` and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from autoprog.errors import ConfigError


@dataclass(frozen=True, order=True)
class UnfreezeConfig:
    """One learnable sub-network: input resolution (pixels) and unfreezing level (1..num_levels)."""

    resolution: int
    level: int


def level_blocks(num_blocks: int, level: int, num_levels: int = 4) -> list[int]:
    """Indices of the learnable blocks at ``level``: ``i % num_levels < level`` (interleaved).

    >>> level_blocks(8, 1)
    [0, 4]
    >>> level_blocks(8, 2)
    [0, 1, 4, 5]
    """
    if not 1 <= level <= num_levels:
        raise ConfigError(f"unfreezing level must be in 1..{num_levels}, got {level}")
    return [i for i in range(num_blocks) if i % num_levels < level]


def _under(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".")


def set_trainable(
    model: nn.Module,
    block_paths: Sequence[str],
    learnable_blocks: Iterable[int],
    *,
    always: Callable[[str], bool] | None = None,
) -> int:
    """Make exactly the parameters of ``learnable_blocks`` (plus the non-block ones) learnable.

    Args:
        model: the model whose ``requires_grad`` flags are set.
        block_paths: module path of each block, in order (e.g. ``transformer_blocks.3``).
        learnable_blocks: indices into ``block_paths`` that learn.
        always: parameters for which this returns True learn even inside a frozen block (e.g. the
            per-block class embedders of diffusers' DiT). Parameters outside every block always learn.

    Returns:
        The number of learnable parameter elements.
    """
    chosen = [block_paths[i] for i in learnable_blocks]
    n = 0
    for name, p in model.named_parameters():
        in_block = any(_under(name, b) for b in block_paths)
        learn = (not in_block) or any(_under(name, b) for b in chosen) or bool(always and always(name))
        p.requires_grad_(learn)
        n += p.numel() if learn else 0
    return n


def step_boundaries(steps: int, num_stages: int) -> list[int]:
    """Steps at which each stage starts, plus the total: ``linspace(0, N, S + 1)`` truncated."""
    if num_stages < 1:
        raise ConfigError(f"number of stages must be >= 1, got {num_stages}")
    if steps < num_stages:
        raise ConfigError(f"{num_stages} stages need at least {num_stages} steps, got {steps}")
    return [int(e) for e in np.linspace(0, steps, num_stages + 1)]


@dataclass(frozen=True)
class UnfreezeSpace:
    """Per-axis values of the learnable sub-networks (Sec. 4.1.1; reference facts).

    Resolution: ``linspace(ratio, 1, num_stages) * full_resolution`` rounded to a multiple of
    ``resolution_step`` (the patch size, times the VAE factor in latent space). Level: ``1..num_levels``.
    The authors' DiT setting is ratio 0.25 at 256 px: ``[64, 128, 192, 256]`` x levels ``1..4``.
    """

    full_resolution: int
    resolution_step: int
    ratio: float = 0.25
    num_stages: int = 4
    num_levels: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.num_stages < 1 or self.num_levels < 1:
            raise ConfigError("stages and levels must be >= 1")
        if self.resolution_step < 1 or self.full_resolution % self.resolution_step:
            raise ConfigError(
                f"resolution {self.full_resolution} is not a multiple of the patch size {self.resolution_step}"
            )

    @property
    def resolutions(self) -> list[int]:
        step = self.resolution_step
        values = np.linspace(self.ratio, 1.0, self.num_stages) * self.full_resolution
        out = [min(self.full_resolution, max(step, int(math.floor(v / step + 0.5)) * step)) for v in values]
        return sorted(set(out))

    @property
    def levels(self) -> list[int]:
        return list(range(1, self.num_levels + 1))

    @property
    def full(self) -> UnfreezeConfig:
        return UnfreezeConfig(self.full_resolution, self.num_levels)

    def contains(self, c: UnfreezeConfig) -> bool:
        return c.resolution in self.resolutions and c.level in self.levels


def zero_shot_candidates(
    space: UnfreezeSpace, stage: int, current: UnfreezeConfig | None
) -> list[UnfreezeConfig]:
    """The stage's candidates (reference facts): stage 0 takes the two smallest values of each axis;
    later stages ``{current, next}`` on each axis. The last stage is not searched: it is the full model."""
    res, lev = space.resolutions, space.levels
    if stage == 0 or current is None:
        rs, ls = res[:2], lev[:2]
    else:
        ri, li = res.index(current.resolution), lev.index(current.level)
        rs, ls = res[ri : ri + 2], lev[li : li + 2]
    return [UnfreezeConfig(r, level) for r in rs for level in ls]


@dataclass(frozen=True)
class FinetuneStage:
    """One stage: the learnable sub-network trained for steps ``[start_step, end_step)``."""

    stage: int
    start_step: int
    end_step: int
    resolution: int
    level: int

    @property
    def config(self) -> UnfreezeConfig:
        return UnfreezeConfig(self.resolution, self.level)

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass
class UnfreezeSchedule:
    """A plain, serialisable list of fine-tuning stages covering ``[0, total steps)`` contiguously."""

    stages: list[FinetuneStage]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("an unfreezing schedule needs at least one stage")
        prev = 0
        for i, s in enumerate(self.stages):
            if s.stage != i or s.start_step != prev or s.end_step <= s.start_step:
                raise ConfigError(f"stage {i} covers steps [{s.start_step}, {s.end_step}): not contiguous")
            prev = s.end_step

    @property
    def steps(self) -> int:
        return self.stages[-1].end_step

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self):
        return iter(self.stages)

    def __getitem__(self, i: int) -> FinetuneStage:
        return self.stages[i]

    def to_list(self) -> list[dict[str, int]]:
        return [asdict(s) for s in self.stages]

    @classmethod
    def from_list(cls, items: Iterable[dict]) -> UnfreezeSchedule:
        keys = ("stage", "start_step", "end_step", "resolution", "level")
        try:
            return cls([FinetuneStage(**{k: int(d[k]) for k in keys}) for d in items])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not an unfreezing schedule (each stage needs {', '.join(keys)}): {e}") from e

    @classmethod
    def from_configs(cls, configs: Sequence[UnfreezeConfig], boundaries: Sequence[int]) -> UnfreezeSchedule:
        if len(boundaries) != len(configs) + 1:
            raise ConfigError("need one more boundary than stages")
        return cls(
            [
                FinetuneStage(i, boundaries[i], boundaries[i + 1], c.resolution, c.level)
                for i, c in enumerate(configs)
            ]
        )


def full_unfreeze_schedule(space: UnfreezeSpace, steps: int) -> UnfreezeSchedule:
    """Full fine-tuning: every parameter learns at full resolution for all steps."""
    return UnfreezeSchedule.from_configs([space.full], [0, steps])


def prog_unfreeze_schedule(space: UnfreezeSpace, steps: int) -> UnfreezeSchedule:
    """Prog for fine-tuning: uniform linear unfreezing, stage ``k`` at the ``k``-th resolution and
    level ``k + 1`` (Sec. 4.1.1 with the manual schedule of Sec. 3.1.2); the last stage is the full model."""
    bounds = step_boundaries(steps, space.num_stages)
    res, lev = space.resolutions, space.levels
    configs = []
    for k in range(space.num_stages):
        t = k / max(1, space.num_stages - 1)
        configs.append(UnfreezeConfig(res[round(t * (len(res) - 1))], lev[round(t * (len(lev) - 1))]))
    configs[-1] = space.full
    return UnfreezeSchedule.from_configs(configs, bounds)
