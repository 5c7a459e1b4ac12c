"""FLOPs of a training step, counted with ``torch.utils.flop_counter`` (never hand-counted).

Counts are per *sample* (batch of one, forward + backward), cached per sub-network configuration,
and multiplied by the number of samples a stage processes. Linear layers and attention are linear
in the batch size, so this equals counting the whole batch.

The model counts in training mode (dropout, drop-path and the backward pass as training runs them)
except its BatchNorm layers, which run in eval mode: torch's counter counts no FLOPs for a
normalisation in either mode, but a training-mode BatchNorm refuses a batch of one on a 1x1 map (a
ResNet's last stage at a small input) and would update the running statistics of a caller's model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from autoprog.growth.schedule import SubnetConfig


def count_train_flops(model: nn.Module, x: torch.Tensor, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> int:
    """FLOPs of one training forward + backward pass of ``model`` on ``x`` (BatchNorm in eval mode,
    see the module docstring; gradients are cleared and every module's mode restored afterwards)."""
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            out = forward(model, x) if forward is not None else model(x)
            out.float().sum().backward()
    finally:
        for p in model.parameters():
            p.grad = None
        for m, training in modes.items():
            m.train(training)
    return int(counter.get_total_flops())


class FlopTable:
    """Per-sample training FLOPs of each sub-network configuration, computed once and cached.

    Args:
        make_model: builds a fresh model of a given depth (``adapter.create_model``).
        in_chans: input channels.
        prepare: optional per-model forward override (e.g. a sub-network runner).
    """

    def __init__(self, make_model: Callable[[int], nn.Module], in_chans: int) -> None:
        self.make_model = make_model
        self.in_chans = in_chans
        self._cache: dict[SubnetConfig, int] = {}

    def __call__(self, config: SubnetConfig) -> int:
        if config not in self._cache:
            model = self.make_model(config.depth)
            x = torch.zeros(1, self.in_chans, config.resolution, config.resolution)
            self._cache[config] = count_train_flops(model, x)
        return self._cache[config]

    def as_dict(self) -> dict[str, int]:
        return {f"{c.resolution}x{c.depth}": v for c, v in sorted(self._cache.items())}
