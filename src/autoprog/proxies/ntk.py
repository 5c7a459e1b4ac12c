"""Trainability of a partly frozen network: condition number of its NTK (AutoProg-Zero, Sec. 4.2.2, Eq. 12-16).

For a batch of ``N`` samples, the empirical Neural Tangent Kernel restricted to the *learnable*
parameters ``theta_l`` is ``K = J J^T`` (``N x N``), where row ``i`` of ``J`` is the gradient of a
scalar of sample ``i``'s output w.r.t. ``theta_l`` (Eq. 13). Its condition number
``kappa = lambda_max / lambda_min`` (Eq. 16) is the trainability proxy: the smaller, the faster the
slowest eigen-direction converges under the largest feasible learning rate (Eq. 15).

The scalar of a sample's output is ``<r, f(x_i)>`` with ``r`` a fixed Rademacher (+-1) tensor of
the per-sample output shape, drawn from ``seed``: the same ``r`` for every sample and every
candidate, so candidates are compared on one kernel. (TE-NAS sums the logits; a fixed random sign
vector is the unbiased choice for a denoiser, whose outputs have no sign convention.)

The core is model-agnostic: callers pass ``forward(model, *inputs)``, which returns the output with
a leading batch dimension ``N``. The caller puts the model in eval mode, turns off condition
dropout and, for a denoiser, feeds the noised ``x_t`` (not the clean ``x_0``).

Per-sample gradients come from ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``), one pass
per group of learnable parameters so that no more than ``max_chunk_elems`` gradient entries
(``N x group size``) exist at once; the Gram accumulates in float64. Where ``vmap`` cannot go
through the model (in-place writes into unbatched tensors, ``.item()``, data-dependent control flow,
random ops) an exact per-sample ``torch.autograd.grad`` loop is used instead.

Example::

    model.eval()
    kappa = ntk_condition_number(model, (x_t, t, y), lambda m, x, t, y: m(x, t, y))
    score = math.log(kappa)  # rank candidates on log kappa, lower is better
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

NTKMethod = Literal["auto", "vmap", "loop"]

# Exceptions raised when torch.func cannot transform the forward (vmap/grad limitations) or runs
# out of memory; under method="auto" they select the per-sample loop (which re-raises real bugs).
_VMAP_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, NotImplementedError, ValueError, TypeError)


class NTKFallbackWarning(UserWarning):
    """``method="auto"``: ``vmap`` could not go through the forward; the exact per-sample loop was used.

    The message names the failure, so Python's default filter shows it once per distinct failure and
    call site, not once per candidate.
    """


def learnable_parameters(
    model: nn.Module, param_names: Sequence[str] | None = None
) -> dict[str, nn.Parameter]:
    """The parameters the proxies differentiate, by name, in the model's order.

    Args:
        model: the network.
        param_names: names (as in ``model.named_parameters()``; aliases of tied parameters are
            accepted) of the learnable parameters. ``None``: every parameter with ``requires_grad``.

    Returns:
        ``{name: parameter}`` with one entry per distinct tensor (tied weights count once).

    Raises:
        ValueError: a name is not a parameter of ``model``.
    """
    canonical = dict(model.named_parameters())
    if param_names is None:
        return {n: p for n, p in canonical.items() if p.requires_grad}
    alias = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(set(param_names) - set(alias))
    if unknown:
        raise ValueError(f"not parameters of the model: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    wanted = {id(alias[n]) for n in param_names}
    return {n: p for n, p in canonical.items() if id(p) in wanted}


@contextlib.contextmanager
def requires_grad_only(model: nn.Module, learnable: Mapping[str, nn.Parameter]) -> Iterator[None]:
    """Within the block, exactly the ``learnable`` parameters require grad; the flags are restored after."""
    wanted = {id(p) for p in learnable.values()}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def rademacher(shape: Sequence[int], seed: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A +-1 tensor of ``shape`` drawn on the CPU from ``torch.Generator().manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 2, tuple(shape), generator=gen, dtype=torch.int64) * 2 - 1
    return r.to(device=device, dtype=dtype)


def ntk_gram(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    forward: Callable[..., Tensor],
    *,
    param_names: Sequence[str] | None = None,
    seed: int = 0,
    max_chunk_elems: int = 2**26,
    method: NTKMethod = "auto",
) -> Tensor:
    """The empirical NTK of the learnable parameters on one batch, ``K = J J^T`` (Eq. 13).

    Args:
        model: the network; left unchanged (no ``.grad``, same ``requires_grad`` flags). Put it in
            eval mode first: ``vmap`` refuses random ops such as active dropout (``"auto"`` then
            falls back to the loop, where every sample sees its own dropout mask).
        inputs: tensors that all have the leading batch dimension ``N``.
        forward: ``forward(model, *inputs) -> Tensor`` of shape ``(N, ...)``; called with the
            per-sample slices (batch dimension 1) of ``inputs``.
        param_names: the learnable parameters (see :func:`learnable_parameters`); the others are
            held constant and contribute nothing. ``None``: those with ``requires_grad``.
        seed: seed of the Rademacher vector ``r``; sample ``i``'s scalar is ``<r, f(x_i)>``.
        max_chunk_elems: at most this many per-sample gradient entries (``N x`` the size of a
            group of parameters) exist at once; the Gram is summed over groups. A single
            parameter larger than ``max_chunk_elems / N`` forms a group of its own.
        method: ``"vmap"`` (``torch.func``, with the math SDPA kernel), ``"loop"`` (one
            ``torch.autograd.grad`` per sample and group: exact, slower), or ``"auto"`` (``vmap``,
            and the loop with an :class:`NTKFallbackWarning` if ``vmap`` fails).

    Returns:
        ``K``, a symmetric ``(N, N)`` float64 tensor on the CPU.

    Raises:
        ValueError: no learnable parameters, inputs without a common batch dimension, bad arguments.
    """
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method must be 'auto', 'vmap' or 'loop', got {method!r}")
    if max_chunk_elems < 1:
        raise ValueError(f"max_chunk_elems must be positive, got {max_chunk_elems}")
    n = _batch_size(inputs)
    learnable = learnable_parameters(model, param_names)
    if not learnable:
        raise ValueError("the model has no learnable parameters: the NTK is empty")
    r = _probe_vector(model, inputs, forward, seed)
    groups = _partition(learnable, n, max_chunk_elems)
    if method == "loop":
        return _gram_loop(model, inputs, forward, learnable, groups, r)
    try:
        return _gram_vmap(model, inputs, forward, learnable, groups, r)
    except _VMAP_FAILURES as exc:
        if method == "vmap":
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"ntk: vmap could not go through the forward ({type(exc).__name__}: {first_line[:200]}); "
            "using the exact per-sample autograd loop instead (slower). Pass method='loop' to skip the attempt.",
            NTKFallbackWarning,
            stacklevel=2,
        )
        return _gram_loop(model, inputs, forward, learnable, groups, r)


def gram_condition_number(gram: Tensor, *, eps: float = 1e-12) -> float:
    """``kappa = lambda_max / lambda_min`` of a Gram matrix (Eq. 16), in float64.

    The matrix is symmetrised, ``lambda_min`` is clamped at ``eps * lambda_max`` (so a rank-deficient
    kernel, e.g. more samples than learnable parameters, gives ``1 / eps``), and an all-zero kernel
    (the output does not depend on the learnable parameters: untrainable) gives ``inf``.
    """
    k = gram.detach().to(device="cpu", dtype=torch.float64)
    k = (k + k.T) / 2
    eig = torch.linalg.eigvalsh(k)
    lam_max = float(eig[-1])
    if not math.isfinite(lam_max) or lam_max <= 0.0:
        return math.inf
    lam_min = max(float(eig[0]), eps * lam_max)
    return lam_max / lam_min


def ntk_condition_number(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    forward: Callable[..., Tensor],
    *,
    param_names: Sequence[str] | None = None,
    seed: int = 0,
    max_chunk_elems: int = 2**26,
    eps: float = 1e-12,
    method: NTKMethod = "auto",
) -> float:
    """Condition number of the NTK of the learnable parameters (Eq. 16); lower is more trainable.

    ``kappa`` spans orders of magnitude: rank candidates on ``log(kappa)`` (same ranks, readable
    numbers). See :func:`ntk_gram` for the arguments and :func:`gram_condition_number` for ``eps``.
    """
    gram = ntk_gram(
        model,
        inputs,
        forward,
        param_names=param_names,
        seed=seed,
        max_chunk_elems=max_chunk_elems,
        method=method,
    )
    return gram_condition_number(gram, eps=eps)


def _batch_size(inputs: tuple[Tensor, ...]) -> int:
    if not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise ValueError("inputs must be a non-empty tuple of tensors")
    sizes = {x.shape[0] if x.dim() > 0 else None for x in inputs}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"all inputs need the same leading batch dimension, got {[tuple(x.shape) for x in inputs]}"
        )
    n = sizes.pop()
    assert n is not None
    if n < 1:
        raise ValueError("the batch is empty")
    return n


def _probe_vector(
    model: nn.Module, inputs: tuple[Tensor, ...], forward: Callable[..., Tensor], seed: int
) -> Tensor:
    """``r`` of the per-sample output shape, found by one forward of the first sample."""
    with torch.no_grad():
        out = forward(model, *(x[:1] for x in inputs))
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"forward must return a tensor with the inputs' leading batch dimension, got {got}")
    return rademacher(out.shape[1:], seed, dtype=out.dtype, device=out.device)


def _partition(learnable: Mapping[str, nn.Parameter], n: int, max_chunk_elems: int) -> list[list[str]]:
    """Consecutive groups of parameter names with ``n * (group size) <= max_chunk_elems``."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, p in learnable.items():
        if current and n * (size + p.numel()) > max_chunk_elems:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += p.numel()
    if current:
        groups.append(current)
    return groups


class _Probe(nn.Module):
    """Lets ``functional_call`` run the caller's ``forward(model, *inputs)`` on swapped parameters."""

    def __init__(self, model: nn.Module, forward: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, *inputs: Tensor) -> Tensor:
        return self._forward(self.model, *inputs)


def _gram_vmap(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    forward: Callable[..., Tensor],
    learnable: Mapping[str, nn.Parameter],
    groups: list[list[str]],
    r: Tensor,
) -> Tensor:
    n = inputs[0].shape[0]
    probe = _Probe(model, forward)
    # Every parameter enters as a constant (detached) but the group being differentiated.
    constants = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    gram = torch.zeros(n, n, dtype=torch.float64, device=r.device)

    def scalar(group: dict[str, Tensor], *sample: Tensor) -> Tensor:
        out = functional_call(probe, {**constants, **group}, tuple(x.unsqueeze(0) for x in sample))
        return (out[0] * r).sum()  # <r, f(x_i)>

    per_sample_grad = vmap(grad(scalar), in_dims=(None,) + (0,) * len(inputs))
    with sdpa_kernel([SDPBackend.MATH]):
        for names in groups:
            group = {f"model.{name}": learnable[name].detach() for name in names}
            jac = per_sample_grad(group, *inputs)  # {name: (N, *shape)}
            for key in list(jac):
                g = jac.pop(key).reshape(n, -1).to(device=gram.device, dtype=torch.float64)
                gram.addmm_(g, g.T)
                del g
    return gram.cpu()


def _gram_loop(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    forward: Callable[..., Tensor],
    learnable: Mapping[str, nn.Parameter],
    groups: list[list[str]],
    r: Tensor,
) -> Tensor:
    n = inputs[0].shape[0]
    gram = torch.zeros(n, n, dtype=torch.float64, device=r.device)
    with requires_grad_only(model, learnable), torch.enable_grad():
        for names in groups:
            params = [learnable[name] for name in names]
            rows = torch.zeros(n, sum(p.numel() for p in params), dtype=torch.float64, device=r.device)
            for i in range(n):
                out = forward(model, *(x[i : i + 1] for x in inputs))
                s = (out[0] * r).sum()  # <r, f(x_i)>
                if not s.requires_grad:  # the output does not depend on this group
                    continue
                grads = torch.autograd.grad(s, params, allow_unused=True)
                rows[i] = torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1).to(rows)
                        for g, p in zip(grads, params, strict=True)
                    ]
                )
            gram.addmm_(rows, rows.T)
            del rows
    return gram.cpu()
