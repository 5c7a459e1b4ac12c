"""Ranked voting over training time and zero-shot proxies (AutoProg-Zero, Sec. 4.2.2, Eq. 19).

Every objective is a ballot: the candidates are ranked on it (1 = best; competition ranking, so
ties share a rank and the next rank is skipped, "1224"), and the candidate with the smallest
weighted sum of ranks wins. This replaces Eq. 6's tuned balancing factor with a rule that has no
hyperparameter to fit.

Weights: the paper's Eq. 19 reads as an equal-weight sum of the ranks on time, NTK condition
number and ZiCo. The authors' code weighs each of the two quality ballots 0.5, so that training
efficiency and (estimated) performance count equally, as the text assumes ("training efficiency and
network performance are equally important, and ... various zero-shot metrics hold equal
significance"). :data:`DEFAULT_WEIGHTS` follows the code; pass ``weights`` to change the rule.

Example::

    ballots = [{"time": 0.8, "ntk": 3.1, "zico": 410.0}, {"time": 1.2, "ntk": 2.7, "zico": 455.0}]
    ranked_vote(ballots).winner  # index of the chosen candidate
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_WEIGHTS: Mapping[str, float] = {"time": 1.0, "ntk": 0.5, "zico": 0.5}
"""Weight of each ballot in the total (Eq. 19, as weighted in the authors' code)."""

DEFAULT_HIGHER_IS_BETTER: Mapping[str, bool] = {"time": False, "ntk": False, "zico": True}
"""Direction of each ballot: time and NTK condition number ascending, ZiCo descending."""


def competition_ranks(
    values: Sequence[float], *, higher_is_better: bool = False, tol: float = 1e-6
) -> list[int]:
    """Standard competition ranks ("1224") of ``values``: 1 for the best.

    The rank of a value is 1 plus the number of values better than it by more than ``tol``
    (absolute), so values within ``tol`` of each other share a rank and the order of the input does
    not matter. ``inf`` ties with ``inf``; ``nan`` ranks after every number (all ``nan`` share the
    last rank).

    Args:
        values: one number per candidate.
        higher_is_better: rank descending (e.g. ZiCo) instead of ascending (time, NTK ``kappa``).
        tol: absolute tolerance under which two values tie.
    """
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    sign = -1.0 if higher_is_better else 1.0
    keyed = [sign * float(v) for v in values]
    numbers = [v for v in keyed if not math.isnan(v)]
    ranks = []
    for v in keyed:
        if math.isnan(v):
            ranks.append(1 + len(numbers))
        else:
            ranks.append(1 + sum(1 for u in numbers if u < v - tol))
    return ranks


@dataclass(frozen=True)
class VoteResult:
    """Outcome of :func:`ranked_vote`.

    Attributes:
        ranks: ``{ballot: [rank of candidate 0, rank of candidate 1, ...]}``.
        totals: ``sum_k weights[k] * ranks[k][i]`` per candidate (Eq. 19).
        winner: index of the chosen candidate (smallest total; ties go to the faster).
        weights: the weights used.
    """

    ranks: dict[str, list[int]]
    totals: list[float]
    winner: int
    weights: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranked_vote(
    candidates: Sequence[Mapping[str, float]],
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    higher_is_better: Mapping[str, bool] = DEFAULT_HIGHER_IS_BETTER,
    time_key: str | None = "time",
    *,
    tol: float = 1e-6,
) -> VoteResult:
    """Choose a candidate by weighted ranked voting (Eq. 19).

    ``total_i = sum_k weights[k] * rank_k(i)``, with :func:`competition_ranks` on each ballot ``k``
    of ``weights``; the winner is the argmin of the totals. Ties (within ``1e-9``) go to the
    candidate with the lower ``time_key`` value, then to the earlier one.

    The paper's Eq. 19 reads as equal weights; the default (:data:`DEFAULT_WEIGHTS`) follows the
    authors' code, which weighs each quality ballot (NTK, ZiCo) 0.5 against time's 1.0.

    Args:
        candidates: one mapping per candidate with a value for every ballot in ``weights`` (NTK may
            be ``kappa`` or ``log kappa``: the ranks are the same).
        weights: ``{ballot: weight}``; only these keys vote.
        higher_is_better: direction of each ballot in ``weights``.
        time_key: the measured time used to break ties (not voting unless it is in ``weights``);
            ``None`` or absent from a candidate: ties go to the earlier candidate.
        tol: absolute tolerance under which two values on a ballot tie.

    Raises:
        ValueError: no candidates, no ballots, a missing value or a ballot without a direction.
    """
    if not candidates:
        raise ValueError("ranked_vote needs at least one candidate")
    if not weights:
        raise ValueError("ranked_vote needs at least one ballot in weights")
    no_direction = sorted(k for k in weights if k not in higher_is_better)
    if no_direction:
        raise ValueError(f"higher_is_better has no direction for ballots {no_direction}")
    for i, cand in enumerate(candidates):
        missing = sorted(k for k in weights if k not in cand)
        if missing:
            raise ValueError(f"candidate {i} has no value for ballots {missing}")
    ranks = {
        k: competition_ranks([c[k] for c in candidates], higher_is_better=higher_is_better[k], tol=tol)
        for k in weights
    }
    totals = [float(sum(w * ranks[k][i] for k, w in weights.items())) for i in range(len(candidates))]
    best = min(totals)
    tied = [i for i, t in enumerate(totals) if t <= best + 1e-9]
    if time_key is not None and all(time_key in candidates[i] for i in tied):
        winner = min(tied, key=lambda i: (float(candidates[i][time_key]), i))
    else:
        winner = tied[0]
    return VoteResult(ranks=ranks, totals=totals, winner=winner, weights=dict(weights))
