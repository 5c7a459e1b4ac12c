"""The runtime term of a search: one training step's time per candidate, measured once per run (Eq. 6, Eq. 19).

:class:`StepTimes` times the candidates a search has not timed before in interleaved rounds
(:func:`~autoprog.search.one_shot.measure_step_times`: A B C A B C ..., so a drift falls on every
candidate alike) and caches the result per candidate: candidates recur across stages and a
sub-network's cost does not change during a run. With a deterministic ``runtime`` (the step's
training FLOPs, ``--search-runtime flops``) nothing is timed and a searched schedule is reproducible.
Fine-tuning's searches (AutoProg-Zero, AutoProg-One) and the Lightning callback use it.

Example::

    times = StepTimes(model, configure=make_learnable, step_for=lambda c: lambda: loss(model, probe[c]).backward())
    seconds = times.measure(candidates)      # new candidates timed, the others from the cache
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, MutableMapping, Sequence
from typing import Generic, TypeVar

import torch
from torch import nn

from autoprog.search.one_shot import measure_step_times

C = TypeVar("C", bound=Hashable)


class StepTimes(Generic[C]):
    """Seconds (or another runtime term) of one training step per candidate, cached.

    Args:
        module: the network being timed (its gradients are cleared after every :meth:`measure`
            that times).
        configure: ``configure(candidate)`` makes the candidate's sub-network the one that trains
            (untimed); called before each timed step and before ``runtime``.
        step_for: ``step_for(candidate) -> step``: the candidate's training step (forward + backward
            on fixed data) as a function of no arguments. Called untimed, once per new candidate,
            before the timing, so data preparation is not timed.
        runtime: ``runtime(candidate) -> value`` instead of timing (e.g. its training FLOPs);
            deterministic, so the search is reproducible. Called with the candidate configured.
        repeats: timed steps per candidate (the median is kept).
        warmup: untimed rounds first.
        device: synchronised around each timed step on a GPU.
        cache: the candidate -> value mapping to fill (a run keeps and checkpoints it); a new
            dict by default.
    """

    def __init__(
        self,
        module: nn.Module,
        configure: Callable[[C], object],
        step_for: Callable[[C], Callable[[], object]] | None = None,
        *,
        runtime: Callable[[C], float] | None = None,
        repeats: int = 3,
        warmup: int = 1,
        device: torch.device | None = None,
        cache: MutableMapping[C, float] | None = None,
    ) -> None:
        if step_for is None and runtime is None:
            raise ValueError("StepTimes needs step_for (to time steps) or runtime (instead of timing)")
        self.module = module
        self.configure = configure
        self.step_for = step_for
        self.runtime = runtime
        self.repeats = repeats
        self.warmup = warmup
        self.device = device
        self.cache: MutableMapping[C, float] = {} if cache is None else cache

    def measure(self, candidates: Sequence[C]) -> list[float]:
        """Fill the cache for the candidates not in it yet, then return every candidate's value."""
        new = [c for c in dict.fromkeys(candidates) if c not in self.cache]
        if self.runtime is not None:
            for c in new:
                self.configure(c)
                self.cache[c] = float(self.runtime(c))
        else:  # the gradients of the timed steps are cleared even when nothing was new
            assert self.step_for is not None
            steps = [self.step_for(c) for c in new]
            seconds = measure_step_times(
                len(new),
                lambda i: self.configure(new[i]),
                lambda i: steps[i](),
                repeats=self.repeats,
                warmup=self.warmup,
                device=self.device,
            )
            for p in self.module.parameters():
                p.grad = None
            self.cache.update(zip(new, seconds, strict=True))
        return [self.cache[c] for c in candidates]

    def __getitem__(self, candidate: C) -> float:
        return self.cache[candidate]

    def __contains__(self, candidate: object) -> bool:
        return candidate in self.cache


__all__ = ["StepTimes"]
