"""Per-stage schedule search: one-shot (AutoProg-One, Sec. 3.2)."""

from autoprog.search.one_shot import (
    CandidateResult,
    StageSearch,
    choose,
    power_law_balancing_factor,
    power_law_score,
    stage_candidates,
)
from autoprog.search.voting import (
    DEFAULT_HIGHER_IS_BETTER,
    DEFAULT_WEIGHTS,
    VoteResult,
    competition_ranks,
    ranked_vote,
)

__all__ = [
    "CandidateResult",
    "StageSearch",
    "choose",
    "power_law_balancing_factor",
    "power_law_score",
    "stage_candidates",
    "DEFAULT_HIGHER_IS_BETTER",
    "DEFAULT_WEIGHTS",
    "VoteResult",
    "competition_ranks",
    "ranked_vote",
]
