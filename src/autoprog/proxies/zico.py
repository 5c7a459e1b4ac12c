"""Convergence and generalisation of a partly frozen network: generalised ZiCo (AutoProg-Zero, Eq. 17).

ZiCo (Li et al., ICLR 2023) looks at the gradients of the training loss over several batches: a
weight whose gradient has a large absolute mean and a small standard deviation across batches
trains fast and generalises. AutoProg-Zero generalises it to a partly frozen network by analysing
only the *learnable* parameters while the forward pass that computes the loss stays unchanged.
For every layer ``l`` (a Linear or Conv layer whose weight is learnable) and weight entry ``j``,
over ``B >= 2`` batches::

    m_j = mean_b |g_bj|,  s_j = std_b g_bj  (ddof 0)
    S_l = sum_{j: s_j != 0} m_j / s_j
    ZiCo = sum_{l: S_l != 0} ln S_l

Higher ZiCo is better (the paper's Eq. 17 negates it to minimise; :func:`autoprog.search.ranked_vote` ranks it
descending instead). With ``B = 2`` every ratio is ``>= 1``, so ZiCo grows with the number of
learnable weights: it favours larger learnable subsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from autoprog.proxies.ntk import learnable_parameters, requires_grad_only

ZICO_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose ``weight`` ZiCo analyses; subclasses (diffusers', timm's, ``LazyLinear``) included."""


def zico_layers(model: nn.Module, learnable: Mapping[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    """``{module name: weight}`` of the Linear/Conv layers whose weight is learnable (tied weights once).

    Only ``weight`` counts, as in ZiCo: biases and parameters of other modules (norms, embeddings,
    ``nn.MultiheadAttention.in_proj_weight``) are differentiated through but not scored.
    """
    wanted = {id(p) for p in learnable.values()}
    layers: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, ZICO_LAYER_TYPES):
            continue
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter) and id(w) in wanted and id(w) not in seen:
            seen.add(id(w))
            layers[name] = w
    return layers


def zico_from_gradients(grads: Mapping[str, Sequence[Tensor]]) -> float:
    """ZiCo (Eq. 17) of per-layer gradients: ``{layer: [gradient of batch 1, batch 2, ...]}``.

    Computed in float64. ``s_j`` is exactly 0 where all the batches agree on entry ``j`` (checked
    directly, so rounding in the standard deviation cannot turn equal gradients into a huge ratio);
    such entries, and layers with ``S_l = 0``, are skipped. No layers: 0.0.

    Raises:
        ValueError: a layer has fewer than 2 gradients, or gradients of different shapes.
    """
    total = 0.0
    for name, per_batch in grads.items():
        if len(per_batch) < 2:
            raise ValueError(
                f"ZiCo needs the gradients of at least 2 batches; layer {name!r} has {len(per_batch)}"
            )
        if len({tuple(g.shape) for g in per_batch}) != 1:
            raise ValueError(
                f"layer {name!r}: gradients of different shapes {[tuple(g.shape) for g in per_batch]}"
            )
        g = torch.stack(
            [t.detach().to(device="cpu", dtype=torch.float64).reshape(-1) for t in per_batch]
        )  # (B, P)
        mean_abs = g.abs().mean(dim=0)
        std = g.std(dim=0, correction=0)
        varies = g.amax(dim=0) != g.amin(dim=0)
        s_l = float((mean_abs[varies] / std[varies]).sum())
        if s_l != 0.0:
            total += math.log(s_l)
    return total


def zico(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    param_names: Sequence[str] | None = None,
) -> float:
    """Generalised ZiCo (Eq. 17) of the learnable Linear/Conv weights over ``batches``; higher is better.

    Args:
        model: the network, in the mode the caller wants the loss in; left unchanged (no ``.grad``,
            same ``requires_grad`` flags).
        batches: at least 2 batches (use the same fixed batches for every candidate).
        loss_fn: ``loss_fn(model, batch) -> scalar loss`` (e.g. the denoising MSE of Eq. 11).
        param_names: the learnable parameters (see :func:`~autoprog.proxies.ntk.learnable_parameters`);
            ``None``: those with ``requires_grad``. Frozen layers take part in the forward only.

    Returns:
        The ZiCo score (see :func:`zico_from_gradients`).

    Raises:
        ValueError: fewer than 2 batches, a non-scalar loss, or no learnable Linear/Conv weight.
    """
    learnable = learnable_parameters(model, param_names)
    layers = zico_layers(model, learnable)
    if not layers:
        raise ValueError("ZiCo needs at least one learnable Linear/Conv weight; the model has none")
    names, weights = list(layers), list(layers.values())
    grads: dict[str, list[Tensor]] = {name: [] for name in names}
    with requires_grad_only(model, learnable), torch.enable_grad():
        for batch in batches:
            loss = loss_fn(model, batch)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor")
            if loss.requires_grad:
                per_weight = torch.autograd.grad(loss.reshape(()), weights, allow_unused=True)
            else:
                per_weight = (None,) * len(weights)
            for name, w, g in zip(names, weights, per_weight, strict=True):
                grads[name].append((g if g is not None else torch.zeros_like(w)).detach())
    n_batches = len(grads[names[0]])
    if n_batches < 2:
        raise ValueError(f"ZiCo needs at least 2 batches, got {n_batches}")
    return zico_from_gradients(grads)
