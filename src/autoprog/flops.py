"""FLOPs of a training step, counted with ``torch.utils.flop_counter`` (never hand-counted).

Counts are per *sample* (batch of one, forward + backward), cached per sub-network configuration,
and multiplied by the number of samples a stage processes. Linear layers and attention are linear
in the batch size, so this equals counting the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autoprog.growth.schedule import SubnetConfig


def count_train_flops(model: nn.Module, x: torch.Tensor, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> int:
    """FLOPs of one forward + backward pass of ``model`` on ``x`` (gradients are cleared afterwards)."""
    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        out = forward(model, x) if forward is not None else model(x)
        out.float().sum().backward()
    for p in model.parameters():
        p.grad = None
    model.train(was_training)
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
