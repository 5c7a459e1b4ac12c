"""Per-stage schedule search: one-shot (AutoProg-One, Sec. 3.2)."""

from autoprog.search.one_shot import (
    CandidateResult,
    StageSearch,
    choose,
    power_law_balancing_factor,
    power_law_score,
    stage_candidates,
)

__all__ = [
    "CandidateResult",
    "StageSearch",
    "choose",
    "power_law_balancing_factor",
    "power_law_score",
    "stage_candidates",
]
