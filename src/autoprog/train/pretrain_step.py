"""The training step of a pre-training run: one optimizer step of a classifier on a prepared batch.

Batch augmentation (random erasing at the stage's probability, Mixup/CutMix), the cross-entropy
(label smoothing, or soft targets under Mixup), autocast (``--mixed-precision``) with fp16's
gradient scaler, and never a step on a non-finite loss (:func:`autoprog.run.check_finite`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprog.adapters.base import ModelAdapter
from autoprog.distributed import DistContext
from autoprog.optim import set_lr
from autoprog.run.nonfinite import check_finite
from autoprog.run.process import backward_and_step, grad_scaler, mixed_precision_dtype
from autoprog.train.config import PretrainConfig


class TrainStep:
    """``step(module, optimizer, x, y, lr, step=..., lr_scale=...) -> loss``.

    Args:
        cfg: the run's configuration (label smoothing, Mixup/CutMix, precision, channels-last).
        num_classes: the classifier's classes (Mixup's soft targets).
        device: where the batch lives.
        ctx: this process's place in the job (non-finite losses are detected by all together).

    Attributes:
        eraser: timm's random erasing, or ``None``; set at each stage start (its probability may
            grow with the stage, Appendix C).
        scaler: fp16's gradient scaler (checkpointed with the run), else ``None``.
    """

    def __init__(self, cfg: PretrainConfig, num_classes: int, device: torch.device, ctx: DistContext) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mixup = make_mixup(cfg, num_classes)
        self.amp_dtype = mixed_precision_dtype(cfg.mixed_precision or ("bf16" if cfg.amp else None), device)
        self.scaler = grad_scaler(self.amp_dtype, device)
        self.eraser: Any = None
        self.channels_last = cfg.channels_last
        self.device = device
        self.ctx = ctx

    def __call__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        lr: float,
        *,
        step: int,
        lr_scale: float,
    ) -> float:
        """One optimizer step at learning rate ``lr`` on the normalised batch ``x`` (N, C, H, W)
        with labels ``y`` (N,); returns the loss. ``step`` and ``lr_scale`` go with a
        :class:`~autoprog.errors.NonFiniteLoss`."""
        set_lr(optimizer, lr)
        y_soft = None
        if self.eraser is not None:
            x = self.eraser(x)
        if self.mixup is not None:
            x, y_soft = self.mixup(x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = module(x)  # (N, classes)
        if y_soft is None:
            loss = self.criterion(logits.float(), y)
        else:
            loss = torch.sum(-y_soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        value = loss.item()
        check_finite(value, step, lr_scale, self.ctx)  # never train on it: roll back or stop
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, optimizer, self.scaler)  # fp16: scaled, overflowing steps skipped
        return value

    def reserve_memory(self, adapter: ModelAdapter, batch_size: int, in_chans: int) -> None:
        """One forward/backward of the full model at full resolution (the largest configuration any
        stage or candidate reaches), so the CUDA caching allocator holds that much before training
        starts and a growth late in the run cannot fail for lack of memory (issue 9)."""
        model = adapter.create_model().to(self.device)
        x = torch.zeros(batch_size, in_chans, adapter.full.resolution, adapter.full.resolution, device=self.device)
        y = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.criterion(model(x).float(), y)
        loss.backward()
        del model, x, y, loss  # the allocator keeps the blocks reserved


def make_eraser(probability: float, device: torch.device) -> Any:
    """timm's random erasing on a normalised batch (per-pixel normal noise), or ``None`` when off."""
    if probability <= 0:
        return None
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=probability, mode="pixel", device=str(device))


def make_mixup(cfg: PretrainConfig, num_classes: int) -> Any:
    """timm's Mixup/CutMix with label smoothing (``--mixup``, ``--cutmix``), or ``None`` when off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )


__all__ = ["TrainStep", "make_eraser", "make_mixup"]
