"""One-shot, runtime-aware search of each stage's sub-network (AutoProg-One, Sec. 3.2.2-3.2.3, Eq. 6-9).

At the start of every stage but the last, an elastic supernet is trained for a few epochs (weight
recycling: those epochs are training epochs); then every candidate sub-network of the stage's
growth space is scored by its loss (on a fixed subset of training data, with the momentum
network) and its measured step time, combined by Eq. 6: ``score = L * T^w``, with the balancing
factor ``w`` fitted to the candidates (:func:`power_law_balancing_factor`). The rule is one small
function; pass another ``rule`` to :func:`choose` to swap it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from autoprog.growth.schedule import GrowthSpace, SubnetConfig


def stage_candidates(space: GrowthSpace, stage: int, current: SubnetConfig | None) -> list[SubnetConfig]:
    """The growth space of one stage (Appendix B, "Growth Space in Each Stage").

    Stage 0: the smallest, middle and largest value of each axis (so the full model is a candidate:
    if no good "ticket" exists, training proceeds normally). Later stages: resolution in
    {current, next}; depth in the next up to 3 values (depth is forced to grow, unless full).
    """
    res, dep = space.resolutions, space.depths
    if stage == 0 or current is None:
        pick = sorted({0, len(res) // 2, len(res) - 1})
        rs = sorted({res[i] for i in pick})
        ds = sorted({dep[i] for i in pick})
    else:
        r_i = _index_at_or_below(res, current.resolution)
        rs = sorted({res[r_i], res[min(r_i + 1, len(res) - 1)], current.resolution})
        rs = [r for r in rs if r >= current.resolution]
        bigger = [d for d in sorted(set(dep)) if d > current.depth]
        ds = bigger[:3] if bigger else [current.depth]
    return [SubnetConfig(r, d) for r in rs for d in ds]


def _index_at_or_below(values: Sequence[int], v: int) -> int:
    idx = [i for i, x in enumerate(values) if x <= v]
    return idx[-1] if idx else 0


def power_law_balancing_factor(losses: Sequence[float], times: Sequence[float]) -> float:
    """Fit ``L = a * T^b`` over the candidates (least squares in log-log); return ``w = max(-b, 0)``.

    This is how the authors pick Eq. 6's balancing factor: if, over the candidates, loss falls as a
    power ``-b`` of time, the score ``L * T^w`` with ``w = -b`` makes them equally good, so the
    search prefers whichever candidate beats the trend.

    Note: with only two candidates the fit is exact, so the scores tie whenever the slower one has
    the lower loss (and the tie goes to the faster); the rule never prefers the slower of two.
    """
    t = np.log(np.asarray(times, dtype=np.float64))
    loss = np.log(np.asarray(losses, dtype=np.float64))
    if len(t) < 2 or np.ptp(t) == 0:
        return 0.0
    b = np.polyfit(t, loss, 1)[0]
    return float(max(-b, 0.0))


def power_law_score(losses: Sequence[float], times: Sequence[float]) -> list[float]:
    """Eq. 6 with the fitted balancing factor: ``score_i = L_i * T_i^w`` (lower is better)."""
    w = power_law_balancing_factor(losses, times)
    return [float(loss * tm**w) for loss, tm in zip(losses, times, strict=True)]


ScoreRule = Callable[[Sequence[float], Sequence[float]], list[float]]


@dataclass
class CandidateResult:
    """One candidate of a stage search and its measurements."""

    resolution: int
    depth: int
    loss: float
    runtime_s: float
    score: float = math.nan
    loss_snapshots: list[float] = field(default_factory=list)

    @property
    def config(self) -> SubnetConfig:
        return SubnetConfig(self.resolution, self.depth)


def choose(results: list[CandidateResult], rule: ScoreRule = power_law_score) -> CandidateResult:
    """Score every candidate with ``rule`` (Eq. 6 by default) and return the best (ties: the faster)."""
    scores = rule([r.loss for r in results], [r.runtime_s for r in results])
    for r, s in zip(results, scores, strict=True):
        r.score = s
    return min(results, key=lambda r: (r.score, r.runtime_s))


@dataclass
class StageSearch:
    """The record of one stage's search, as written to ``summary.json`` under ``search``."""

    stage: int
    start_epoch: int
    search_epochs: int
    balancing_factor: float
    candidates: list[CandidateResult]
    chosen: SubnetConfig
    search_time_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "start_epoch": self.start_epoch,
            "search_epochs": self.search_epochs,
            "balancing_factor": self.balancing_factor,
            "candidates": [asdict(c) for c in self.candidates],
            "chosen": asdict(self.chosen),
            "search_time_s": self.search_time_s,
        }


def measure_step_time(
    step: Callable[[], None], repeats: int = 3, warmup: int = 1, device: torch.device | None = None
) -> float:
    """Median wall-clock seconds of ``step()`` (a forward + backward), synchronised on GPU."""
    return measure_step_times(1, lambda i: None, lambda i: step(), repeats, warmup, device)[0]


def measure_step_times(
    n: int,
    configure: Callable[[int], None],
    step: Callable[[int], None],
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | None = None,
) -> list[float]:
    """Median wall-clock seconds of ``step(i)`` for each of ``n`` candidates, timed in interleaved
    rounds (0, 1, ..., n-1, 0, 1, ...), synchronised on GPU.

    ``configure(i)`` (untimed) switches the model to candidate ``i``. Interleaving spreads whatever
    drifts during the measurement over every candidate alike: a process's first steps run slower
    (allocator and kernel caches still cold), and so does every step while another process shares
    the machine. Timed one after the other, the first candidate measured once looked 50 % slower
    than a larger one (the runtime term of Eq. 6 and Eq. 19 is a comparison, so only the order matters).
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for i in range(n):
            configure(i)
            step(i)
    sync()
    times: list[list[float]] = [[] for _ in range(n)]
    for _ in range(repeats):
        for i in range(n):
            configure(i)
            sync()
            t0 = time.perf_counter()
            step(i)
            sync()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]
