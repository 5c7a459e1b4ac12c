"""AutoProg-One's trial search at a pre-training stage's start: each candidate trained alone for a few steps (issue 16).

The paper's one-shot search (Sec. 3.2.3) trains a weight-shared supernet over the stage's
candidates and scores each by its loss at its own resolution. Measured on every benchmark we ran,
that exam favours whichever candidate the shared weights were trained as (``docs/dev-notes.md``,
"Search rules"), and its supernet steps spread the stage's first steps over candidates that are then
thrown away. The trial search asks instead what training each candidate *would* do to the model:

1. every candidate is built as the stage would train it (the run's growth operator on a copy of
   the network, its optimizer state carried by name, from the random state the chosen one is then
   grown from; before the first stage the network is the untrained smallest candidate);
2. each copy trains for the same few steps, on the same training batches, at its own resolution
   and at the run's learning rate (``trial_fn``);
3. each copy is examined on the same held-out images, at its own resolution (at the full one, a
   network trained small is judged mostly by how it copes with an input size it never saw: on
   FMNIST-5k that ranked depths at random); Eq. 6 (``loss * T^w``, with ``T`` the step time measured during the trial, or
   ``runtime_fn``) decides, through
   :func:`~autoprog.search.supernet.score_and_choose`;
4. the copies are dropped and the real network grows into the winner, which then trains the whole
   stage.

The comparison is paired (same start, same batches, same exam images), so a small difference is
not sampling noise; nothing of the run changes unless a candidate wins, and a run whose trials pick
Prog's candidates trains exactly Prog's run (the trials' steps are the search's only cost).
The search draws nothing from the run's random streams; rank 0's numbers decide on every process.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

from autoprog.checkpoint import global_rng_states, set_global_rng_states
from autoprog.growth.growing import GrowingModel
from autoprog.growth.schedule import SubnetConfig
from autoprog.search.one_shot import ScoreRule, power_law_score
from autoprog.search.one_shot_growth import RuntimeFn
from autoprog.search.supernet import score_and_choose

#: ``trial_fn(net, config, steps, step) -> (exam loss, seconds per step)``: train the copy ``net``
#: (already the candidate ``config``) for ``steps`` optimizer steps from the run's step ``step`` on,
#: then return its exam loss and its measured seconds per step (``inf`` loss: the trial diverged).
TrialFn = Callable[[GrowingModel, SubnetConfig, int, int], tuple[float, float]]


def trial_steps(fraction: float, stage_steps: int) -> int:
    """Each candidate's trial length: ``fraction`` of the stage's steps, at least 4 (step times
    after the first), at most the stage's."""
    return max(4, min(stage_steps, round(fraction * stage_steps)))


class TrialGrowthSearch:
    """Chooses a stage's sub-network by short trials of every candidate (module docstring).

    Args:
        net: the growing model (copied per candidate, never changed).
        trial_fn: trains and examines one candidate's copy (:data:`TrialFn`).
        runtime_fn: the runtime term instead of the trial's measured step time (e.g. FLOPs).
        rule: the score rule (Eq. 6, the balancing factor fitted and perhaps floored).
        broadcast: makes the decision identical across processes (rank 0's).
    """

    def __init__(
        self,
        net: GrowingModel,
        trial_fn: TrialFn,
        *,
        runtime_fn: RuntimeFn | None = None,
        rule: ScoreRule = power_law_score,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> None:
        self.net = net
        self.trial_fn = trial_fn
        self.runtime_fn = runtime_fn
        self.rule = rule
        self.broadcast = broadcast or (lambda obj: obj)

    def candidate(self, config: SubnetConfig) -> GrowingModel:
        """A copy of the network grown into ``config`` (model, momentum copy, optimizer with its
        state carried by name), sharing the adapter and the operator with the original."""
        net = self.net
        memo = {id(net.adapter): net.adapter, id(net.operator): net.operator}
        trial = copy.deepcopy(net, memo)
        trial.grow(config.depth)
        return trial

    def choose(
        self, candidates: Sequence[SubnetConfig], steps: int, step: int
    ) -> tuple[SubnetConfig, list[dict[str, Any]], float]:
        """Train every candidate's copy for ``steps`` steps from the run's step ``step`` and decide;
        returns the chosen one, a row per candidate (``resolution``, ``depth``, ``loss``,
        ``runtime_s``, ``score``) and Eq. 6's balancing factor. The random states are left as found."""
        device = self.net.device
        rng = global_rng_states(device)
        losses, runtimes = [], []
        try:
            for c in candidates:
                set_global_rng_states(rng, device)  # the state the chosen one is grown from
                trial = self.candidate(c)
                loss, seconds = self.trial_fn(trial, c, steps, step)
                del trial
                losses.append(float(loss))
                runtimes.append(float(self.runtime_fn(c)) if self.runtime_fn is not None else float(seconds))
        finally:
            set_global_rng_states(rng, device)
        losses, runtimes = self.broadcast((losses, runtimes))  # measured numbers differ per process
        decision = score_and_choose(candidates, losses, runtimes, rule=self.rule)
        rows = [
            {"resolution": c.resolution, "depth": c.depth, "loss": loss, "runtime_s": rt,
             "score": math.nan if score is None else score}
            for c, loss, rt, score in zip(candidates, losses, runtimes, decision.scores, strict=True)
        ]  # fmt: skip
        return decision.chosen, rows, decision.balancing_factor


__all__ = ["TrialFn", "TrialGrowthSearch", "trial_steps"]
