"""Optimizer and learning-rate schedule, rebuilt at every growth and keyed by parameter name.

Part of the core: the growth controller rebuilds the optimizer after every change of shape and
carries AdamW's moments to the grown parameters by name (:func:`carry_state` with the operator's
new -> old name map); checkpoints store the state by name too (:func:`named_state_dict`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases, norms, scales and embeddings (timm habit).

    Groups carry the parameter *names* (``"names"``) so state can be matched by name, never position.
    """
    no_decay_names = {"pos_embed", "cls_token", "reg_token", "dist_token"}
    if hasattr(model, "no_weight_decay"):
        no_decay_names |= set(model.no_weight_decay())
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in no_decay_names or name.endswith(".alpha"):
            no_decay.append((name, p))
        else:
            decay.append((name, p))
    groups = []
    for items, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if items:
            groups.append({"params": [p for _, p in items], "names": [n for n, _ in items], "weight_decay": wd})
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (Appendix B: AdamW, lr 1e-3, wd 0.05)."""
    fused_ok = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        param_groups(model, weight_decay), lr=lr, betas=betas, foreach=None if fused_ok else True
    )


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_lr: float = 1e-6) -> float:
    """Cosine decay with linear warm-up: a pure function of the step, so resuming needs no state."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def state_by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    """The optimizer's per-parameter state keyed by parameter name (groups must carry ``"names"``)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for name, p in zip(group["names"], group["params"], strict=True):
            if p in optimizer.state:
                out[name] = optimizer.state[p]
    return out


def carry_state(
    old: dict[str, dict[str, torch.Tensor]], new_optimizer: torch.optim.Optimizer, name_map: dict[str, str | None]
) -> int:
    """Give each parameter of ``new_optimizer`` the state its source had (``name_map``: new -> old name).

    A copied block's moments are copies of its source's (the optimizer state grows with the same
    operator as the weights); new parameters start from zero state. Returns how many got state.
    """
    carried = 0
    for group in new_optimizer.param_groups:
        for name, p in zip(group["names"], group["params"], strict=True):
            src = name_map.get(name)
            if src is None or src not in old:
                continue
            state = old[src]
            if any(isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape != p.shape for v in state.values()):
                continue
            new_optimizer.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
            carried += 1
    return carried


def named_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state for a checkpoint: per-parameter state keyed by name (``"state"``) and
    each group's hyper-parameters without the parameter objects (``"groups"``)."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"state": {n: dict(st) for n, st in state_by_name(optimizer).items()}, "groups": groups}


def load_named_state_dict(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Restore :func:`named_state_dict` into an optimizer over the same parameter names; group
    hyper-parameters (learning rates, ...) are restored when the groups are laid out alike."""
    carry_state(saved["state"], optimizer, {n: n for g in optimizer.param_groups for n in g["names"]})
    if len(saved["groups"]) == len(optimizer.param_groups):
        for g, sg in zip(optimizer.param_groups, saved["groups"], strict=True):
            g.update({k: v for k, v in sg.items() if k != "names"})


def clone_state(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of :func:`state_by_name`'s result that later optimizer steps leave unchanged."""
    return {
        n: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        for n, st in state.items()
    }
