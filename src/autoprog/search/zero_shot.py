"""Zero-shot choice of a stage's learnable sub-network, for any model (AutoProg-Zero, Sec. 4.2, Eq. 12-19).

Every candidate is made learnable in turn (the caller's ``configure``) and scored without training:

- the **NTK condition number** of its learnable parameters (Eq. 12-16), ranked on ``log kappa``,
  lower is better (:func:`autoprog.proxies.ntk_condition_number`);
- **generalised ZiCo** of its learnable Linear/Conv weights over at least 2 batches (Eq. 17),
  higher is better (:func:`autoprog.proxies.zico`);
- the **measured time** of one training step (the caller's ``time_step``), lower is better.

The three are combined by **ranked voting** (Eq. 19, :func:`autoprog.search.voting.ranked_vote`):
weighted competition ranks, lowest total wins, ties go to the faster candidate. The default weights
(time 1, NTK 0.5, ZiCo 0.5) follow the authors' code (see :mod:`autoprog.search.voting`).

This is the model-agnostic core of ``autoprog finetune --method autoprog-zero``: the caller says how
to make a candidate learnable, how to run the model and on which fixed probe data, so it works for a
diffusion denoiser, a classifier, or a Lightning module (:mod:`autoprog.integrations.lightning`).

Example::

    index, rows, vote = zero_shot_search(
        model, candidates, configure=lambda c: set_trainable(model, paths, level_blocks(len(paths), c.level)),
        forward=lambda m, x: m(x), loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        ntk_inputs=(x[:8],), zico_batches=[(x1, y1), (x2, y2)], time_step=measure)
    chosen = candidates[index]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, Literal, TypeVar

from torch import Tensor, nn

from autoprog.proxies import ntk_condition_number, zico
from autoprog.search.voting import DEFAULT_WEIGHTS, VoteResult, ranked_vote

Candidate = TypeVar("Candidate")

#: Fixed inputs of the NTK (tensors with a common leading batch dimension), or a function of the
#: candidate that returns them (e.g. the probe images resized to the candidate's resolution).
NTKInputs = tuple[Tensor, ...] | Callable[[Any], tuple[Tensor, ...]]
#: At least 2 fixed batches for ZiCo, or a function of the candidate that returns them.
ZiCoBatches = Sequence[Any] | Callable[[Any], Sequence[Any]]
#: Which learnable tensors the NTK differentiates: ``all`` of them, or ``weights``, those whose name
#: contains ``weight`` (TE-NAS's ``ntk.py`` and the authors' AutoProg-Zero code: no biases).
NTKTensors = Literal["all", "weights"]


def ntk_tensor_names(names: Sequence[str], tensors: NTKTensors = "all") -> list[str]:
    """The learnable tensors ``names`` the NTK is taken over (:data:`NTKTensors`).

    Raises:
        ValueError: an unknown ``tensors``.
    """
    if tensors == "all":
        return list(names)
    if tensors == "weights":
        return [n for n in names if "weight" in n.rsplit(".", 1)[-1]]
    raise ValueError(f"ntk tensors must be all or weights, got {tensors!r}")


def zero_shot_search(
    model: nn.Module,
    candidates: Sequence[Candidate],
    configure: Callable[[Candidate], object],
    forward: Callable[..., Tensor],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    ntk_inputs: NTKInputs,
    zico_batches: ZiCoBatches,
    time_step: Callable[[Candidate], float],
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    seed: int = 0,
    ntk_tensors: NTKTensors = "all",
) -> tuple[int, list[dict[str, Any]], VoteResult]:
    """Choose one of ``candidates`` by NTK condition number, ZiCo and step time (Sec. 4.2, Eq. 12-19).

    Args:
        model: the network the proxies differentiate (its learnable parameters are those with
            ``requires_grad`` after ``configure``). It is put in eval mode while the proxies run;
            its training mode and every ``requires_grad`` flag are restored before returning.
        candidates: the learnable sub-networks of the stage (e.g.
            :func:`autoprog.unfreeze.zero_shot_candidates`); any objects ``configure`` understands.
        configure: ``configure(candidate)`` makes exactly the candidate's parameters learnable (and
            sets anything else the candidate fixes, such as the input resolution ``forward`` and
            ``loss_fn`` read).
        forward: ``forward(model, *inputs) -> Tensor`` of shape ``(N, ...)``, the output whose NTK
            is taken (called on per-sample slices of ``ntk_inputs``).
        loss_fn: ``loss_fn(model, batch) -> scalar`` training loss, for ZiCo.
        ntk_inputs: the NTK's inputs, or ``candidate -> inputs``; the same samples for every
            candidate (Eq. 13).
        zico_batches: at least 2 batches for ZiCo, or ``candidate -> batches``.
        time_step: ``time_step(candidate) -> seconds`` of one training step (forward + backward),
            called with the candidate configured; cache it if candidates recur across stages.
        weights: the ballots' weights in the vote (keys ``time``, ``ntk``, ``zico``).
        seed: seed of the NTK's Rademacher probe vector (the same for every candidate).
        ntk_tensors: the learnable tensors the NTK differentiates (:func:`ntk_tensor_names`):
            ``all`` (biases and norm scales too) or ``weights`` (TE-NAS's and the authors' set).
            ZiCo always takes the learnable Linear/Conv weights (Eq. 17).

    Returns:
        ``(index, rows, vote)``: the chosen candidate's index; one row per candidate with ``ntk``
        (kappa), ``log_ntk``, ``zico``, ``time`` (seconds), ``trainable_params``, ``ranks``
        (``{ballot: rank}``), ``total`` and, for a dataclass candidate, its fields; the
        :class:`~autoprog.search.voting.VoteResult`.

    A single candidate (a stage the rule forces, as ``horizon`` does once depth is full) is chosen
    without scoring: its row has the candidate's fields and ``trainable_params``, ``nan`` for the
    proxies and the time, rank 1 on every ballot.

    Raises:
        ValueError: no candidates, a candidate without learnable parameters (or, with
            ``ntk_tensors="weights"``, without a learnable weight), fewer than 2 ZiCo
            batches, or a forward/loss of the wrong shape (from the proxies).
    """
    if not candidates:
        raise ValueError("zero_shot_search needs at least one candidate")
    ntk_tensor_names([], ntk_tensors)  # an unknown set fails before any candidate is scored
    was_training = model.training
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    rows: list[dict[str, Any]] = []
    scored = len(candidates) > 1  # one candidate: nothing to choose, nothing to measure
    try:
        for candidate in candidates:
            if not scored:
                configure(candidate)
                rows.append({
                    **_fields(candidate), "ntk": math.nan, "log_ntk": math.nan, "zico": math.nan, "time": math.nan,
                    "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "scoring_time_s": 0.0,
                })  # fmt: skip
                continue
            t0 = time.perf_counter()
            configure(candidate)
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            if not names:
                raise ValueError(f"candidate {candidate!r} has no learnable parameters")
            ntk_names = ntk_tensor_names(names, ntk_tensors)
            if not ntk_names:
                raise ValueError(f"candidate {candidate!r} has no learnable tensor named *weight* for the NTK")
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            model.eval()
            inputs = ntk_inputs(candidate) if callable(ntk_inputs) else ntk_inputs
            kappa = ntk_condition_number(model, tuple(inputs), forward, param_names=ntk_names, seed=seed)
            batches = zico_batches(candidate) if callable(zico_batches) else zico_batches
            z = zico(model, batches, loss_fn, param_names=names)
            model.train(was_training)
            seconds = float(time_step(candidate))
            row = _fields(candidate)
            row.update(
                ntk=kappa,
                log_ntk=math.log(kappa),
                zico=z,
                time=seconds,
                trainable_params=trainable,
                scoring_time_s=time.perf_counter() - t0,
            )
            rows.append(row)
    finally:
        model.train(was_training)
        for p, flag in saved_flags:
            p.requires_grad_(flag)
    ballots = [{"time": r["time"], "ntk": r["log_ntk"], "zico": r["zico"]} for r in rows]
    vote = ranked_vote(ballots if scored else [{"time": 0.0, "ntk": 0.0, "zico": 0.0}], weights=weights)
    for i, row in enumerate(rows):
        row["ranks"] = {ballot: ranks[i] for ballot, ranks in vote.ranks.items()}
        row["total"] = vote.totals[i]
    return vote.winner, rows, vote


def _fields(candidate: Any) -> dict[str, Any]:
    """A dataclass candidate's fields (a row's first columns); nothing for other candidates."""
    return asdict(candidate) if is_dataclass(candidate) and not isinstance(candidate, type) else {}


__all__ = ["NTKInputs", "NTKTensors", "ZiCoBatches", "ntk_tensor_names", "zero_shot_search"]
