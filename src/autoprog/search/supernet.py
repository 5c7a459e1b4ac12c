"""One stage's supernet search, for any kind of candidate (AutoProg-One, Sec. 3.2.3 and Sec. 5.1.2, Eq. 6).

A supernet holds every candidate sub-network of a stage; each training step trains one of them.
:class:`SupernetSearch` keeps what the search gathers and takes its decision, whatever a candidate
is (a growth :class:`~autoprog.growth.schedule.SubnetConfig` in pre-training, an unfreezing
:class:`~autoprog.unfreeze.schedule.UnfreezeConfig` in fine-tuning). The rule pieces are explicit
and swappable:

- **candidate sampling** (which candidate a supernet step trains): ``"random"``, an independent
  uniform draw per step from a seeded generator (:class:`RandomSampler`, pre-training), or
  ``"rounds"``, shuffled equal-step rounds, every candidate once per round (:class:`RoundSampler`,
  fine-tuning: a short search cannot leave a candidate untrained); or any :class:`CandidateSampler`;
- **score source** (what a candidate's loss is the mean of): ``"snapshots"``, losses of a score
  function taken at chosen steps (pre-training: the momentum network on fixed training images,
  :meth:`SupernetSearch.add_snapshot`), or ``"training-loss"``, the candidate's own training losses
  during the search (fine-tuning, :meth:`SupernetSearch.record_step`);
- **score rule**: Eq. 6 with the fitted balancing factor (:func:`~autoprog.search.one_shot.power_law_score`)
  by default; any :data:`~autoprog.search.one_shot.ScoreRule`.

The runtime term comes from the caller (measured step times, :class:`~autoprog.search.step_times.StepTimes`,
or FLOPs). A candidate is scored when its loss and runtime are finite; the lowest score wins, ties
go to the faster candidate, then to the earlier one.

Example (fine-tuning's search)::

    search = SupernetSearch(candidates, sampling="rounds", seed=seed, score_source="training-loss")
    for _ in range(n_steps):
        c = search.next_candidate()
        search.record_step(loss=train_step(c))
    decision = search.decide([step_time(c) for c in candidates])
    chosen = decision.chosen
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from autoprog.checkpoint import random_state, set_random_state
from autoprog.search.one_shot import ScoreRule, power_law_balancing_factor, power_law_score

C = TypeVar("C", bound=Hashable)

#: How supernet steps pick their candidate (see the module docstring).
CandidateSampling = Literal["random", "rounds"]
#: What a candidate's search loss is the mean of (see the module docstring).
ScoreSource = Literal["snapshots", "training-loss"]


class CandidateSampler(Protocol):
    """``sampler(step) -> index`` of the candidate supernet step ``step`` (0, 1, ...) trains."""

    def __call__(self, step: int) -> int: ...

    def state_dict(self) -> Any:
        """What a checkpoint needs to continue the same draws (plain values)."""
        ...

    def load_state_dict(self, state: Any) -> None: ...


class RandomSampler:
    """``"random"``: an independent uniform draw per step from ``random.Random(seed)`` (Sec. 3.2.3).

    The draws depend on how many were taken, not on the step number, so the generator's state is
    what a checkpoint keeps."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = random.Random(seed)

    def __call__(self, step: int) -> int:
        return self.rng.randrange(self.n)

    def state_dict(self) -> Any:
        return random_state(self.rng)

    def load_state_dict(self, state: Any) -> None:
        set_random_state(state, self.rng)


class RoundSampler:
    """``"rounds"``: shuffled equal-step rounds. Steps ``r * n ... r * n + n - 1`` train every candidate
    once, in the order ``random.Random(seed + r)`` shuffles ``0 .. n-1`` to, so every candidate is
    trained (and scored) even in a short search. A pure function of the step: nothing to checkpoint."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed

    def __call__(self, step: int) -> int:
        r, j = divmod(step, self.n)
        order = list(range(self.n))
        random.Random(self.seed + r).shuffle(order)
        return order[j]

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass


SAMPLERS: dict[str, Callable[[int, int], CandidateSampler]] = {"random": RandomSampler, "rounds": RoundSampler}


@dataclass
class SupernetDecision(Generic[C]):
    """A supernet search's decision and the numbers it rests on, one entry per candidate.

    Attributes:
        candidates: the stage's candidates, in order.
        index: the chosen one's index.
        losses: each candidate's search loss (the mean of its samples; ``inf`` without any).
        runtimes: each candidate's runtime term (seconds or FLOPs).
        scores: each scored candidate's score (lower is better), ``None`` for one not scored (a
            non-finite loss or runtime).
        samples: each candidate's loss samples (snapshots or training losses).
        balancing_factor: Eq. 6's ``w`` fitted over the scored candidates
            (:func:`~autoprog.search.one_shot.power_law_balancing_factor`).
    """

    candidates: list[C]
    index: int
    losses: list[float]
    runtimes: list[float]
    scores: list[float | None]
    samples: list[list[float]]
    balancing_factor: float

    @property
    def chosen(self) -> C:
        return self.candidates[self.index]


def score_and_choose(
    candidates: Sequence[C],
    losses: Sequence[float],
    runtimes: Sequence[float],
    samples: Sequence[Sequence[float]] | None = None,
    rule: ScoreRule = power_law_score,
) -> SupernetDecision[C]:
    """Score the candidates with finite loss and runtime by ``rule`` (Eq. 6 by default) and choose
    the lowest score (ties: the faster, then the earlier); when none can be scored, the fastest."""
    scored = [i for i in range(len(candidates)) if math.isfinite(losses[i]) and math.isfinite(runtimes[i])]
    scores: list[float | None] = [None] * len(candidates)
    for i, s in zip(scored, rule([losses[i] for i in scored], [runtimes[i] for i in scored]), strict=True):
        scores[i] = s
    w = power_law_balancing_factor([losses[i] for i in scored], [runtimes[i] for i in scored])
    w = max(w, getattr(rule, "w_floor", 0.0))  # a floored Eq. 6 (autoprog.search.rules) reports the w it used
    w = getattr(rule, "w_fixed", w)  # so does one with a fixed w
    if scored:
        index = min(scored, key=lambda i: (scores[i], runtimes[i]))
    else:
        index = min(range(len(candidates)), key=lambda i: runtimes[i])
    return SupernetDecision(
        list(candidates), index, [float(v) for v in losses], [float(v) for v in runtimes], scores,
        [list(v) for v in samples] if samples is not None else [[] for _ in candidates], w,
    )  # fmt: skip


class SupernetSearch(Generic[C]):
    """The state of one stage's supernet search and its decision (module docstring).

    Args:
        candidates: the stage's candidate sub-networks (hashable; e.g. ``SubnetConfig``).
        sampling: ``"random"`` or ``"rounds"`` (:data:`SAMPLERS`), or a ready :class:`CandidateSampler`.
        seed: the sampler's seed.
        score_source: ``"snapshots"`` (:meth:`add_snapshot`) or ``"training-loss"`` (:meth:`record_step`).
        rule: the score rule (Eq. 6 with the fitted balancing factor by default).

    Attributes:
        steps: supernet steps recorded so far.
        losses: per candidate, its loss samples.
        times: per candidate, the measured seconds of its steps (when the loop gives them).
        last: the candidate of the latest :meth:`next_candidate` (``None`` before any).
    """

    def __init__(
        self,
        candidates: Sequence[C],
        *,
        sampling: CandidateSampling | CandidateSampler,
        seed: int = 0,
        score_source: ScoreSource,
        rule: ScoreRule = power_law_score,
    ) -> None:
        if not candidates:
            raise ValueError("a supernet search needs at least one candidate")
        if score_source not in ("snapshots", "training-loss"):
            raise ValueError(f"score_source is snapshots or training-loss, got {score_source!r}")
        self.candidates = list(candidates)
        if isinstance(sampling, str):
            if sampling not in SAMPLERS:
                raise ValueError(f"sampling is one of {', '.join(SAMPLERS)}, got {sampling!r}")
            self.sampler: CandidateSampler = SAMPLERS[sampling](len(self.candidates), seed)
        else:
            self.sampler = sampling
        self.score_source = score_source
        self.rule = rule
        self.steps = 0
        self.losses: dict[C, list[float]] = {c: [] for c in self.candidates}
        self.times: dict[C, list[float]] = {c: [] for c in self.candidates}
        self.last: C | None = None

    def next_candidate(self) -> C:
        """The candidate the next supernet step trains (by the sampler)."""
        self.last = self.candidates[self.sampler(self.steps)]
        return self.last

    def record_step(self, seconds: float | None = None, loss: float | None = None) -> None:
        """After the step of :attr:`last`: its measured ``seconds`` (optional) and, with the
        ``"training-loss"`` score source, its training ``loss`` (required)."""
        if (loss is not None) != (self.score_source == "training-loss"):
            raise ValueError(
                f"record_step(loss=...) is for the training-loss score source; this search scores by {self.score_source}"
            )
        if self.last is not None:
            if seconds is not None:
                self.times[self.last].append(seconds)
            if loss is not None:
                self.losses[self.last].append(loss)
        self.steps += 1

    def add_snapshot(self, losses: Sequence[float]) -> None:
        """One snapshot of the ``"snapshots"`` score source: a loss per candidate, in order."""
        if self.score_source != "snapshots":
            raise ValueError(f"add_snapshot is for the snapshots score source; this search scores by {self.score_source}")
        for c, v in zip(self.candidates, losses, strict=True):
            self.losses[c].append(float(v))

    @property
    def has_losses(self) -> bool:
        return any(self.losses.values())

    def mean_loss(self, candidate: C) -> float:
        """The candidate's search loss: the mean of its samples (``inf`` without any)."""
        v = self.losses[candidate]
        return sum(v) / len(v) if v else math.inf

    def median_time(self, candidate: C) -> float | None:
        """The median of the candidate's measured step times, the first (warm-up) dropped when there
        are more; ``None`` when it was never timed."""
        samples = self.times[candidate][1:] or self.times[candidate]
        return float(sorted(samples)[len(samples) // 2]) if samples else None

    def decide(
        self, runtimes: Sequence[float], broadcast: Callable[[Any], Any] | None = None
    ) -> SupernetDecision[C]:
        """Choose by :attr:`rule` over each candidate's mean loss and its runtime term (``runtimes``,
        in order). ``broadcast`` makes the decision's inputs identical on every process (rank 0's)."""
        measured = ([self.mean_loss(c) for c in self.candidates], list(runtimes),
                    [list(self.losses[c]) for c in self.candidates])  # fmt: skip
        if broadcast is not None:
            measured = broadcast(measured)
        losses, runtimes, samples = measured
        return score_and_choose(self.candidates, losses, runtimes, samples, self.rule)

    # -- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Steps, loss samples and step times (per candidate, in order), the sampler's state."""
        return {
            "steps": self.steps,
            "losses": [list(self.losses[c]) for c in self.candidates],
            "times": [list(self.times[c]) for c in self.candidates],
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.losses = {c: list(v) for c, v in zip(self.candidates, state["losses"], strict=True)}
        times = state.get("times") or [[] for _ in self.candidates]
        self.times = {c: list(v) for c, v in zip(self.candidates, times, strict=True)}
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])


__all__ = [
    "SAMPLERS",
    "CandidateSampler",
    "CandidateSampling",
    "RandomSampler",
    "RoundSampler",
    "ScoreSource",
    "SupernetDecision",
    "SupernetSearch",
    "score_and_choose",
]
