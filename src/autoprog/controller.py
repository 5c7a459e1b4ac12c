"""Progressive pre-training from any training loop: :class:`GrowthController` (paper Sec. 3, Alg. 1).

The controller owns what changes shape during a progressive run: the model, its momentum (EMA)
copy and the optimizer. The loop owns everything else (data, loss, learning rate, logging). Per
epoch the controller says what to train (:meth:`GrowthController.begin_epoch` returns an
:class:`EpochSpec`); per step it says which sub-network (:meth:`GrowthController.next_config`) and
takes the step's time (:meth:`GrowthController.end_step`). At stage boundaries it grows the model
(a fixed schedule: Prog, a replayed one), trains an elastic supernet and searches the stage's
sub-network (AutoProg-One, Sec. 3.2.3), or scores the stage's candidates zero-shot on fixed probe
data and grows into the winner (AutoProg-Zero, Sec. 4.2, applied to pre-training as in Sec. 5.2.3),
then hands back a rebuilt optimizer, keyed by parameter name. After any :class:`Event` the loop
must re-read :attr:`GrowthController.model` and :attr:`GrowthController.optimizer` (and re-wrap
the model, e.g. in DDP).

A plain loop::

    ctl = GrowthController(adapter, create_plan("autoprog-one", space, epochs=8),
                           steps_per_epoch=len(loader), score_fn=my_score)
    while (spec := ctl.begin_epoch()) is not None:
        for x, y in loader:
            config = ctl.next_config()               # resolution + depth of this step
            loss = F.cross_entropy(ctl.model(adapter.prepare_input(x, config.resolution)), y)
            ctl.optimizer.zero_grad(); loss.backward(); ctl.optimizer.step()
            ctl.end_step()
        ctl.end_epoch()

AutoProg-Zero needs no supernet and no search epochs: pass ``probe=ZeroShotProbe(batches)``
(at least 2 fixed ``(inputs, targets)`` batches) with ``create_plan("autoprog-zero", ...)``.
AutoProg-One by trials (the ``trial`` search rule) needs no supernet either: pass
``trial_fn(net, config, steps, step) -> (loss, seconds)``, which trains a copy of the network as
``config`` and examines it (:mod:`autoprog.search.trial_growth`), and ``trial_fraction``.

Decisions are taken the same way on every process: supernet sampling is seeded by the stage, and
the measured results a choice rests on pass through ``broadcast`` (rank 0's are used everywhere).

The controller composes small core objects, each usable alone: the growing network
(:class:`~autoprog.growth.growing.GrowingModel`: the model, momentum copy and optimizer kept paired by
name through every change of shape), a stage's one-shot search
(:class:`~autoprog.search.one_shot_growth.OneShotGrowthSearch` over the generic
:class:`~autoprog.search.supernet.SupernetSearch`) and its zero-shot search
(:class:`~autoprog.search.zero_shot_growth.ZeroShotGrowthSearch`), or its trials
(:class:`~autoprog.search.trial_growth.TrialGrowthSearch`). It keeps the plan, the stage and
epoch bookkeeping, the events and the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from autoprog.adapters.base import ModelAdapter
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth.growing import GrowingModel, OptimizerFactory
from autoprog.growth.operators import GrowthOperator, create_operator
from autoprog.growth.schedule import (
    GrowthSchedule,
    GrowthSpace,
    Stage,
    SubnetConfig,
    full_schedule,
    prog_schedule,
    progstack_schedule,
    stage_boundaries,
)
from autoprog.optim import build_optimizer
from autoprog.search.one_shot import (
    CandidateResult,
    ScoreRule,
    StageSearch,
    power_law_score,
    stage_candidates,
)
from autoprog.search.one_shot_growth import MeasureFn, OneShotGrowthSearch, RuntimeFn, ScoreFn, supernet_steps
from autoprog.search.rules import smallest_resolution
from autoprog.search.supernet import CandidateSampling
from autoprog.search.trial_growth import TrialFn, TrialGrowthSearch, trial_steps
from autoprog.search.zero_shot_growth import ZeroShotGrowthSearch, ZeroShotProbe

#: How a stage without a fixed sub-network chooses one: AutoProg-One's supernet search (Sec. 3.2.3)
#: or AutoProg-Zero's zero-shot proxies (Sec. 4.2).
SearchKind = Literal["one-shot", "zero-shot"]
#: The method each search kind implements (the plan of ``create_plan(method, ...)``).
SEARCHED_METHODS: dict[str, SearchKind] = {"autoprog-one": "one-shot", "autoprog-zero": "zero-shot"}
#: ``candidate_fn(space, stage, current) -> candidates``: a searched stage's growth space (App. B).
CandidateFn = Callable[[GrowthSpace, int, SubnetConfig | None], list[SubnetConfig]]


@dataclass(frozen=True)
class PlannedStage:
    """What a stage will train: a fixed sub-network, or (``fixed is None``) one searched at its start
    (``search``: ``"one-shot"``, AutoProg-One, or ``"zero-shot"``, AutoProg-Zero)."""

    start_epoch: int
    end_epoch: int
    fixed: SubnetConfig | None
    space: GrowthSpace
    search: SearchKind = "one-shot"

    def __post_init__(self) -> None:
        if self.search not in ("one-shot", "zero-shot"):
            raise ConfigError(f"a stage's search is one-shot or zero-shot, got {self.search!r}")


def create_plan(
    method: str, space: GrowthSpace, epochs: int, schedule: GrowthSchedule | None = None
) -> list[PlannedStage]:
    """One :class:`PlannedStage` per stage for ``method`` (``full``, ``prog``, ``progstack``,
    ``autoprog-one``, ``autoprog-zero``), or the replay of ``schedule`` (Tab. XXII). AutoProg-One
    and AutoProg-Zero search every stage but the last, which trains the full model."""
    if schedule is None and method in SEARCHED_METHODS:
        bounds = stage_boundaries(epochs, space.num_stages)
        kind = SEARCHED_METHODS[method]
        plan = [
            PlannedStage(bounds[k], bounds[k + 1], None, space, kind) for k in range(space.num_stages - 1)
        ]
        return plan + [PlannedStage(bounds[-2], bounds[-1], space.full, space)]
    if schedule is None:
        if method == "full":
            schedule = full_schedule(space, epochs)
        elif method == "prog":
            schedule = prog_schedule(space, epochs)
        elif method == "progstack":
            schedule = progstack_schedule(space.full_resolution, space.full_depth, epochs)
        else:
            raise ConfigError(
                f"unknown method {method!r}: choose from full, prog, progstack, autoprog-one, autoprog-zero"
            )
    return [PlannedStage(s.start_epoch, s.end_epoch, s.config, space) for s in schedule]


@dataclass(frozen=True)
class Event:
    """Something that changed the model or decided the schedule; the loop re-reads model/optimizer.

    ``kind``: ``"grow"`` (fixed growth, or growth into a zero-shot search's choice), ``"supernet"``
    (the model became an elastic supernet, in place), ``"search"`` (a stage's sub-network was chosen;
    ``detail`` is the search record; AutoProg-Zero's comes with the stage's first epoch, from
    :meth:`GrowthController.begin_epoch`), ``"stage_end"``.
    """

    kind: str
    stage: int
    config: SubnetConfig | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochSpec:
    """What the next epoch trains.

    Attributes:
        stage: the stage index.
        epoch: the budget epoch it counts as (supernet epochs outside the budget: the stage's start).
        supernet: a search epoch (a sampled candidate per step); ``config`` is then the largest.
        in_budget: counts toward the epoch budget (always, unless weight recycling is off, Tab. XI).
        data_epoch: the seed of the epoch's data order.
        lr_offset: steps to add to the loop's step counter for the LR schedule (non-recycled
            supernet epochs follow the schedule as if they were training epochs).
        first_of_stage: the stage starts with this epoch.
        search_epoch: which supernet epoch of the stage's search this is (``-1`` otherwise), of
            ``search_epochs``.
        events: what :meth:`GrowthController.begin_epoch` changed.
    """

    stage: int
    epoch: int
    config: SubnetConfig
    supernet: bool
    in_budget: bool
    data_epoch: int
    lr_offset: int
    first_of_stage: bool
    search_epoch: int = -1
    search_epochs: int = 0
    events: tuple[Event, ...] = ()


class GrowthController:
    """Grows a model through a progressive schedule: fixed (Prog) or searched (AutoProg-One, AutoProg-Zero).

    Args:
        adapter: the model adapter (creates the model, gets/sets its blocks).
        plan: the stages (:func:`create_plan`).
        steps_per_epoch: optimizer steps per epoch (places the search's loss snapshots).
        operator: the growth operator (name or object); ``mogrow`` grows from the momentum copy.
        optimizer_factory: ``model -> optimizer`` over the model's trainable parameters; param
            groups must carry ``"names"`` (default: AdamW, lr 1e-3, wd 0.05, as Appendix B).
        carry_optimizer_state: give grown parameters their source's optimizer moments (by name).
        ema_decay: the momentum copy's decay (Eq. 3); ``ema_warmup`` ramps it as timm's ModelEmaV3.
        use_ema: keep a momentum copy (default: when MoGrow or a search needs one).
        score_fn: the search loss of a candidate, with the momentum copy, on fixed data (required
            when the plan searches one-shot).
        measure_fn: a training step's seconds, for candidates the supernet never sampled and for
            every candidate of a zero-shot search (default there: a step on the first probe batch).
        runtime_fn: the runtime term of a candidate instead of its measured step time (e.g. its
            FLOPs: deterministic, so a searched schedule is reproducible and resumable exactly).
        probe: the fixed data of a zero-shot search (required when the plan searches zero-shot).
        search_epochs: supernet epochs at each searched stage's start (Sec. 3.2.3).
        search_snapshots: loss snapshots averaged over the last search epoch.
        recycle: weight recycling: search epochs are training epochs (Tab. XI ablates it).
        score_rule: Eq. 6 with the fitted balancing factor by default.
        seed: seeds the supernet's candidate sampling (the same on every process).
        device: where the model lives.
        broadcast: makes a decision's inputs identical across processes (rank 0's); identity when
            single-process.
        candidate_fn: a searched stage's candidates (default: Appendix B's growth space,
            :func:`~autoprog.search.one_shot.stage_candidates`).
        sampling: how supernet steps pick their candidate: ``"random"`` per step (the paper's) or
            ``"rounds"`` (:mod:`autoprog.search.supernet`).
        supernet_fraction: the supernet trains for this fraction of the stage's steps (at least two
            rounds of its candidates) and the search ends there, mid-epoch if need be; ``None``:
            ``search_epochs`` whole epochs (the paper's).
        prune_resolutions: a one-shot search trains only the candidates of the smallest resolution
            among them (a rule whose exam cannot tell resolutions apart,
            :attr:`~autoprog.search.rules.SearchRule.prunes_resolutions`).
        trial_fn: trains and examines a candidate's copy (:data:`~autoprog.search.trial_growth.TrialFn`).
        trial_fraction: when set, AutoProg-One's stages are chosen at their start by trials of this
            fraction of the stage's steps per candidate (:class:`~autoprog.search.trial_growth.TrialGrowthSearch`)
            instead of a supernet; needs ``trial_fn`` (``score_fn`` and the momentum copy are not needed).

    :func:`autoprog.search.rules.controller_options` gives ``candidate_fn``, ``sampling``,
    ``score_rule``, ``supernet_fraction`` and ``prune_resolutions`` for a named search rule.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        plan: Sequence[PlannedStage],
        *,
        steps_per_epoch: int,
        operator: str | GrowthOperator = "interpolation",
        optimizer_factory: OptimizerFactory | None = None,
        carry_optimizer_state: bool = True,
        ema_decay: float = 0.998,
        ema_warmup: bool = True,
        use_ema: bool | None = None,
        score_fn: ScoreFn | None = None,
        measure_fn: MeasureFn | None = None,
        runtime_fn: RuntimeFn | None = None,
        probe: ZeroShotProbe | None = None,
        search_epochs: int = 2,
        search_snapshots: int = 2,
        recycle: bool = True,
        score_rule: ScoreRule = power_law_score,
        seed: int = 0,
        device: torch.device | str | None = None,
        broadcast: Callable[[Any], Any] | None = None,
        candidate_fn: CandidateFn = stage_candidates,
        sampling: CandidateSampling = "random",
        supernet_fraction: float | None = None,
        prune_resolutions: bool = False,
        trial_fn: TrialFn | None = None,
        trial_fraction: float | None = None,
    ) -> None:
        if not plan:
            raise ConfigError("the plan has no stages")
        if steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        one_shot = any(p.fixed is None and p.search == "one-shot" for p in plan)
        if one_shot and trial_fraction is not None and trial_fn is None:
            raise ConfigError("a trial search (AutoProg-One, trial_fraction) needs trial_fn(net, config, steps, step)")
        searches = one_shot and trial_fraction is None  # with a supernet
        if searches and score_fn is None:
            raise ConfigError("a searched plan (AutoProg-One) needs score_fn(momentum_net, config) -> loss")
        if supernet_fraction is not None and not recycle:
            raise ConfigError("a supernet trained for a fraction of the stage needs weight recycling (--recycle)")
        if probe is None and any(p.fixed is None and p.search == "zero-shot" for p in plan):
            raise ConfigError("a zero-shot searched plan (AutoProg-Zero) needs probe=ZeroShotProbe(batches)")
        self.adapter = adapter
        self.plan = list(plan)
        self.steps_per_epoch = steps_per_epoch
        self.operator = create_operator(operator) if isinstance(operator, str) else operator
        self.score_fn = score_fn
        self.measure_fn = measure_fn
        self.runtime_fn = runtime_fn
        self.probe = probe
        self.search_epochs = search_epochs
        self.search_snapshots = search_snapshots
        self.recycle = recycle
        self.score_rule = score_rule
        self.seed = seed
        self.broadcast = broadcast or (lambda obj: obj)
        self.candidate_fn = candidate_fn
        self.sampling: CandidateSampling = sampling
        self.supernet_fraction = supernet_fraction
        self.prune_resolutions = prune_resolutions
        self.trial_fn = trial_fn
        self.trial_fraction = trial_fraction

        first = self.plan[0]
        if first.fixed is not None:
            depth = first.fixed.depth
        elif first.search == "one-shot" and trial_fraction is not None:  # trials grow stage 0's candidates
            depth = self._trial_start_depth()  # from the smallest, made as a fixed plan makes its first stage
        else:
            depth = first.space.full_depth
        model = adapter.create_model(depth)
        if use_ema is None:
            use_ema = self.operator.needs_momentum or searches
        if searches and not use_ema:
            raise ConfigError("the search scores candidates with the momentum copy: use_ema must be on")
        #: the model, its momentum copy and the optimizer, paired by name through growth
        self.net = GrowingModel(
            adapter, model, operator=self.operator,
            optimizer_factory=optimizer_factory or (lambda m: build_optimizer(m, 1e-3, 0.05)),
            carry_optimizer_state=carry_optimizer_state, ema_decay=ema_decay if use_ema else None,
            ema_warmup=ema_warmup, device=device,
        )  # fmt: skip

        self.epoch = 0  #: the next budget epoch
        self.steps = 0  #: optimizer steps taken (all of them, in budget or not)
        self.stage = 0
        self.current: SubnetConfig | None = None  #: the sub-network of the running stage
        self.stages: list[Stage] = []  #: finished stages (the schedule so far)
        self.searches: list[dict[str, Any]] = []  #: the search records
        self._in_stage = False
        self._search: OneShotGrowthSearch | None = None
        self._concluded: Event | None = None  #: a search that ended mid-epoch, reported by end_epoch
        self._stage_start = 0

    # -- what the loop trains (owned by the growing network) -------------------------------------

    @property
    def model(self) -> nn.Module:
        return self.net.model

    @property
    def ema(self) -> ModelEma | None:
        return self.net.ema

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.net.optimizer

    @property
    def version(self) -> int:
        """Changes of the model so far (growth, supernet, materialisation): re-wrap when it moves."""
        return self.net.version

    @property
    def device(self) -> torch.device | None:
        return self.net.device

    @device.setter
    def device(self, device: torch.device | str | None) -> None:
        self.net.device = torch.device(device) if device is not None else None

    @property
    def optimizer_factory(self) -> OptimizerFactory:
        return self.net.optimizer_factory

    @property
    def carry_optimizer_state(self) -> bool:
        return self.net.carry_optimizer_state

    @property
    def ema_warmup(self) -> bool:
        return self.net.ema_warmup

    # -- the loop's side ------------------------------------------------------------------------

    @property
    def total_epochs(self) -> int:
        return self.plan[-1].end_epoch

    @property
    def done(self) -> bool:
        return self.stage >= len(self.plan)

    @property
    def searching(self) -> bool:
        """A supernet is training (its steps sample candidates; some blocks are skipped)."""
        return self._search is not None

    @property
    def skips_blocks(self) -> bool:
        """A supernet is training whose candidates differ in depth (some steps skip blocks)."""
        return self._search is not None and self._search.skips_blocks

    @property
    def schedule(self) -> GrowthSchedule:
        """The schedule of the finished stages (``summary.json``'s ``schedule``)."""
        return GrowthSchedule(list(self.stages))

    def begin_epoch(self) -> EpochSpec | None:
        """Start the next epoch (growing or building a supernet at a stage start); ``None`` when done."""
        if self.done:
            return None
        events: list[Event] = []
        first = not self._in_stage
        if first:
            events = self._start_stage()
        s = self._search
        if s is not None:
            i = s.epochs_done
            return EpochSpec(
                stage=self.stage,
                epoch=self.epoch,
                config=s.widest,
                supernet=True,
                in_budget=self.recycle,
                data_epoch=self.epoch if self.recycle else 100_000 + 100 * self.stage + i,
                lr_offset=0 if self.recycle else i * self.steps_per_epoch,
                first_of_stage=first,
                search_epoch=i,
                search_epochs=s.n_epochs,
                events=tuple(events),
            )
        assert self.current is not None
        return EpochSpec(
            self.stage, self.epoch, self.current, False, True, self.epoch, 0, first, events=tuple(events)
        )

    def next_config(self) -> SubnetConfig:
        """The sub-network of the next step: the stage's, or (supernet epochs) a sampled candidate."""
        if self._search is None:
            assert self.current is not None
            return self.current
        return self._search.next_config()

    def end_step(self, seconds: float | None = None, ema_step: int | None = None) -> None:
        """After the optimizer step: update the momentum copy; in a search, record the step's
        ``seconds`` (forward + backward + update, measured by the loop) and take loss snapshots."""
        self.net.update_ema(self.steps if ema_step is None else ema_step)
        self.steps += 1
        if self._search is not None and self._search.end_step(seconds):  # a search of a step budget ends
            self._concluded = self._conclude_search()

    def end_epoch(self) -> list[Event]:
        """Finish the epoch: conclude a search after its last supernet epoch, close a finished stage."""
        events: list[Event] = []
        if self._concluded is not None:  # the search ended inside this epoch (a step budget)
            events.append(self._concluded)
            self._concluded = None
        s = self._search
        if s is not None:
            last = s.end_epoch()
            if self.recycle:
                self.epoch += 1
            if not last:
                return events
            events.append(self._conclude_search())
        else:
            self.epoch += 1
        if self.epoch >= self.plan[self.stage].end_epoch:
            assert self.current is not None
            p = self.plan[self.stage]
            self.stages.append(
                Stage(self.stage, p.start_epoch, p.end_epoch, self.current.resolution, self.current.depth)
            )
            events.append(Event("stage_end", self.stage, self.current))
            self.stage += 1
            self._in_stage = False
        return events

    def _conclude_search(self) -> Event:
        s = self._search
        assert s is not None
        chosen, record = s.conclude(self.current, self.recycle)
        self._search = None
        self.current = chosen
        self.searches.append(record)
        return Event("search", s.stage, chosen, record)

    # -- stage starts: growth and search --------------------------------------------------------

    def _start_stage(self) -> list[Event]:
        k, planned = self.stage, self.plan[self.stage]
        self._in_stage = True
        self._stage_start = self.epoch
        if planned.fixed is not None:
            return self._grow_to(planned.fixed)
        candidates = self.candidate_fn(planned.space, k, self.current)
        if planned.search == "zero-shot":
            return self._zero_shot_search(k, candidates)
        if self.trial_fraction is not None:
            return self._trial_search(k, candidates, planned.end_epoch - self.epoch)
        if self.prune_resolutions:
            candidates = smallest_resolution(candidates)
        if len(candidates) == 1:
            events = self._grow_to(candidates[0])
            only = CandidateResult(candidates[0].resolution, candidates[0].depth, math.nan, math.nan)
            record = StageSearch(k, self.epoch, 0, 0.0, [only], candidates[0]).to_dict()
            self.searches.append(record)
            return events + [Event("search", k, candidates[0], record)]
        stage_len = planned.end_epoch - self.epoch
        n = max(1, min(self.search_epochs, stage_len - 1)) if stage_len > 1 else 1
        total = None
        if self.supernet_fraction is not None:  # a step budget: a fraction of the stage
            total = supernet_steps(self.supernet_fraction, stage_len * self.steps_per_epoch, len(candidates))
            n = -(-total // self.steps_per_epoch)
        s = self._one_shot_search(k, self.epoch, candidates, n, self.seed * 7919 + k, total)
        s.build_supernet(self.current, self.recycle)
        self._search = s
        return [Event("supernet", k, s.widest, {"candidates": [c.__dict__ for c in candidates], "epochs": n})]

    def _one_shot_search(
        self, k: int, start_epoch: int, candidates: list[SubnetConfig], n_epochs: int, seed: int,
        total_steps: int | None = None,
    ) -> OneShotGrowthSearch:  # fmt: skip
        assert self.score_fn is not None
        return OneShotGrowthSearch(
            self.net, k, start_epoch, candidates, n_epochs, steps_per_epoch=self.steps_per_epoch,
            snapshots=self.search_snapshots, seed=seed, score_fn=self.score_fn, runtime_fn=self.runtime_fn,
            measure_fn=self.measure_fn, sampling=self.sampling, rule=self.score_rule, broadcast=self.broadcast,
            total_steps=total_steps,
        )  # fmt: skip

    def _grow_to(self, config: SubnetConfig, nested_from: int | None = None) -> list[Event]:
        """Make the model the stage's sub-network ``config`` (``nested_from``: before the first
        stage, see :meth:`~autoprog.growth.growing.GrowingModel.reshape`)."""
        first = self.current is None
        self.current = config
        if not self.net.grow(config.depth, nested_from if first else None):
            return []
        return [Event("grow", self.stage, config)]

    def _zero_shot_search(self, k: int, candidates: list[SubnetConfig]) -> list[Event]:
        """AutoProg-Zero at stage ``k``'s start (Sec. 4.2, Eq. 12-19, as in Sec. 5.2.3): no supernet,
        no search epochs; the model grows into the winner (:class:`ZeroShotGrowthSearch`)."""
        assert self.probe is not None
        t0 = time.perf_counter()
        nested_from = min(c.depth for c in candidates) if self.current is None else None
        search = ZeroShotGrowthSearch(
            self.net, self.probe, runtime_fn=self.runtime_fn, measure_fn=self.measure_fn, broadcast=self.broadcast
        )
        chosen, rows, weights = search.choose(candidates, nested_from)
        events = self._grow_to(chosen, nested_from)
        record = {
            "stage": k,
            "start_epoch": self.epoch,
            "search": "zero-shot",
            "search_epochs": 0,
            "candidates": rows,
            "chosen": {"resolution": chosen.resolution, "depth": chosen.depth},
            "weights": weights,
            "search_time_s": time.perf_counter() - t0,
        }
        self.searches.append(record)
        return events + [Event("search", k, chosen, record)]

    def _trial_start_depth(self) -> int:
        """The depth a trial-searched first stage starts from: its smallest candidate's. The model is
        created at that depth, as a fixed plan creates its first stage's (from the same random state,
        so a run whose trials choose Prog's schedule trains Prog's run exactly), and the deeper
        candidates are grown from it by the operator."""
        first = self.plan[0]
        return min(c.depth for c in smallest_resolution(self.candidate_fn(first.space, 0, None)))

    def _trial_search(self, k: int, candidates: list[SubnetConfig], stage_len: int) -> list[Event]:
        """AutoProg-One by trials at stage ``k``'s start (:class:`TrialGrowthSearch`): every candidate's
        copy trains a few steps and sits the exam; the model grows into the winner (before the first
        stage, from the untrained smallest candidate, :meth:`_trial_start_depth`)."""
        assert self.trial_fn is not None and self.trial_fraction is not None
        t0 = time.perf_counter()
        if self.current is None:  # from random weights a few steps leave every candidate near chance: the
            candidates = smallest_resolution(candidates)  # larger resolutions would cost most of the search
        if len(candidates) == 1:
            chosen, rows, w, steps = candidates[0], [], 0.0, 0
        else:
            steps = trial_steps(self.trial_fraction, stage_len * self.steps_per_epoch)
            search = TrialGrowthSearch(
                self.net, self.trial_fn, runtime_fn=self.runtime_fn, rule=self.score_rule, broadcast=self.broadcast
            )
            chosen, rows, w = search.choose(candidates, steps, self.steps)
        events = self._grow_to(chosen)
        if not rows:  # one candidate: nothing to try
            rows = [{"resolution": chosen.resolution, "depth": chosen.depth, "loss": math.nan,
                     "runtime_s": math.nan, "score": math.nan}]  # fmt: skip
        record = {
            "stage": k,
            "start_epoch": self.epoch,
            "search": "trial",
            "search_epochs": 0,
            "trial_steps": steps,
            "balancing_factor": w,
            "candidates": rows,
            "chosen": {"resolution": chosen.resolution, "depth": chosen.depth},
            "search_time_s": time.perf_counter() - t0,
        }
        self.searches.append(record)
        return events + [Event("search", k, chosen, record)]

    # -- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run stands, mid-stage or mid-search:
        the model's shape (blocks, ReZero wrappers, the adapter's block state such as drop-path
        rates, the supernet's layout), its weights, the momentum copy, the optimizer state keyed
        by parameter name, the schedule and searches so far and the search in progress (its
        sampler's RNG, times and loss snapshots). Plain tensors and Python values only: it loads
        with ``torch.load(weights_only=True)``."""
        s = self._search
        if s is not None and not self.recycle:
            raise RuntimeError("a search without weight recycling cannot be checkpointed mid-way")
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "stage": self.stage,
            "current": None if self.current is None else [self.current.resolution, self.current.depth],
            "stages": [dict(s.__dict__) for s in self.stages],
            "searches": self.searches,
            "in_stage": self._in_stage,
            "stage_start": self._stage_start,
            **self.net.state_dict(),  # version, structure, model, ema, optimizer
            "search": s.state_dict() if s is not None else None,
            # a search that ended inside the epoch in progress: end_epoch still has to report it
            "concluded": None if self._concluded is None else {
                "stage": self._concluded.stage, "config": [self._concluded.config.resolution, self._concluded.config.depth],
                "detail": self._concluded.detail,
            },
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: rebuild the model to the saved shape, then load everything."""
        supernet = self.net.load_state_dict(state)
        self.epoch, self.steps, self.stage = state["epoch"], state["steps"], state["stage"]
        self.current = None if state["current"] is None else SubnetConfig(*state["current"])
        self.stages = list(GrowthSchedule.from_list(state["stages"])) if state["stages"] else []
        self.searches = list(state["searches"])
        self._in_stage, self._stage_start = state["in_stage"], state["stage_start"]
        self._search = None
        done = state.get("concluded")
        self._concluded = None if done is None else Event("search", done["stage"], SubnetConfig(*done["config"]), done["detail"])
        saved = state["search"]
        if saved is not None:
            candidates = [SubnetConfig(*c) for c in saved["candidates"]]
            # the stage's seed again: a round sampler is a pure function of it (a random one's state is restored)
            seed = self.seed * 7919 + saved["stage"]
            s = self._one_shot_search(saved["stage"], saved["start_epoch"], candidates, saved["n_epochs"], seed,
                                      saved.get("total_steps"))  # fmt: skip
            s.load_state_dict(saved, supernet)
            self._search = s


__all__ = [
    "EpochSpec",
    "Event",
    "GrowthController",
    "PlannedStage",
    "SearchKind",
    "ZeroShotProbe",
    "create_plan",
]
