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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import autoprog
from autoprog.adapters.base import ModelAdapter, count_params, create_adapter
from autoprog.checkpoint import save_checkpoint
from autoprog.data import class_balanced_subset, load_dataset
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.flops import FlopTable
from autoprog.growth.operators import create_operator
from autoprog.growth.schedule import GrowthSchedule, GrowthSpace, full_schedule, prog_schedule
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.optim import build_optimizer, cosine_lr, set_lr


def create_schedule(cfg: PretrainConfig, space: GrowthSpace) -> GrowthSchedule:
    """The growth schedule of a run: replayed from a file, or made by the method."""
    if cfg.schedule_file is not None:
        return load_schedule_file(cfg.schedule_file, space, cfg.epochs)
    if cfg.method == "full":
        return full_schedule(space, cfg.epochs)
    if cfg.method == "prog":
        return prog_schedule(space, cfg.epochs)
    raise ConfigError(f"method {cfg.method!r} has no schedule")


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
        if s.depth > space.full_depth or s.resolution > space.full_resolution or s.resolution % space.resolution_step:
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
    model: nn.Module, source: BatchSource, resolution: int, prep: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> float:
    """Top-1 accuracy (percent) of ``model`` on every sample of ``source`` at ``resolution``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in source.epoch(0, resolution):
        logits = model(prep(x.to(device)))
        correct += int((logits.argmax(-1).cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    return 100.0 * correct / max(1, total)


def _ema_decay(cfg: PretrainConfig, step: int) -> float:
    """EMA decay, warmed up as timm's ModelEmaV3 does (short runs would otherwise average stale weights)."""
    if not cfg.ema_warmup:
        return cfg.ema_decay
    return min(cfg.ema_decay, 1.0 - (1.0 + step) ** (-2.0 / 3.0))


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one pre-training job and return (and write) its summary."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # Setup data: a class-balanced training subset, a validation split carved from the unused
    # training images (no tuning on the test split), and the full test split.
    train_full = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=cfg.img_size)
    test_set = load_dataset(cfg.data, "test", data_dir=cfg.data_dir, image_size=cfg.img_size)
    if cfg.test_subset is not None and cfg.test_subset < len(test_set):
        test_set = class_balanced_subset(test_set, cfg.test_subset, seed=cfg.seed)
    info = train_full.info
    n_train = len(train_full) if cfg.train_subset is None else min(cfg.train_subset, len(train_full))
    val_size = min(cfg.val_size, len(train_full) - n_train) if cfg.train_subset else min(cfg.val_size, len(train_full) // 10)
    pool = class_balanced_subset(train_full, n_train + val_size, seed=cfg.seed) if n_train + val_size < len(train_full) else train_full
    train_set, val_set = _split_pool(pool, n_train, cfg.seed)
    train_src = BatchSource(train_set, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    if len(train_src) == 0:
        raise ConfigError(f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})")
    val_src = BatchSource(val_set, 512, shuffle=False, drop_last=False) if val_set is not None else None
    test_src = BatchSource(test_set, 512, shuffle=False, drop_last=False)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return normalise(x, mean, std)

    # Setup model, growth space and schedule.
    adapter: ModelAdapter = create_adapter(
        cfg.model,
        img_size=info.image_size,
        in_chans=info.in_chans,
        num_classes=info.num_classes,
        patch_size=cfg.patch_size,
        depth=cfg.depth,
        drop_path_rate=cfg.drop_path,
    )
    space = GrowthSpace(adapter.full.resolution, adapter.full.depth, adapter.resolution_step, cfg.ratio, cfg.stages)
    schedule = create_schedule(cfg, space)
    operator = create_operator(cfg.operator)
    flops = FlopTable(adapter.create_model, info.in_chans)
    model = adapter.create_model(schedule[0].depth).to(device)
    use_ema = operator.needs_momentum or cfg.eval_ema
    ema = ModelEma(model, cfg.ema_decay) if use_ema else None
    steps_per_epoch = len(train_src)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mixup = _make_mixup(cfg, info.num_classes)
    amp_dtype = torch.bfloat16 if cfg.amp else None
    log(
        f"autoprog pretrain: {cfg.method} | {cfg.model} depth {adapter.full.depth} @ {adapter.full.resolution}px | "
        f"{cfg.data}: {len(train_set)} train / {len(val_set) if val_set is not None else 0} val / {len(test_set)} test | "
        f"{cfg.epochs} epochs x {steps_per_epoch} steps | {len(schedule)} stage(s) | device {device}"
    )

    log_file = (out / "log.jsonl").open("w")

    def emit(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")

    stage_stats: list[dict[str, Any]] = []
    train_flops = 0
    train_time = 0.0
    step = 0
    current = schedule[0]
    for epoch in range(cfg.epochs):
        stage = schedule.stage_at(epoch)
        t_epoch = time.perf_counter()
        # Grow: the schedule decides, the operator grows, optimizer and EMA are rebuilt by name.
        if stage.stage != current.stage or epoch == 0:
            if stage.depth != len(adapter.get_blocks(model)):
                operator.grow(model, adapter, stage.depth, momentum=ema.module if ema else None)
                model.to(device)
                if ema is not None:
                    ema.module.to(device)
                    ema.rebuild(model)
                optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
            current = stage
            stage_stats.append({**stage.__dict__, "wall_clock_s": 0.0, "train_flops": 0, "params": count_params(model)})
            emit({"event": "stage", "epoch": epoch, "step": step, **stage.__dict__, "params": count_params(model)})
            if epoch > 0:
                log(f"  stage {stage.stage}: grow to depth {stage.depth}, resolution {stage.resolution} ({cfg.operator})")
        # Train one epoch at the stage's configuration.
        model.train()
        flops_per_sample = flops(stage.config)
        losses = []
        bar = tqdm(
            train_src.epoch(epoch, stage.resolution),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs} stage {stage.stage} [{stage.resolution}px d{stage.depth}]",
            disable=cfg.progress is False or (cfg.progress is None and not _is_tty()),
            leave=False,
        )
        for x, y in bar:
            x, y = prep(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            lr = cosine_lr(step, total_steps, cfg.lr, warmup_steps, cfg.min_lr)
            set_lr(optimizer, lr)
            if mixup is not None:
                x, y_soft = mixup(x, y)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = (
                criterion(logits.float(), y)
                if mixup is None
                else torch.sum(-y_soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            )
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, decay=_ema_decay(cfg, step))
            losses.append(loss.item())
            emit({"event": "step", "step": step, "epoch": epoch, "stage": stage.stage, "loss": losses[-1], "lr": lr})
            step += 1
        dt = time.perf_counter() - t_epoch
        epoch_flops = flops_per_sample * train_src.num_samples
        train_time += dt
        train_flops += epoch_flops
        stage_stats[-1]["wall_clock_s"] += dt
        stage_stats[-1]["train_flops"] += epoch_flops
        # Evaluate on the validation split (not counted as training time).
        val_top1 = evaluate(model, val_src, stage.resolution, prep, device) if val_src is not None else None
        record = {
            "event": "epoch",
            "epoch": epoch,
            "step": step,
            "stage": stage.stage,
            "train_loss": sum(losses) / len(losses),
            "val_top1": val_top1,
            "wall_clock_s": train_time,
            "train_flops": train_flops,
        }
        emit(record)
        log(
            f"  epoch {epoch + 1}/{cfg.epochs} stage {stage.stage} [{stage.resolution}px d{stage.depth}] "
            f"loss {record['train_loss']:.4f} val {val_top1 if val_top1 is None else round(val_top1, 2)} "
            f"({dt:.1f}s, {train_src.num_samples / dt:.0f} img/s)"
        )
        if epoch + 1 == stage.end_epoch:
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "stage": stage.stage,
                    "schedule": schedule.to_list(),
                    "config": cfg.to_dict(),
                },
                out / "checkpoints" / f"stage{stage.stage}.pt",
            )
    log_file.close()

    # Final evaluation on the full test split, at full resolution.
    full_res = adapter.full.resolution
    top1 = evaluate(model, test_src, full_res, prep, device)
    top1_ema = evaluate(ema.module, test_src, full_res, prep, device) if ema is not None and cfg.eval_ema else None
    full_flops = flops(adapter.full) * train_src.num_samples * cfg.epochs
    summary: dict[str, Any] = {
        "method": cfg.method,
        "model": cfg.model,
        "data": cfg.data,
        "epochs": cfg.epochs,
        "top1": top1,
        "top1_ema": top1_ema,
        "wall_clock_s": train_time,
        "train_flops": train_flops,
        "full_flops": full_flops,
        "flops_ratio": train_flops / full_flops,
        "schedule": schedule.to_list(),
        "stages": stage_stats,
        "operator": cfg.operator if cfg.method != "full" else None,
        "seed": cfg.seed,
        "train_samples": len(train_set),
        "steps": step,
        "params": count_params(model),
        "full_depth": adapter.full.depth,
        "full_resolution": full_res,
        "config": cfg.to_dict(),
        "environment": environment(device),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    torch.save(model.state_dict(), out / "model.pt")
    log(f"  done: top-1 {top1:.2f}% | {train_time:.1f}s | FLOPs {train_flops / full_flops:.3f} of full | {out}/summary.json")
    return summary


def _split_pool(pool, n_train: int, seed: int):
    """First ``n_train`` of a class-balanced pool for training, the rest (if any) for validation."""
    from autoprog.data import split_train_val

    if len(pool) <= n_train:
        return pool, None
    val_fraction = (len(pool) - n_train) / len(pool)
    return split_train_val(pool, val_fraction, seed)


def _make_mixup(cfg: PretrainConfig, num_classes: int):
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
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
