"""Progressive pre-training of an image classifier (paper Sec. 3): the ``autoprog pretrain`` loop.

Read it top to bottom: set up data, model and schedule; then, for every epoch, grow the model if a
new stage starts (operator -> rebuilt optimizer and EMA), train one epoch at the stage's resolution
and depth, evaluate on the validation split; finally evaluate on the test split and write
``summary.json``.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import autoprog
from autoprog.adapters.base import ModelAdapter, count_params, create_adapter
from autoprog.checkpoint import (
    global_rng_states,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
    set_global_rng_states,
)
from autoprog.controller import EpochSpec, Event, GrowthController, ZeroShotProbe, create_plan
from autoprog.data import SubsetDataset, class_balanced_subset, load_dataset
from autoprog.data.augment import RandAugmentDataset
from autoprog.data.resize import resize_batch, step_generator
from autoprog.distributed import DistContext, RankLog, init_distributed, shutdown_distributed
from autoprog.errors import AutoprogError, ConfigError, NonFiniteLoss
from autoprog.flops import FlopTable
from autoprog.growth.input_schedule import EpochInput, input_stages
from autoprog.growth.operators import create_operator
from autoprog.growth.schedule import GrowthSchedule, GrowthSpace, SubnetConfig
from autoprog.memory import peak_memory_bytes, reset_peak_memory
from autoprog.search.one_shot import measure_step_time
from autoprog.train import peers
from autoprog.train.config import PretrainConfig, check_same_config
from autoprog.train.loader import BatchSource
from autoprog.train.optim import build_optimizer, cosine_lr, set_lr
from autoprog.train.regularization import StageRegularization, adaptive_regularization, set_drop_path


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


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, standardised per channel."""
    return (x.float().div_(255.0) - mean) / std


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


def _print(message: str) -> None:
    print(message, flush=True)


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = _print) -> dict[str, Any]:
    """Run one pre-training job and return (and write) its summary.

    Under ``torchrun`` / ``accelerate launch`` every process runs this with the same ``cfg``: data is
    sharded, the model trains in DDP, decisions are rank 0's, and rank 0 writes the results.
    """
    cfg.validate()
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed(
        "cuda"
        if (cfg.device or "").startswith("cuda") or (not cfg.device and torch.cuda.is_available())
        else "cpu"
    )
    say = log if ctx.is_main else (lambda _msg: None)
    try:
        resume, lr_scale, rollbacks = cfg.resume, None, 0
        nonfinite: dict[str, Any] | None = None
        while True:
            try:
                return _pretrain(
                    cfg, say, ctx, resume=resume, lr_scale=lr_scale, rollbacks=rollbacks, nonfinite=nonfinite
                )
            except NonFiniteLoss as e:
                last = Path(cfg.out) / "checkpoints" / "last.pt"
                can_roll = cfg.on_nonfinite == "rollback" and rollbacks < cfg.max_rollbacks and last.exists()
                if not can_roll:
                    _append_log(
                        cfg.out,
                        ctx,
                        {"event": "nonfinite", "step": e.step, "action": "stop", "lr_scale": e.lr_scale},
                    )
                    raise AutoprogError(
                        f"non-finite loss ({e.value}) at step {e.step}; stopped"
                        + ("" if cfg.on_nonfinite == "stop" else f" after {rollbacks} rollback(s)")
                        + f" (last checkpoint: {last if last.exists() else 'none'})"
                    ) from None
                rollbacks += 1
                lr_scale = e.lr_scale * cfg.nonfinite_lr_factor
                say(
                    f"  non-finite loss ({e.value}) at step {e.step}: rolling back to {last} with LR x{lr_scale:g}"
                )
                resume = True
                nonfinite = {"event": "nonfinite", "step": e.step, "loss": str(e.value), "action": "rollback",
                             "lr_scale": lr_scale}  # fmt: skip
    finally:
        if not joined:
            shutdown_distributed()


def _append_log(out: str, ctx: DistContext, record: dict[str, Any]) -> None:
    if ctx.is_main:
        with (Path(out) / "log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def _pretrain(
    cfg: PretrainConfig,
    log: Callable[[str], None],
    ctx: DistContext,
    resume: bool = False,
    lr_scale: float | None = None,
    rollbacks: int = 0,
    nonfinite: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out = Path(cfg.out)
    saved = _load_resume_state(out, cfg, log) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.device:
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    # Setup data: a class-balanced training subset, a validation split carved from the unused
    # training images (no tuning on the test split), and the test split.
    train_full = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=cfg.img_size)
    test_set = load_dataset(cfg.data, "test", data_dir=cfg.data_dir, image_size=cfg.img_size)
    if cfg.test_subset is not None and cfg.test_subset < len(test_set):
        test_set = class_balanced_subset(test_set, cfg.test_subset, seed=cfg.seed)
    info = train_full.info
    val_size = min(cfg.val_size, len(train_full) // 10)
    n_train = min(cfg.train_subset or len(train_full), len(train_full) - val_size)
    pool = class_balanced_subset(train_full, n_train + val_size, seed=cfg.seed)
    train_set, val_set = _split_pool(pool, n_train, cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)  # timm's Mixup draws from NumPy
    epochs = peers.trained_epochs(cfg)  # --epochs, but fewer for full-equal-time (--epochs: its budget)
    downsize = peers.batch_downsize(cfg)  # --input-transform: how the sources bring images to a stage's size

    def make_train_source(randaug: str | None) -> BatchSource:
        data = RandAugmentDataset(train_set, randaug) if randaug else train_set
        return BatchSource(
            data, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed, force_loader=bool(randaug),
            rank=ctx.rank, world_size=ctx.world_size, pin_memory=device.type == "cuda", num_workers=cfg.workers,
            downsize=downsize,
        )  # fmt: skip

    train_src = make_train_source(cfg.randaug)
    if len(train_src) == 0:
        raise ConfigError(
            f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})"
        )
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    val_src = (
        BatchSource(val_set, 512, shuffle=False, drop_last=False, downsize=downsize, **shard)
        if val_set is not None
        else None
    )
    test_src = BatchSource(test_set, 512, shuffle=False, drop_last=False, **shard)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return normalise(x, mean, std)

    # Setup model, growth space and the stage plan.
    adapter: ModelAdapter = create_adapter(
        cfg.model,
        img_size=info.image_size,
        in_chans=info.in_chans,
        num_classes=info.num_classes,
        patch_size=cfg.patch_size,
        depth=cfg.depth,
        drop_path_rate=cfg.drop_path,
    )
    space = GrowthSpace(
        adapter.full.resolution, adapter.full.depth, adapter.resolution_step, cfg.ratio, cfg.stages
    )
    plan = create_plan(peers.plan_method(cfg.method), space, epochs, create_schedule(cfg, space))
    # Peers (progressive resizing, EfficientTrain): the full model on an input that follows a schedule.
    input_schedule = peers.create_input_schedule(cfg, adapter.full.resolution, adapter.resolution_step)
    transform = peers.input_transform(cfg)
    operator = create_operator("stacking" if cfg.method == "progstack" else cfg.operator)
    flops = FlopTable(adapter.create_model, info.in_chans)
    # FLOPs are accounting, not training: count configurations before the clock starts.
    searched = any(p.fixed is None for p in plan)
    grid = [SubnetConfig(r, d) for r in space.resolutions for d in space.depths] if searched else []
    scheduled = peers.input_configs(input_schedule, epochs, adapter.full.depth)
    for config in {p.fixed for p in plan if p.fixed is not None} | set(grid) | {adapter.full} | scheduled:
        flops(config)

    steps_per_epoch = len(train_src)
    total_steps = steps_per_epoch * epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mixup = _make_mixup(cfg, info.num_classes)
    amp_dtype = mixed_precision_dtype(cfg.mixed_precision or ("bf16" if cfg.amp else None), device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    log(
        f"autoprog pretrain: {cfg.method} | {cfg.model} depth {adapter.full.depth} @ {adapter.full.resolution}px | "
        f"{cfg.data}: {len(train_set)} train / {len(val_set) if val_set is not None else 0} val / {len(test_set)} test | "
        f"{epochs} epochs x {steps_per_epoch} steps | {len(plan)} stage(s) | device {device}"
    )
    # Rank 0 writes the log; with several processes each also keeps a short log of its stages and
    # searches with a digest of its parameters (all equal when the processes agree).
    log_file = None
    if ctx.is_main:
        log_file = (out / "log.jsonl").open("r+" if saved is not None else "w")
        if saved is not None:  # drop what was logged after the checkpoint: it is trained again
            log_file.seek(saved["loop"]["log_offset"])
            log_file.truncate()
    rank_log = RankLog(out, ctx)
    tb = open_tensorboard(cfg.tensorboard) if ctx.is_main else None

    def emit(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
        if tb is not None:
            tb.write(record)
        if record["event"] in ("stage", "search"):
            rank_log.write(record, ctl.model)

    # The controller owns what changes shape (model, momentum copy, optimizer) and decides the
    # schedule; this loop owns data, loss, learning rate and logging.
    fixed = BatchSource(train_set, min(256, cfg.search_samples), shuffle=False, drop_last=False, downsize=downsize)

    @torch.no_grad()
    def score(net: nn.Module, config: SubnetConfig) -> float:
        """Search loss (Sec. 3.2.3): the momentum net on the first training samples, no augmentation."""
        total, seen = 0.0, 0
        for x, y in fixed.epoch(0, config.resolution):
            logits = net(prep(x.to(device)))
            total += F.cross_entropy(logits.float(), y.to(device), reduction="sum").item()
            seen += len(y)
            if seen >= cfg.search_samples:
                break
        return total / seen

    def measure(net: nn.Module, config: SubnetConfig) -> float:
        """A forward + backward of ``config`` on a fixed batch (for candidates never sampled)."""
        x, y = next(iter(fixed.epoch(0, config.resolution)))
        x, y = prep(x.to(device)), y.to(device)
        t = measure_step_time(
            lambda: F.cross_entropy(net(x), y).backward(), repeats=2, warmup=1, device=device
        )
        for p in net.parameters():
            p.grad = None
        return t

    probe = None
    if cfg.method == "autoprog-zero":
        # AutoProg-Zero's probe (Sec. 4.2.2): training images drawn at random (seeded), without
        # augmentation, the same on every process; every candidate sees them at its resolution.
        size = max(1, min(cfg.batch_size, len(train_set) // cfg.zico_batches))
        picked = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed))
        probe_src = BatchSource(
            SubsetDataset(train_set, picked[: size * cfg.zico_batches].tolist()),
            size,
            shuffle=False,
            drop_last=True,
        )
        probe = ZeroShotProbe(
            [(prep(x.to(device)), y.to(device)) for x, y in probe_src.epoch(0, adapter.full.resolution)],
            ntk_samples=cfg.ntk_samples,
            weights=cfg.weights(),
            seed=cfg.seed,
        )

    ctl = GrowthController(
        adapter,
        plan,
        steps_per_epoch=len(train_src),
        operator=operator,
        optimizer_factory=lambda m: build_optimizer(m, cfg.lr, cfg.weight_decay),
        carry_optimizer_state=cfg.optimizer_state == "carry",
        ema_decay=cfg.ema_decay,
        ema_warmup=cfg.ema_warmup,
        use_ema=operator.needs_momentum or cfg.eval_ema or cfg.method == "autoprog-one",
        score_fn=score,
        measure_fn=measure,
        search_epochs=cfg.search_epochs,
        search_snapshots=cfg.search_snapshots,
        recycle=cfg.recycle,
        seed=cfg.seed,
        device=device,
        broadcast=ctx.broadcast,
        runtime_fn=(lambda c: float(flops(c))) if cfg.search_runtime == "flops" else None,
        probe=probe,
    )
    wrapped: tuple[int, nn.Module] | None = None  # (the controller's version it was wrapped at, the module)

    def train_module(supernet: bool) -> nn.Module:
        """The module of the training forward: the model, in DDP when distributed, wrapped anew
        after each change of the model."""
        nonlocal wrapped
        if wrapped is None or wrapped[0] != ctl.version:
            if cfg.channels_last:  # new blocks arrive in the default format: convert after every change
                ctl.model.to(memory_format=torch.channels_last)
            module = ctx.wrap(ctl.model, find_unused_parameters=supernet)
            if cfg.compile:  # compiled once per model change; a new resolution adds one guard/graph
                module = torch.compile(module, backend=cfg.compile)
            wrapped = (ctl.version, module)
        return wrapped[1]

    if device.type == "cuda":  # reserve the largest configuration's memory before training starts
        _reserve_memory(adapter, cfg.batch_size, info.in_chans, device, criterion, amp_dtype)

    step = 0  # optimizer steps in the budget
    train_time = 0.0
    train_flops = 0
    stage_stats: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None  # where a resumed run picks up inside an epoch
    if saved is not None:
        ctl.load_state_dict(saved["controller"])
        loop = saved["loop"]
        step, train_time, train_flops = loop["step"], loop["train_time"], loop["train_flops"]
        stage_stats = list(loop["stage_stats"])
        lr_scale = loop["lr_scale"] if lr_scale is None else lr_scale
        set_global_rng_states(saved["rng"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        pending = loop if loop["epoch_started"] else None
        if nonfinite is not None:  # logged after the truncation, so that it stays in the log
            emit(nonfinite)
        emit({"event": "resume", "step": step, "epoch": ctl.epoch, "searching": ctl.searching,
              "lr_scale": lr_scale, "rollbacks": rollbacks})  # fmt: skip
        log(f"  resumed at step {step} (epoch {ctl.epoch + 1}, stage {ctl.stage}) from {out / 'checkpoints'}")
    lr_scale = 1.0 if lr_scale is None else lr_scale

    def save_state(epoch_started: bool, batches_done: int, epoch_losses: list[float]) -> None:
        """The full state of the run (``checkpoints/last.pt``, the previous one kept): ``--resume``
        continues from it exactly, mid-epoch and mid-search included."""
        if not ctx.is_main:
            return
        assert log_file is not None
        log_file.flush()
        loop = {"step": step, "train_time": train_time, "train_flops": train_flops, "stage_stats": stage_stats,
                "epoch_started": epoch_started, "batches_done": batches_done, "epoch_losses": list(epoch_losses),
                "stage_elapsed": time.perf_counter() - t_stage - eval_time, "log_offset": log_file.tell(),
                "lr_scale": lr_scale}  # fmt: skip
        state = {"controller": ctl.state_dict(), "loop": loop, "rng": global_rng_states(), "config": cfg.to_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else None}  # fmt: skip
        save_checkpoint(state, out / "checkpoints" / "last.pt", keep_previous=True)

    def train_step(x: torch.Tensor, y: torch.Tensor, lr_step: int) -> float:
        """One optimizer step on a prepared batch; returns the loss."""
        model, optimizer = train_module(ctl.skips_blocks), ctl.optimizer
        set_lr(optimizer, lr_scale * cosine_lr(lr_step, total_steps, cfg.lr, warmup_steps, cfg.min_lr))
        y_soft = None
        if eraser is not None:
            x = eraser(x)
        if mixup is not None:
            x, y_soft = mixup(x, y)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        if y_soft is None:
            loss = criterion(logits.float(), y)
        else:
            loss = torch.sum(-y_soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        value = loss.item()
        if not math.isfinite(value):  # never train on it: stop, or roll back (see pretrain())
            raise NonFiniteLoss(value, step, lr_scale)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scaled gradients, steps skipped on overflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return value

    def run_epoch(spec: EpochSpec, skip: int = 0, done: list[float] | None = None) -> tuple[float, float]:
        """Train one epoch as the controller specifies; returns (mean loss, seconds). A resumed run
        skips the ``skip`` batches it trained before the checkpoint (their losses: ``done``)."""
        nonlocal step, train_flops
        ctl.model.train()
        losses: list[float] = list(done or [])
        t0 = time.perf_counter()
        what = "supernet" if spec.supernet else f"{spec.config.resolution}px d{spec.config.depth}"
        bar = tqdm(
            train_src.epoch(spec.data_epoch, spec.config.resolution, start=skip),
            initial=skip,
            total=steps_per_epoch,
            desc=f"epoch {spec.epoch + 1}/{epochs} stage {spec.stage} [{what}]",
            disable=cfg.progress is False or (cfg.progress is None and not _is_tty()),
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            config = ctl.next_config()
            if config.resolution != spec.config.resolution and downsize is not None:  # --input-transform
                x = prep(resize_batch(x, config.resolution, transform))  # type: ignore[arg-type]
            elif config.resolution != spec.config.resolution:  # supernet: a smaller candidate this step
                x = (adapter.prepare_input(x.float(), config.resolution) / 255.0 - mean) / std
            else:
                x = prep(x)
            if epoch_input is not None:  # an input schedule: this epoch's size, full model
                window = step_generator(cfg.seed, step) if transform == "crop" else None  # a pure function of the step
                x = resize_batch(x, epoch_input.resolution, transform, window)  # type: ignore[arg-type]
                config = SubnetConfig(epoch_input.resolution, config.depth)
            ts = time.perf_counter()
            lr_step = step if spec.in_budget else min(step + spec.lr_offset + len(losses), total_steps - 1)
            losses.append(train_step(x, y, lr_step))
            seconds = time.perf_counter() - ts
            ctl.end_step(seconds, ema_step=lr_step)
            train_flops += flops(config) * len(y)
            emit({"event": "step", "step": step, "epoch": spec.epoch, "stage": spec.stage, "loss": losses[-1],
                  "lr": ctl.optimizer.param_groups[0]["lr"], "resolution": config.resolution, "depth": config.depth,
                  "in_budget": spec.in_budget})  # fmt: skip
            if spec.in_budget:
                step += 1
                if (
                    cfg.checkpoint_every
                    and step % cfg.checkpoint_every == 0
                    and (cfg.recycle or not ctl.searching)
                ):
                    save_state(True, len(losses), losses)
        total, n = ctx.all_reduce_sum([sum(losses), len(losses)])  # the epoch's loss over all processes
        return total / n, time.perf_counter() - t0

    # The stages: the plan says what to train; a search (AutoProg-One) decides on the way.
    eraser = None
    epoch_input: EpochInput | None = None  # an input schedule's size and augmentation for the epoch
    train_randaug = cfg.randaug
    t_stage = time.perf_counter()
    eval_time = 0.0
    while (spec := ctl.begin_epoch()) is not None:
        k = spec.stage
        mid = pending  # resuming inside this epoch: the stage has started before the checkpoint
        pending = None
        if spec.first_of_stage or mid is not None:
            reset_peak_memory(device)
            t_stage = time.perf_counter() - (mid["stage_elapsed"] if mid is not None else 0.0)
            eval_time = 0.0
            # Adaptive regularisation (Appendix C): stronger as the stage (and the network) grows.
            reg = (
                adaptive_regularization(k, len(plan), cfg.randaug, cfg.drop_path, cfg.reprob)
                if cfg.adaptive_reg
                else StageRegularization(cfg.randaug, cfg.drop_path, cfg.reprob)
            )
            if cfg.adaptive_reg:
                set_drop_path(adapter.get_blocks(ctl.model), reg.drop_path)
                if cfg.randaug:
                    train_src = make_train_source(reg.randaug)
                if mid is None:
                    emit({"event": "regularization", "stage": k, **reg.__dict__})
            eraser = _make_eraser(reg.reprob, device)
        if input_schedule is not None:  # peers: the epoch's input size and RandAugment (a pure function of it)
            epoch_input = input_schedule.at_epoch(spec.epoch, epochs)
            if epoch_input.randaug != train_randaug:
                train_src, train_randaug = make_train_source(epoch_input.randaug), epoch_input.randaug
        for event in spec.events:
            if event.kind == "supernet":
                log(f"  stage {k}: supernet over {len(event.detail['candidates'])} candidates for "
                    f"{event.detail['epochs']} epoch(s)" + ("" if cfg.recycle else " (not recycled)"))  # fmt: skip
            elif event.kind == "search":  # AutoProg-Zero: chosen at the stage's start, without training
                _log_search(event, log)
                emit({"event": "search", **event.detail})
                t_stage -= event.detail["search_time_s"]  # the search is part of the stage's training time
        if spec.first_of_stage and not spec.supernet and k > 0:
            log(
                f"  stage {k}: depth {spec.config.depth}, resolution {spec.config.resolution} ({operator.name})"
            )
        if spec.first_of_stage and not spec.supernet:
            emit({"event": "stage", "stage": k, "epoch": spec.epoch, "step": step, "resolution": spec.config.resolution,
                  "depth": spec.config.depth, "params": count_params(ctl.model)})  # fmt: skip
        if any(event.kind == "search" for event in spec.events):  # a decision: checkpoint it
            save_state(True, 0, [])
        if mid is not None:
            loss, dt = run_epoch(spec, mid["batches_done"], mid["epoch_losses"])
        else:
            loss, dt = run_epoch(spec)
        if spec.supernet:
            log(
                f"  supernet epoch {spec.search_epoch + 1}/{spec.search_epochs} stage {k}: loss {loss:.4f} ({dt:.1f}s)"
            )
        else:
            t_eval = time.perf_counter()
            val_top1 = (
                evaluate(ctl.model, val_src, spec.config.resolution, prep, device, ctx)
                if val_src is not None
                else None
            )
            eval_time += time.perf_counter() - t_eval
            emit({"event": "epoch", "epoch": spec.epoch, "step": step, "stage": k, "train_loss": loss, "val_top1": val_top1,
                  "wall_clock_s": train_time + time.perf_counter() - t_stage - eval_time, "train_flops": train_flops})  # fmt: skip
            log(
                f"  epoch {spec.epoch + 1}/{epochs} stage {k} [{(epoch_input or spec.config).resolution}px d{spec.config.depth}] "
                f"loss {loss:.4f} val {'-' if val_top1 is None else f'{val_top1:.2f}'} "
                f"({dt:.1f}s, {train_src.num_samples * ctx.world_size / dt:.0f} img/s)"
            )
        events = ctl.end_epoch()
        for event in events:
            if event.kind == "search":
                _log_search(event, log)
                emit({"event": "search", **event.detail})
                emit({"event": "stage", "stage": k, "epoch": ctl.epoch, "step": step,
                      "resolution": event.config.resolution, "depth": event.config.depth,
                      "params": count_params(ctl.model)})  # fmt: skip
            elif event.kind == "stage_end":
                stage_time = time.perf_counter() - t_stage - eval_time
                train_time += stage_time
                done = ctl.stages[-1]
                stage_stats.append({**done.__dict__, "wall_clock_s": stage_time, "train_flops_cumulative": train_flops,
                                    "params": count_params(ctl.model), "peak_mem_bytes": peak_memory_bytes(device)})  # fmt: skip
                if ctx.is_main:  # the stage's weights, for users (last.pt below is the resumable state)
                    save_checkpoint(
                        {
                            "model": ctl.model.state_dict(),
                            "ema": ctl.ema.state_dict() if ctl.ema is not None else None,
                            "optimizer": ctl.optimizer.state_dict(),
                            "epoch": ctl.epoch,
                            "step": step,
                            "stage": k,
                            "schedule": ctl.schedule.to_list(),
                            "config": cfg.to_dict(),
                        },
                        out / "checkpoints" / f"stage{k}.pt",
                    )
        if events:  # a decision or a stage boundary: checkpoint the whole state
            save_state(False, 0, [])
    model, ema, searches = ctl.model, ctl.ema, ctl.searches
    rank_log.close()
    if tb is not None:
        tb.close()
    if log_file is not None:
        log_file.close()
    schedule = ctl.schedule

    # Final evaluation on the test split, at full resolution.
    full_res = adapter.full.resolution
    top1 = evaluate(model, test_src, full_res, prep, device, ctx)
    top1_ema = (
        evaluate(ema.module, test_src, full_res, prep, device, ctx)
        if ema is not None and cfg.eval_ema
        else None
    )
    # FLOPs of all processes together (each counted its own samples).
    train_flops = int(ctx.all_reduce_sum([float(train_flops)])[0])
    full_flops = flops(adapter.full) * train_src.num_samples * ctx.world_size * cfg.epochs
    summary: dict[str, Any] = {
        "method": cfg.method,
        "model": cfg.model,
        "data": cfg.data,
        "epochs": epochs,
        "budget_epochs": cfg.epochs,  # full_flops' epochs (full-equal-time trains fewer)
        "top1": top1,
        "top1_ema": top1_ema,
        "wall_clock_s": train_time,
        "train_flops": train_flops,
        "full_flops": full_flops,
        "flops_ratio": train_flops / full_flops,
        "schedule": schedule.to_list(),
        "search": searches,
        "search_time_s": sum(s["search_time_s"] for s in searches),
        "stages": stage_stats,
        "operator": operator.name if peers.plan_method(cfg.method) != "full" else None,
        "input_transform": transform if input_schedule is not None or downsize is not None else None,
        "input_schedule": input_stages(input_schedule, epochs) if input_schedule is not None else None,
        "seed": cfg.seed,
        "train_samples": len(train_set),
        "steps": step,
        "params": count_params(model),
        "full_depth": adapter.full.depth,
        "full_resolution": full_res,
        "config": cfg.to_dict(),
        "environment": {**environment(device), "world_size": ctx.world_size},
        "nonfinite_rollbacks": rollbacks,
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        torch.save(model.state_dict(), out / "model.pt")
    log(
        f"  done: top-1 {top1:.2f}% | {train_time:.1f}s | FLOPs {train_flops / full_flops:.3f} of full | {out}/summary.json"
    )
    return summary


def open_tensorboard(log_dir: str | None) -> Any:
    """The run's :class:`~autoprog.tensorboard.TensorBoardLog` (``--tensorboard DIR``), or ``None``."""
    if not log_dir:
        return None
    from autoprog.tensorboard import TensorBoardLog

    return TensorBoardLog(log_dir)


def mixed_precision_dtype(setting: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``no`` / ``bf16`` / ``fp16`` (``None``: read ``ACCELERATE_MIXED_PRECISION``,
    which ``accelerate launch --mixed_precision`` sets)."""
    import os

    value = (setting or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if value not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed precision must be no, bf16 or fp16, got {value!r}")
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[value]


def _reserve_memory(
    adapter, batch_size: int, in_chans: int, device: torch.device, criterion, amp_dtype
) -> None:
    """One forward/backward of the full model at full resolution (the largest configuration any
    stage or candidate reaches), so the CUDA caching allocator holds that much before training
    starts and a growth late in the run cannot fail for lack of memory (issue 9)."""
    model = adapter.create_model().to(device)
    x = torch.zeros(batch_size, in_chans, adapter.full.resolution, adapter.full.resolution, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = criterion(model(x).float(), y)
    loss.backward()
    del model, x, y, loss  # the allocator keeps the blocks reserved


def _load_resume_state(out: Path, cfg: PretrainConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The state ``--resume`` continues from: ``checkpoints/last.pt`` (its predecessor if damaged),
    written by the same configuration."""
    last = out / "checkpoints" / "last.pt"
    if not last.exists() and not previous_path(last).exists():
        raise ConfigError(
            f"--resume: no checkpoint in {last.parent} (runs checkpoint at stage boundaries and every "
            "--checkpoint-every steps)"
        )
    state = load_latest_checkpoint(last, log=log)
    if "controller" not in state or "loop" not in state:
        raise ConfigError(f"--resume: {last} is not a resumable pretrain checkpoint")
    check_same_config(state["config"], cfg.to_dict(), out)
    return state


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


def _split_pool(pool, n_train: int, seed: int):
    """First ``n_train`` of a class-balanced pool for training, the rest (if any) for validation."""
    from autoprog.data import split_train_val

    if len(pool) <= n_train:
        return pool, None
    val_fraction = (len(pool) - n_train) / len(pool)
    return split_train_val(pool, val_fraction, seed)


def _make_eraser(probability: float, device: torch.device):
    """timm's random erasing on a normalised batch (per-pixel normal noise), or ``None`` when off."""
    if probability <= 0:
        return None
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=probability, mode="pixel", device=str(device))


def _make_mixup(cfg: PretrainConfig, num_classes: int):
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )


def _is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


def environment(device: torch.device) -> dict[str, Any]:
    """Machine facts recorded with every result."""
    env: dict[str, Any] = {
        "autoprog": autoprog.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


__all__ = ["create_schedule", "evaluate", "load_schedule_file", "pretrain"]
