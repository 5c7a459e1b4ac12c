"""Progressive pre-training of an image classifier (paper Sec. 3): the ``autoprog pretrain`` loop.

Read it top to bottom: set up data, model and schedule; then, for every epoch, grow the model if a
new stage starts (operator -> rebuilt optimizer and EMA), train one epoch at the stage's resolution
and depth, evaluate on the validation split; finally evaluate on the test split and write
``summary.json``.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from autoprog.data.augment import RandAugmentDataset
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.flops import FlopTable
from autoprog.growth.elastic import ElasticSupernet
from autoprog.growth.operators import create_operator
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
    StageSearch,
    choose,
    measure_step_time,
    power_law_balancing_factor,
    stage_candidates,
)
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.optim import build_optimizer, carry_state, cosine_lr, set_lr, state_by_name
from autoprog.train.regularization import StageRegularization, adaptive_regularization, set_drop_path


@dataclass
class PlannedStage:
    """What a stage will train: a fixed sub-network, or (``fixed is None``) one searched at its start."""

    start_epoch: int
    end_epoch: int
    fixed: SubnetConfig | None
    candidates: list[SubnetConfig]
    space: GrowthSpace


def create_schedule(cfg: PretrainConfig, space: GrowthSpace) -> GrowthSchedule:
    """The fixed growth schedule of a run: replayed from a file, or made by a manual method."""
    if cfg.schedule_file is not None:
        return load_schedule_file(cfg.schedule_file, space, cfg.epochs)
    if cfg.method == "full":
        return full_schedule(space, cfg.epochs)
    if cfg.method == "prog":
        return prog_schedule(space, cfg.epochs)
    if cfg.method == "progstack":
        return progstack_schedule(space.full_resolution, space.full_depth, cfg.epochs)
    raise ConfigError(f"method {cfg.method!r} has no fixed schedule")


def create_plan(cfg: PretrainConfig, space: GrowthSpace) -> list[PlannedStage]:
    """One entry per stage. AutoProg-One searches every stage but the last, which trains the full model."""
    if cfg.method == "autoprog-one" and cfg.schedule_file is None:
        bounds = stage_boundaries(cfg.epochs, cfg.stages)
        grid = [SubnetConfig(r, d) for r in space.resolutions for d in space.depths]
        plan = [PlannedStage(bounds[k], bounds[k + 1], None, grid, space) for k in range(cfg.stages - 1)]
        plan.append(PlannedStage(bounds[-2], bounds[-1], space.full, [space.full], space))
        return plan
    return [PlannedStage(s.start_epoch, s.end_epoch, s.config, [s.config], space) for s in create_schedule(cfg, space)]


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


def _print(message: str) -> None:
    print(message, flush=True)


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = _print) -> dict[str, Any]:
    """Run one pre-training job and return (and write) its summary."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

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

    def make_train_source(randaug: str | None) -> BatchSource:
        data = RandAugmentDataset(train_set, randaug) if randaug else train_set
        return BatchSource(data, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed, force_loader=bool(randaug))

    train_src = make_train_source(cfg.randaug)
    if len(train_src) == 0:
        raise ConfigError(f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})")
    val_src = BatchSource(val_set, 512, shuffle=False, drop_last=False) if val_set is not None else None
    test_src = BatchSource(test_set, 512, shuffle=False, drop_last=False)
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
    space = GrowthSpace(adapter.full.resolution, adapter.full.depth, adapter.resolution_step, cfg.ratio, cfg.stages)
    plan = create_plan(cfg, space)
    operator = create_operator("stacking" if cfg.method == "progstack" else cfg.operator)
    flops = FlopTable(adapter.create_model, info.in_chans)
    # FLOPs are accounting, not training: count configurations before the clock starts.
    for config in {c for stage in plan for c in stage.candidates} | {adapter.full}:
        flops(config)

    steps_per_epoch = len(train_src)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mixup = _make_mixup(cfg, info.num_classes)
    amp_dtype = torch.bfloat16 if cfg.amp else None
    log(
        f"autoprog pretrain: {cfg.method} | {cfg.model} depth {adapter.full.depth} @ {adapter.full.resolution}px | "
        f"{cfg.data}: {len(train_set)} train / {len(val_set) if val_set is not None else 0} val / {len(test_set)} test | "
        f"{cfg.epochs} epochs x {steps_per_epoch} steps | {len(plan)} stage(s) | device {device}"
    )
    log_file = (out / "log.jsonl").open("w")

    def emit(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")

    # Training state, rebuilt (by parameter name) whenever the model changes shape.
    first = plan[0]
    model = adapter.create_model(first.fixed.depth if first.fixed else max(c.depth for c in first.candidates))
    model.to(device)
    use_ema = operator.needs_momentum or cfg.eval_ema or cfg.method == "autoprog-one"
    ema = ModelEma(model, cfg.ema_decay) if use_ema else None
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    step = 0
    train_time = 0.0
    train_flops = 0

    def rebuild_after_change(name_map: dict[str, str | None], old_state: dict | None = None) -> None:
        """After growth: move, re-pair the EMA by name, rebuild the optimizer (carrying state by name)."""
        nonlocal optimizer
        model.to(device)
        if ema is not None:
            ema.module.to(device)
            ema.rebuild(model)
        old_state = state_by_name(optimizer) if old_state is None else old_state
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        if cfg.optimizer_state == "carry":
            carry_state(old_state, optimizer, name_map)

    def train_step(x: torch.Tensor, y: torch.Tensor, lr_step: int) -> float:
        """One optimizer step on a prepared batch; returns the loss."""
        lr = cosine_lr(lr_step, total_steps, cfg.lr, warmup_steps, cfg.min_lr)
        set_lr(optimizer, lr)
        y_soft = None
        if eraser is not None:
            x = eraser(x)
        if mixup is not None:
            x, y_soft = mixup(x, y)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        if y_soft is None:
            loss = criterion(logits.float(), y)
        else:
            loss = torch.sum(-y_soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {lr_step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(model, decay=_ema_decay(cfg, lr_step))
        return value

    def run_epoch(
        epoch: int, stage: int, resolution: int, depth: int, sampler=None, counts_in_budget: bool = True, lr_offset: int = 0
    ):
        """Train one epoch; ``sampler`` (supernet epochs) picks a candidate per step. Returns (loss, time).

        Epochs outside the budget (supernet epochs without recycling) leave the step counter alone
        but follow the LR schedule from ``step + lr_offset`` onwards, as if they were training epochs.
        """
        nonlocal step, train_flops
        model.train()
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(
            train_src.epoch(epoch, resolution),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs} stage {stage} [{'supernet' if sampler else f'{resolution}px d{depth}'}]",
            disable=cfg.progress is False or (cfg.progress is None and not _is_tty()),
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            config = SubnetConfig(resolution, depth)
            if sampler is not None:
                config = sampler.next_config()
                x = adapter.prepare_input(x.float(), config.resolution)
            ts = time.perf_counter()
            lr_step = step if counts_in_budget else min(step + lr_offset + len(losses), total_steps - 1)
            losses.append(train_step(prep(x) if sampler is None else (x / 255.0 - mean) / std, y, lr_step))
            if sampler is not None:
                sampler.record_time(config, time.perf_counter() - ts, device)
            train_flops += flops(config) * len(y)
            emit({"event": "step", "step": step, "epoch": epoch, "stage": stage, "loss": losses[-1],
                  "lr": optimizer.param_groups[0]["lr"], "resolution": config.resolution, "depth": config.depth,
                  "in_budget": counts_in_budget})  # fmt: skip
            if counts_in_budget:
                step += 1
            if sampler is not None:
                sampler.after_step()
        return sum(losses) / len(losses), time.perf_counter() - t0

    # The stages: the plan says what to train; a search (AutoProg-One) decides on the way.
    stages_done: list[Stage] = []
    stage_stats: list[dict[str, Any]] = []
    searches: list[dict[str, Any]] = []
    current: SubnetConfig | None = None
    epoch = 0
    eraser = None
    for k, planned in enumerate(plan):
        t_stage = time.perf_counter()
        eval_time = 0.0
        # Adaptive regularisation (Appendix C): stronger as the stage (and the network) grows.
        reg = (
            adaptive_regularization(k, len(plan), cfg.randaug, cfg.drop_path, cfg.reprob)
            if cfg.adaptive_reg
            else StageRegularization(cfg.randaug, cfg.drop_path, cfg.reprob)
        )
        if cfg.adaptive_reg:
            set_drop_path(adapter.get_blocks(model), reg.drop_path)
            if cfg.randaug:
                train_src = make_train_source(reg.randaug)
            emit({"event": "regularization", "stage": k, **reg.__dict__})
        eraser = _make_eraser(reg.reprob, device)
        if planned.fixed is None:  # AutoProg-One: search this stage's sub-network on an elastic supernet
            result = search_stage(
                k, planned, current, model, ema, adapter, operator, cfg, epoch,
                run_epoch, rebuild_after_change, lambda: optimizer, train_src, prep, device, log, emit,
            )  # fmt: skip
            searches.append(result.record.to_dict())
            chosen = result.record.chosen
            epoch += result.epochs_used
        else:
            chosen = planned.fixed
            if chosen.depth != len(adapter.get_blocks(model)):
                rebuild_after_change(operator.grow(model, adapter, chosen.depth, momentum=ema.module if ema else None))
        if current is not None and k > 0:
            log(f"  stage {k}: depth {chosen.depth}, resolution {chosen.resolution} ({cfg.operator})")
        emit({"event": "stage", "stage": k, "epoch": epoch, "step": step, "resolution": chosen.resolution,
              "depth": chosen.depth, "params": count_params(model)})  # fmt: skip
        current = chosen
        while epoch < planned.end_epoch:
            loss, dt = run_epoch(epoch, k, chosen.resolution, chosen.depth)
            t_eval = time.perf_counter()
            val_top1 = evaluate(model, val_src, chosen.resolution, prep, device) if val_src is not None else None
            eval_time += time.perf_counter() - t_eval
            emit({"event": "epoch", "epoch": epoch, "step": step, "stage": k, "train_loss": loss, "val_top1": val_top1,
                  "wall_clock_s": train_time + time.perf_counter() - t_stage - eval_time, "train_flops": train_flops})  # fmt: skip
            log(
                f"  epoch {epoch + 1}/{cfg.epochs} stage {k} [{chosen.resolution}px d{chosen.depth}] loss {loss:.4f} "
                f"val {'-' if val_top1 is None else f'{val_top1:.2f}'} ({dt:.1f}s, {train_src.num_samples / dt:.0f} img/s)"
            )
            epoch += 1
        stage_time = time.perf_counter() - t_stage - eval_time
        train_time += stage_time
        stages_done.append(Stage(k, planned.start_epoch, planned.end_epoch, chosen.resolution, chosen.depth))
        stage_stats.append({**stages_done[-1].__dict__, "wall_clock_s": stage_time, "train_flops_cumulative": train_flops,
                            "params": count_params(model)})  # fmt: skip
        save_checkpoint(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "step": step,
                "stage": k,
                "schedule": [s.__dict__ for s in stages_done],
                "config": cfg.to_dict(),
            },
            out / "checkpoints" / f"stage{k}.pt",
        )
    log_file.close()
    schedule = GrowthSchedule(stages_done)

    # Final evaluation on the test split, at full resolution.
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
        "search": searches,
        "search_time_s": sum(s["search_time_s"] for s in searches),
        "stages": stage_stats,
        "operator": operator.name if cfg.method != "full" else None,
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


@dataclass
class SearchOutcome:
    record: StageSearch
    epochs_used: int


class _CandidateSampler:
    """Supernet training: one random candidate per step (seeded), step times and loss snapshots recorded."""

    def __init__(self, candidates, supernet, seed: int, snapshot_steps: set[int], take_snapshot) -> None:
        self.candidates = candidates
        self.supernet = supernet
        self.rng = random.Random(seed)
        self.times: dict[SubnetConfig, list[float]] = {c: [] for c in candidates}
        self.snapshot_steps = snapshot_steps
        self.take_snapshot = take_snapshot
        self.n = 0

    def next_config(self) -> SubnetConfig:
        config = self.candidates[self.rng.randrange(len(self.candidates))]
        self.supernet.set_depth(config.depth)
        return config

    def record_time(self, config: SubnetConfig, seconds: float, device: torch.device) -> None:
        self.times[config].append(seconds)

    def after_step(self) -> None:
        self.n += 1
        if self.n in self.snapshot_steps:
            self.take_snapshot()


def search_stage(
    k, planned, current, model, ema, adapter, operator, cfg, epoch, run_epoch, rebuild_after_change,
    get_optimizer, train_src, prep, device, log, emit,
) -> SearchOutcome:  # fmt: skip
    """AutoProg-One's search for stage ``k`` (Sec. 3.2.3): train an elastic supernet, score, choose, recycle."""
    t0 = time.perf_counter()
    candidates = stage_candidates(planned.space, k, current)
    if len(candidates) == 1:
        chosen = candidates[0]
        if chosen.depth != len(adapter.get_blocks(model)):
            rebuild_after_change(operator.grow(model, adapter, chosen.depth, momentum=ema.module))
        only = CandidateResult(chosen.resolution, chosen.depth, math.nan, math.nan)
        return SearchOutcome(StageSearch(k, epoch, 0, 0.0, [only], chosen), 0)
    max_depth = max(c.depth for c in candidates)
    min_depth = min(c.depth for c in candidates)
    max_res = max(c.resolution for c in candidates)
    # Keep the pre-search network when the supernet's weights are not to be recycled (ablation, Tab. XI).
    before = None if cfg.recycle else (copy.deepcopy(model), copy.deepcopy(ema.module), _clone_state(state_by_name(get_optimizer())))
    if current is None:
        supernet = ElasticSupernet.from_scratch(adapter, model, min_depth, ema.module)
    else:
        supernet = ElasticSupernet.grow(adapter, model, max_depth, operator, momentum=ema.module)
    rebuild_after_change(supernet.name_map)

    # Fixed scoring data: the first samples of the training split, no shuffling, no augmentation.
    plain = train_src.dataset.dataset if isinstance(train_src.dataset, RandAugmentDataset) else train_src.dataset
    fixed = BatchSource(plain, min(256, cfg.search_samples), shuffle=False, drop_last=False)
    losses: dict[SubnetConfig, list[float]] = {c: [] for c in candidates}
    scoring_time = 0.0

    @torch.no_grad()
    def take_snapshot() -> None:
        nonlocal scoring_time
        ts = time.perf_counter()
        for c in candidates:
            supernet.set_depth(c.depth)
            total, seen = 0.0, 0
            for x, y in fixed.epoch(0, c.resolution):
                logits = ema.module(prep(x.to(device)))
                total += F.cross_entropy(logits.float(), y.to(device), reduction="sum").item()
                seen += len(y)
                if seen >= cfg.search_samples:
                    break
            losses[c].append(total / seen)
        scoring_time += time.perf_counter() - ts

    stage_len = planned.end_epoch - epoch
    n_search = max(1, min(cfg.search_epochs, stage_len - 1)) if stage_len > 1 else 1
    spe = len(train_src)
    last_epoch_start = (n_search - 1) * spe
    snaps = {last_epoch_start + round(spe * (i + 1) / cfg.search_snapshots) for i in range(cfg.search_snapshots)}
    sampler = _CandidateSampler(candidates, supernet, cfg.seed * 7919 + k, snaps, take_snapshot)
    log(f"  stage {k}: supernet over {len(candidates)} candidates for {n_search} epoch(s)"
        + ("" if cfg.recycle else " (not recycled)"))  # fmt: skip
    for i in range(n_search):
        data_epoch = epoch + i if cfg.recycle else 100_000 + 100 * k + i
        loss, dt = run_epoch(
            data_epoch, k, max_res, max_depth, sampler=sampler, counts_in_budget=cfg.recycle, lr_offset=i * spe
        )
        log(f"  supernet epoch {i + 1}/{n_search} stage {k}: loss {loss:.4f} ({dt:.1f}s)")

    # Runtime: median measured step time per candidate (first sample dropped as warm-up).
    results = []
    for c in candidates:
        samples = sampler.times[c][1:] or sampler.times[c]
        if samples:
            runtime = float(sorted(samples)[len(samples) // 2])
        else:
            ts = time.perf_counter()
            runtime = _measure_candidate(model, supernet, c, fixed, prep, device)
            scoring_time += time.perf_counter() - ts
        results.append(CandidateResult(c.resolution, c.depth, sum(losses[c]) / len(losses[c]), runtime,
                                       loss_snapshots=losses[c]))  # fmt: skip
    w = power_law_balancing_factor([r.loss for r in results], [r.runtime_s for r in results])
    best = choose(results)
    chosen = best.config
    # Weight recycling: the chosen sub-network inherits the supernet's weights.
    if cfg.recycle:
        rebuild_after_change(supernet.materialise(chosen.depth))
    else:
        pre_model, pre_ema, pre_state = before
        supernet.materialise(chosen.depth)
        if current is None:  # no trained network before the first stage: start the chosen one afresh
            pre_model = adapter.create_model(chosen.depth)
            pre_ema = copy.deepcopy(pre_model)
        for net, src in ((model, pre_model), (ema.module, pre_ema)):
            adapter.set_blocks(net, [copy.deepcopy(b) for b in adapter.get_blocks(src)])
            net.load_state_dict(src.state_dict())
        name_map = operator.grow(model, adapter, chosen.depth, momentum=ema.module)
        rebuild_after_change(name_map, old_state=pre_state)
    record = StageSearch(k, epoch, n_search, w, results, chosen, search_time_s=time.perf_counter() - t0)
    record_dict = record.to_dict()
    record_dict["scoring_time_s"] = scoring_time
    emit({"event": "search", **record_dict})
    table = ", ".join(f"{r.resolution}px d{r.depth}: L {r.loss:.3f} T {1000 * r.runtime_s:.0f}ms" for r in results)
    log(f"  stage {k}: chose {chosen.resolution}px d{chosen.depth} (w={w:.2f}) from {table}")
    return SearchOutcome(record, n_search if cfg.recycle else 0)


def _clone_state(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()} for n, st in state.items()}


def _measure_candidate(model, supernet, config, fixed, prep, device) -> float:
    """Time a forward + backward of ``config`` on a fixed batch (for candidates never sampled)."""
    x, y = next(iter(fixed.epoch(0, config.resolution)))
    x, y = prep(x.to(device)), y.to(device)
    supernet.set_depth(config.depth)

    def step() -> None:
        F.cross_entropy(model(x), y).backward()

    t = measure_step_time(step, repeats=2, warmup=1, device=device)
    for p in model.parameters():
        p.grad = None
    return t


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
