"""Progressive pre-training of an image classifier (paper Sec. 3): the ``autoprog pretrain`` loop.

Read :func:`_pretrain` top to bottom: set up data, model, plan, logging and the controller; then,
for every epoch the controller hands out, start the stage (grow, or build AutoProg-One's supernet;
adaptive regularisation), train the epoch at its resolution and depth, evaluate on the validation
split, and checkpoint at decisions and stage boundaries; finally evaluate on the test split and
write ``summary.json``.

The pieces live beside it: the data in :mod:`autoprog.train.pretrain_data`, the step in
:mod:`autoprog.train.pretrain_step`, what the searches measure in
:mod:`autoprog.train.pretrain_search`, growth and searches in :mod:`autoprog.controller`, and the
run machinery (resume, rollback on a non-finite loss, log sinks, DDP re-wrapping) in
:mod:`autoprog.run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprog.adapters.base import ModelAdapter, count_params, create_adapter
from autoprog.checkpoint import global_rng_states, save_checkpoint, set_global_rng_states
from autoprog.controller import EpochSpec, Event, GrowthController, PlannedStage, create_plan
from autoprog.data.resize import resize_batch, step_generator
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError
from autoprog.flops import FlopTable
from autoprog.growth.input_schedule import EpochInput, InputSchedule, input_stages
from autoprog.growth.operators import GrowthOperator, create_operator
from autoprog.growth.schedule import GrowthSchedule, GrowthSpace, SubnetConfig
from autoprog.memory import peak_memory_bytes, reset_peak_memory
from autoprog.optim import build_optimizer, cosine_lr
from autoprog.run import (
    Attempt,
    RunCheckpoint,
    RunLog,
    TrainModule,
    console,
    environment,
    progress_bar,
    read_records,
    run_job,
    setup_process,
    show_progress,
)
from autoprog.train import peers
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.memory_check import check_memory_fits
from autoprog.train.pretrain_data import PretrainData, load_pretrain_data
from autoprog.train.pretrain_search import search_functions
from autoprog.train.pretrain_step import TrainStep, make_eraser
from autoprog.train.regularization import StageRegularization, adaptive_regularization, set_drop_path


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = console) -> dict[str, Any]:
    """Run one pre-training job and return (and write) its summary.

    Under ``torchrun`` / ``accelerate launch`` every process runs this with the same ``cfg``: data is
    sharded, the model trains in DDP, decisions are rank 0's, and rank 0 writes the results.
    ``cfg.resume`` continues the run in ``cfg.out`` exactly from ``checkpoints/last.pt``; a
    non-finite loss rolls the run back to it with a lower learning rate, or stops it
    (``cfg.on_nonfinite``; :mod:`autoprog.run.nonfinite`).
    """
    return run_job(cfg, _pretrain, log)


def _pretrain(cfg: PretrainConfig, log: Callable[[str], None], ctx: DistContext, attempt: Attempt) -> dict[str, Any]:
    """One attempt of :func:`pretrain`: from scratch, or (``attempt.resume``) from ``last.pt``."""
    out, checkpoint = Path(cfg.out), RunCheckpoint(cfg.out)
    saved = checkpoint.load(cfg.to_dict(), "pretrain", _resumable, log) if attempt.resume else None
    out.mkdir(parents=True, exist_ok=True)
    device = setup_process(cfg.threads, cfg.seed, cfg.device, ctx)

    # Setup data: a class-balanced training subset, a validation split carved from the unused
    # training images (no tuning on the test split), and the test split.
    data = load_pretrain_data(cfg, ctx, device)
    info, steps_per_epoch = data.info, len(data.train)

    # Setup model, growth space and the stage plan; FLOPs are accounting, not training: the
    # configurations are counted before the clock starts.
    adapter = create_adapter(cfg.model, img_size=info.image_size, in_chans=info.in_chans,
                             num_classes=info.num_classes, patch_size=cfg.patch_size, depth=cfg.depth,
                             drop_path_rate=cfg.drop_path, embed_dim=cfg.embed_dim,
                             num_heads=cfg.num_heads)  # fmt: skip
    space = GrowthSpace(adapter.full.resolution, adapter.full.depth, adapter.resolution_step, cfg.ratio,
                        cfg.stages)  # fmt: skip
    epochs = peers.trained_epochs(cfg)  # --epochs, fewer for full-equal-time (--epochs is then its budget)
    plan = create_plan(peers.plan_method(cfg.method), space, epochs, create_schedule(cfg, space))
    operator = create_operator("stacking" if cfg.method == "progstack" else cfg.operator)
    # The peers (progressive resizing, EfficientTrain++): the full model on inputs that follow a schedule.
    inputs = peers.create_input_schedule(cfg, adapter.full.resolution, adapter.resolution_step)
    transform = peers.input_transform(cfg)
    # AutoProg-One by trials draws as Prog does (with Prog's choices it is Prog's run, to the bit).
    prog_draws = create_plan("prog", space, epochs) if cfg.method == "autoprog-one" and cfg.search().exam == "trial" else None
    flops = count_flops(adapter, space, plan, info.in_chans, peers.input_configs(inputs, epochs, adapter.full.depth),
                        draws_as=prog_draws)  # fmt: skip
    total_steps, warmup_steps = steps_per_epoch * epochs, int(cfg.warmup_epochs * steps_per_epoch)
    train_step = TrainStep(cfg, info.num_classes, device, ctx)
    log(_describe(cfg, epochs, adapter, data, len(plan), device))
    # Refuse, in one line, a run whose largest configuration cannot fit in memory (issue 21).
    check_memory_fits(adapter, cfg.model, cfg.batch_size, info.in_chans, device, train_step.amp_dtype,
                      local_processes=int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)))  # fmt: skip

    # Setup logging: rank 0 writes log.jsonl (cut back to the checkpoint when resuming) and
    # TensorBoard; with several processes each also logs its decisions with a parameter digest.
    offset = saved["loop"]["log_offset"] if saved is not None else None
    records = RunLog(out, ctx, resume_offset=offset, tensorboard=cfg.tensorboard, model=lambda: ctl.model, log=log)
    with records:
        # Setup the controller: it owns what changes shape (model, momentum copy, optimizer) and
        # decides the schedule; this loop owns data, loss, learning rate and logging.
        ctl = create_controller(cfg, adapter, plan, operator, data, flops, device, ctx, train_step)
        train_module = TrainModule(ctx, compile=cfg.compile, channels_last=cfg.channels_last)
        if device.type == "cuda":  # reserve the largest configuration's memory before training starts
            train_step.reserve_memory(adapter, cfg.batch_size, info.in_chans)

        # Resume: the controller's and the loop's state, the random states, the rollbacks' records.
        run = Progress(lr_scale=1.0 if attempt.lr_scale is None else attempt.lr_scale)
        pending = run.resume(saved, ctl, train_step, attempt, records, log, out) if saved is not None else None

        def save(epoch_started: bool, batches_done: int = 0, losses: list[float] | None = None) -> None:
            """The whole state (``last.pt``): ``--resume`` continues from it exactly, mid-epoch too."""
            if ctx.is_main:
                checkpoint.save(run.state(ctl, cfg, train_step, records, epoch_started, batches_done, losses or []))

        # The stages: the plan says what to train; a search (AutoProg-One, -Zero) decides on the way.
        epoch_input: EpochInput | None = None  # an input schedule's size and RandAugment for the epoch
        while (spec := ctl.begin_epoch()) is not None:
            k, mid, pending = spec.stage, pending, None  # mid: resuming inside this epoch
            if spec.first_of_stage or mid is not None:
                reset_peak_memory(device)
                run.t_stage = time.perf_counter() - (mid["stage_elapsed"] if mid is not None else 0.0)
                run.eval_time = 0.0
                # Adaptive regularisation (Appendix C): stronger as the stage (and the network) grows.
                reg = stage_regularization(cfg, k, len(plan))
                apply_regularization(reg, cfg, adapter.get_blocks(ctl.model), data, train_step, device)
                if cfg.adaptive_reg and mid is None:
                    records.write({"event": "regularization", "stage": k, **reg.__dict__})
            epoch_input = set_epoch_input(inputs, spec.epoch, epochs, data)
            _log_stage_start(spec, operator.name, cfg.recycle, log)
            for event in spec.events:
                if event.kind == "search":  # AutoProg-Zero: chosen at the stage's start, without training
                    records.write({"event": "search", **event.detail})
                    run.t_stage -= event.detail["search_time_s"]  # the search counts as training time
            if spec.first_of_stage and not spec.supernet:
                records.write(stage_record(k, spec.epoch, run.step, spec.config, ctl.model))
            if any(event.kind == "search" for event in spec.events):  # a decision: checkpoint it
                save(True)

            # Train the epoch (a resumed run skips the batches it trained before its checkpoint).
            ctl.model.train()
            losses = list(mid["epoch_losses"]) if mid is not None else []
            t0, skip = time.perf_counter(), mid["batches_done"] if mid is not None else 0
            batches = data.train.epoch(spec.data_epoch, spec.config.resolution, start=skip)
            bar = progress_bar(batches, show=show_progress(cfg.progress), initial=skip, total=steps_per_epoch,
                               desc=_progress_desc(spec, epochs))  # fmt: skip
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                config = ctl.next_config()  # a supernet epoch samples a candidate per step
                if config.resolution != spec.config.resolution:  # a supernet's smaller candidate
                    x = data.prep(x, config.resolution, adapter, transform)
                else:
                    x = data.prep(x)
                if epoch_input is not None:  # an input schedule: the epoch's size, the full model
                    window = step_generator(cfg.seed, run.step) if transform == "crop" else None  # a function of the step
                    x = resize_batch(x, epoch_input.resolution, transform, window)  # type: ignore[arg-type]
                    config = SubnetConfig(epoch_input.resolution, config.depth)
                ts = time.perf_counter()
                lr_step = run.step if spec.in_budget else min(run.step + spec.lr_offset + len(losses), total_steps - 1)
                module = train_module(ctl.model, ctl.version, find_unused_parameters=ctl.skips_blocks)
                lr = run.lr_scale * cosine_lr(lr_step, total_steps, cfg.lr, warmup_steps, cfg.min_lr)
                losses.append(train_step(module, ctl.optimizer, x, y, lr, step=run.step, lr_scale=run.lr_scale))
                ctl.end_step(time.perf_counter() - ts, ema_step=lr_step)  # momentum update; search's step time
                run.train_flops += flops(config) * len(y)
                records.write({"event": "step", "step": run.step, "epoch": spec.epoch, "stage": k, "loss": losses[-1],
                               "lr": ctl.optimizer.param_groups[0]["lr"], "resolution": config.resolution,
                               "depth": config.depth, "in_budget": spec.in_budget})  # fmt: skip
                if spec.in_budget:
                    run.step += 1
                    every = cfg.checkpoint_every
                    if every and run.step % every == 0 and (cfg.recycle or not ctl.searching):
                        save(True, len(losses), losses)
            total, n = ctx.all_reduce_sum([sum(losses), len(losses)])  # the epoch's loss over all processes
            loss, dt = total / n, time.perf_counter() - t0

            # Evaluate on the validation split (a supernet epoch has nothing to evaluate yet; one whose
            # search concluded mid-epoch ends on the chosen sub-network, as a run resumed in it does).
            if spec.supernet and ctl.searching:
                log(f"  supernet epoch {spec.search_epoch + 1}/{spec.search_epochs} stage {k}: loss {loss:.4f} "
                    f"({dt:.1f}s)")
            else:
                t_eval = time.perf_counter()
                if spec.supernet:  # the search concluded in this epoch: the chosen sub-network
                    spec = dataclasses.replace(spec, config=ctl.current)
                val_top1 = None if data.val is None else evaluate(ctl.model, data.val, spec.config.resolution,
                                                                  data.prep, device, ctx)  # fmt: skip
                run.eval_time += time.perf_counter() - t_eval
                records.write({"event": "epoch", "epoch": spec.epoch, "step": run.step, "stage": k,
                               "train_loss": loss, "val_top1": val_top1, "wall_clock_s": run.elapsed(),
                               "train_flops": run.train_flops})  # fmt: skip
                side = (epoch_input or spec.config).resolution
                log(_epoch_line(spec, epochs, side, loss, val_top1, data.train.num_samples * ctx.world_size / dt, dt))

            # Decisions and stage ends: log them, keep the stage's weights, checkpoint the whole state.
            events = ctl.end_epoch()
            for event in events:
                if event.kind == "search":
                    _log_search(event, log)
                    records.write({"event": "search", **event.detail})
                    records.write(stage_record(k, ctl.epoch, run.step, event.config, ctl.model))
                elif event.kind == "stage_end":
                    run.end_stage(ctl, device)
                    if ctx.is_main:  # the stage's weights, for users (last.pt is the resumable state)
                        save_stage_weights(ctl, k, run.step, cfg, out)
            if events:
                save(False)

    # Final evaluation on the test split (and the validation split, which chooses defaults), at
    # full resolution; FLOPs of all processes together.
    top1 = evaluate(ctl.model, data.test, adapter.full.resolution, data.prep, device, ctx)
    val_top1 = None if data.val is None else evaluate(ctl.model, data.val, adapter.full.resolution, data.prep, device, ctx)
    ema = ctl.ema.module if ctl.ema is not None and cfg.eval_ema else None
    top1_ema = None if ema is None else evaluate(ema, data.test, adapter.full.resolution, data.prep, device, ctx)
    train_flops = int(ctx.all_reduce_sum([float(run.train_flops)])[0])
    full_flops = flops(adapter.full) * data.train.num_samples * ctx.world_size * cfg.epochs
    summary = build_summary(cfg, ctl, adapter, data, run, top1, top1_ema, train_flops, full_flops, operator.name,
                            {**environment(device), "world_size": ctx.world_size}, attempt.rollbacks)  # fmt: skip
    curve = [{k: r[k] for k in ("epoch", "val_top1", "wall_clock_s")} for r in read_records(out, "epoch")]
    summary.update(epochs=epochs, budget_epochs=cfg.epochs, val_top1=val_top1, val_curve=curve,
                   **_input_summary(cfg, inputs, transform, epochs))
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        torch.save(ctl.model.state_dict(), out / "model.pt")
    log(f"  done: top-1 {top1:.2f}% | {run.train_time:.1f}s | FLOPs {train_flops / full_flops:.3f} of full | "
        f"{out}/summary.json")
    return summary


@dataclass
class Progress:
    """The loop's own state, checkpointed as ``last.pt``'s ``loop`` (the controller keeps the rest).

    Attributes:
        lr_scale: the learning-rate scale (lowered by each rollback on a non-finite loss).
        step: optimizer steps in the budget so far.
        train_time: seconds of training in the finished stages (growth and searches included,
            evaluation not).
        train_flops: training FLOPs of this process so far.
        stage_stats: ``summary.json``'s ``stages``, one entry per finished stage.
        nonfinite: the run's ``nonfinite`` rollback records (kept in the log across rollbacks).
        t_stage: ``time.perf_counter()`` at the stage's start (less the stage's time before a resume).
        eval_time: seconds of validation in the stage so far (not training time).
    """

    lr_scale: float = 1.0
    step: int = 0
    train_time: float = 0.0
    train_flops: int = 0
    stage_stats: list[dict[str, Any]] = field(default_factory=list)
    nonfinite: list[dict[str, Any]] = field(default_factory=list)
    t_stage: float = field(default_factory=time.perf_counter)
    eval_time: float = 0.0

    def elapsed(self) -> float:
        """Training seconds of the run so far."""
        return self.train_time + time.perf_counter() - self.t_stage - self.eval_time

    def end_stage(self, ctl: GrowthController, device: torch.device) -> None:
        """Book the stage that just ended: its training time and ``summary.json``'s entry."""
        stage_time = time.perf_counter() - self.t_stage - self.eval_time
        self.train_time += stage_time
        self.stage_stats.append({**ctl.stages[-1].__dict__, "wall_clock_s": stage_time, "train_flops_cumulative": self.train_flops,
                                 "params": count_params(ctl.model), "peak_mem_bytes": peak_memory_bytes(device)})  # fmt: skip

    def state(
        self, ctl: GrowthController, cfg: PretrainConfig, train_step: TrainStep, records: RunLog,
        epoch_started: bool, batches_done: int, epoch_losses: list[float],
    ) -> dict[str, Any]:  # fmt: skip
        """The run's whole state for ``last.pt``: where the epoch stands (``epoch_started``,
        ``batches_done`` with their ``epoch_losses``), the log's offset, the random states."""
        loop = {"step": self.step, "train_time": self.train_time, "train_flops": self.train_flops,
                "stage_stats": self.stage_stats, "epoch_started": epoch_started, "batches_done": batches_done,
                "epoch_losses": list(epoch_losses), "stage_elapsed": time.perf_counter() - self.t_stage - self.eval_time,
                "log_offset": records.offset(), "lr_scale": self.lr_scale, "nonfinite_events": self.nonfinite}  # fmt: skip
        scaler = train_step.scaler
        return {"controller": ctl.state_dict(), "loop": loop, "rng": global_rng_states(), "config": cfg.to_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}  # fmt: skip

    def resume(
        self, saved: dict[str, Any], ctl: GrowthController, train_step: TrainStep, attempt: Attempt, records: RunLog,
        log: Callable[[str], None], out: Path,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Continue from the checkpoint ``saved``; returns its ``loop`` when it was taken inside an
        epoch (the epoch to finish), else ``None``. Logs this job's rollbacks that the log, cut back
        to the checkpoint, lost, then a ``resume`` record."""
        ctl.load_state_dict(saved["controller"])
        loop = saved["loop"]
        self.step, self.train_time, self.train_flops = loop["step"], loop["train_time"], loop["train_flops"]
        self.stage_stats = list(loop["stage_stats"])
        self.lr_scale = loop["lr_scale"] if attempt.lr_scale is None else attempt.lr_scale
        set_global_rng_states(saved["rng"])
        if train_step.scaler is not None and saved.get("scaler"):
            train_step.scaler.load_state_dict(saved["scaler"])
        self.nonfinite = attempt.replay(loop.get("nonfinite_events", []), records.write)
        records.write({"event": "resume", "step": self.step, "epoch": ctl.epoch, "searching": ctl.searching,
                       "lr_scale": self.lr_scale, "rollbacks": attempt.rollbacks})  # fmt: skip
        log(f"  resumed at step {self.step} (epoch {ctl.epoch + 1}, stage {ctl.stage}) from {out / 'checkpoints'}")
        return loop if loop["epoch_started"] else None


def create_schedule(cfg: PretrainConfig, space: GrowthSpace) -> GrowthSchedule | None:
    """The schedule a run replays (``--schedule FILE``), or ``None`` for the method's own plan."""
    return load_schedule_file(cfg.schedule_file, space, cfg.epochs) if cfg.schedule_file is not None else None


def load_schedule_file(path: str, space: GrowthSpace, epochs: int) -> GrowthSchedule:
    """Read the ``schedule`` list of a ``summary.json`` (or a bare list) and check it fits the model."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"schedule file {path} does not exist")
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"schedule file {path} is not JSON: {e}") from None
    schedule = GrowthSchedule.from_list(obj["schedule"] if isinstance(obj, dict) else obj)
    for s in schedule:
        if (
            s.depth > space.full_depth
            or s.resolution > space.full_resolution
            or s.resolution % space.resolution_step
        ):
            raise ConfigError(
                f"schedule stage {s.stage} (resolution {s.resolution}, depth {s.depth}) does not fit the model "
                f"(resolution {space.full_resolution} in steps of {space.resolution_step}, depth {space.full_depth})"
            )
    if schedule.epochs != epochs:
        raise ConfigError(f"schedule file covers {schedule.epochs} epochs but --epochs is {epochs}")
    return schedule


def create_controller(
    cfg: PretrainConfig, adapter: ModelAdapter, plan: list[PlannedStage], operator: GrowthOperator,
    data: PretrainData, flops: FlopTable, device: torch.device, ctx: DistContext, train_step: TrainStep,
) -> GrowthController:  # fmt: skip
    """The run's :class:`~autoprog.controller.GrowthController`: AdamW rebuilt (its state carried by
    name, ``--optimizer-state``) at every growth, the momentum copy when the operator, ``--eval-ema``
    or the search needs it, and what the searches measure (:mod:`autoprog.train.pretrain_search`)."""
    return GrowthController(
        adapter, plan, steps_per_epoch=len(data.train), operator=operator,
        optimizer_factory=lambda m: build_optimizer(m, cfg.lr, cfg.weight_decay),
        carry_optimizer_state=cfg.optimizer_state == "carry", ema_decay=cfg.ema_decay, ema_warmup=cfg.ema_warmup,
        use_ema=operator.needs_momentum or cfg.eval_ema or (cfg.method == "autoprog-one" and cfg.search().exam != "trial"),
        search_epochs=cfg.search_epochs, search_snapshots=cfg.search_snapshots, recycle=cfg.recycle,
        seed=cfg.seed, device=device, broadcast=ctx.broadcast,
        **search_functions(cfg, data, flops, adapter.full.resolution, device, train_step),
    )  # fmt: skip


def count_flops(
    adapter: ModelAdapter, space: GrowthSpace, plan: list[PlannedStage], in_chans: int,
    scheduled: set[SubnetConfig] = frozenset(),  # type: ignore[assignment]
    draws_as: list[PlannedStage] | None = None,
) -> FlopTable:  # fmt: skip
    """The FLOP table of the run, filled with every configuration it can train: the plan's fixed
    stages, the whole grid when a stage is searched, an input schedule's sizes (``scheduled``) and
    the full model (the reference). Counting builds models, which draws from the random stream;
    ``draws_as``: draw as that plan's run would (the grid is then counted without drawing)."""
    flops = FlopTable(adapter.create_model, in_chans)
    searched = any(p.fixed is None for p in plan)
    grid = [SubnetConfig(r, d) for r in space.resolutions for d in space.depths] if searched else []
    if draws_as is not None:
        for config in {p.fixed for p in draws_as if p.fixed is not None} | {adapter.full} | set(scheduled):
            flops(config)
        with torch.random.fork_rng(devices=[]):
            for config in grid:
                flops(config)
        return flops
    for config in {p.fixed for p in plan if p.fixed is not None} | set(grid) | {adapter.full} | set(scheduled):
        flops(config)
    return flops


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: BatchSource,
    resolution: int,
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    ctx: DistContext | None = None,
) -> float:
    """Top-1 accuracy (percent) of ``model`` on every sample of ``source`` at ``resolution``
    (multi-process: each process counts its shard of ``source``, the counts are summed)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in source.epoch(0, resolution):
        logits = model(prep(x.to(device)))
        correct += int((logits.argmax(-1).cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    if ctx is not None:
        correct, total = ctx.all_reduce_sum([correct, total])
    return 100.0 * correct / max(1, total)


def stage_regularization(cfg: PretrainConfig, stage: int, num_stages: int) -> StageRegularization:
    """The stage's RandAugment, drop-path and random erasing: rising with the stage under
    ``--adaptive-reg`` (Appendix C), else the configured ones."""
    if cfg.adaptive_reg:
        return adaptive_regularization(stage, num_stages, cfg.randaug, cfg.drop_path, cfg.reprob)
    return StageRegularization(cfg.randaug, cfg.drop_path, cfg.reprob)


def apply_regularization(
    reg: StageRegularization, cfg: PretrainConfig, blocks: list[nn.Module], data: PretrainData,
    train_step: TrainStep, device: torch.device,
) -> None:  # fmt: skip
    """Set a stage's regularisation: drop-path rates and RandAugment (only under ``--adaptive-reg``:
    otherwise they stay as built) and random erasing."""
    if cfg.adaptive_reg:
        set_drop_path(blocks, reg.drop_path)
        if cfg.randaug:
            data.train = data.train_source(reg.randaug)
    train_step.eraser = make_eraser(reg.reprob, device)


def set_epoch_input(inputs: InputSchedule | None, epoch: int, epochs: int, data: PretrainData) -> EpochInput | None:
    """The epoch's input size and RandAugment under an input schedule (a pure function of the epoch),
    the training batches rebuilt when its RandAugment changes; ``None`` without a schedule."""
    if inputs is None:
        return None
    epoch_input = inputs.at_epoch(epoch, epochs)
    if epoch_input.randaug != data.randaug:
        data.train = data.train_source(epoch_input.randaug)
    return epoch_input


def _input_summary(cfg: PretrainConfig, inputs: InputSchedule | None, transform: str, epochs: int) -> dict[str, Any]:
    """``summary.json``'s input keys: the transform that downsized the inputs (when not the default
    resize) and the input schedule's stages (peers)."""
    downsized = inputs is not None or peers.batch_downsize(cfg) is not None
    return {"input_transform": transform if downsized else None,
            "input_schedule": input_stages(inputs, epochs) if inputs is not None else None}  # fmt: skip


def stage_record(stage: int, epoch: int, step: int, config: SubnetConfig, model: nn.Module) -> dict[str, Any]:
    """The ``stage`` record of a stage whose sub-network is known (fixed, grown into or chosen)."""
    return {"event": "stage", "stage": stage, "epoch": epoch, "step": step, "resolution": config.resolution,
            "depth": config.depth, "params": count_params(model)}  # fmt: skip


def save_stage_weights(ctl: GrowthController, stage: int, step: int, cfg: PretrainConfig, out: Path) -> None:
    """``OUT/checkpoints/stage{k}.pt``: the weights at the end of stage ``k``, for users."""
    state = {
        "model": ctl.model.state_dict(),
        "ema": ctl.ema.state_dict() if ctl.ema is not None else None,
        "optimizer": ctl.optimizer.state_dict(),
        "epoch": ctl.epoch,
        "step": step,
        "stage": stage,
        "schedule": ctl.schedule.to_list(),
        "config": cfg.to_dict(),
    }
    save_checkpoint(state, out / "checkpoints" / f"stage{stage}.pt")


def build_summary(
    cfg: PretrainConfig, ctl: GrowthController, adapter: ModelAdapter, data: PretrainData, run: Progress,
    top1: float, top1_ema: float | None, train_flops: int, full_flops: int, operator: str,
    env: dict[str, Any], rollbacks: int,
) -> dict[str, Any]:  # fmt: skip
    """``summary.json`` (see the README for its keys)."""
    searches = ctl.searches
    return {
        "method": cfg.method,
        "model": cfg.model,
        "data": cfg.data,
        "epochs": cfg.epochs,
        "top1": top1,
        "top1_ema": top1_ema,
        "wall_clock_s": run.train_time,
        "train_flops": train_flops,
        "full_flops": full_flops,
        "flops_ratio": train_flops / full_flops,
        "schedule": ctl.schedule.to_list(),
        "search": searches,
        "search_time_s": sum(s["search_time_s"] for s in searches),
        "stages": run.stage_stats,
        "operator": operator if peers.plan_method(cfg.method) != "full" else None,
        "seed": cfg.seed,
        "train_samples": len(data.train_set),  # type: ignore[arg-type]
        "steps": run.step,
        "params": count_params(ctl.model),
        "full_depth": adapter.full.depth,
        "full_resolution": adapter.full.resolution,
        "config": cfg.to_dict(),
        "environment": env,
        "nonfinite_rollbacks": rollbacks,
        "search_rule": cfg.search().to_dict() if cfg.method in ("autoprog-one", "autoprog-zero") else None,
    }


def _describe(
    cfg: PretrainConfig, epochs: int, adapter: ModelAdapter, data: PretrainData, stages: int, device: torch.device
) -> str:
    val = len(data.val_set) if data.val_set is not None else 0  # type: ignore[arg-type]
    size = f"{adapter.full.resolution}px ({data.size_note})" if data.size_note else f"{adapter.full.resolution}px"
    return (f"autoprog pretrain: {cfg.method} | {cfg.model} depth {adapter.full.depth} @ {size} | "
            f"{cfg.data}: {len(data.train_set)} train / {val} val / {len(data.test_set)} test | "  # type: ignore[arg-type]
            f"{epochs} epochs x {len(data.train)} steps | {stages} stage(s) | device {device}")  # fmt: skip


def _epoch_line(
    spec: EpochSpec, epochs: int, side: int, loss: float, val_top1: float | None, rate: float, seconds: float
) -> str:
    val = "-" if val_top1 is None else f"{val_top1:.2f}"
    return (f"  epoch {spec.epoch + 1}/{epochs} stage {spec.stage} [{side}px d{spec.config.depth}] "
            f"loss {loss:.4f} val {val} ({seconds:.1f}s, {rate:.0f} img/s)")  # fmt: skip


def _resumable(state: dict[str, Any]) -> bool:
    return "controller" in state and "loop" in state


def _progress_desc(spec: EpochSpec, epochs: int) -> str:
    what = "supernet" if spec.supernet else f"{spec.config.resolution}px d{spec.config.depth}"
    return f"epoch {spec.epoch + 1}/{epochs} stage {spec.stage} [{what}]"


def _log_stage_start(spec: EpochSpec, operator: str, recycle: bool, log: Callable[[str], None]) -> None:
    """The console lines of what :meth:`GrowthController.begin_epoch` changed."""
    for event in spec.events:
        if event.kind == "supernet":
            log(f"  stage {spec.stage}: supernet over {len(event.detail['candidates'])} candidates for "
                f"{event.detail['epochs']} epoch(s)" + ("" if recycle else " (not recycled)"))  # fmt: skip
        elif event.kind == "search":
            _log_search(event, log)
    if spec.first_of_stage and not spec.supernet and spec.stage > 0:
        log(f"  stage {spec.stage}: depth {spec.config.depth}, resolution {spec.config.resolution} ({operator})")


def _log_search(event: Event, log: Callable[[str], None]) -> None:
    r = event.detail
    if r.get("search") == "zero-shot":  # AutoProg-Zero: proxies, runtime term, rank sum (Eq. 19)
        table = ", ".join(
            f"{c['resolution']}px d{c['depth']}: log-NTK {c['log_ntk']:.2f} ZiCo {c['zico']:.1f} "
            f"T {c['time']:.3g} ranks {c['total']:g}"
            for c in r["candidates"]
        )
        log(
            f"  stage {event.stage}: chose {event.config.resolution}px d{event.config.depth} zero-shot from {table}"
        )
        return
    table = ", ".join(
        f"{c['resolution']}px d{c['depth']}: L {c['loss']:.3f} T {1000 * c['runtime_s']:.0f}ms"
        for c in r["candidates"]
    )
    log(f"  stage {event.stage}: chose {event.config.resolution}px d{event.config.depth} "
        f"(w={r['balancing_factor']:.2f}) from {table}")  # fmt: skip


__all__ = ["create_schedule", "evaluate", "load_schedule_file", "pretrain"]
