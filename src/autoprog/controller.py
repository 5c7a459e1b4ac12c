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

Decisions are taken the same way on every process: supernet sampling is seeded by the stage, and
the measured results a choice rests on pass through ``broadcast`` (rank 0's are used everywhere).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from autoprog.adapters.base import ModelAdapter
from autoprog.checkpoint import global_rng_states, random_state, set_global_rng_states, set_random_state
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth.elastic import ElasticBlocks, ElasticSupernet
from autoprog.growth.operators import GrowthOperator, ReZeroBlock, create_operator
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
from autoprog.search.one_shot import (
    CandidateResult,
    ScoreRule,
    StageSearch,
    choose,
    measure_step_time,
    power_law_balancing_factor,
    power_law_score,
    stage_candidates,
)
from autoprog.search.voting import DEFAULT_WEIGHTS
from autoprog.search.zero_shot import zero_shot_search
from autoprog.train.optim import build_optimizer, carry_state, state_by_name

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
#: ``score_fn(momentum_net, config) -> loss``: the search loss of a candidate on fixed data (Sec. 3.2.3).
ScoreFn = Callable[[nn.Module, SubnetConfig], float]
#: ``measure_fn(model, config) -> seconds``: a training step's time, for candidates never sampled.
MeasureFn = Callable[[nn.Module, SubnetConfig], float]
#: How a stage without a fixed sub-network chooses one: AutoProg-One's supernet search (Sec. 3.2.3)
#: or AutoProg-Zero's zero-shot proxies (Sec. 4.2).
SearchKind = Literal["one-shot", "zero-shot"]
#: The method each search kind implements (the plan of ``create_plan(method, ...)``).
SEARCHED_METHODS: dict[str, SearchKind] = {"autoprog-one": "one-shot", "autoprog-zero": "zero-shot"}


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


@dataclass(frozen=True)
class ZeroShotProbe:
    """The fixed data AutoProg-Zero scores growth candidates on (Sec. 4.2.2; pre-training, Sec. 5.2.3).

    Every candidate sees the same samples, resized to its resolution by the adapter's
    ``prepare_input``: the NTK condition number (Eq. 12-16) of the classifier's logits on the first
    ``ntk_samples`` inputs, and generalised ZiCo (Eq. 17) of the training loss over all ``batches``.

    Attributes:
        batches: at least 2 ``(inputs, targets)`` batches; inputs ``(N, C, H, W)`` as the model takes
            them (normalised), at any resolution (the full one, usually).
        loss_fn: ``loss_fn(logits, targets) -> scalar``, the training loss ZiCo differentiates
            (default: cross-entropy).
        ntk_samples: samples of the NTK (its Gram matrix is ``ntk_samples x ntk_samples``; fewer
            when the batches hold fewer).
        weights: the ballots' weights in ranked voting (Eq. 19; keys ``time``, ``ntk``, ``zico``).
        seed: seed of the NTK's Rademacher projection (the same for every candidate).
    """

    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    ntk_samples: int = 8
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.batches) < 2:
            raise ConfigError(f"ZiCo needs at least 2 probe batches (Eq. 17), got {len(self.batches)}")
        if self.ntk_samples < 2:
            raise ConfigError(f"the NTK needs at least 2 samples, got ntk_samples={self.ntk_samples}")


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
        supernet: a search epoch (a random candidate per step); ``config`` is then the largest.
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


class _Search:
    """The state of one stage's supernet search."""

    def __init__(
        self, stage: int, start_epoch: int, candidates: list[SubnetConfig], n_epochs: int, seed: int
    ) -> None:
        self.stage = stage
        self.start_epoch = start_epoch
        self.candidates = candidates
        self.n_epochs = n_epochs
        self.epochs_done = 0
        self.rng = random.Random(seed)
        self.times: dict[SubnetConfig, list[float]] = {c: [] for c in candidates}
        self.losses: dict[SubnetConfig, list[float]] = {c: [] for c in candidates}
        self.steps = 0
        self.snapshot_steps: set[int] = set()
        self.last: SubnetConfig | None = None
        self.t0 = time.perf_counter()
        self.scoring_time = 0.0
        self.supernet: ElasticSupernet | None = None
        self.before: tuple[nn.Module, nn.Module, dict] | None = None

    @property
    def widest(self) -> SubnetConfig:
        return SubnetConfig(max(c.resolution for c in self.candidates), max(c.depth for c in self.candidates))


class _CandidateNet(nn.Module):
    """The zero-shot search's one module: it holds the candidate being scored (built one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module = nn.Identity()
        self.depth = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
        runtime_fn: Callable[[SubnetConfig], float] | None = None,
        probe: ZeroShotProbe | None = None,
        search_epochs: int = 2,
        search_snapshots: int = 2,
        recycle: bool = True,
        score_rule: ScoreRule = power_law_score,
        seed: int = 0,
        device: torch.device | str | None = None,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> None:
        if not plan:
            raise ConfigError("the plan has no stages")
        if steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        searches = any(p.fixed is None and p.search == "one-shot" for p in plan)  # with a supernet
        if searches and score_fn is None:
            raise ConfigError("a searched plan (AutoProg-One) needs score_fn(momentum_net, config) -> loss")
        if probe is None and any(p.fixed is None and p.search == "zero-shot" for p in plan):
            raise ConfigError("a zero-shot searched plan (AutoProg-Zero) needs probe=ZeroShotProbe(batches)")
        self.adapter = adapter
        self.plan = list(plan)
        self.steps_per_epoch = steps_per_epoch
        self.operator = create_operator(operator) if isinstance(operator, str) else operator
        self.optimizer_factory = optimizer_factory or (lambda m: build_optimizer(m, 1e-3, 0.05))
        self.carry_optimizer_state = carry_optimizer_state
        self.ema_warmup = ema_warmup
        self.score_fn = score_fn
        self.measure_fn = measure_fn
        self.runtime_fn = runtime_fn
        self.probe = probe
        self.search_epochs = search_epochs
        self.search_snapshots = search_snapshots
        self.recycle = recycle
        self.score_rule = score_rule
        self.seed = seed
        self.device = torch.device(device) if device is not None else None
        self.broadcast = broadcast or (lambda obj: obj)

        first = self.plan[0]
        depth = first.fixed.depth if first.fixed is not None else first.space.full_depth
        self.model: nn.Module = adapter.create_model(depth)
        self._to_device()
        if use_ema is None:
            use_ema = self.operator.needs_momentum or searches
        if searches and not use_ema:
            raise ConfigError("the search scores candidates with the momentum copy: use_ema must be on")
        self.ema: ModelEma | None = ModelEma(self.model, ema_decay) if use_ema else None
        self.optimizer: torch.optim.Optimizer = self.optimizer_factory(self.model)
        #: changes of the model so far (growth, supernet, materialisation): re-wrap when it moves
        self.version = 0

        self.epoch = 0  #: the next budget epoch
        self.steps = 0  #: optimizer steps taken (all of them, in budget or not)
        self.stage = 0
        self.current: SubnetConfig | None = None  #: the sub-network of the running stage
        self.stages: list[Stage] = []  #: finished stages (the schedule so far)
        self.searches: list[dict[str, Any]] = []  #: the search records
        self._in_stage = False
        self._search: _Search | None = None
        self._stage_start = 0

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
        s = self._search
        return s is not None and len({c.depth for c in s.candidates}) > 1

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
        """The sub-network of the next step: the stage's, or (supernet epochs) a random candidate."""
        s = self._search
        if s is None:
            assert self.current is not None
            return self.current
        config = s.candidates[s.rng.randrange(len(s.candidates))]
        assert s.supernet is not None
        s.supernet.set_depth(config.depth)
        s.last = config
        return config

    def end_step(self, seconds: float | None = None, ema_step: int | None = None) -> None:
        """After the optimizer step: update the momentum copy; in a search, record the step's
        ``seconds`` (forward + backward + update, measured by the loop) and take loss snapshots."""
        if self.ema is not None:
            self.ema.update(self.model, decay=self._ema_decay(self.steps if ema_step is None else ema_step))
        self.steps += 1
        s = self._search
        if s is not None:
            if seconds is not None and s.last is not None:
                s.times[s.last].append(seconds)
            s.steps += 1
            if s.steps in s.snapshot_steps:
                self._snapshot()

    def end_epoch(self) -> list[Event]:
        """Finish the epoch: conclude a search after its last supernet epoch, close a finished stage."""
        events: list[Event] = []
        s = self._search
        if s is not None:
            s.epochs_done += 1
            if self.recycle:
                self.epoch += 1
            if s.epochs_done < s.n_epochs:
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

    # -- growth and search ----------------------------------------------------------------------

    def _start_stage(self) -> list[Event]:
        k, planned = self.stage, self.plan[self.stage]
        self._in_stage = True
        self._stage_start = self.epoch
        if planned.fixed is not None:
            return self._grow_to(planned.fixed)
        if planned.search == "zero-shot":
            return self._zero_shot_search(k, planned.space)
        candidates = stage_candidates(planned.space, k, self.current)
        if len(candidates) == 1:
            events = self._grow_to(candidates[0])
            only = CandidateResult(candidates[0].resolution, candidates[0].depth, math.nan, math.nan)
            record = StageSearch(k, self.epoch, 0, 0.0, [only], candidates[0]).to_dict()
            self.searches.append(record)
            return events + [Event("search", k, candidates[0], record)]
        stage_len = planned.end_epoch - self.epoch
        n = max(1, min(self.search_epochs, stage_len - 1)) if stage_len > 1 else 1
        s = _Search(k, self.epoch, candidates, n, self.seed * 7919 + k)
        spe = self.steps_per_epoch
        s.snapshot_steps = {
            (n - 1) * spe + round(spe * (i + 1) / self.search_snapshots) for i in range(self.search_snapshots)
        }
        assert self.ema is not None
        if not self.recycle:  # keep the pre-search network (Tab. XI ablation)
            s.before = (
                copy.deepcopy(self.model),
                copy.deepcopy(self.ema.module),
                _clone_state(state_by_name(self.optimizer)),
            )
        if self.current is None:
            s.supernet = ElasticSupernet.from_scratch(
                self.adapter, self.model, min(c.depth for c in candidates), self.ema.module
            )
        else:
            s.supernet = ElasticSupernet.grow(
                self.adapter, self.model, s.widest.depth, self.operator, momentum=self.ema.module
            )
        self._rebuild(s.supernet.name_map)
        self._search = s
        return [Event("supernet", k, s.widest, {"candidates": [c.__dict__ for c in candidates], "epochs": n})]

    def _grow_to(self, config: SubnetConfig, nested_from: int | None = None) -> list[Event]:
        """Make the model the stage's sub-network ``config`` (``nested_from``: see :meth:`_shape`)."""
        first = self.current is None
        self.current = config
        if config.depth == len(self.adapter.get_blocks(self.model)):
            return []
        momentum = self.ema.module if self.ema is not None else None
        self._rebuild(self._shape(self.model, momentum, config.depth, nested_from if first else None))
        return [Event("grow", self.stage, config)]

    def _shape(
        self, model: nn.Module, momentum: nn.Module | None, depth: int, nested_from: int | None
    ) -> dict[str, str | None]:
        """Turn ``model`` (and its momentum copy) into the sub-network of ``depth`` blocks, in place, as
        a stage start does; return the new -> old parameter names.

        After a trained stage this is growth with the controller's operator. Before the first stage
        (``nested_from``: the smallest candidate depth) nothing is trained yet: the sub-network is the
        one of the fresh full-depth model that Interpolation from ``nested_from`` blocks nests, as in
        AutoProg-One's first supernet (Sec. 3.2.3, :meth:`ElasticSupernet.from_scratch`).
        """
        if nested_from is None:
            return self.operator.grow(model, self.adapter, depth, momentum=momentum)
        supernet = ElasticSupernet.from_scratch(self.adapter, model, nested_from, momentum)
        made = supernet.name_map
        return {n: None if o is None else made.get(o) for n, o in supernet.materialise(depth).items()}

    def _zero_shot_search(self, k: int, space: GrowthSpace) -> list[Event]:
        """AutoProg-Zero at stage ``k``'s start (Sec. 4.2, Eq. 12-19), choosing a growth stage as in
        Sec. 5.2.3: no supernet, no search epochs (nothing to recycle).

        Every candidate of the stage's growth space (:func:`stage_candidates`, as AutoProg-One's) is
        built as the stage would train it (:meth:`_shape` on a copy of the model, from the random
        state the chosen one is then grown from, so even RandInit's new blocks are the same) and
        scored without training on the probe resized to its resolution: NTK condition number of
        the logits over all its parameters (Eq. 16), generalised ZiCo over them (Eq. 17), and the
        runtime term (``runtime_fn``, else ``measure_fn``, else a timed step on the first probe
        batch). Ranked voting (Eq. 19) picks one; rank 0's numbers decide on every process. The
        search draws nothing from the run's random streams, and the model grows into the winner.
        """
        assert self.probe is not None
        probe, t0 = self.probe, time.perf_counter()
        candidates = stage_candidates(space, k, self.current)
        nested_from = min(c.depth for c in candidates) if self.current is None else None
        device = self.device or next(self.model.parameters()).device
        view = _CandidateNet()
        resized: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def batches(c: SubnetConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
            if c.resolution not in resized:  # the same samples for every candidate, at its resolution
                resized[c.resolution] = [
                    (self.adapter.prepare_input(x.to(device), c.resolution), y.to(device))
                    for x, y in probe.batches
                ]
            return resized[c.resolution]

        def configure(c: SubnetConfig) -> None:
            if view.depth != c.depth:
                view.net = nn.Identity()  # let the previous candidate go first
                set_global_rng_states(rng, device)  # the state the chosen one is grown from
                net = copy.deepcopy(self.model)
                momentum = None
                if self.operator.needs_momentum and self.ema is not None and nested_from is None:
                    momentum = copy.deepcopy(self.ema.module)
                self._shape(net, momentum, c.depth, nested_from)
                view.net, view.depth = net, c.depth

        def time_step(c: SubnetConfig) -> float:
            if self.runtime_fn is not None:
                return float(self.runtime_fn(c))
            if self.measure_fn is not None:
                return float(self.measure_fn(view.net, c))
            x, y = batches(c)[0]
            seconds = measure_step_time(lambda: probe.loss_fn(view(x), y).backward(), device=device)
            for p in view.parameters():
                p.grad = None
            return seconds

        rng = global_rng_states(device)
        try:
            winner, rows, vote = zero_shot_search(
                view, candidates, configure, forward=lambda m, x: m(x),
                loss_fn=lambda m, b: probe.loss_fn(m(b[0]), b[1]),
                ntk_inputs=lambda c: (torch.cat([x for x, _ in batches(c)])[: probe.ntk_samples],),
                zico_batches=batches, time_step=time_step, weights=probe.weights, seed=probe.seed,
            )  # fmt: skip
        finally:
            set_global_rng_states(rng, device)
        view.net = nn.Identity()  # free the last candidate before the model grows
        resized.clear()
        winner, rows = self.broadcast((winner, rows))  # measured numbers differ per process: rank 0's
        chosen = candidates[winner]
        events = self._grow_to(chosen, nested_from)
        record = {
            "stage": k,
            "start_epoch": self.epoch,
            "search": "zero-shot",
            "search_epochs": 0,
            "candidates": rows,
            "chosen": {"resolution": chosen.resolution, "depth": chosen.depth},
            "weights": dict(vote.weights),
            "search_time_s": time.perf_counter() - t0,
        }
        self.searches.append(record)
        return events + [Event("search", k, chosen, record)]

    @torch.no_grad()
    def _snapshot(self) -> None:
        s = self._search
        assert s is not None and s.supernet is not None and self.ema is not None and self.score_fn is not None
        t0 = time.perf_counter()
        for c in s.candidates:
            s.supernet.set_depth(c.depth)
            s.losses[c].append(float(self.score_fn(self.ema.module, c)))
        s.scoring_time += time.perf_counter() - t0

    def _conclude_search(self) -> Event:
        s = self._search
        assert s is not None and s.supernet is not None and self.ema is not None
        if not any(s.losses.values()):
            self._snapshot()  # an epoch shorter than the snapshot schedule: score once at the end
        measured = []
        for c in s.candidates:
            samples = s.times[c][1:] or s.times[c]  # the first sample is warm-up
            if self.runtime_fn is not None:
                runtime = float(self.runtime_fn(c))
            elif samples:
                runtime = float(sorted(samples)[len(samples) // 2])
            elif self.measure_fn is not None:
                s.supernet.set_depth(c.depth)
                t0 = time.perf_counter()
                runtime = float(self.measure_fn(self.model, c))
                s.scoring_time += time.perf_counter() - t0
            else:
                runtime = math.inf  # never sampled and nothing to measure it with: never chosen
            measured.append((sum(s.losses[c]) / len(s.losses[c]), runtime, list(s.losses[c])))
        measured = self.broadcast(measured)  # the same decision on every process (rank 0's numbers)
        results = [
            CandidateResult(c.resolution, c.depth, loss, rt, loss_snapshots=snaps)
            for c, (loss, rt, snaps) in zip(s.candidates, measured, strict=True)
        ]
        finite = [r for r in results if math.isfinite(r.runtime_s)]
        w = power_law_balancing_factor([r.loss for r in finite], [r.runtime_s for r in finite])
        chosen = choose(finite, self.score_rule).config
        if self.recycle:  # weight recycling: the chosen sub-network inherits the supernet's weights
            self._rebuild(s.supernet.materialise(chosen.depth))
        else:
            self._restore_before_search(s, chosen)
        self._search = None
        self.current = chosen
        record = StageSearch(
            s.stage, s.start_epoch, s.n_epochs, w, results, chosen, time.perf_counter() - s.t0
        ).to_dict()
        record["scoring_time_s"] = s.scoring_time
        self.searches.append(record)
        return Event("search", s.stage, chosen, record)

    def _restore_before_search(self, s: _Search, chosen: SubnetConfig) -> None:
        """Without recycling: drop the supernet, grow the pre-search network to the chosen depth."""
        assert s.before is not None and s.supernet is not None and self.ema is not None
        pre_model, pre_ema, pre_state = s.before
        s.supernet.materialise(chosen.depth)
        if self.current is None:  # no trained network before the first stage: start the chosen one afresh
            pre_model = self.adapter.create_model(chosen.depth)
            pre_ema = copy.deepcopy(pre_model)
        for net, src in ((self.model, pre_model), (self.ema.module, pre_ema)):
            self.adapter.set_blocks(net, [copy.deepcopy(b) for b in self.adapter.get_blocks(src)])
            net.load_state_dict(src.state_dict())
        name_map = self.operator.grow(self.model, self.adapter, chosen.depth, momentum=self.ema.module)
        self._rebuild(name_map, old_state=pre_state)

    def _rebuild(self, name_map: dict[str, str | None], old_state: dict | None = None) -> None:
        """After a change of shape: move, re-pair the EMA by name, rebuild the optimizer (state and
        learning rate carried by name)."""
        self._to_device()
        if self.ema is not None:
            self.ema.module.to(self.device or next(self.model.parameters()).device)
            self.ema.rebuild(self.model)
        old_state = state_by_name(self.optimizer) if old_state is None else old_state
        old_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer = self.optimizer_factory(self.model)
        new_groups = self.optimizer.param_groups
        for i, g in enumerate(new_groups):  # per group when the layout is the same, else the first's
            g["lr"] = old_lrs[i] if len(old_lrs) == len(new_groups) else old_lrs[0]
        if self.carry_optimizer_state:
            carry_state(old_state, self.optimizer, name_map)
        self.version += 1

    def _to_device(self) -> None:
        if self.device is not None:
            self.model.to(self.device)

    def _ema_decay(self, step: int) -> float:
        assert self.ema is not None
        if not self.ema_warmup:
            return self.ema.decay
        return min(self.ema.decay, 1.0 - (1.0 + step) ** (-2.0 / 3.0))

    # -- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run stands, mid-stage or mid-search:
        the model's shape (blocks, ReZero wrappers, drop-path rates, the supernet's layout), its
        weights, the momentum copy, the optimizer state keyed by parameter name, the schedule and
        searches so far and the search in progress (its sampler's RNG, times and loss snapshots).
        Plain tensors and Python values only: it loads with ``torch.load(weights_only=True)``."""
        s = self._search
        if s is not None and not self.recycle:
            raise RuntimeError("a search without weight recycling cannot be checkpointed mid-way")
        search = None
        if s is not None:
            search = {
                "stage": s.stage,
                "start_epoch": s.start_epoch,
                "candidates": [[c.resolution, c.depth] for c in s.candidates],
                "n_epochs": s.n_epochs,
                "epochs_done": s.epochs_done,
                "rng": random_state(s.rng),
                "times": [s.times[c] for c in s.candidates],
                "losses": [s.losses[c] for c in s.candidates],
                "steps": s.steps,
                "snapshot_steps": sorted(s.snapshot_steps),
                "scoring_time": s.scoring_time,
                "elapsed": time.perf_counter() - s.t0,
            }
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "stage": self.stage,
            "current": None if self.current is None else [self.current.resolution, self.current.depth],
            "stages": [dict(s.__dict__) for s in self.stages],
            "searches": self.searches,
            "in_stage": self._in_stage,
            "stage_start": self._stage_start,
            "version": self.version,
            "structure": block_structure(self.adapter, self.model),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": _optimizer_state(self.optimizer),
            "search": search,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: rebuild the model to the saved shape, then load everything."""
        layout = state["structure"].get("layout")
        if layout is not None:  # an adapter whose blocks are split in groups (a ResNet's stages)
            model = self.adapter.create_model_from_layout(layout)  # type: ignore[attr-defined]
        else:
            model = self.adapter.create_model(len(state["structure"]["blocks"]))
        apply_block_structure(self.adapter, model, state["structure"])
        self.model = model
        self._to_device()
        if self.ema is not None:
            self.ema = ModelEma(self.model, self.ema.decay)
        saved = state["search"]
        supernet = None
        if state["structure"]["sources"] is not None:
            momentum = self.ema.module if self.ema is not None else None
            supernet = ElasticSupernet(self.adapter, self.model, state["structure"]["sources"], momentum)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ConfigError(
                f"cannot rebuild the checkpoint's grown model with {type(self.adapter).__name__} "
                f"(its blocks differ from a fresh model of the same depth): {str(e).splitlines()[0]}"
            ) from None
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.module.to(self.device or next(self.model.parameters()).device)
            self.ema.rebuild(self.model)
        self.optimizer = self.optimizer_factory(self.model)
        _load_optimizer_state(self.optimizer, state["optimizer"])
        self.epoch, self.steps, self.stage = state["epoch"], state["steps"], state["stage"]
        self.current = None if state["current"] is None else SubnetConfig(*state["current"])
        self.stages = list(GrowthSchedule.from_list(state["stages"])) if state["stages"] else []
        self.searches = list(state["searches"])
        self._in_stage, self._stage_start = state["in_stage"], state["stage_start"]
        self.version = state["version"] + 1  # a new model object: wrappers must be rebuilt
        self._search = None
        if saved is not None:
            candidates = [SubnetConfig(*c) for c in saved["candidates"]]
            s = _Search(saved["stage"], saved["start_epoch"], candidates, saved["n_epochs"], 0)
            s.epochs_done, s.steps, s.scoring_time = (
                saved["epochs_done"],
                saved["steps"],
                saved["scoring_time"],
            )
            set_random_state(saved["rng"], s.rng)
            s.times = {c: list(t) for c, t in zip(candidates, saved["times"], strict=True)}
            s.losses = {c: list(v) for c, v in zip(candidates, saved["losses"], strict=True)}
            s.snapshot_steps = set(saved["snapshot_steps"])
            s.t0 = time.perf_counter() - saved["elapsed"]
            s.supernet = supernet
            self._search = s


def block_structure(adapter: ModelAdapter, model: nn.Module) -> dict[str, Any]:
    """The shape of a model beyond its ``state_dict``: for each block whether it is wrapped in
    :class:`~autoprog.growth.operators.ReZeroBlock` (how many times) and its drop-path rates, and the supernet's
    source indices when the blocks are elastic."""
    from timm.layers import DropPath

    try:
        container = adapter.get_block_container(model)
    except AttributeError:  # an adapter whose blocks have no container of their own until elastic
        container = None
    blocks = []
    for block in adapter.get_blocks(model):
        rates = [
            float(m.drop_prob) if isinstance(m, DropPath) else 0.0
            for name, m in block.named_modules()
            if name.rsplit(".", 1)[-1].startswith("drop_path")
        ]
        wraps, inner = 0, block
        while isinstance(inner, ReZeroBlock):  # a copy of a ReZero block grown again is wrapped twice
            wraps, inner = wraps + 1, inner.block
        blocks.append({"rezero": wraps, "drop_path": rates})
    sources = list(container.sources) if isinstance(container, ElasticBlocks) else None
    layout = adapter.block_layout(model) if hasattr(adapter, "block_layout") else None
    return {"blocks": blocks, "sources": sources, "layout": layout}


def apply_block_structure(adapter: ModelAdapter, model: nn.Module, structure: dict[str, Any]) -> None:
    """Give a freshly created model (of the right depth) the ReZero wrappers and drop-path rates of
    :func:`block_structure` (the elastic layout is applied by :class:`ElasticSupernet`)."""
    from timm.layers import DropPath

    blocks = adapter.get_blocks(model)
    out = []
    for block, spec in zip(blocks, structure["blocks"], strict=True):
        for _ in range(int(spec["rezero"])):
            block = ReZeroBlock(block)
        slots = [
            (parent, name)
            for parent in block.modules()
            for name, child in parent.named_children()
            if name.startswith("drop_path") and isinstance(child, nn.Identity | DropPath)
        ]
        for (parent, name), rate in zip(slots, spec["drop_path"], strict=False):
            setattr(parent, name, DropPath(rate) if rate > 0 else nn.Identity())
        out.append(block)
    adapter.set_blocks(model, out)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Per-parameter state keyed by name, and each group's hyper-parameters (no parameter objects)."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"state": {n: dict(st) for n, st in state_by_name(optimizer).items()}, "groups": groups}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    carry_state(saved["state"], optimizer, {n: n for g in optimizer.param_groups for n in g["names"]})
    if len(saved["groups"]) == len(optimizer.param_groups):
        for g, sg in zip(optimizer.param_groups, saved["groups"], strict=True):
            g.update({k: v for k, v in sg.items() if k != "names"})


def _clone_state(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        n: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        for n, st in state.items()
    }


__all__ = ["Event", "EpochSpec", "GrowthController", "PlannedStage", "ZeroShotProbe", "create_plan"]
