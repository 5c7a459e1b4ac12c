"""Growth spaces, schedules and growth operators (paper Sec. 3.1, Appendix A)."""

from autoprog.growth.operators import (
    OPERATORS,
    GrowthOperator,
    Identity,
    Interpolation,
    MoGrow,
    RandInit,
    ReZeroBlock,
    Stacking,
    create_operator,
    depth_sources,
    layout_sources,
)
from autoprog.growth.schedule import (
    GrowthSchedule,
    GrowthSpace,
    Stage,
    SubnetConfig,
    full_schedule,
    prog_schedule,
    progstack_schedule,
    stage_boundaries,
)

__all__ = [
    "OPERATORS",
    "GrowthOperator",
    "GrowthSchedule",
    "GrowthSpace",
    "Identity",
    "Interpolation",
    "MoGrow",
    "RandInit",
    "ReZeroBlock",
    "Stacking",
    "Stage",
    "SubnetConfig",
    "create_operator",
    "depth_sources",
    "full_schedule",
    "layout_sources",
    "prog_schedule",
    "progstack_schedule",
    "stage_boundaries",
]
