"""The training step of a fine-tuning run, and the learnable sub-network it trains.

* :class:`LearnableSubnets` makes a sub-network of the unfreezing space learnable (Sec. 4.1.1:
  the blocks of an interleaved level, or a parameter-efficient baseline's parameters) and counts
  a step's training FLOPs per sample of each (frozen weights get no weight gradient).
* :class:`FinetuneStep` is one optimizer step of the task's loss on a batch: autocast
  (``--mixed-precision``) with fp16's gradient scaler, never a step on a non-finite loss
  (:func:`autoprog.run.check_finite`), the EMA update with its warm-up decay. After every
  unfreezing :meth:`FinetuneStep.rebuild` makes AdamW over the learnable parameters only, their
  moments carried by parameter name, the EMA pairing rebuilt by name, and DDP wrapped anew.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoprog.distributed import DistContext
from autoprog.ema import ModelEma
from autoprog.flops import count_train_flops
from autoprog.optim import build_optimizer, carry_state, state_by_name
from autoprog.run.module import TrainModule
from autoprog.run.nonfinite import check_finite
from autoprog.run.process import backward_and_step, grad_scaler
from autoprog.tasks import FinetuneTask
from autoprog.train.config import FinetuneConfig
from autoprog.unfreeze import UnfreezeConfig, level_blocks, set_trainable


def set_learnable(model: nn.Module, learn: Callable[[str], bool]) -> int:
    """Make exactly the parameters whose name ``learn`` accepts learnable; their element count."""
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(learn(name))
        n += p.numel() if p.requires_grad else 0
    return n


class LearnableSubnets:
    """Which parameters of the task's model learn in each sub-network, and what a step of it costs.

    Args:
        task: the model, its unfreezable blocks and the parameters that always learn.
        levels: the number of unfreezing levels (``--levels``).
        peft: a parameter-efficient baseline's predicate of learnable names
            (:meth:`FinetuneTask.method_parameters`), or ``None`` for the methods that unfreeze blocks.
        use_sid: the model's inputs carry a stage identifier (the FLOPs are counted with one).
    """

    def __init__(
        self, task: FinetuneTask, levels: int, peft: Callable[[str], bool] | None, use_sid: bool
    ) -> None:
        self.task, self.model, self.blocks = task, task.model, task.block_paths
        self.levels, self.peft, self.use_sid = levels, peft, use_sid
        self._flops: dict[tuple[int, int], int] = {}

    def configure(self, c: UnfreezeConfig) -> int:
        """Make the learnable sub-network ``c`` (or the baseline's parameter set) learnable; returns
        its learnable parameter count."""
        if self.peft is not None:
            return set_learnable(self.model, self.peft)
        learn = level_blocks(len(self.blocks), c.level, self.levels)
        return set_trainable(self.model, self.blocks, learn, always=self.task.always_learnable)

    def flops(self, c: UnfreezeConfig, everything: bool = False) -> int:
        """Training FLOPs per sample of sub-network ``c`` (frozen weights get no weight gradient);
        ``everything``: with every parameter learnable (full fine-tuning, the reference). Counted
        once per configuration; counting changes which parameters learn."""
        key = (c.resolution, -1 if everything else c.level)
        if key not in self._flops:
            if everything:
                set_learnable(self.model, lambda n: True)
            else:
                self.configure(c)
            task = self.task
            blank = torch.zeros(1, task.channels, task.full_resolution, task.full_resolution, dtype=torch.uint8)
            inputs = task.probe(blank, torch.zeros(1, dtype=torch.long), c.resolution, 0 if self.use_sid else None, 0)
            self._flops[key] = count_train_flops(
                self.model, inputs[0], lambda m, x: task.output(m, x, *inputs[1:-1])
            )
        return self._flops[key]


class FinetuneStep:
    """``step(c, x, y, stage) -> loss``: one optimizer step of sub-network ``c``.

    Args:
        cfg: the run's configuration (weight decay, EMA decay).
        subnets: the model's learnable sub-networks (the step's FLOPs are booked from them).
        base_lr: the learning rate before any rollback.
        lr_scale: the learning-rate scale (lowered by each rollback on a non-finite loss).
        amp_dtype: the autocast dtype (``None``: fp32).
        device: where the model lives.
        ctx: this process's place in the job (DDP, non-finite losses detected by all together).
        gen: all training randomness (noise, timesteps, label dropout); each process draws its own.

    Attributes:
        step: optimizer steps so far; ``train_flops``: this process's training FLOPs so far.
        optimizer, ema: AdamW over the learnable parameters, the EMA copy (``None`` before the
            first :meth:`rebuild`; the EMA stays ``None`` with ``ema_decay == 0``).
        scaler: fp16's gradient scaler (checkpointed with the run), else ``None``.
    """

    def __init__(
        self, cfg: FinetuneConfig, subnets: LearnableSubnets, base_lr: float, lr_scale: float,
        amp_dtype: torch.dtype | None, device: torch.device, ctx: DistContext, gen: torch.Generator,
    ) -> None:  # fmt: skip
        self.cfg, self.subnets, self.model, self.task = cfg, subnets, subnets.model, subnets.task
        self.base_lr, self.lr_scale = base_lr, lr_scale
        self.amp_dtype, self.device, self.ctx, self.gen = amp_dtype, device, ctx, gen
        self.scaler = grad_scaler(amp_dtype, device)
        self.step, self.train_flops = 0, 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.ema: ModelEma | None = None
        self.use_sid = subnets.use_sid
        self._train_module, self._version = TrainModule(ctx), 0
        self._net: nn.Module = self.model  # the module of the training forward (DDP when distributed)
        # A resumed run's optimizer state (by parameter name) and EMA weights, taken by the first rebuild.
        self._restored_opt: dict[str, dict[str, Any]] = {}
        self._restored_ema: dict[str, torch.Tensor] | None = None

    def rebuild(self, supernet: bool = False) -> None:
        """After an unfreezing: the optimizer over the learnable parameters only, state carried by
        name; the EMA pairing rebuilt by name; DDP re-wrapped over them (``supernet``: steps train
        varying subsets of them)."""
        model, cfg = self.model, self.cfg
        old = self.optimizer_state()
        self._restored_opt = {}
        self.optimizer = build_optimizer(model, self.base_lr * self.lr_scale, cfg.weight_decay)
        carry_state(old, self.optimizer, {n: n for n, p in model.named_parameters() if p.requires_grad})
        if cfg.ema_decay > 0:
            if self.ema is None:
                self.ema = ModelEma(model, cfg.ema_decay)
                if self._restored_ema is not None:
                    self.ema.load_state_dict(self._restored_ema)
                    self._restored_ema = None
            self.ema.rebuild(model, trainable_only=True)
        self._version += 1
        self._net = self._train_module(model, self._version, find_unused_parameters=supernet)

    def __call__(self, c: UnfreezeConfig, x: torch.Tensor, y: torch.Tensor, stage: int) -> float:
        """One step of sub-network ``c`` on the uint8 batch ``(x, y)`` during ``stage`` (its
        identifier goes into the inputs under SID); returns the loss."""
        optimizer = self.optimizer
        assert optimizer is not None, "rebuild() makes the optimizer"
        device, amp_dtype = self.device, self.amp_dtype
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = self.task.loss(self._net, x, y, c.resolution, stage if self.use_sid else None, self.gen)
        value = loss.item()
        check_finite(value, self.step, self.lr_scale, self.ctx)  # never trained on: the run rolls back or stops
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, optimizer, self.scaler)  # fp16: scaled, overflowing steps skipped
        if self.ema is not None:
            step = self.step
            self.ema.update(self.model, decay=min(self.cfg.ema_decay, (1 + step) / (10 + step)))
        self.train_flops += self.subnets.flops(c) * len(y)
        self.step += 1
        return value

    def optimizer_state(self) -> dict[str, dict[str, Any]]:
        """AdamW's state by parameter name (a resumed run's, until the first :meth:`rebuild`)."""
        return state_by_name(self.optimizer) if self.optimizer is not None else self._restored_opt

    def load_state(self, saved: dict[str, Any]) -> None:
        """Continue from the checkpoint ``saved``: the step, FLOPs, fp16 scaler, and the optimizer
        state and EMA weights, which the next :meth:`rebuild` takes."""
        self.step, self.train_flops = saved["step"], saved["train_flops"]
        self._restored_opt = {
            name: {key: v.to(self.device) if isinstance(v, torch.Tensor) and v.ndim > 0 else v for key, v in st.items()}
            for name, st in saved["optimizer"].items()
        }  # fmt: skip
        self._restored_ema = saved["ema"]
        if self.scaler is not None and saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])


__all__ = ["FinetuneStep", "LearnableSubnets", "set_learnable"]
