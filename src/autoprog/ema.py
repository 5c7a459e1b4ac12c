"""Momentum (EMA) copy of a network, keyed by parameter name (paper Eq. 3).

``theta_m <- m * theta_m + (1 - m) * theta``. Parameters are paired by *name*, never by position,
and the pairing is rebuilt with :meth:`ModelEma.rebuild` after every growth, so a change of shape can
never silently pair the wrong tensors. Updates use PyTorch's multi-tensor ``_foreach_lerp_``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from autoprog.errors import ConfigError


class ModelEma:
    """An exponential moving average of a model's parameters (buffers are copied).

    Args:
        model: the online model; a deep copy becomes the momentum network.
        decay: momentum coefficient ``m`` of Eq. 3.

    Example:
        >>> ema = ModelEma(model, decay=0.999)  # doctest: +SKIP
        >>> ema.update(model)  # after each optimizer step  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._buffers: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self.rebuild(model)

    def rebuild(self, model: nn.Module, trainable_only: bool = False) -> None:
        """Pair the momentum network's tensors with ``model``'s by name (after any change of shape).

        ``trainable_only``: average only parameters with ``requires_grad`` (progressive unfreezing:
        frozen parameters never change, so their copies stay equal without per-step work).
        """
        mine = dict(self.module.named_parameters())
        theirs = dict(model.named_parameters())
        if mine.keys() != theirs.keys():
            missing = sorted(theirs.keys() - mine.keys())[:3]
            extra = sorted(mine.keys() - theirs.keys())[:3]
            raise RuntimeError(f"EMA and model parameters differ by name: missing {missing}, extra {extra}")
        names = [
            n
            for n, p in theirs.items()
            if p.dtype.is_floating_point and (p.requires_grad or not trainable_only)
        ]
        for n in names:
            if mine[n].shape != theirs[n].shape:
                raise RuntimeError(
                    f"EMA parameter {n} has shape {tuple(mine[n].shape)}, model {tuple(theirs[n].shape)}"
                )
        self._pairs = ([mine[n] for n in names], [theirs[n] for n in names])
        mb, tb = dict(self.module.named_buffers()), dict(model.named_buffers())
        bnames = [n for n in tb if n in mb]
        self._buffers = ([mb[n] for n in bnames], [tb[n] for n in bnames])

    @torch.no_grad()
    def update(self, model: nn.Module | None = None, decay: float | None = None) -> None:
        """One step of Eq. 3. ``model`` is accepted for API symmetry; pairing is fixed by :meth:`rebuild`."""
        d = self.decay if decay is None else decay
        ema_params, params = self._pairs
        if ema_params:
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - d)
        for eb, b in zip(*self._buffers, strict=True):
            eb.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
