"""Per-stage schedule search: one-shot (AutoProg-One, Sec. 3.2) and zero-shot (AutoProg-Zero, Sec. 4.2).

The generic pieces work for any candidate type: :class:`SupernetSearch` (a stage's supernet search:
sampling, score source, score rule), :class:`StepTimes` (the runtime term), :func:`zero_shot_search`
(NTK, ZiCo, time, ranked voting). ``one_shot_growth`` and ``zero_shot_growth`` apply them to a
pre-training stage's growth candidates.
"""

from autoprog.search.one_shot import (
    CandidateResult,
    StageSearch,
    choose,
    power_law_balancing_factor,
    power_law_score,
    stage_candidates,
)
from autoprog.search.step_times import StepTimes
from autoprog.search.supernet import (
    RandomSampler,
    RoundSampler,
    SupernetDecision,
    SupernetSearch,
    score_and_choose,
)
from autoprog.search.voting import (
    DEFAULT_HIGHER_IS_BETTER,
    DEFAULT_WEIGHTS,
    VoteResult,
    competition_ranks,
    ranked_vote,
)
from autoprog.search.zero_shot import zero_shot_search

__all__ = [
    "CandidateResult",
    "StageSearch",
    "choose",
    "power_law_balancing_factor",
    "power_law_score",
    "stage_candidates",
    "RandomSampler",
    "RoundSampler",
    "StepTimes",
    "SupernetDecision",
    "SupernetSearch",
    "score_and_choose",
    "DEFAULT_HIGHER_IS_BETTER",
    "DEFAULT_WEIGHTS",
    "VoteResult",
    "competition_ranks",
    "ranked_vote",
    "zero_shot_search",
]
