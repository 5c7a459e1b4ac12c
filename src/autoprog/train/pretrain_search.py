"""What the searches of a pre-training run measure, handed to :class:`~autoprog.controller.GrowthController`.

* AutoProg-One (Sec. 3.2.3) scores a candidate by the momentum network's loss on fixed images
  (:func:`search_loss`): the first training images at the candidate's resolution (the paper's
  exam), or, under a rule that sees the end (``--search-exam validation``, the ``horizon`` rule of
  :mod:`autoprog.search.rules`), the first validation images at the full resolution; it times
  candidates it never sampled on a fixed batch
  (:func:`time_candidate`); ``--search-runtime flops`` replaces measured times by the candidate's
  training FLOPs (deterministic, so a searched schedule is reproducible and resumable exactly).
* AutoProg-One under the ``trial`` exam (the ``trial`` rule) trains each candidate's copy alone
  for a few steps at the run's learning rate, with the run's loss, on the same training batches,
  and examines it on the validation images at its own resolution (:func:`trial_candidate`).
* AutoProg-Zero (Sec. 4.2.2, Tab. V) scores candidates on a fixed probe of random training images
  (:func:`zero_shot_probe`), the same on every process.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprog.controller import ZeroShotProbe
from autoprog.data import SubsetDataset
from autoprog.errors import NonFiniteLoss
from autoprog.flops import FlopTable
from autoprog.growth.growing import GrowingModel
from autoprog.growth.schedule import SubnetConfig
from autoprog.optim import cosine_lr
from autoprog.search.one_shot import measure_step_time
from autoprog.search.rules import controller_options
from autoprog.train import peers
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.pretrain_data import PretrainData
from autoprog.train.pretrain_step import TrainStep


@torch.no_grad()
def search_loss(
    data: PretrainData, samples: int, device: torch.device, net: nn.Module, config: SubnetConfig,
    exam: BatchSource | None = None, resolution: int | None = None,
) -> float:  # fmt: skip
    """Search loss (Sec. 3.2.3): ``net`` (the momentum network) on the first ``samples`` images of
    ``exam`` (default: the training images) at ``resolution`` (default: ``config``'s), no augmentation."""
    total, seen = 0.0, 0
    source = data.fixed if exam is None else exam
    for x, y in source.epoch(0, config.resolution if resolution is None else resolution):
        logits = net(data.prep(x.to(device)))
        total += F.cross_entropy(logits.float(), y.to(device), reduction="sum").item()
        seen += len(y)
        if seen >= samples:
            break
    return total / seen


def time_candidate(data: PretrainData, device: torch.device, net: nn.Module, config: SubnetConfig) -> float:
    """Seconds of a forward + backward of ``config`` on a fixed batch (for candidates never sampled)."""
    x, y = next(iter(data.fixed.epoch(0, config.resolution)))
    x, y = data.prep(x.to(device)), y.to(device)
    t = measure_step_time(lambda: F.cross_entropy(net(x), y).backward(), repeats=2, warmup=1, device=device)
    for p in net.parameters():
        p.grad = None
    return t


def trial_candidate(
    cfg: PretrainConfig, data: PretrainData, train_step: TrainStep, exam: BatchSource, total_steps: int, device: torch.device, net: GrowingModel, config: SubnetConfig, steps: int, step: int,
) -> tuple[float, float]:  # fmt: skip
    """A trial (:mod:`autoprog.search.trial_growth`): train the copy ``net`` (the candidate ``config``)
    for ``steps`` steps from the run's step ``step`` on, at the run's learning rate (cosine, not the
    rollbacks' scale) and with its loss (:class:`~autoprog.train.pretrain_step.TrainStep`), on
    training batches that depend on ``step`` only (the same for every candidate of a stage), at the
    candidate's resolution; then its loss on ``exam`` (validation images) at that resolution, in eval
    mode (at the full resolution instead, a network trained small is judged mostly by how it copes
    with an input size it never saw: on FMNIST-5k that ranked depths at random). Returns
    that loss (``inf`` when a step's loss was not finite) and the median seconds of the steps after
    the first."""
    model, warmup = net.model, int(cfg.warmup_epochs * len(data.train))
    model.train()
    seconds: list[float] = []
    scaler = train_step.scaler.state_dict() if train_step.scaler is not None else None  # fp16: the run's scale
    epoch = -1 - step  # a pass of the training set the run itself never draws
    try:
        while len(seconds) < steps:
            for x, y in data.train.epoch(epoch, config.resolution):
                x, y = data.prep(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
                t0 = time.perf_counter()
                lr = cosine_lr(step + len(seconds), total_steps, cfg.lr, warmup, cfg.min_lr)
                train_step(model, net.optimizer, x, y, lr, step=step + len(seconds), lr_scale=1.0)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds.append(time.perf_counter() - t0)
                if len(seconds) == steps:
                    break
            epoch -= 1_000_003  # more steps than an epoch has batches: another pass
    except NonFiniteLoss:
        return float("inf"), statistics.median(seconds) if seconds else float("inf")
    finally:
        if scaler is not None:
            train_step.scaler.load_state_dict(scaler)  # type: ignore[union-attr]
    model.eval()
    loss = search_loss(data, cfg.search_samples, device, model, config, exam=exam)
    model.train()
    return loss, statistics.median(seconds[1:] or seconds)


def zero_shot_probe(cfg: PretrainConfig, data: PretrainData, resolution: int, device: torch.device) -> ZeroShotProbe:
    """AutoProg-Zero's probe (Sec. 4.2.2): ``cfg.zico_batches`` batches of training images drawn at
    random (seeded), without augmentation, at ``resolution``; every candidate sees them at its own."""
    size = max(1, min(cfg.batch_size, len(data.train_set) // cfg.zico_batches))  # type: ignore[arg-type]
    picked = torch.randperm(len(data.train_set), generator=torch.Generator().manual_seed(cfg.seed))  # type: ignore[arg-type]
    source = BatchSource(SubsetDataset(data.train_set, picked[: size * cfg.zico_batches].tolist()), size,
                         shuffle=False, drop_last=True)  # fmt: skip
    return ZeroShotProbe(
        [(data.prep(x.to(device)), y.to(device)) for x, y in source.epoch(0, resolution)],
        ntk_samples=cfg.ntk_samples,
        weights=cfg.weights(),
        seed=cfg.seed,
        ntk_tensors=cfg.search().ntk_tensors,
    )


def exam_source(cfg: PretrainConfig, data: PretrainData) -> BatchSource:
    """The images of the ``validation`` exam: the first ``cfg.search_samples`` validation images in
    order (the training images when the run has no validation split)."""
    images = data.val_set if data.val_set is not None else data.train_set
    return BatchSource(images, min(256, cfg.search_samples), shuffle=False, drop_last=False,
                       downsize=peers.batch_downsize(cfg))  # fmt: skip


def search_functions(
    cfg: PretrainConfig, data: PretrainData, flops: FlopTable, full_resolution: int, device: torch.device,
    train_step: TrainStep,
) -> dict[str, Any]:
    """The controller's ``score_fn``, ``measure_fn``, ``runtime_fn``, ``probe``, ``trial_fn`` and the
    search rule's options (:func:`~autoprog.search.rules.controller_options`) for ``cfg``; the
    trials take ``train_step`` (the run's loss)."""
    rule = cfg.search()
    exam = {"exam": exam_source(cfg, data), "resolution": full_resolution} if rule.exam == "validation" else {}
    options = controller_options(rule)
    if not cfg.recycle:  # a supernet that is not training time runs whole extra epochs (--search-epochs)
        options["supernet_fraction"] = None
    return {
        **options,
        "score_fn": partial(search_loss, data, cfg.search_samples, device, **exam),
        "measure_fn": partial(time_candidate, data, device),
        "runtime_fn": (lambda c: float(flops(c))) if cfg.search_runtime == "flops" else None,
        "probe": zero_shot_probe(cfg, data, full_resolution, device) if cfg.method == "autoprog-zero" else None,
        "trial_fn": partial(trial_candidate, cfg, data, train_step, exam_source(cfg, data),
                            len(data.train) * peers.trained_epochs(cfg), device) if rule.exam == "trial" else None,
    }  # fmt: skip


__all__ = ["exam_source", "search_functions", "search_loss", "time_candidate", "trial_candidate", "zero_shot_probe"]
