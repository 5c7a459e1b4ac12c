"""Lightning callbacks: progressive pre-training (Sec. 3) and progressive fine-tuning (Sec. 4).

**Pre-training** (Prog, Sec. 3.1.2; AutoProg-One, Sec. 3.2): :class:`AutoProgCallback` drives a
:class:`~autoprog.controller.GrowthController` from Lightning's hooks. The controller owns the
model, its momentum copy and the optimizer; the LightningModule holds ``controller.model`` as an
attribute and reads the sub-network of each training step from ``self.autoprog_config``::

    space = GrowthSpace(28, 6, resolution_step=4)
    ctl = GrowthController(adapter, create_plan("prog", space, epochs=8), steps_per_epoch=len(loader))

    class Classifier(L.LightningModule):
        def __init__(self, ctl):
            super().__init__()
            self.model, self.adapter = ctl.model, ctl.adapter

        def training_step(self, batch, batch_idx):
            x, y = batch
            x = self.adapter.prepare_input(x, self.autoprog_config.resolution)
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return ctl.optimizer  # replaced by the controller's after every growth

    L.Trainer(max_epochs=8, callbacks=[AutoProgCallback(ctl)]).fit(Classifier(ctl), loader)

**Fine-tuning** (progressive unfreezing, Sec. 4.1.1; AutoProg-Zero, Sec. 4.2, Eq. 12-19):
:class:`ProgressiveUnfreezing` is a :class:`~lightning.pytorch.callbacks.BaseFinetuning`: at each
stage's start it makes an interleaved level of blocks learnable and adds the newly learnable
parameters to the *existing* optimizer (its state and learning-rate schedulers carry on). The module
reads the stage's input resolution from ``self.autoprog_resolution`` and the stage index from
``self.autoprog_stage`` (for a Unique Stage Identifier, Sec. 4.1.2)::

    space = UnfreezeSpace(full_resolution=256, resolution_step=16)
    callback = ProgressiveUnfreezing(space, [f"net.blocks.{i}" for i in range(12)], method="prog")

Both callbacks run in one process on one device (distributed training is a separate issue).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import BaseFinetuning, Callback
    from lightning.pytorch.utilities import move_data_to_device
    from lightning.pytorch.utilities.rank_zero import rank_zero_info
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "autoprog.integrations.lightning needs Lightning: pip install 'autoprog[lightning]'"
    ) from e

from autoprog.controller import Event, GrowthController
from autoprog.errors import ConfigError
from autoprog.search.rules import DEFAULT_SEARCH_RULE, SearchRule, create_search_rule, unfreeze_candidates
from autoprog.search.step_times import StepTimes
from autoprog.search.zero_shot import zero_shot_search
from autoprog.unfreeze.schedule import (
    FinetuneStage,
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    level_blocks,
    prog_unfreeze_schedule,
    set_trainable,
    step_boundaries,
)

#: Per-parameter-group lists kept by torch's LR schedulers; extended when a group is added.
_SCHEDULER_GROUP_LISTS = (
    "base_lrs",
    "lr_lambdas",
    "min_lrs",
    "max_lrs",
    "base_momentums",
    "max_momentums",
    "_last_lr",
)


# -- pre-training --------------------------------------------------------------------------------


class AutoProgCallback(Callback):
    """Progressive pre-training in Lightning: Prog or AutoProg-One through a GrowthController (Sec. 3, Alg. 1).

    Per epoch the controller grows the model (Prog, Sec. 3.1.2) or trains an elastic supernet and
    searches the stage's sub-network (AutoProg-One, Sec. 3.2.3, with weight recycling); per
    training batch it chooses the sub-network, which the callback puts in
    ``pl_module.autoprog_config`` (a :class:`~autoprog.growth.schedule.SubnetConfig`: resolution and
    depth) before ``training_step`` runs. Growth edits ``controller.model`` in place and the
    controller rebuilds its optimizer (AdamW's moments carried by parameter name); the callback then
    installs ``controller.optimizer`` as the trainer's optimizer and re-points the learning-rate
    schedulers to it. ``configure_optimizers`` should return ``controller.optimizer`` (with any
    schedulers built on it); a placeholder optimizer is replaced when training starts.

    Args:
        controller: the growth controller; its plan's epochs must equal ``Trainer(max_epochs=...)``
            and weight recycling must be on (every supernet epoch is a training epoch).
        attr: the LightningModule attribute that holds ``controller.model``.

    Requirements: one optimizer, ``accumulate_grad_batches=1``, one process; for a GPU, the
    controller's momentum copy is moved to the module's device when training starts.
    """

    def __init__(self, controller: GrowthController, attr: str = "model") -> None:
        if not controller.recycle:
            raise ConfigError(
                "AutoProgCallback needs weight recycling (GrowthController(recycle=True)): without it the "
                "supernet epochs fall outside the epoch budget, which Lightning's epoch counter cannot follow"
            )
        self.controller = controller
        self.attr = attr
        self.events: list[Event] = []  #: every event so far, in order
        self.restored_state: dict[str, Any] | None = None  #: what load_state_dict was given
        self._step_start: float | None = None

    # -- checks and set-up --

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        ctl = self.controller
        if trainer.max_epochs != ctl.total_epochs:
            raise ConfigError(
                f"Trainer(max_epochs={trainer.max_epochs}) but the controller's plan has {ctl.total_epochs} "
                f"epochs: set max_epochs={ctl.total_epochs}"
            )
        if trainer.world_size > 1:
            raise ConfigError(
                "AutoProgCallback runs in one process: growth re-shapes the model in place, which a "
                "distributed wrapper (DDP, FSDP) would have to be rebuilt for"
            )
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "AutoProgCallback needs accumulate_grad_batches=1 (one optimizer step per batch)"
            )
        if getattr(pl_module, self.attr, None) is not ctl.model:
            raise ConfigError(
                f"the LightningModule's {self.attr!r} attribute must be controller.model "
                f"(set `self.{self.attr} = controller.model` in __init__, or pass attr=...)"
            )
        first = ctl.plan[0].fixed or ctl.plan[0].space.full
        pl_module.autoprog_config = ctl.current or first

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ctl = self.controller
        if self.restored_state is not None and int(self.restored_state.get("epoch", 0)) > ctl.epoch:
            raise ConfigError(
                f"resuming a progressive run at epoch {self.restored_state['epoch']} is not supported yet: "
                "start from a fresh controller and Trainer (the checkpoint's schedule so far is in "
                "AutoProgCallback.restored_state)"
            )
        batches = trainer.num_training_batches
        if math.isfinite(batches) and int(batches) != ctl.steps_per_epoch:
            raise ConfigError(
                f"the trainer runs {int(batches)} batches per epoch but the controller was built with "
                f"steps_per_epoch={ctl.steps_per_epoch}"
            )
        device = pl_module.device
        if ctl.device != device:  # later growth creates blocks on the module's device
            ctl.device = device
            ctl.model.to(device)
            if ctl.ema is not None:
                ctl.ema.module.to(device)
        self._install(trainer, pl_module)

    # -- the loop --

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ctl = self.controller
        if trainer.current_epoch != ctl.epoch:
            raise ConfigError(
                f"the trainer is at epoch {trainer.current_epoch} but the controller at epoch {ctl.epoch}: "
                "resuming mid-run is not supported yet"
            )
        spec = ctl.begin_epoch()
        if spec is None:
            raise ConfigError(
                f"the controller's plan ended after {ctl.total_epochs} epochs but the trainer starts epoch "
                f"{trainer.current_epoch}: Trainer(max_epochs=...) exceeds the plan"
            )
        self._report(spec.events, trainer.current_epoch)
        pl_module.autoprog_config = spec.config
        self._install(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.autoprog_config = self.controller.next_config()
        _synchronize(pl_module.device)
        self._step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        _synchronize(pl_module.device)
        seconds = None if self._step_start is None else time.perf_counter() - self._step_start
        self._step_start = None
        self.controller.end_step(seconds)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        events = self.controller.end_epoch()
        self._report(events, trainer.current_epoch)
        self._install(trainer, pl_module)

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        """The schedule so far: finished stages, search records and the controller's counters."""
        ctl = self.controller
        return {
            "epoch": ctl.epoch,
            "steps": ctl.steps,
            "stage": ctl.stage,
            "schedule": [asdict(s) for s in ctl.stages],
            "searches": list(ctl.searches),
            "current": asdict(ctl.current) if ctl.current is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved schedule in :attr:`restored_state`; resuming mid-run is refused at train start."""
        self.restored_state = dict(state_dict)

    # -- helpers --

    def _install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Make the module hold ``controller.model`` and the trainer step ``controller.optimizer``."""
        ctl = self.controller
        if getattr(pl_module, self.attr) is not ctl.model:
            setattr(pl_module, self.attr, ctl.model)
        install_optimizer(trainer, ctl.optimizer)

    def _report(self, events: Sequence[Event], epoch: int) -> None:
        for event in events:
            self.events.append(event)
            rank_zero_info(f"autoprog: epoch {epoch}: {describe_event(event)}")


def describe_event(event: Event) -> str:
    """One line for a controller event (the callback logs it with ``rank_zero_info``)."""
    where = f"stage {event.stage}"
    sub = f"{event.config.resolution}px, depth {event.config.depth}" if event.config is not None else ""
    if event.kind == "grow":
        return f"{where}: grew to {sub}"
    if event.kind == "supernet":
        n = len(event.detail.get("candidates", []))
        return f"{where}: elastic supernet over {n} candidates up to {sub}, {event.detail.get('epochs')} search epoch(s)"
    if event.kind == "search":
        return f"{where}: search chose {sub} ({len(event.detail.get('candidates', []))} candidates)"
    if event.kind == "stage_end":
        return f"{where} done ({sub})"
    return f"{where}: {event.kind} {sub}".rstrip()


def install_optimizer(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer`` the one the trainer steps, re-pointing its LR schedulers to it.

    A scheduler keeps per-group state (its base learning rates, lambdas), so it can follow a new
    optimizer only with the same number of parameter groups; each new group takes the learning rate
    the scheduler set on the old one (and the keys the scheduler added, such as ``initial_lr``).

    Raises:
        ConfigError: the trainer has several optimizers, or a scheduler's optimizer has another
            number of parameter groups.
    """
    strategy = trainer.strategy
    current = strategy.optimizers
    if len(current) == 1 and current[0] is optimizer:
        return
    if len(current) > 1:
        raise ConfigError(
            f"AutoProgCallback drives one optimizer; configure_optimizers returned {len(current)}"
        )
    for config in strategy.lr_scheduler_configs:
        scheduler = config.scheduler
        old = getattr(scheduler, "optimizer", None)
        if old is None or old is optimizer:
            continue
        if len(old.param_groups) != len(optimizer.param_groups):
            raise ConfigError(
                f"the LR scheduler {type(scheduler).__name__} was built on an optimizer with "
                f"{len(old.param_groups)} parameter group(s) but the controller's has {len(optimizer.param_groups)}: "
                "build the scheduler on controller.optimizer in configure_optimizers"
            )
        for old_group, new_group in zip(old.param_groups, optimizer.param_groups, strict=True):
            new_group["lr"] = old_group["lr"]
            for key, value in old_group.items():
                new_group.setdefault(key, value)
        scheduler.optimizer = optimizer
    strategy.optimizers = [optimizer]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- fine-tuning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlannedUnfreeze:
    """A fine-tuning stage over epochs: a fixed learnable sub-network, or (``fixed is None``) searched."""

    start_epoch: int
    end_epoch: int
    fixed: UnfreezeConfig | None


#: ``probe_forward(module, batch) -> (N, ...)``: the output whose NTK is taken (AutoProg-Zero).
ProbeForward = Callable[[nn.Module, Any], Tensor]
#: ``probe_loss(module, batch) -> scalar``: the training loss, for ZiCo and the step time.
ProbeLoss = Callable[[nn.Module, Any], Tensor]


class ProgressiveUnfreezing(BaseFinetuning):
    """Progressive unfreezing for fine-tuning, manual (Prog) or zero-shot searched (AutoProg-Zero).

    A stage trains a *learnable sub-network* (Sec. 4.1.1): an input resolution and an unfreezing
    level; level ``k`` of ``L`` makes the blocks ``i % L < k`` learnable (interleaved), parameters
    outside the blocks always learn. At each stage's start the callback sets the level's
    ``requires_grad`` flags, adds the newly learnable parameters to the existing optimizer (one new
    group per existing group they resemble, so weight decay and learning rate match; the LR
    schedulers are extended to the new groups), and sets ``pl_module.autoprog_resolution`` and
    ``pl_module.autoprog_stage``. Frozen parameters get no gradient and so no optimizer state.

    Schedules:

    - a :class:`~autoprog.unfreeze.schedule.UnfreezeSchedule` (e.g. replayed from a ``finetune``
      run): its stage boundaries are scaled from its steps onto the trainer's epochs (unchanged when
      it was built over ``max_epochs``);
    - an :class:`~autoprog.unfreeze.schedule.UnfreezeSpace` with ``method="prog"``: uniform linear
      unfreezing over ``max_epochs`` (:func:`~autoprog.unfreeze.schedule.prog_unfreeze_schedule`);
    - a space with ``method="autoprog-zero"`` (Sec. 4.2, Eq. 12-19): the space's stages over
      ``max_epochs``; at the start of every stage but the last, the candidates of
      :func:`~autoprog.search.rules.unfreeze_candidates` are scored by NTK condition number,
      ZiCo and step time on fixed probe batches and chosen by ranked voting
      (:func:`autoprog.search.zero_shot.zero_shot_search`); the last stage is the full model.

    Args:
        plan: the schedule, or the space to build one from.
        block_paths: the module path of each block in ``pl_module``, in order (e.g. ``model.blocks.3``).
        method: with a space, ``"prog"`` or ``"autoprog-zero"``.
        num_levels: the number of unfreezing levels (with a space: the space's; otherwise 4).
        always_learnable: parameter names (in ``pl_module``) that learn even inside a frozen block.
        probe_batches: AutoProg-Zero: at least 2 fixed batches at full resolution, each a tensor or a
            tuple/list of tensors (ZiCo uses them all; the NTK the first ``ntk_samples`` samples of
            the first; the step time the first).
        probe_forward: AutoProg-Zero: ``probe_forward(module, batch) -> (N, ...)`` output, resizing
            the input to ``module.autoprog_resolution`` as ``training_step`` does.
        probe_loss: AutoProg-Zero: ``probe_loss(module, batch) -> scalar`` training loss, likewise.
        ntk_samples: samples of the NTK (Eq. 13).
        time_repeats: timed steps per candidate (after one warm-up), measured once per candidate;
            a stage's new candidates are timed in interleaved rounds.
        search_rule: how a searched stage chooses (:mod:`autoprog.search.rules`): ``"horizon"``
            (candidates that keep the full model reachable one step per stage, equal ballot weights)
            or ``"paper"`` (the reference's candidates and weights), or a
            :class:`~autoprog.search.rules.SearchRule`.
        vote_weights: the ranked vote's weights (Eq. 19); default: the rule's.
        seed: the NTK's Rademacher probe seed.

    Attributes:
        stages: the stages decided so far (their ``start_step``/``end_step`` count epochs).
        searches: one record per searched stage: every candidate's proxies, ranks and total, the choice.
    """

    def __init__(
        self,
        plan: UnfreezeSchedule | UnfreezeSpace,
        block_paths: Sequence[str],
        *,
        method: str = "prog",
        num_levels: int | None = None,
        always_learnable: Callable[[str], bool] | None = None,
        probe_batches: Sequence[Any] | None = None,
        probe_forward: ProbeForward | None = None,
        probe_loss: ProbeLoss | None = None,
        ntk_samples: int = 8,
        time_repeats: int = 3,
        search_rule: str | SearchRule = DEFAULT_SEARCH_RULE,
        vote_weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not block_paths:
            raise ConfigError("ProgressiveUnfreezing needs the module paths of the blocks to unfreeze")
        if method not in ("prog", "autoprog-zero"):
            raise ConfigError(f"unknown method {method!r}: choose prog or autoprog-zero")
        if isinstance(plan, UnfreezeSchedule):
            if method != "prog":
                raise ConfigError(
                    f"a given schedule is replayed as it is; method={method!r} needs an UnfreezeSpace"
                )
            self.num_levels = 4 if num_levels is None else num_levels
        elif isinstance(plan, UnfreezeSpace):
            if num_levels is not None and num_levels != plan.num_levels:
                raise ConfigError(f"num_levels={num_levels} differs from the space's {plan.num_levels}")
            self.num_levels = plan.num_levels
        else:
            raise ConfigError(
                f"plan must be an UnfreezeSchedule or an UnfreezeSpace, got {type(plan).__name__}"
            )
        if isinstance(plan, UnfreezeSchedule):
            for s in plan:
                level_blocks(len(block_paths), s.level, self.num_levels)  # validates the level
        if method == "autoprog-zero":
            if probe_forward is None or probe_loss is None or probe_batches is None:
                raise ConfigError("method='autoprog-zero' needs probe_batches, probe_forward and probe_loss")
            if len(probe_batches) < 2:
                raise ConfigError(f"ZiCo needs at least 2 probe batches, got {len(probe_batches)}")
            if ntk_samples < 2:
                raise ConfigError(f"the NTK needs at least 2 samples, got ntk_samples={ntk_samples}")
        self.plan = plan
        self.block_paths = list(block_paths)
        self.method = method
        self.always_learnable = always_learnable
        self.probe_batches = list(probe_batches) if probe_batches is not None else None
        self.probe_forward = probe_forward
        self.probe_loss = probe_loss
        self.ntk_samples = ntk_samples
        self.time_repeats = time_repeats
        rule = create_search_rule(search_rule) if isinstance(search_rule, str) else search_rule
        if vote_weights is not None:
            rule = rule.with_overrides(vote_weights=dict(vote_weights))
        self.search_rule = rule
        self.vote_weights = dict(rule.vote_weights)
        self.seed = seed
        self.stages: list[FinetuneStage] = []
        self.searches: list[dict[str, Any]] = []
        self._planned: list[_PlannedUnfreeze] = []
        self._step_times: dict[UnfreezeConfig, float] = {}
        self._applied_stage: int | None = None
        self._restored_configs: list[UnfreezeConfig] = []

    # -- the plan --

    @property
    def schedule(self) -> UnfreezeSchedule:
        """The stages decided so far as a schedule over epochs (``start_step``/``end_step`` are epochs)."""
        return UnfreezeSchedule(list(self.stages))

    def _build_plan(self, max_epochs: int | None) -> list[_PlannedUnfreeze]:
        if max_epochs is None or max_epochs < 1:
            raise ConfigError(
                "ProgressiveUnfreezing plans its stages over epochs: set Trainer(max_epochs=...)"
            )
        plan = self.plan
        if isinstance(plan, UnfreezeSchedule):
            bounds = [round(s.start_step * max_epochs / plan.steps) for s in plan] + [max_epochs]
            if any(b >= e for b, e in zip(bounds, bounds[1:], strict=False)):
                raise ConfigError(
                    f"the schedule's {len(plan)} stages do not fit in {max_epochs} epochs "
                    f"(stage starts {bounds[:-1]}): every stage needs at least one epoch"
                )
            return [_PlannedUnfreeze(bounds[k], bounds[k + 1], s.config) for k, s in enumerate(plan)]
        if max_epochs < plan.num_stages:
            raise ConfigError(
                f"{plan.num_stages} stages need at least {plan.num_stages} epochs, got max_epochs={max_epochs}"
            )
        if self.method == "prog":
            return [
                _PlannedUnfreeze(s.start_step, s.end_step, s.config)
                for s in prog_unfreeze_schedule(plan, max_epochs)
            ]
        bounds = step_boundaries(max_epochs, plan.num_stages)
        planned = [_PlannedUnfreeze(bounds[k], bounds[k + 1], None) for k in range(plan.num_stages - 1)]
        return planned + [_PlannedUnfreeze(bounds[-2], bounds[-1], plan.full)]

    def _stage_of(self, epoch: int) -> int:
        for k, p in enumerate(self._planned):
            if p.start_epoch <= epoch < p.end_epoch:
                return k
        raise ConfigError(
            f"epoch {epoch} is outside the unfreezing plan ({self._planned[-1].end_epoch} epochs)"
        )

    # -- Lightning hooks --

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        modules = dict(pl_module.named_modules())
        missing = [p for p in self.block_paths if p not in modules]
        if missing:
            raise ConfigError(
                f"block paths not in the LightningModule: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        self._planned = self._build_plan(trainer.max_epochs)
        super().setup(trainer, pl_module, stage)  # freeze_before_training

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        """Before ``configure_optimizers``: the first stage's blocks learn, the others are frozen."""
        first = self._planned[0].fixed
        if first is None:  # searched: the smallest candidate; the search may add a level
            assert isinstance(self.plan, UnfreezeSpace)
            first = min(unfreeze_candidates(self.plan, 0, None, self.search_rule), key=lambda c: (c.level, c.resolution))
        self._configure(pl_module, first)
        pl_module.autoprog_stage = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ConfigError(
                f"ProgressiveUnfreezing drives one optimizer; configure_optimizers returned {len(trainer.optimizers)}"
            )
        super().on_train_epoch_start(trainer, pl_module)  # finetune_function, then records the groups

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """At a stage's start: choose its sub-network (fixed or searched), unfreeze it, extend the optimizer."""
        k = self._stage_of(epoch)
        if k == self._applied_stage:
            return
        planned = self._planned[k]
        if k < len(self._restored_configs):  # resumed: replay the recorded choice
            config = self._restored_configs[k]
        elif planned.fixed is not None:
            config = planned.fixed
        else:
            config = self._search(pl_module, k, epoch)
        learnable = self._configure(pl_module, config)
        pl_module.autoprog_stage = k
        trainer = pl_module.trainer
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs] if trainer is not None else []
        added = add_learnable_to_optimizer(pl_module, optimizer, self.block_paths, schedulers)
        self._applied_stage = k
        self.stages = [s for s in self.stages if s.stage < k]
        self.stages.append(
            FinetuneStage(k, planned.start_epoch, planned.end_epoch, config.resolution, config.level)
        )
        rank_zero_info(
            f"autoprog: epoch {epoch}: stage {k}: {config.resolution}px, level {config.level}/{self.num_levels}, "
            f"{learnable:,} learnable parameters ({added:,} added to the optimizer)"
        )

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["schedule"] = [asdict(s) for s in self.stages]
        state["searches"] = list(self.searches)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the optimizer groups (as BaseFinetuning does) and the stages chosen so far, which a
        resumed run replays instead of searching again."""
        state = dict(state_dict)
        stages = state.pop("schedule", [])
        self.searches = list(state.pop("searches", []))
        super().load_state_dict(state)
        self.stages = [FinetuneStage(**{key: int(value) for key, value in s.items()}) for s in stages]
        self._restored_configs = [s.config for s in self.stages]

    # -- helpers --

    def _configure(self, pl_module: nn.Module, config: UnfreezeConfig) -> int:
        """Make ``config``'s sub-network learnable; returns the number of learnable parameter elements."""
        learn = level_blocks(len(self.block_paths), config.level, self.num_levels)
        n = set_trainable(pl_module, self.block_paths, learn, always=self.always_learnable)
        pl_module.autoprog_resolution = config.resolution
        return n

    def _search(self, pl_module: pl.LightningModule, k: int, epoch: int) -> UnfreezeConfig:
        """AutoProg-Zero at stage ``k``'s start (Sec. 4.2): NTK, ZiCo and time, ranked voting."""
        assert isinstance(self.plan, UnfreezeSpace) and self.probe_batches is not None
        assert self.probe_forward is not None and self.probe_loss is not None
        t0 = time.perf_counter()
        current = UnfreezeConfig(self.stages[-1].resolution, self.stages[-1].level) if self.stages else None
        candidates = unfreeze_candidates(self.plan, k, current, self.search_rule)
        device = pl_module.device
        batches = [move_data_to_device(b, device) for b in self.probe_batches]
        tensors, rebuild = _flatten_batch(batches[0])
        ntk_inputs = tuple(t[: self.ntk_samples] for t in tensors)
        probe_forward, probe_loss = self.probe_forward, self.probe_loss

        def forward(module: nn.Module, *inputs: Tensor) -> Tensor:
            return probe_forward(module, rebuild(inputs))

        # Step times: measured once per run, new candidates in interleaved rounds (cached).
        StepTimes(
            pl_module,
            lambda c: self._configure(pl_module, c),
            lambda c: lambda: probe_loss(pl_module, batches[0]).backward(),
            repeats=self.time_repeats,
            warmup=1,
            device=device,
            cache=self._step_times,
        ).measure(candidates)

        index, rows, vote = zero_shot_search(
            pl_module,
            candidates,
            configure=lambda c: self._configure(pl_module, c),
            forward=forward,
            loss_fn=probe_loss,
            ntk_inputs=ntk_inputs,
            zico_batches=batches,
            time_step=self._step_times.__getitem__,
            weights=self.vote_weights,
            seed=self.seed,
            ntk_tensors=self.search_rule.ntk_tensors,
        )
        trainer = pl_module.trainer
        if trainer is not None:  # the same choice on every process: rank 0's
            index = trainer.strategy.broadcast(index, src=0)
        chosen = candidates[index]
        record = {
            "stage": k,
            "start_epoch": epoch,
            "candidates": rows,
            "chosen": asdict(chosen),
            "weights": dict(vote.weights),
            "search_time_s": time.perf_counter() - t0,
        }
        self.searches.append(record)
        rank_zero_info(
            f"autoprog: epoch {epoch}: stage {k} zero-shot search chose {chosen.resolution}px level {chosen.level} "
            f"of {len(candidates)} candidates ({record['search_time_s']:.1f}s)"
        )
        return chosen


def add_learnable_to_optimizer(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    block_paths: Sequence[str],
    schedulers: Sequence[Any] = (),
) -> int:
    """Add ``module``'s learnable parameters that ``optimizer`` lacks as new parameter groups.

    Each new parameter joins a new group modelled on the group of its *counterpart*: the parameter
    with the same name inside another block that the optimizer already holds (``blocks.5.mlp.fc1.weight``
    resembles ``blocks.0.mlp.fc1.weight``), else the first group. So a no-decay group's parameters
    stay without weight decay and per-group learning rates carry over. The new group copies its
    model group's hyper-parameters and current learning rate (and ``names`` when the groups carry
    them); every scheduler in ``schedulers`` bound to ``optimizer`` gets the model group's entry
    appended to its per-group lists (``base_lrs``, ``lr_lambdas``, ...), since torch's schedulers
    zip their lists with the groups strictly. Parameters are matched by identity, never by value.

    Returns:
        The number of parameter elements added.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    group_of = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
    block_suffix: dict[str, tuple[str, str]] = {}  # parameter name -> (block path, name inside the block)
    for name, _ in module.named_parameters():
        for path in block_paths:
            if name.startswith(path + "."):
                block_suffix[name] = (path, name[len(path) + 1 :])
                break
    named = dict(module.named_parameters())
    template_by_suffix: dict[str, int] = {}
    for name, (_, suffix) in block_suffix.items():
        p = named[name]
        if id(p) in held and suffix not in template_by_suffix:
            template_by_suffix[suffix] = group_of[id(p)]
    new_by_template: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, p in named.items():
        if not p.requires_grad or id(p) in held:
            continue
        suffix = block_suffix.get(name, (None, None))[1]
        template = template_by_suffix.get(suffix, 0) if suffix is not None else 0
        new_by_template.setdefault(template, []).append((name, p))
    added = 0
    for template, items in new_by_template.items():
        model_group = optimizer.param_groups[template]
        old_count = len(optimizer.param_groups)
        group = {key: value for key, value in model_group.items() if key not in ("params", "names")}
        group["params"] = [p for _, p in items]
        if "names" in model_group:
            group["names"] = [n for n, _ in items]
        optimizer.add_param_group(group)
        for scheduler in schedulers:
            _extend_scheduler(scheduler, optimizer, template, old_count)
        added += sum(p.numel() for _, p in items)
    return added


def _extend_scheduler(
    scheduler: Any, optimizer: torch.optim.Optimizer, template: int, old_count: int
) -> None:
    """Give a scheduler bound to ``optimizer`` one more group, a copy of group ``template``'s entries."""
    for inner in getattr(scheduler, "_schedulers", []):  # SequentialLR, ChainedScheduler
        _extend_scheduler(inner, optimizer, template, old_count)
    if getattr(scheduler, "optimizer", None) is not optimizer:
        return
    for attr in _SCHEDULER_GROUP_LISTS:
        values = getattr(scheduler, attr, None)
        if isinstance(values, list) and len(values) == old_count:
            values.append(values[template])


def _flatten_batch(batch: Any) -> tuple[tuple[Tensor, ...], Callable[[Sequence[Tensor]], Any]]:
    """A probe batch as a tuple of tensors (for the NTK's per-sample slicing) and how to rebuild it."""
    if isinstance(batch, Tensor):
        return (batch,), lambda ts: ts[0]
    if isinstance(batch, tuple | list) and batch and all(isinstance(t, Tensor) for t in batch):
        kind = type(batch)
        return tuple(batch), lambda ts: kind(ts) if kind in (tuple, list) else tuple(ts)
    raise ConfigError("a probe batch must be a tensor or a tuple/list of tensors")


__all__ = [
    "AutoProgCallback",
    "ProgressiveUnfreezing",
    "add_learnable_to_optimizer",
    "describe_event",
    "install_optimizer",
]
