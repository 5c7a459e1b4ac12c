"""``autoprog finetune``: progressive fine-tuning of a pretrained model (paper Sec. 4, Algorithm 2).

Read :func:`_finetune` top to bottom: set up the source model and its task, the data, the
learnable sub-networks and the plan, logging, the step and the searches, and resume; then, for
every stage, choose its sub-network (a search at the stage start: AutoProg-Zero's zero-shot
proxies + ranked voting, AutoProg-One's supernet loss x runtime; or the manual schedule),
unfreeze it and train it, checkpointing on the way; finally evaluate the task's metric of the
final (EMA) model (FID of a generator, top-1 of a classifier) and write ``summary.json``.

The pieces live beside it: the data in :mod:`autoprog.train.finetune_data`, the learnable
sub-networks and the step in :mod:`autoprog.train.finetune_step`, the searches in
:mod:`autoprog.train.finetune_search`; what depends on the model family (blocks, loss, SID, probe
data, evaluation) is the task's (:mod:`autoprog.tasks`: a class-conditional DiT, a text-to-image
UNet, a timm classifier); the run machinery (resume, rollback on a non-finite loss, log sinks, DDP
re-wrapping) is :mod:`autoprog.run`.

Frozen parameters get no gradient and no optimizer state; the optimizer and the EMA pairing are
rebuilt by parameter name at every unfreezing, carrying the moments of parameters that keep learning.

``OUT/checkpoints/last.pt`` (the one before kept as ``last.pt.prev``) holds the whole state of the run
at every stage boundary and every ``--checkpoint-every`` steps, inside AutoProg-One's supernet
training too; ``--resume`` continues from it exactly. A non-finite loss is never trained on: the run
rolls back to the checkpoint with a lower learning rate, or stops (``--on-nonfinite``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autoprog.adapters.base import count_params
from autoprog.checkpoint import set_global_rng_states
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError, NonFiniteLoss
from autoprog.memory import peak_memory_bytes, reset_peak_memory
from autoprog.run import (
    Attempt,
    RunCheckpoint,
    RunLog,
    console,
    environment,
    gather_rng_states,
    mixed_precision_dtype,
    progress_bar,
    run_job,
    setup_process,
    show_progress,
)
from autoprog.tasks import FinetuneTask, create_finetune_task
from autoprog.train.config import PROGRESSIVE_FINETUNE_METHODS, FinetuneConfig
from autoprog.train.finetune_data import SearchProbe, StageBatches, load_train_set
from autoprog.train.finetune_search import StageSearch
from autoprog.train.finetune_step import FinetuneStep, LearnableSubnets
from autoprog.train.source import resolve_model
from autoprog.unfreeze import (
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    prog_unfreeze_schedule,
    step_boundaries,
)


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] = console) -> dict[str, Any]:
    """Run one fine-tuning job; write and return its ``summary.json``.

    Under ``torchrun`` / ``accelerate launch`` every process runs this with the same ``cfg``: data is
    sharded, the learnable sub-network trains in DDP (wrapped anew at every unfreezing), search
    decisions are rank 0's, and rank 0 evaluates and writes the results. Mixed precision comes from
    ``cfg.mixed_precision`` or, when that is unset, ``accelerate launch --mixed_precision``.

    ``cfg.resume`` continues the run in ``cfg.out`` exactly from ``checkpoints/last.pt`` (written at
    every stage boundary and every ``cfg.checkpoint_every`` steps). A non-finite training loss is
    never trained on: with ``cfg.on_nonfinite == "rollback"`` the run goes back to its last
    checkpoint with the learning rate times ``cfg.nonfinite_lr_factor`` (at most
    ``cfg.max_rollbacks`` times), otherwise it stops with an :class:`AutoprogError`
    (:mod:`autoprog.run.nonfinite`).
    """
    return run_job(cfg, _finetune, log)


def _finetune(cfg: FinetuneConfig, log: Callable[[str], None], ctx: DistContext, attempt: Attempt) -> dict[str, Any]:
    """One attempt of :func:`finetune`: from scratch, or (``attempt.resume``) from ``last.pt``."""
    out, checkpoint = Path(cfg.out), RunCheckpoint(cfg.out)
    saved = load_resume_state(cfg, log) if attempt.resume else None
    out.mkdir(parents=True, exist_ok=True)
    device = setup_process(cfg.threads, cfg.seed, cfg.device, ctx)
    random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * ctx.rank)  # all training randomness, per process
    amp_dtype = mixed_precision_dtype(cfg.mixed_precision, device)

    # Setup the source model (a folder, loaded with from_pretrained) and what the loop needs to know
    # of its family: the task (autoprog.tasks) gives the blocks, the loss, the probe data and the evaluation.
    model_dir = resolve_source(cfg, ctx, log)
    num_stages = cfg.stages if cfg.method in PROGRESSIVE_FINETUNE_METHODS else 1
    task: FinetuneTask = create_finetune_task(model_dir, cfg, num_stages=num_stages, device=device)
    use_sid = stage_identifiers(cfg, task)
    model, base_lr = task.model, cfg.lr if cfg.lr is not None else task.default_lr

    # Setup data at the source's size and channels (uint8; the task scales it), and the learnable
    # sub-networks: unfreezing levels, or a parameter-efficient baseline's parameters.
    train_set = load_train_set(cfg, task)
    subnets = LearnableSubnets(task, cfg.levels, task.method_parameters(cfg.method, cfg.lora_rank), use_sid)
    model.to(device)
    if saved is not None:
        model.load_state_dict(saved["model"])
    batches = StageBatches(train_set, cfg, ctx)

    # Setup the space of learnable sub-networks and the plan; FLOPs are accounting, not training:
    # every configuration the run can train is counted before the clock starts.
    space = UnfreezeSpace(task.full_resolution, task.patch_size, cfg.ratio, num_stages, cfg.levels)
    plan = create_plan(cfg, space, num_stages)
    bounds = step_boundaries(cfg.steps, len(plan))
    count_flops(subnets, space, plan)
    log(_describe(cfg, model_dir, task, use_sid, len(train_set), len(plan), device))  # type: ignore[arg-type]

    # Setup logging: rank 0 writes log.jsonl (cut back to the checkpoint when resuming) and
    # TensorBoard; with several processes each also logs its decisions with a parameter digest.
    offset = saved["log_offset"] if saved is not None else None
    records = RunLog(out, ctx, resume_offset=offset, tensorboard=cfg.tensorboard, model=lambda: model, log=log)
    with records:
        # Setup the step (optimizer, EMA and DDP rebuilt at every unfreezing) and the searches, which
        # score candidates on fixed probe samples.
        lr_scale = attempt.lr_scale if attempt.lr_scale is not None else _saved_lr_scale(saved)
        train_step = FinetuneStep(cfg, subnets, base_lr, lr_scale, amp_dtype, device, ctx, gen)
        search = StageSearch(cfg, space, subnets, SearchProbe(train_set, task, cfg, use_sid), ctx, device)

        # Resume: the stage, the step's and the data's state, the random states, the rollbacks' records.
        run = Progress(t_start=time.perf_counter() - (saved["elapsed_s"] if saved is not None else 0.0))
        first_stage, mid = 0, None
        if saved is not None:
            first_stage, mid = run.resume(saved, train_step, batches, search, attempt, records, ctx, device, gen, out)
            log(f"  resumed at step {train_step.step} (stage {saved['stage']}, {saved['phase']}) from {out / 'checkpoints'}")

        def save(k: int, phase: str, t_stage: float, start: int, **where: Any) -> None:
            """The whole state (``last.pt``): ``--resume`` continues from it exactly. ``phase``:
            ``search`` (inside AutoProg-One's supernet training), ``train`` (inside stage ``k``'s
            training) or ``done`` (stage ``k`` ended). Every process calls it (a collective)."""
            rng = gather_rng_states(ctx, device, gen)
            if ctx.is_main:
                checkpoint.save(run.state(cfg, k, phase, t_stage, start, where, model=model, train_step=train_step,
                                          batches=batches, search=search, rng=rng, log_offset=records.offset()))  # fmt: skip

        # The stages: the plan says what to train, or a search at the stage's start decides.
        show = show_progress(cfg.progress)
        for k in range(first_stage, len(plan)):
            cont, mid = mid, None  # the checkpoint's state inside this stage, when resuming into it
            t_stage = time.perf_counter() - (cont["stage_elapsed_s"] if cont is not None else 0.0)
            reset_peak_memory(device)
            start = cont["stage_start_step"] if cont is not None else train_step.step
            if cont is not None and cont["phase"] == "train":  # the stage's sub-network was chosen and logged
                chosen = UnfreezeConfig(*cont["chosen"])
                trainable = subnets.configure(chosen)
                train_step.rebuild()
                losses: list[float] = list(cont["stage_losses"])
            else:
                chosen = plan[k]
                if chosen is None:  # AutoProg-Zero or -One chooses the stage's sub-network
                    if cfg.method == "autoprog-zero":
                        chosen, record = search.zero_shot(k, run.current, train_step.step)
                    else:
                        chosen, record = search.supernet(
                            k, run.current, bounds[k + 1], train_step, batches, records.write,
                            lambda state, k=k, t=t_stage, s=start: save(k, "search", t, s, search=state),
                            cont["search"] if cont is not None else None,
                        )  # fmt: skip
                    run.searches.append(record)
                    records.write({"event": "search", **record})
                    log(f"  stage {k} search: {chosen.resolution}px level {chosen.level} ({record['search_time_s']:.1f}s)")
                # Unfreeze: the chosen sub-network learns; optimizer, EMA and DDP follow it.
                trainable = subnets.configure(chosen)
                train_step.rebuild()
                records.write({"event": "stage", "stage": k, "step": train_step.step, "resolution": chosen.resolution,
                               "level": chosen.level, "trainable_params": trainable})  # fmt: skip
                if k > 0 or len(plan) > 1:
                    log(f"  stage {k}: {chosen.resolution}px, level {chosen.level}, {trainable:,} learnable parameters")
                losses = []

            # Train the stage's steps at its resolution (a resumed run continues where it stopped).
            bar = progress_bar(range(train_step.step, bounds[k + 1]), show=show,
                               desc=f"stage {k} [{chosen.resolution}px L{chosen.level}]")  # fmt: skip
            for _ in bar:
                x, y = batches.next(chosen.resolution)
                losses.append(train_step(chosen, x, y, k))
                records.write({"event": "step", "step": train_step.step - 1, "stage": k, "loss": losses[-1]})
                if train_step.step % 50 == 0 and show:
                    rate = bar.format_dict.get("rate") or 0.0  # steps/s, tqdm's smoothed estimate
                    bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}",
                                    img_s=f"{rate * cfg.batch_size * ctx.world_size:.0f}")  # fmt: skip
                every = cfg.checkpoint_every
                if every and train_step.step % every == 0 and train_step.step < bounds[k + 1]:
                    save(k, "train", t_stage, start, chosen=chosen, trainable=trainable, losses=losses)

            # The stage ends: book it (its loss over all processes), checkpoint the whole state.
            stage_time = time.perf_counter() - t_stage
            total, n = ctx.all_reduce_sum([sum(losses), len(losses)])
            run.end_stage({"stage": k, "start_step": bounds[k], "end_step": bounds[k + 1], "resolution": chosen.resolution,
                           "level": chosen.level, "trainable_params": trainable}, chosen,
                          wall_clock_s=stage_time, train_flops_cumulative=train_step.train_flops,
                          mean_loss=total / n if n else None, steps_trained=train_step.step - start,
                          peak_mem_bytes=peak_memory_bytes(device))  # fmt: skip
            if losses:
                log(f"  stage {k} done: loss {run.stage_stats[-1]['mean_loss']:.4f} ({stage_time:.1f}s)")
            save(k, "done", t_stage, start, chosen=chosen, trainable=trainable)
    wall_clock = time.perf_counter() - run.t_start

    # Evaluation (rank 0): the task's metric (FID of samples, top-1) of the EMA (or online) model at
    # full resolution, with the final stage's identifier; then save the model and summary.json.
    final = train_step.ema.module if train_step.ema is not None else model
    evaluation: dict[str, Any] = {task.metric: None}
    if ctx.is_main:
        evaluation = task.evaluate(final, out, (num_stages - 1) if use_sid else None, log)
        task.save(final, out / "model")
    train_flops = int(ctx.all_reduce_sum([float(train_step.train_flops)])[0])  # all processes together
    full_flops = subnets.flops(space.full, everything=True) * cfg.steps * cfg.batch_size * ctx.world_size
    summary = build_summary(cfg, task, model_dir, run, evaluation, wall_clock, train_flops, full_flops,
                            use_sid=use_sid, lr=base_lr, train_samples=len(train_set), amp_dtype=amp_dtype,  # type: ignore[arg-type]
                            env={**environment(device), "world_size": ctx.world_size}, lr_scale=train_step.lr_scale)  # fmt: skip
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    value = evaluation.get(task.metric)
    metric_text = "-" if value is None else f"{value:.2f}"
    log(f"  done: {task.metric.upper() if task.metric == 'fid' else task.metric} {metric_text} | {wall_clock:.1f}s | "
        f"FLOPs {summary['flops_ratio']:.3f} of full | {out}/summary.json")  # fmt: skip
    return summary


@dataclass
class Progress:
    """The loop's own state, checkpointed in ``last.pt`` (the step, the data and the searches keep
    theirs).

    Attributes:
        t_start: ``time.perf_counter()`` at the run's start (less the time before a resume).
        current: the last finished stage's sub-network (the next search's starting point).
        schedule: the finished stages (``summary.json``'s ``schedule``, without the statistics).
        stage_stats: ``summary.json``'s ``stages``, one entry per finished stage.
        searches: the searches' records (``summary.json``'s ``search``).
        nonfinite: the run's ``nonfinite`` rollback records (kept in the log across rollbacks).
    """

    t_start: float
    current: UnfreezeConfig | None = None
    schedule: list[dict[str, Any]] = field(default_factory=list)
    stage_stats: list[dict[str, Any]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    nonfinite: list[dict[str, Any]] = field(default_factory=list)

    def end_stage(self, stage: dict[str, Any], chosen: UnfreezeConfig, **stats: Any) -> None:
        """Book the stage that just ended (``stage``: its ``schedule`` entry; ``stats``: the rest of
        its ``stages`` entry)."""
        self.schedule.append(stage)
        self.stage_stats.append({**stage, **stats})
        self.current = chosen

    def state(
        self, cfg: FinetuneConfig, k: int, phase: str, t_stage: float, start: int, where: dict[str, Any], *,
        model: torch.nn.Module, train_step: FinetuneStep, batches: StageBatches, search: StageSearch,
        rng: list[dict[str, Any]], log_offset: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Everything a resumed run needs to continue exactly (``last.pt``), in stage ``k`` (which
        started at step ``start``) at ``phase``; ``where``: the stage's ``chosen`` sub-network, its
        ``trainable`` parameter count, its ``losses`` so far, the supernet ``search``'s state."""
        now = time.perf_counter()
        chosen, ema, scaler = where.get("chosen"), train_step.ema, train_step.scaler
        return {
            "kind": "finetune",
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": train_step.optimizer_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": train_step.step,
            "stage": k,
            "phase": phase,
            "chosen": None if chosen is None else [chosen.resolution, chosen.level],
            "trainable_params": where.get("trainable"),
            "stage_start_step": start,
            "stage_losses": list(where.get("losses", [])),
            "search": where.get("search"),
            "schedule": _plain(self.schedule),
            "stage_stats": _plain(self.stage_stats),
            "searches": _plain(self.searches),
            "train_flops": train_step.train_flops,
            "data": batches.state_dict(),
            "rng": rng,
            "step_times": [[c.resolution, c.level, t] for c, t in search.step_times.items()],
            "lr_scale": train_step.lr_scale,
            "nonfinite_events": self.nonfinite,
            "elapsed_s": now - self.t_start,
            "stage_elapsed_s": now - t_stage,
            "log_offset": log_offset,
            "config": cfg.to_dict(),
        }

    def resume(
        self, saved: dict[str, Any], train_step: FinetuneStep, batches: StageBatches, search: StageSearch,
        attempt: Attempt, records: RunLog, ctx: DistContext, device: torch.device, gen: torch.Generator, out: Path,
    ) -> tuple[int, dict[str, Any] | None]:  # fmt: skip
        """Continue from the checkpoint ``saved``; returns the first stage to run and, when the
        checkpoint was taken inside it, its state there. Logs this job's rollbacks that the log, cut
        back to the checkpoint, lost, then a ``resume`` record."""
        self.searches, self.schedule, self.stage_stats = saved["searches"], saved["schedule"], saved["stage_stats"]
        if self.schedule:
            self.current = UnfreezeConfig(self.schedule[-1]["resolution"], self.schedule[-1]["level"])
        train_step.load_state(saved)
        batches.load_state_dict(saved["data"])
        search.step_times.update({UnfreezeConfig(r, lv): t for r, lv, t in saved["step_times"]})
        if len(saved["rng"]) != ctx.world_size:
            raise ConfigError(
                f"--resume: the run in {out} had {len(saved['rng'])} process(es), this one has {ctx.world_size}"
            )
        gen.set_state(saved["rng"][ctx.rank]["gen"])
        set_global_rng_states(saved["rng"][ctx.rank], device)
        self.nonfinite = attempt.replay(list(saved.get("nonfinite_events", [])), records.write)
        records.write({"event": "resume", "step": train_step.step, "stage": saved["stage"], "phase": saved["phase"],
                       "lr_scale": train_step.lr_scale, "rollbacks": attempt.rollbacks})  # fmt: skip
        if saved["phase"] == "done":
            return saved["stage"] + 1, None
        return saved["stage"], saved


def load_resume_state(cfg: FinetuneConfig, log: Callable[[str], None] = console) -> dict[str, Any]:
    """The state ``--resume`` continues from: ``OUT/checkpoints/last.pt`` (``last.pt.prev`` if that one
    cannot be loaded), written by a run of the same configuration (up to :data:`~autoprog.train.config.RESUME_FREE_FIELDS`).

    Raises:
        ConfigError: no checkpoint, not a finetune checkpoint, or a different configuration (the
            message names the first differing option).
        CheckpointError: neither file can be loaded.
    """
    return RunCheckpoint(cfg.out).load(cfg.to_dict(), "finetune", _resumable, log)


def resolve_source(cfg: FinetuneConfig, ctx: DistContext, log: Callable[[str], None]) -> Path:
    """The source model's folder (``--model``): a built-in source is made (and cached) once, by rank 0.
    Making one draws random numbers, so every process reseeds afterwards and starts alike."""
    if ctx.distributed and not ctx.is_main:
        ctx.barrier()
    model_dir = resolve_model(cfg.model, log=log)
    if ctx.distributed and ctx.is_main:
        ctx.barrier()
    torch.manual_seed(cfg.seed)
    return model_dir


def stage_identifiers(cfg: FinetuneConfig, task: FinetuneTask) -> bool:
    """Whether the run uses Unique Stage Identifiers (Sec. 4.1.2): ``--sid``, or the method's default."""
    if cfg.sid and not task.stage_identifiers:
        raise ConfigError(
            f"--sid: {type(task).__name__} has no stage identifiers (SID is for generative models, Sec. 4.1.2)"
        )
    return cfg.use_sid and task.stage_identifiers


def create_plan(cfg: FinetuneConfig, space: UnfreezeSpace, num_stages: int) -> list[UnfreezeConfig | None]:
    """Each stage's sub-network: Prog's uniform linear schedule (Sec. 4.1.1); ``None`` for the stages
    a search decides (AutoProg), then the fully learnable model; one full stage for the baselines."""
    if cfg.method == "prog":
        return [s.config for s in prog_unfreeze_schedule(space, cfg.steps)]
    if cfg.method in ("autoprog-zero", "autoprog-one"):
        return [None] * (num_stages - 1) + [space.full]
    return [space.full]


def count_flops(subnets: LearnableSubnets, space: UnfreezeSpace, plan: list[UnfreezeConfig | None]) -> None:
    """Count the training FLOPs of every sub-network the run can train (the plan's, the whole grid
    when a stage is searched) and of full fine-tuning (the reference)."""
    subnets.flops(space.full, everything=True)
    searched = None in plan  # a search may pick any learnable sub-network of the space
    grid = [UnfreezeConfig(r, lv) for r in space.resolutions for lv in space.levels] if searched else []
    for c in {space.full, *(c for c in plan if c is not None), *grid}:
        subnets.flops(c)


def build_summary(
    cfg: FinetuneConfig, task: FinetuneTask, model_dir: Path, run: Progress, evaluation: dict[str, Any],
    wall_clock: float, train_flops: int, full_flops: int, *, use_sid: bool, lr: float, train_samples: int,
    amp_dtype: torch.dtype | None, env: dict[str, Any], lr_scale: float,
) -> dict[str, Any]:  # fmt: skip
    """``summary.json`` (see the README for its keys)."""
    schedule = UnfreezeSchedule.from_list(run.schedule)
    return {
        "method": cfg.method,
        "sid": use_sid,
        "model": cfg.model,
        "source": str(model_dir),
        "data": cfg.data,
        "steps": cfg.steps,
        "task": type(task).__name__,
        "metric": task.metric,
        **evaluation,
        "lr": lr,
        "wall_clock_s": wall_clock,
        "train_flops": train_flops,
        "full_flops": full_flops,
        "flops_ratio": train_flops / full_flops,
        "schedule": [
            {**s, "trainable_params": t["trainable_params"]}
            for s, t in zip(schedule.to_list(), run.schedule, strict=True)
        ],
        "search": run.searches,
        "search_time_s": sum(s["search_time_s"] for s in run.searches),
        "stages": run.stage_stats,
        "seed": cfg.seed,
        "train_samples": train_samples,
        "params": count_params(task.model),
        "full_resolution": task.full_resolution,
        "full_depth": len(task.block_paths),
        "config": cfg.to_dict(),
        "mixed_precision": {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
        "environment": env,
        "nonfinite_rollbacks": sum(r["action"] == "rollback" for r in run.nonfinite),
        "lr_scale": lr_scale,
        "search_rule": cfg.search().to_dict() if cfg.method in ("autoprog-one", "autoprog-zero") else None,
    }


def _describe(
    cfg: FinetuneConfig, model_dir: Path, task: FinetuneTask, use_sid: bool, images: int, stages: int,
    device: torch.device,
) -> str:  # fmt: skip
    return (f"autoprog finetune: {cfg.method}{' + SID' if use_sid else ''} | source {model_dir.name} "
            f"({len(task.block_paths)} blocks @ {task.full_resolution}px) | {cfg.data}: {images} images | "
            f"{cfg.steps} steps x {cfg.batch_size} | {stages} stage(s) | device {device}")  # fmt: skip


def _saved_lr_scale(saved: dict[str, Any] | None) -> float:
    """The learning-rate scale a run resumes with when no rollback sets one: the checkpoint's, else 1."""
    return float(saved["lr_scale"]) if saved is not None else 1.0


def _resumable(state: dict[str, Any]) -> bool:
    return state.get("kind") == "finetune" and "phase" in state


def _plain(obj: Any) -> Any:
    """``obj`` as JSON types only (NumPy scalars become floats, tuples lists): loadable with
    ``weights_only=True``."""
    return json.loads(json.dumps(obj))


__all__ = ["NonFiniteLoss", "finetune", "load_resume_state"]
