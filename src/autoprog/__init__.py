"""autoprog: automated progressive learning for efficient training of vision models.

Implements "Automated Progressive Learning for Efficient Training of Vision Transformers" and its
extension to fine-tuning (AutoProg-One, AutoProg-Zero). The core (schedules, growth operators,
EMA, FLOP accounting) is model-agnostic; model knowledge lives in :mod:`autoprog.adapters`.
"""

__version__ = "0.1.0"

from autoprog.adapters import ModelAdapter, TimmViTAdapter, create_adapter, resample_pos_embed  # noqa: E402
from autoprog.controller import (  # noqa: E402
    EpochSpec,
    Event,
    GrowthController,
    PlannedStage,
    ZeroShotProbe,
    create_plan,
)
from autoprog.ema import ModelEma  # noqa: E402
from autoprog.errors import AutoprogError, CheckpointError, ConfigError, DatasetNotFoundError  # noqa: E402
from autoprog.flops import FlopTable, count_train_flops  # noqa: E402
from autoprog.growth import (  # noqa: E402
    OPERATORS,
    GrowthOperator,
    GrowthSchedule,
    GrowthSpace,
    Identity,
    Interpolation,
    MoGrow,
    RandInit,
    ReZeroBlock,
    Stacking,
    Stage,
    SubnetConfig,
    create_operator,
    depth_sources,
    full_schedule,
    prog_schedule,
    progstack_schedule,
)
from autoprog.proxies import ntk_condition_number, zico  # noqa: E402
from autoprog.search.voting import ranked_vote  # noqa: E402
from autoprog.unfreeze import (  # noqa: E402
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    level_blocks,
    prog_unfreeze_schedule,
    set_trainable,
    zero_shot_candidates,
)

__all__ = [
    "EpochSpec",
    "Event",
    "GrowthController",
    "PlannedStage",
    "ZeroShotProbe",
    "create_plan",
    "UnfreezeConfig",
    "UnfreezeSchedule",
    "UnfreezeSpace",
    "level_blocks",
    "ntk_condition_number",
    "prog_unfreeze_schedule",
    "ranked_vote",
    "set_trainable",
    "zero_shot_candidates",
    "zico",
    "OPERATORS",
    "AutoprogError",
    "CheckpointError",
    "ConfigError",
    "DatasetNotFoundError",
    "FlopTable",
    "GrowthOperator",
    "GrowthSchedule",
    "GrowthSpace",
    "Identity",
    "Interpolation",
    "ModelAdapter",
    "ModelEma",
    "MoGrow",
    "RandInit",
    "ReZeroBlock",
    "Stacking",
    "Stage",
    "SubnetConfig",
    "TimmViTAdapter",
    "__version__",
    "count_train_flops",
    "create_adapter",
    "create_operator",
    "depth_sources",
    "full_schedule",
    "prog_schedule",
    "progstack_schedule",
    "resample_pos_embed",
]
