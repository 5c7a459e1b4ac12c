"""``autoprog finetune``: progressive fine-tuning of a pretrained model (paper Sec. 4, Algorithm 2).

Read top to bottom: source model (``from_pretrained``) and its task -> data -> method (which
parameters learn) -> stages: at each stage start a search (AutoProg-Zero: zero-shot proxies + ranked
voting; AutoProg-One: supernet loss x runtime) or the manual schedule decides the learnable
sub-network (resolution, unfreezing level) -> unfreeze -> train -> the task's metric of the final
(EMA) model (FID of a generator, top-1 of a classifier).

What depends on the model family (blocks, loss, SID, probe data, evaluation) is the task's
(:mod:`autoprog.tasks`): a class-conditional DiT, a text-to-image UNet, a timm classifier.

Frozen parameters get no gradient and no optimizer state; the optimizer and the EMA pairing are
rebuilt by parameter name at every unfreezing, carrying the moments of parameters that keep learning.

``OUT/checkpoints/last.pt`` (the one before kept as ``last.pt.prev``) holds the whole state of the run
at every stage boundary and every ``--checkpoint-every`` steps, inside AutoProg-One's supernet
training too; ``--resume`` continues from it exactly. A non-finite loss is never trained on: the run
rolls back to the checkpoint with a lower learning rate, or stops (``--on-nonfinite``).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from autoprog.adapters.base import count_params
from autoprog.checkpoint import (
    global_rng_states,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
    set_global_rng_states,
)
from autoprog.data import load_dataset
from autoprog.distributed import DistContext, RankLog, init_distributed, shutdown_distributed
from autoprog.ema import ModelEma
from autoprog.errors import AutoprogError, ConfigError, NonFiniteLoss
from autoprog.flops import count_train_flops
from autoprog.memory import peak_memory_bytes, reset_peak_memory
from autoprog.optim import build_optimizer, carry_state, state_by_name
from autoprog.run.log import append_record, console, open_tensorboard, show_progress
from autoprog.run.process import environment, mixed_precision_dtype
from autoprog.search.step_times import StepTimes
from autoprog.search.supernet import SupernetSearch
from autoprog.search.zero_shot import zero_shot_search as search_zero_shot
from autoprog.tasks import FinetuneTask, create_finetune_task
from autoprog.train.config import PROGRESSIVE_FINETUNE_METHODS, FinetuneConfig, check_same_config
from autoprog.train.loader import BatchSource
from autoprog.train.source import resolve_model
from autoprog.unfreeze import (
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    level_blocks,
    prog_unfreeze_schedule,
    set_trainable,
    step_boundaries,
    zero_shot_candidates,
)


def _set_predicate(model: nn.Module, learn: Callable[[str], bool]) -> int:
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(learn(name))
        n += p.numel() if p.requires_grad else 0
    return n


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
    ``cfg.max_rollbacks`` times), otherwise it stops with an :class:`AutoprogError`.
    """
    cfg.validate()
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    on_cuda = (cfg.device or "").startswith("cuda") or (not cfg.device and torch.cuda.is_available())
    ctx = init_distributed("cuda" if on_cuda else "cpu")
    say = log if ctx.is_main else (lambda _msg: None)
    last = Path(cfg.out) / "checkpoints" / "last.pt"
    try:
        resume, lr_scale, rollbacks, notes = cfg.resume, None, 0, []
        while True:
            try:
                return _finetune(
                    cfg, say, ctx, resume=resume, lr_scale=lr_scale, rollbacks=rollbacks, notes=notes
                )
            except NonFiniteLoss as e:
                present = last.exists() or previous_path(last).exists()
                roll = ctx.broadcast(
                    cfg.on_nonfinite == "rollback" and rollbacks < cfg.max_rollbacks and present
                )
                if not roll:
                    append_record(cfg.out, ctx, {"event": "nonfinite", "step": e.step, "action": "stop",
                                               "lr_scale": e.lr_scale})  # fmt: skip
                    why = "--on-nonfinite stop" if cfg.on_nonfinite == "stop" else (
                        f"{rollbacks} rollback(s) done, --max-rollbacks {cfg.max_rollbacks}" if present
                        else "no checkpoint to roll back to"
                    )  # fmt: skip
                    raise AutoprogError(
                        f"non-finite training loss ({e.value}) at step {e.step}; stopped ({why}; "
                        f"last checkpoint: {last if present else 'none'})"
                    ) from None
                rollbacks += 1
                lr_scale = e.lr_scale * cfg.nonfinite_lr_factor
                say(
                    f"  non-finite loss ({e.value}) at step {e.step}: rolling back to {last} with LR x{lr_scale:g}"
                )
                notes.append(
                    {"event": "nonfinite", "step": e.step, "action": "rollback", "lr_scale": lr_scale}
                )
                resume = True
    finally:
        if not joined:
            shutdown_distributed()


def load_resume_state(cfg: FinetuneConfig, log: Callable[[str], None] = console) -> dict[str, Any]:
    """The state ``--resume`` continues from: ``OUT/checkpoints/last.pt`` (``last.pt.prev`` if that one
    cannot be loaded), written by a run of the same configuration (up to :data:`~autoprog.train.config.RESUME_FREE_FIELDS`).

    Raises:
        ConfigError: no checkpoint, not a finetune checkpoint, or a different configuration (the
            message names the first differing option).
        CheckpointError: neither file can be loaded.
    """
    last = Path(cfg.out) / "checkpoints" / "last.pt"
    if not last.exists() and not previous_path(last).exists():
        raise ConfigError(
            f"--resume: no checkpoint in {last.parent} (a run checkpoints at every stage boundary and "
            "every --checkpoint-every steps)"
        )
    state = load_latest_checkpoint(last, log=log)
    if state.get("kind") != "finetune" or "phase" not in state or not isinstance(state.get("config"), dict):
        raise ConfigError(f"--resume: {last} is not a resumable checkpoint of autoprog finetune")
    check_same_config(state["config"], cfg.to_dict(), cfg.out)
    return state


def _plain(obj: Any) -> Any:
    """``obj`` as JSON types only (NumPy scalars become floats, tuples lists): loadable with
    ``weights_only=True``."""
    return json.loads(json.dumps(obj))


def _rng_state(device: torch.device, gen: torch.Generator) -> dict[str, Any]:
    """This process's random states: the training generator and the global ones."""
    return {**global_rng_states(device), "gen": gen.get_state()}


def _set_rng_state(state: dict[str, Any], device: torch.device, gen: torch.Generator) -> None:
    gen.set_state(state["gen"])
    set_global_rng_states(state, device)


def _finetune(
    cfg: FinetuneConfig,
    log: Callable[[str], None],
    ctx: DistContext,
    *,
    resume: bool = False,
    lr_scale: float | None = None,
    rollbacks: int = 0,
    notes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One attempt of :func:`finetune`: from scratch, or (``resume``) from ``OUT/checkpoints/last.pt``.

    ``lr_scale``: the learning-rate scale after a rollback (default: the checkpoint's, else 1);
    ``rollbacks``: how many this job has done; ``notes``: this job's ``nonfinite`` records, logged
    again if the log was truncated to a checkpoint written before them.
    """
    out = Path(cfg.out)
    saved = load_resume_state(cfg, log) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.device:
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    # All training randomness (noise, t, label dropout); each process draws its own.
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * ctx.rank)
    amp_dtype = mixed_precision_dtype(cfg.mixed_precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # Source model (a folder, loaded with from_pretrained) and what the loop needs to know of its
    # family: the task (autoprog.tasks) gives the blocks, the loss, the probe data and the evaluation.
    if ctx.distributed and not ctx.is_main:
        ctx.barrier()  # a built-in source is made (and cached) once, by rank 0
    model_dir = resolve_model(cfg.model, log=log)
    if ctx.distributed and ctx.is_main:
        ctx.barrier()
    torch.manual_seed(cfg.seed)  # making a source draws random numbers: every process starts alike
    num_stages = cfg.stages if cfg.method in PROGRESSIVE_FINETUNE_METHODS else 1
    task: FinetuneTask = create_finetune_task(model_dir, cfg, num_stages=num_stages, device=device)
    if cfg.sid and not task.stage_identifiers:
        raise ConfigError(
            f"--sid: {type(task).__name__} has no stage identifiers (SID is for generative models, Sec. 4.1.2)"
        )
    use_sid = cfg.use_sid and task.stage_identifiers
    model = task.model
    full_res, channels = task.full_resolution, task.channels
    base_lr = cfg.lr if cfg.lr is not None else task.default_lr

    # Data at the source's size and channels (uint8; the task scales it).
    train_set = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=full_res, in_chans=channels)
    task.bind_data(train_set.info)
    peft_predicate = task.method_parameters(cfg.method, cfg.lora_rank)
    model.to(device)
    if saved is not None:
        model.load_state_dict(saved["model"])
    source = BatchSource(
        train_set,
        cfg.batch_size,
        shuffle=True,
        drop_last=True,
        seed=cfg.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    if len(source) == 0:
        raise ConfigError(
            f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})"
        )

    # The space of learnable sub-networks and the plan.
    blocks = task.block_paths
    space = UnfreezeSpace(full_res, task.patch_size, cfg.ratio, num_stages, cfg.levels)
    if cfg.method == "prog":
        plan: list[UnfreezeConfig | None] = [s.config for s in prog_unfreeze_schedule(space, cfg.steps)]
    elif cfg.method in ("autoprog-zero", "autoprog-one"):
        plan = [None] * (num_stages - 1) + [space.full]  # searched, then the fully learnable model
    else:
        plan = [space.full]
    bounds = step_boundaries(cfg.steps, len(plan))

    def configure(c: UnfreezeConfig) -> int:
        """Make the learnable sub-network ``c`` (or the baseline's parameter set) learnable."""
        if peft_predicate is not None:
            return _set_predicate(model, peft_predicate)
        learn = level_blocks(len(blocks), c.level, cfg.levels)
        return set_trainable(model, blocks, learn, always=task.always_learnable)

    flop_cache: dict[tuple[int, int], int] = {}

    def flops_of(c: UnfreezeConfig, everything: bool = False) -> int:
        """Training FLOPs per sample of sub-network ``c`` (frozen weights get no weight gradient);
        ``everything``: with every parameter learnable (full fine-tuning, the reference)."""
        key = (c.resolution, -1 if everything else c.level)
        if key not in flop_cache:
            if everything:
                _set_predicate(model, lambda n: True)
            else:
                configure(c)
            blank = torch.zeros(1, channels, full_res, full_res, dtype=torch.uint8)
            inputs = task.probe(
                blank, torch.zeros(1, dtype=torch.long), c.resolution, 0 if use_sid else None, 0
            )
            flop_cache[key] = count_train_flops(
                model, inputs[0], lambda m, x: task.output(m, x, *inputs[1:-1])
            )
        return flop_cache[key]

    # FLOPs are accounting, not training: counted before the clock starts.
    flops_of(space.full, everything=True)
    searched = None in plan  # a search may pick any learnable sub-network of the space
    grid = [UnfreezeConfig(r, lv) for r in space.resolutions for lv in space.levels] if searched else []
    for c in {space.full, *(c for c in plan if c is not None), *grid}:
        flops_of(c)
    log(
        f"autoprog finetune: {cfg.method}{' + SID' if use_sid else ''} | source {model_dir.name} "
        f"({len(blocks)} blocks @ {full_res}px) | {cfg.data}: {len(train_set)} images | {cfg.steps} steps x "
        f"{cfg.batch_size} | {len(plan)} stage(s) | device {device}"
    )

    # Rank 0 writes the log; with several processes each keeps its decisions with a parameter digest.
    # A resumed run drops what was logged after its checkpoint (it is trained again) and appends.
    log_file = None
    if ctx.is_main:
        log_path = out / "log.jsonl"
        if saved is None or not log_path.exists():
            log_file = log_path.open("w")
        elif log_path.stat().st_size < saved["log_offset"]:
            log(f"  {log_path} is shorter than at the checkpoint: appending to it")
            log_file = log_path.open("a")
        else:
            log_file = log_path.open("r+")
            log_file.seek(saved["log_offset"])
            log_file.truncate()
    rank_log = RankLog(out, ctx)
    tb = open_tensorboard(cfg.tensorboard) if ctx.is_main else None

    def emit(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()  # a kill loses no record; a resumed run truncates to the checkpoint's offset
        if tb is not None:
            tb.write(record)
        if record["event"] in ("stage", "search"):
            rank_log.write(record, model)

    ema: ModelEma | None = None
    optimizer: torch.optim.Optimizer | None = None
    train_net: nn.Module = model  # the module of the training forward (DDP when distributed)
    # A resumed run's optimizer state (by parameter name) and EMA weights, taken by the first rebuild.
    restored_opt: dict[str, dict[str, torch.Tensor]] = {}
    restored_ema: dict[str, torch.Tensor] | None = None
    if lr_scale is None:
        lr_scale = float(saved["lr_scale"]) if saved is not None else 1.0

    def rebuild(supernet: bool = False) -> None:
        """After an unfreezing: optimizer over the learnable parameters only, state carried by name;
        DDP re-wrapped over them (``supernet``: steps train varying subsets of them)."""
        nonlocal optimizer, ema, train_net, restored_opt, restored_ema
        old = state_by_name(optimizer) if optimizer is not None else restored_opt
        restored_opt = {}
        optimizer = build_optimizer(model, base_lr * lr_scale, cfg.weight_decay)
        carry_state(old, optimizer, {n: n for n, p in model.named_parameters() if p.requires_grad})
        if cfg.ema_decay > 0:
            if ema is None:
                ema = ModelEma(model, cfg.ema_decay)
                if restored_ema is not None:
                    ema.load_state_dict(restored_ema)
                    restored_ema = None
            ema.rebuild(model, trainable_only=True)
        train_net = ctx.wrap(model, find_unused_parameters=supernet)

    stage_id = 0
    step = 0
    train_flops = 0
    # Position in the data: the epoch, the batches of it taken, the resolution its iterator was made
    # at (an epoch keeps the resolution it started with, across stage boundaries).
    epoch_iter = None
    epoch = 0
    taken = 0
    epoch_res = 0

    def next_batch(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch at ``resolution``; a new resolution (a stage change) re-reads the current
        epoch at it from the same position, so every stage trains at its own resolution."""
        nonlocal epoch_iter, epoch, taken, epoch_res
        if epoch_iter is not None and epoch_res != resolution:
            epoch_iter, epoch_res = itertools.islice(source.epoch(epoch, resolution), taken, None), resolution
        while True:
            if epoch_iter is None:
                epoch_iter, epoch_res = source.epoch(epoch, resolution), resolution
            try:
                batch = next(epoch_iter)
            except StopIteration:
                epoch_iter, epoch, taken = None, epoch + 1, 0
                continue
            taken += 1
            return batch

    def train_step(c: UnfreezeConfig, data_resolution: int | None = None) -> float:
        """One step of sub-network ``c``. ``data_resolution``: read batches at it and resize each to
        ``c``'s (the supernet: candidates change every step, the loader's resolution does not)."""
        nonlocal step, train_flops
        assert optimizer is not None
        x, y = next_batch(data_resolution or c.resolution)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = task.loss(train_net, x, y, c.resolution, stage_id if use_sid else None, gen)
        value = loss.item()
        bad = not math.isfinite(value)
        if ctx.distributed:  # every process stops (or rolls back) together
            bad = ctx.all_reduce_sum([float(bad)])[0] > 0
        if bad:  # never trained on: finetune() rolls back to the last checkpoint or stops
            raise NonFiniteLoss(value, step, lr_scale)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scaled gradients, steps skipped on overflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update(model, decay=min(cfg.ema_decay, (1 + step) / (10 + step)))
        train_flops += flops_of(c) * len(y)
        step += 1
        return value

    # Fixed probe data for the searches: the same images, noise and timesteps for every candidate.
    probe_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    n_probe = max(cfg.ntk_samples, cfg.batch_size * cfg.zico_batches)
    probe_idx = torch.randperm(len(train_set), generator=probe_gen)[:n_probe]
    probe_images = torch.stack([train_set[int(i)][0] for i in probe_idx])
    probe_labels = torch.tensor([int(train_set[int(i)][1]) for i in probe_idx])

    def probe_batch(resolution: int, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
        """Probe samples ``lo:hi`` at ``resolution``: the task's inputs + target (fixed random parts)."""
        seed = cfg.seed * 31 + lo * 1009 + resolution
        sid = stage_id if use_sid else None
        return task.probe(probe_images[lo:hi], probe_labels[lo:hi], resolution, sid, seed)

    step_times: dict[UnfreezeConfig, float] = {}

    def time_steps(cs: list[UnfreezeConfig]) -> None:
        """Seconds of one training step (forward + backward) of each sub-network in ``cs``, measured
        once per run (candidates recur across stages; the model's cost does not change), the new ones
        in interleaved rounds; with ``--search-runtime flops``, the step's training FLOPs instead
        (deterministic). Fills ``step_times``."""
        def step_for(c: UnfreezeConfig) -> Callable[[], object]:
            probe = tuple(  # one training batch of probe samples (repeated if the probe set is smaller)
                v.repeat((cfg.batch_size + len(v) - 1) // len(v), *[1] * (v.ndim - 1))[: cfg.batch_size]
                for v in probe_batch(c.resolution, 0, cfg.batch_size)
            )
            return lambda: task.probe_loss(model, probe).backward()

        flops = (lambda c: float(flops_of(c) * cfg.batch_size)) if cfg.search_runtime == "flops" else None
        StepTimes(model, configure, step_for, runtime=flops, repeats=cfg.time_repeats, warmup=1, device=device,
                  cache=step_times).measure(cs)  # fmt: skip

    def zero_shot_search(k: int, current: UnfreezeConfig | None) -> tuple[UnfreezeConfig, dict[str, Any]]:
        """AutoProg-Zero (Sec. 4.2, Eq. 12-19): NTK condition number, ZiCo and time per candidate,
        combined by ranked voting; decided once (rank 0's numbers) and the same for every process."""
        t0 = time.perf_counter()
        candidates = zero_shot_candidates(space, k, current)

        def ntk_inputs(c: UnfreezeConfig) -> tuple[torch.Tensor, ...]:
            return probe_batch(c.resolution, 0, cfg.ntk_samples)[:-1]

        def zico_batches(c: UnfreezeConfig) -> list[tuple[torch.Tensor, ...]]:
            bs = cfg.batch_size
            return [probe_batch(c.resolution, b * bs, (b + 1) * bs) for b in range(cfg.zico_batches)]

        time_steps(candidates)
        model.eval()
        winner, rows, _ = search_zero_shot(
            model, candidates, configure, forward=task.output, loss_fn=task.probe_loss,
            ntk_inputs=ntk_inputs, zico_batches=zico_batches, time_step=step_times.__getitem__, weights=cfg.weights(), seed=cfg.seed,
        )  # fmt: skip
        model.train()
        winner, rows = ctx.broadcast((winner, rows))  # measured times differ per process: rank 0's decide
        chosen = candidates[winner]
        for r in rows:
            r.pop("scoring_time_s", None)
        record = {"stage": k, "start_step": step, "candidates": rows, "chosen": {"resolution": chosen.resolution,
                  "level": chosen.level}, "weights": cfg.weights(), "search_time_s": time.perf_counter() - t0}  # fmt: skip
        return chosen, record

    def supernet_search(
        k: int,
        current: UnfreezeConfig | None,
        end_step: int,
        checkpoint: Callable[[dict[str, Any]], None],
        saved_search: dict[str, Any] | None = None,
    ) -> tuple[UnfreezeConfig, dict[str, Any]]:
        """AutoProg-One for fine-tuning (Sec. 5.1.2): train the candidates in shuffled rounds for a
        part of the stage (these steps count: weight recycling), rank by average loss x time (Eq. 6).

        ``checkpoint(search_state)`` saves the run mid-search every ``--checkpoint-every`` steps;
        ``saved_search`` is such a state to continue from."""
        t0 = time.perf_counter() - (saved_search["elapsed_s"] if saved_search is not None else 0.0)
        candidates = zero_shot_candidates(space, k, current)
        # Shuffled rounds: each candidate trains once in every len(candidates) steps, so every one is
        # scored (a random choice per step could leave one untrained); scored by its training losses.
        search = SupernetSearch(candidates, sampling="rounds", seed=cfg.seed * 1_000_003 + k * 7919,
                                score_source="training-loss")  # fmt: skip
        if saved_search is None:
            n_steps = max(len(candidates), int(cfg.search_fraction * (end_step - step)))
        else:
            if saved_search["candidates"] != [[c.resolution, c.level] for c in candidates]:
                raise ConfigError(
                    f"--resume: the checkpoint's stage-{k} search has other candidates than this run's"
                )
            n_steps = saved_search["n_steps"]
            search.load_state_dict({"steps": saved_search["done"], "losses": saved_search["losses"]})
        widest = max(candidates, key=lambda c: c.level)
        configure(widest)
        rebuild(
            supernet=len({c.level for c in candidates}) > 1
        )  # the optimizer covers every candidate's parameters; frozen ones get no grad
        for i in range(search.steps, n_steps):
            c = search.next_candidate()
            configure(c)
            search.record_step(loss=train_step(c, data_resolution=max(x.resolution for x in candidates)))
            emit({"event": "step", "step": step - 1, "stage": k, "loss": search.losses[c][-1], "supernet": True,
                  "resolution": c.resolution, "level": c.level})  # fmt: skip
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint({"candidates": [[c.resolution, c.level] for c in candidates],
                            "losses": [search.losses[c] for c in candidates], "n_steps": n_steps, "done": i + 1,
                            "elapsed_s": time.perf_counter() - t0})  # fmt: skip
        time_steps(candidates)
        # Eq. 6 over the mean losses and step times; rank 0's numbers decide for every process.
        decision = search.decide([step_times[c] for c in candidates], broadcast=ctx.broadcast)
        rows = [{"resolution": c.resolution, "level": c.level, "loss": decision.losses[i], "time": decision.runtimes[i],
                 "score": math.inf if decision.scores[i] is None else decision.scores[i],
                 "steps": len(search.losses[c])} for i, c in enumerate(candidates)]  # fmt: skip
        chosen = decision.chosen
        record = {"stage": k, "start_step": step - n_steps, "supernet_steps": n_steps, "candidates": rows,
                  "chosen": {"resolution": chosen.resolution, "level": chosen.level},
                  "search_time_s": time.perf_counter() - t0}  # fmt: skip
        return chosen, record

    # The stages. A resumed run restores its state here, after the set-up (which draws from the
    # global random generators exactly as the interrupted run did).
    t_start = time.perf_counter() - (saved["elapsed_s"] if saved is not None else 0.0)
    searches: list[dict[str, Any]] = []
    stages_done: list[dict[str, Any]] = []
    stage_stats: list[dict[str, Any]] = []
    current: UnfreezeConfig | None = None
    first_stage, mid = 0, None
    nonfinite_events: list[dict[str, Any]] = []  # the run's rollbacks so far (log records)
    if saved is not None:
        searches, stages_done, stage_stats = saved["searches"], saved["schedule"], saved["stage_stats"]
        if stages_done:
            current = UnfreezeConfig(stages_done[-1]["resolution"], stages_done[-1]["level"])
        step, train_flops = saved["step"], saved["train_flops"]
        epoch, taken, epoch_res = (
            saved["data"]["epoch"],
            saved["data"]["batches"],
            saved["data"]["resolution"],
        )
        if taken > 0:
            epoch_iter = itertools.islice(source.epoch(epoch, epoch_res), taken, None)
        step_times.update({UnfreezeConfig(r, lv): t for r, lv, t in saved["step_times"]})
        restored_opt = {
            name: {
                key: v.to(device) if isinstance(v, torch.Tensor) and v.ndim > 0 else v
                for key, v in st.items()
            }
            for name, st in saved["optimizer"].items()
        }
        restored_ema = saved["ema"]
        if scaler is not None and saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        if len(saved["rng"]) != ctx.world_size:
            raise ConfigError(
                f"--resume: the run in {out} had {len(saved['rng'])} process(es), this one has {ctx.world_size}"
            )
        _set_rng_state(saved["rng"][ctx.rank], device, gen)
        if saved["phase"] == "done":
            first_stage = saved["stage"] + 1
        else:
            first_stage, mid = saved["stage"], saved
        nonfinite_events = list(saved.get("nonfinite_events", []))
        for record in notes or []:  # this job's rollbacks that the truncated log no longer holds
            if record not in nonfinite_events:
                nonfinite_events.append(record)
                emit(record)
        emit({"event": "resume", "step": step, "stage": saved["stage"], "phase": saved["phase"],
              "lr_scale": lr_scale, "rollbacks": rollbacks})  # fmt: skip
        log(f"  resumed at step {step} (stage {saved['stage']}, {saved['phase']}) from {out / 'checkpoints'}")

    def save_state(k: int, phase: str, t_stage: float, start: int, **where: Any) -> None:
        """Write everything a resumed run needs to continue exactly (``checkpoints/last.pt``, the
        previous one kept as ``last.pt.prev``). ``phase``: ``search`` (inside AutoProg-One's
        supernet training), ``train`` (inside stage ``k``'s training) or ``done`` (stage ``k`` ended).
        Called by every process (their random states are gathered); rank 0 writes."""
        rng_states = [_rng_state(device, gen)]
        if ctx.distributed:
            rng_states = [None] * ctx.world_size
            torch.distributed.all_gather_object(rng_states, _rng_state(device, gen))
        if log_file is None:
            return
        log_file.flush()
        now = time.perf_counter()
        chosen = where.get("chosen")
        state = {
            "kind": "finetune",
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": state_by_name(optimizer) if optimizer is not None else restored_opt,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "stage": k,
            "phase": phase,
            "chosen": None if chosen is None else [chosen.resolution, chosen.level],
            "trainable_params": where.get("trainable"),
            "stage_start_step": start,
            "stage_losses": list(where.get("losses", [])),
            "search": where.get("search"),
            "schedule": _plain(stages_done),
            "stage_stats": _plain(stage_stats),
            "searches": _plain(searches),
            "train_flops": train_flops,
            "data": {"epoch": epoch, "batches": taken, "resolution": epoch_res},
            "rng": rng_states,
            "step_times": [[c.resolution, c.level, t] for c, t in step_times.items()],
            "lr_scale": lr_scale,
            "nonfinite_events": nonfinite_events,
            "elapsed_s": now - t_start,
            "stage_elapsed_s": now - t_stage,
            "log_offset": log_file.tell(),
            "config": cfg.to_dict(),
        }
        save_checkpoint(state, out / "checkpoints" / "last.pt", keep_previous=True)

    show = show_progress(cfg.progress)
    try:
        for k in range(first_stage, len(plan)):
            planned = plan[k]
            stage_id = k
            cont, mid = mid, None  # the checkpoint's state inside this stage, when resuming into it
            t_stage = time.perf_counter() - (cont["stage_elapsed_s"] if cont is not None else 0.0)
            reset_peak_memory(device)
            start = cont["stage_start_step"] if cont is not None else step
            if cont is not None and cont["phase"] == "train":  # the stage's sub-network was chosen and logged
                chosen = UnfreezeConfig(*cont["chosen"])
                trainable = configure(chosen)
                rebuild()
                losses: list[float] = list(cont["stage_losses"])
            else:
                if planned is None:
                    if cfg.method == "autoprog-zero":
                        chosen, record = zero_shot_search(k, current)
                    else:
                        chosen, record = supernet_search(
                            k, current, bounds[k + 1],
                            lambda search, k=k, t=t_stage, s=start: save_state(k, "search", t, s, search=search),
                            cont["search"] if cont is not None else None,
                        )  # fmt: skip
                    searches.append(record)
                    emit({"event": "search", **record})
                    log(
                        f"  stage {k} search: {chosen.resolution}px level {chosen.level} ({record['search_time_s']:.1f}s)"
                    )
                else:
                    chosen = planned
                trainable = configure(chosen)
                rebuild()
                emit({"event": "stage", "stage": k, "step": step, "resolution": chosen.resolution, "level": chosen.level,
                      "trainable_params": trainable})  # fmt: skip
                if k > 0 or len(plan) > 1:
                    log(
                        f"  stage {k}: {chosen.resolution}px, level {chosen.level}, {trainable:,} learnable parameters"
                    )
                losses = []
            bar = tqdm(
                range(step, bounds[k + 1]),
                desc=f"stage {k} [{chosen.resolution}px L{chosen.level}]",
                disable=not show,
                leave=False,
            )
            for _ in bar:
                losses.append(train_step(chosen))
                emit({"event": "step", "step": step - 1, "stage": k, "loss": losses[-1]})
                if step % 50 == 0 and show:
                    rate = bar.format_dict.get("rate") or 0.0  # steps/s, tqdm's smoothed estimate
                    bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}",
                                    img_s=f"{rate * cfg.batch_size * ctx.world_size:.0f}")  # fmt: skip
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < bounds[k + 1]:
                    save_state(k, "train", t_stage, start, chosen=chosen, trainable=trainable, losses=losses)
            stage_time = time.perf_counter() - t_stage
            total, n = ctx.all_reduce_sum([sum(losses), len(losses)])  # the stage's loss over all processes
            stages_done.append({"stage": k, "start_step": bounds[k], "end_step": bounds[k + 1], "resolution": chosen.resolution,
                                "level": chosen.level, "trainable_params": trainable})  # fmt: skip
            stage_stats.append({**stages_done[-1], "wall_clock_s": stage_time, "train_flops_cumulative": train_flops,
                                "mean_loss": total / n if n else None, "steps_trained": step - start,
                                "peak_mem_bytes": peak_memory_bytes(device)})  # fmt: skip
            if losses:
                log(f"  stage {k} done: loss {stage_stats[-1]['mean_loss']:.4f} ({stage_time:.1f}s)")
            current = chosen
            save_state(k, "done", t_stage, start, chosen=chosen, trainable=trainable)
    finally:
        rank_log.close()
        if tb is not None:
            tb.close()
        if log_file is not None:
            log_file.close()
    wall_clock = time.perf_counter() - t_start
    # FLOPs of all processes together (each counted its own samples).
    train_flops = int(ctx.all_reduce_sum([float(train_flops)])[0])
    schedule = UnfreezeSchedule.from_list(stages_done)

    # Evaluation (rank 0): the task's metric (FID of samples, top-1) of the EMA (or online) model at
    # full resolution, with the final stage's identifier.
    final = ema.module if ema is not None else model
    evaluation: dict[str, Any] = {task.metric: None}
    if ctx.is_main:
        evaluation = task.evaluate(final, out, (num_stages - 1) if use_sid else None, log)
        task.save(final, out / "model")
    full_flops = flops_of(space.full, everything=True) * cfg.steps * cfg.batch_size * ctx.world_size
    summary: dict[str, Any] = {
        "method": cfg.method,
        "sid": use_sid,
        "model": cfg.model,
        "source": str(model_dir),
        "data": cfg.data,
        "steps": cfg.steps,
        "task": type(task).__name__,
        "metric": task.metric,
        **evaluation,
        "lr": base_lr,
        "wall_clock_s": wall_clock,
        "train_flops": train_flops,
        "full_flops": full_flops,
        "flops_ratio": train_flops / full_flops,
        "schedule": [
            {**s, "trainable_params": t["trainable_params"]}
            for s, t in zip(schedule.to_list(), stages_done, strict=True)
        ],
        "search": searches,
        "search_time_s": sum(s["search_time_s"] for s in searches),
        "stages": stage_stats,
        "seed": cfg.seed,
        "train_samples": len(train_set),
        "params": count_params(model),
        "full_resolution": full_res,
        "full_depth": len(blocks),
        "config": cfg.to_dict(),
        "mixed_precision": {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
        "environment": {**environment(device), "world_size": ctx.world_size},
        "nonfinite_rollbacks": sum(r["action"] == "rollback" for r in nonfinite_events),
        "lr_scale": lr_scale,
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    value = evaluation.get(task.metric)
    metric_text = "-" if value is None else f"{value:.2f}"
    log(
        f"  done: {task.metric.upper() if task.metric == 'fid' else task.metric} {metric_text} | {wall_clock:.1f}s | FLOPs {summary['flops_ratio']:.3f} of full "
        f"| {out}/summary.json"
    )
    return summary


__all__ = ["NonFiniteLoss", "finetune", "load_resume_state"]
