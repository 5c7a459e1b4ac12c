"""Progressive unfreezing for fine-tuning (paper Sec. 4.1.1): levels, spaces and schedules."""

from autoprog.unfreeze.schedule import (
    FinetuneStage,
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    full_unfreeze_schedule,
    level_blocks,
    prog_unfreeze_schedule,
    set_trainable,
    step_boundaries,
    zero_shot_candidates,
)

__all__ = [
    "FinetuneStage",
    "UnfreezeConfig",
    "UnfreezeSchedule",
    "UnfreezeSpace",
    "full_unfreeze_schedule",
    "level_blocks",
    "prog_unfreeze_schedule",
    "set_trainable",
    "step_boundaries",
    "zero_shot_candidates",
]
