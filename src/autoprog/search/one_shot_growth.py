"""AutoProg-One's search at one pre-training stage: supernet epochs, loss snapshots, the Eq. 6 decision (Sec. 3.2.3).

At a searched stage's start the current network becomes an elastic supernet over the stage's
candidates (:class:`~autoprog.growth.elastic.ElasticSupernet`: grown by the run's operator to the
widest candidate, or, before the first stage, a fresh full-depth model), which trains for a few
epochs, one candidate per step (random sampling by default, :mod:`autoprog.search.supernet`). In
the last search epoch the momentum network's loss on fixed training images is taken for every
candidate at evenly spread steps (the snapshots); a candidate's loss is their mean. Its runtime
term is ``runtime_fn`` (e.g. FLOPs), else the median of the step times the loop measured while it
trained, else ``measure_fn``. Eq. 6 decides (:func:`~autoprog.search.supernet.score_and_choose`),
then the chosen sub-network keeps the supernet's weights (weight recycling) or, without
recycling (Tab. XI), the pre-search network is grown to it.

:class:`OneShotGrowthSearch` is driven by :class:`~autoprog.controller.GrowthController`; it holds
the stage's state (checkpointable mid-search) and leaves the epochs and events to the controller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoprog.growth.elastic import ElasticSupernet
from autoprog.growth.growing import GrowingModel, Snapshot
from autoprog.growth.schedule import SubnetConfig
from autoprog.search.one_shot import CandidateResult, ScoreRule, StageSearch, power_law_score
from autoprog.search.supernet import CandidateSampler, CandidateSampling, SupernetSearch

#: ``score_fn(momentum_net, config) -> loss``: the search loss of a candidate on fixed data (Sec. 3.2.3).
ScoreFn = Callable[[nn.Module, SubnetConfig], float]
#: ``measure_fn(model, config) -> seconds``: a training step's time, for candidates never sampled.
MeasureFn = Callable[[nn.Module, SubnetConfig], float]
#: ``runtime_fn(config) -> value``: the runtime term instead of a measured time (e.g. FLOPs).
RuntimeFn = Callable[[SubnetConfig], float]


def snapshot_steps(n_epochs: int, steps_per_epoch: int, snapshots: int, total_steps: int | None = None) -> set[int]:
    """The supernet steps (counted from 1) after which the losses are snapshot: ``snapshots`` evenly
    spread over the last of ``n_epochs`` search epochs, or (a search of ``total_steps`` steps) over
    its second half."""
    if total_steps is not None:
        half = total_steps // 2
        return {half + max(1, round((total_steps - half) * (i + 1) / snapshots)) for i in range(snapshots)}
    spe = steps_per_epoch
    return {(n_epochs - 1) * spe + round(spe * (i + 1) / snapshots) for i in range(snapshots)}


def supernet_steps(fraction: float, stage_steps: int, candidates: int) -> int:
    """The supernet's steps when it trains for ``fraction`` of a stage of ``stage_steps`` steps: at
    least two rounds of the candidates, at most the stage less one step."""
    return max(1, min(stage_steps - 1, max(2 * candidates, round(fraction * stage_steps))))


class OneShotGrowthSearch:
    """The supernet search of one pre-training stage (module docstring).

    Args:
        net: the growing model (its model and momentum copy become the supernet).
        stage: the stage index.
        start_epoch: the budget epoch the stage starts at.
        candidates: the stage's candidates (:func:`~autoprog.search.one_shot.stage_candidates`).
        n_epochs: supernet epochs (the last one may end early: ``total_steps``).
        steps_per_epoch: optimizer steps per epoch (places the snapshots).
        snapshots: loss snapshots in the last supernet epoch.
        seed: the candidate sampler's seed (the same on every process).
        score_fn: the search loss of a candidate with the momentum network.
        runtime_fn: the runtime term instead of measured step times.
        measure_fn: a step's seconds, for candidates the supernet never sampled.
        sampling: ``"random"`` (the paper's) or ``"rounds"``, or a sampler object.
        rule: the score rule (Eq. 6 with the fitted balancing factor).
        broadcast: makes the decision's inputs identical across processes (rank 0's).
        total_steps: the supernet's length in steps (a fraction of the stage, :func:`supernet_steps`);
            ``None``: ``n_epochs`` whole epochs (the paper's). The search then ends after that many
            steps, in the middle of an epoch if need be (:meth:`end_step` says when).
    """

    def __init__(
        self,
        net: GrowingModel,
        stage: int,
        start_epoch: int,
        candidates: list[SubnetConfig],
        n_epochs: int,
        *,
        steps_per_epoch: int,
        snapshots: int,
        seed: int,
        score_fn: ScoreFn,
        runtime_fn: RuntimeFn | None = None,
        measure_fn: MeasureFn | None = None,
        sampling: CandidateSampling | CandidateSampler = "random",
        rule: ScoreRule = power_law_score,
        broadcast: Callable[[Any], Any] | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.net = net
        self.total_steps = total_steps
        self.stage = stage
        self.start_epoch = start_epoch
        self.n_epochs = n_epochs
        self.epochs_done = 0
        self.search: SupernetSearch[SubnetConfig] = SupernetSearch(
            candidates, sampling=sampling, seed=seed, score_source="snapshots", rule=rule
        )
        self.snapshot_steps = snapshot_steps(n_epochs, steps_per_epoch, snapshots, total_steps)
        self.score_fn = score_fn
        self.runtime_fn = runtime_fn
        self.measure_fn = measure_fn
        self.broadcast = broadcast
        self.t0 = time.perf_counter()
        self.scoring_time = 0.0
        self.supernet: ElasticSupernet | None = None
        self.before: Snapshot | None = None  #: the pre-search network, without weight recycling

    @property
    def candidates(self) -> list[SubnetConfig]:
        return self.search.candidates

    @property
    def widest(self) -> SubnetConfig:
        """The supernet's own shape: the largest candidate resolution and depth."""
        return SubnetConfig(max(c.resolution for c in self.candidates), max(c.depth for c in self.candidates))

    @property
    def skips_blocks(self) -> bool:
        """The candidates differ in depth: some supernet steps skip blocks."""
        return len({c.depth for c in self.candidates}) > 1

    @property
    def done(self) -> bool:
        if self.total_steps is not None:
            return self.search.steps >= self.total_steps
        return self.epochs_done >= self.n_epochs

    def build_supernet(self, current: SubnetConfig | None, recycle: bool) -> None:
        """Make the network the stage's elastic supernet: grown from the current one with the
        operator, or (no stage trained yet) the fresh full-depth model. Without ``recycle`` the
        pre-search network is kept to come back to."""
        net = self.net
        if not recycle:
            self.before = net.snapshot()
        if current is None:
            supernet = ElasticSupernet.from_scratch(
                net.adapter, net.model, min(c.depth for c in self.candidates), net.momentum
            )
        else:
            supernet = ElasticSupernet.grow(
                net.adapter, net.model, self.widest.depth, net.operator, momentum=net.momentum
            )
        net.rebuild(supernet.name_map)
        self.supernet = supernet

    # -- the supernet's steps --------------------------------------------------------------------

    def next_config(self) -> SubnetConfig:
        """The candidate of the next supernet step (its sub-network is switched on)."""
        config = self.search.next_candidate()
        assert self.supernet is not None
        self.supernet.set_depth(config.depth)
        return config

    def end_step(self, seconds: float | None = None) -> bool:
        """After a supernet step: its measured ``seconds``; a loss snapshot when one is due. ``True``
        when a search of ``total_steps`` steps has just taken its last one (conclude it now)."""
        self.search.record_step(seconds=seconds)
        if self.search.steps in self.snapshot_steps:
            self.snapshot()
        return self.total_steps is not None and self.search.steps == self.total_steps

    @torch.no_grad()
    def snapshot(self) -> None:
        """Every candidate's search loss with the momentum network, now."""
        assert self.supernet is not None and self.net.momentum is not None
        t0 = time.perf_counter()
        losses = []
        for c in self.candidates:
            self.supernet.set_depth(c.depth)
            losses.append(float(self.score_fn(self.net.momentum, c)))
        self.search.add_snapshot(losses)
        self.scoring_time += time.perf_counter() - t0

    def end_epoch(self) -> bool:
        """After a supernet epoch; ``True`` when it was the last (a search of ``total_steps`` steps
        ends in :meth:`end_step` instead)."""
        self.epochs_done += 1
        return self.total_steps is None and self.done

    # -- the decision ----------------------------------------------------------------------------

    def runtime(self, config: SubnetConfig) -> float:
        """The candidate's runtime term: ``runtime_fn``, else its median measured step time, else
        ``measure_fn``, else ``inf`` (never sampled, nothing to measure it with: never chosen)."""
        if self.runtime_fn is not None:
            return float(self.runtime_fn(config))
        measured = self.search.median_time(config)
        if measured is not None:
            return measured
        if self.measure_fn is None:
            return math.inf
        assert self.supernet is not None
        self.supernet.set_depth(config.depth)
        t0 = time.perf_counter()
        seconds = float(self.measure_fn(self.net.model, config))
        self.scoring_time += time.perf_counter() - t0
        return seconds

    def conclude(self, current: SubnetConfig | None, recycle: bool) -> tuple[SubnetConfig, dict[str, Any]]:
        """Decide (Eq. 6), make the network the chosen sub-network, and return it with the search
        record (``summary.json``'s ``search`` entry)."""
        assert self.supernet is not None
        if not self.search.has_losses:
            self.snapshot()  # an epoch shorter than the snapshot schedule: score once at the end
        decision = self.search.decide([self.runtime(c) for c in self.candidates], self.broadcast)
        results = [
            CandidateResult(c.resolution, c.depth, loss, rt, math.nan if score is None else score, snaps)
            for c, loss, rt, score, snaps in zip(
                self.candidates, decision.losses, decision.runtimes, decision.scores, decision.samples, strict=True
            )
        ]
        chosen = decision.chosen
        if recycle:  # weight recycling: the chosen sub-network inherits the supernet's weights
            self.net.rebuild(self.supernet.materialise(chosen.depth))
        else:
            assert self.before is not None
            self.supernet.materialise(chosen.depth)
            self.net.restore(self.before, chosen.depth, afresh=current is None)
        record = StageSearch(
            self.stage, self.start_epoch, self.n_epochs, decision.balancing_factor, results, chosen,
            time.perf_counter() - self.t0,
        ).to_dict()  # fmt: skip
        record["scoring_time_s"] = self.scoring_time
        return chosen, record

    # -- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The search in progress: candidates, epochs, the sampler's RNG, step times, loss snapshots."""
        s = self.search
        return {
            "stage": self.stage,
            "start_epoch": self.start_epoch,
            "candidates": [[c.resolution, c.depth] for c in self.candidates],
            "n_epochs": self.n_epochs,
            "epochs_done": self.epochs_done,
            "rng": s.sampler.state_dict(),
            "times": [s.times[c] for c in self.candidates],
            "losses": [s.losses[c] for c in self.candidates],
            "steps": s.steps,
            "snapshot_steps": sorted(self.snapshot_steps),
            "total_steps": self.total_steps,
            "scoring_time": self.scoring_time,
            "elapsed": time.perf_counter() - self.t0,
        }

    def load_state_dict(self, saved: dict[str, Any], supernet: ElasticSupernet | None) -> None:
        """Continue :meth:`state_dict`'s search on the restored ``supernet``."""
        self.epochs_done, self.scoring_time = saved["epochs_done"], saved["scoring_time"]
        self.search.load_state_dict(
            {"steps": saved["steps"], "losses": saved["losses"], "times": saved["times"], "sampler": saved["rng"]}
        )
        self.snapshot_steps = set(saved["snapshot_steps"])
        self.total_steps = saved.get("total_steps")
        self.t0 = time.perf_counter() - saved["elapsed"]
        self.supernet = supernet


__all__ = ["MeasureFn", "OneShotGrowthSearch", "RuntimeFn", "ScoreFn", "snapshot_steps", "supernet_steps"]
