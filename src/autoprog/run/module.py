"""The module of the training forward, for a model that changes between stages.

Progressive training replaces the model's blocks (growth), turns it into an elastic supernet or
changes which parameters learn (unfreezing). A DDP wrapper, a compiled graph or a memory format set
up for the old model does not follow, so :class:`TrainModule` builds them anew whenever the model's
*version* changes (:attr:`autoprog.controller.GrowthController.version`, or a counter the loop
bumps at each unfreezing), and only then: a compiled module is compiled once per model change, not
per step (a new input resolution adds a guard or a graph, not a recompilation of everything).
"""

from __future__ import annotations

import torch
from torch import nn

from autoprog.distributed import DistContext


class TrainModule:
    """The model as the training step calls it: ``train_module(model, version)``.

    Args:
        ctx: this process's place in the job; with several processes the model is wrapped in DDP
            over its learnable parameters (:meth:`~autoprog.distributed.DistContext.wrap`).
        compile: a ``torch.compile`` backend (``--compile``), or ``None``.
        channels_last: convert the model to channels-last after every change (``--channels-last``:
            new blocks arrive in the default format).
    """

    def __init__(self, ctx: DistContext, *, compile: str | None = None, channels_last: bool = False) -> None:
        self.ctx = ctx
        self.compile = compile
        self.channels_last = channels_last
        self._version: int | None = None
        self._module: nn.Module | None = None

    def __call__(self, model: nn.Module, version: int, find_unused_parameters: bool = False) -> nn.Module:
        """``model`` ready for the training forward, wrapped anew if ``version`` differs from the last
        call's. ``find_unused_parameters``: some steps skip parameters (a supernet's shallower
        candidates); DDP is told so when it wraps."""
        if self._module is None or version != self._version:
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            module = self.ctx.wrap(model, find_unused_parameters=find_unused_parameters)
            if self.compile:
                module = torch.compile(module, backend=self.compile)
            self._version, self._module = version, module
        return self._module


__all__ = ["TrainModule"]
