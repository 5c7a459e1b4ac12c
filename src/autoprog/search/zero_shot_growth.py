"""AutoProg-Zero choosing a pre-training stage's growth (Sec. 4.2 applied to pre-training as in Sec. 5.2.3).

No supernet and no search epochs: at the stage's start every candidate of its growth space is
built as the stage would train it (:meth:`~autoprog.growth.growing.GrowingModel.reshape` on a copy
of the network, from the random state the chosen one is then grown from, so even RandInit's new
blocks are the same) and scored without training on fixed probe data resized to its resolution:
the NTK condition number of the logits over all its parameters (Eq. 16), generalised ZiCo over
them (Eq. 17) and the runtime term. Ranked voting (Eq. 19) picks one, through the model-agnostic
:func:`~autoprog.search.zero_shot.zero_shot_search`. The search draws nothing from the run's
random streams; rank 0's numbers decide on every process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprog.checkpoint import global_rng_states, set_global_rng_states
from autoprog.errors import ConfigError
from autoprog.growth.growing import GrowingModel
from autoprog.growth.schedule import SubnetConfig
from autoprog.search.one_shot import measure_step_time
from autoprog.search.one_shot_growth import MeasureFn, RuntimeFn
from autoprog.search.voting import DEFAULT_WEIGHTS
from autoprog.search.zero_shot import NTKTensors, zero_shot_search


@dataclass(frozen=True)
class ZeroShotProbe:
    """The fixed data AutoProg-Zero scores growth candidates on (Sec. 4.2.2; pre-training, Sec. 5.2.3).

    Every candidate sees the same samples, resized to its resolution by the adapter's
    ``prepare_input``: the NTK condition number (Eq. 12-16) of the classifier's logits on the first
    ``ntk_samples`` inputs, and generalised ZiCo (Eq. 17) of the training loss over all ``batches``.

    Attributes:
        batches: at least 2 ``(inputs, targets)`` batches; inputs ``(N, C, H, W)`` as the model takes
            them (normalised), at any resolution (the full one, usually).
        loss_fn: ``loss_fn(logits, targets) -> scalar``, the training loss ZiCo differentiates
            (default: cross-entropy).
        ntk_samples: samples of the NTK (its Gram matrix is ``ntk_samples x ntk_samples``; fewer
            when the batches hold fewer).
        weights: the ballots' weights in ranked voting (Eq. 19; keys ``time``, ``ntk``, ``zico``).
        seed: seed of the NTK's Rademacher projection (the same for every candidate).
        ntk_tensors: the learnable tensors the NTK differentiates (``all`` or ``weights``,
            :func:`~autoprog.search.zero_shot.ntk_tensor_names`).
    """

    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    ntk_samples: int = 8
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int = 0
    ntk_tensors: NTKTensors = "all"

    def __post_init__(self) -> None:
        if len(self.batches) < 2:
            raise ConfigError(f"ZiCo needs at least 2 probe batches (Eq. 17), got {len(self.batches)}")
        if self.ntk_samples < 2:
            raise ConfigError(f"the NTK needs at least 2 samples, got ntk_samples={self.ntk_samples}")


class _CandidateNet(nn.Module):
    """The zero-shot search's one module: it holds the candidate being scored (built one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module = nn.Identity()
        self.depth = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ZeroShotGrowthSearch:
    """Scores a stage's growth candidates zero-shot and picks one by ranked voting (module docstring).

    Args:
        net: the growing model (copied per candidate, never changed).
        probe: the fixed data.
        runtime_fn: the runtime term of a candidate (e.g. its FLOPs), else ``measure_fn``, else a
            timed step on the first probe batch.
        measure_fn: ``measure_fn(candidate_net, config) -> seconds``.
        broadcast: makes the decision identical across processes (rank 0's).
    """

    def __init__(
        self,
        net: GrowingModel,
        probe: ZeroShotProbe,
        *,
        runtime_fn: RuntimeFn | None = None,
        measure_fn: MeasureFn | None = None,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> None:
        self.net = net
        self.probe = probe
        self.runtime_fn = runtime_fn
        self.measure_fn = measure_fn
        self.broadcast = broadcast or (lambda obj: obj)

    def choose(
        self, candidates: Sequence[SubnetConfig], nested_from: int | None = None
    ) -> tuple[SubnetConfig, list[dict[str, Any]], dict[str, float]]:
        """Score ``candidates`` and vote; returns the chosen one, a row per candidate (``ntk``,
        ``log_ntk``, ``zico``, ``time``, ``ranks``, ``total``, ...) and the ballots' weights.
        ``nested_from``: before the first stage, the depth the candidates nest from
        (:meth:`~autoprog.growth.growing.GrowingModel.reshape`). The random states are left as found."""
        net, probe = self.net, self.probe
        device = net.device or next(net.model.parameters()).device
        view = _CandidateNet()
        resized: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def batches(c: SubnetConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
            if c.resolution not in resized:  # the same samples for every candidate, at its resolution
                resized[c.resolution] = [
                    (net.adapter.prepare_input(x.to(device), c.resolution), y.to(device)) for x, y in probe.batches
                ]
            return resized[c.resolution]

        def configure(c: SubnetConfig) -> None:
            if view.depth != c.depth:
                view.net = nn.Identity()  # let the previous candidate go first
                set_global_rng_states(rng, device)  # the state the chosen one is grown from
                model = copy.deepcopy(net.model)
                momentum = None
                if net.operator.needs_momentum and net.ema is not None and nested_from is None:
                    momentum = copy.deepcopy(net.ema.module)
                net.reshape(model, momentum, c.depth, nested_from)
                view.net, view.depth = model, c.depth

        def time_step(c: SubnetConfig) -> float:
            if self.runtime_fn is not None:
                return float(self.runtime_fn(c))
            if self.measure_fn is not None:
                return float(self.measure_fn(view.net, c))
            x, y = batches(c)[0]
            seconds = measure_step_time(lambda: probe.loss_fn(view(x), y).backward(), device=device)
            for p in view.parameters():
                p.grad = None
            return seconds

        rng = global_rng_states(device)
        try:
            winner, rows, vote = zero_shot_search(
                view, list(candidates), configure, forward=lambda m, x: m(x),
                loss_fn=lambda m, b: probe.loss_fn(m(b[0]), b[1]),
                ntk_inputs=lambda c: (torch.cat([x for x, _ in batches(c)])[: probe.ntk_samples],),
                zico_batches=batches, time_step=time_step, weights=probe.weights, seed=probe.seed,
                ntk_tensors=probe.ntk_tensors,
            )  # fmt: skip
        finally:
            set_global_rng_states(rng, device)
        view.net = nn.Identity()  # free the last candidate before the model grows
        resized.clear()
        winner, rows = self.broadcast((winner, rows))  # measured numbers differ per process: rank 0's
        return candidates[winner], rows, dict(vote.weights)


__all__ = ["ZeroShotGrowthSearch", "ZeroShotProbe"]
