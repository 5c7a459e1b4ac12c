from __future__ import annotations

import numpy as np
import pytest

from autoprog.errors import ConfigError
from autoprog.growth import (
    GrowthSchedule,
    GrowthSpace,
    SubnetConfig,
    prog_schedule,
    progstack_schedule,
    stage_boundaries,
)


def test_paper_growth_space_deit():
    # Sec. 3.1.2 / reference facts: ratio 0.5, 4 stages, depth 12, 224 px with 16 px patches.
    space = GrowthSpace(full_resolution=224, full_depth=12, resolution_step=16, ratio=0.5, num_stages=4)
    raw_res = np.linspace(0.5, 1.0, 4) * 224
    assert space.resolutions == [112, 144, 192, 224]
    assert all(abs(r - x) <= 8 for r, x in zip(space.resolutions, raw_res, strict=True))
    assert all(r % 16 == 0 for r in space.resolutions)
    assert space.depths == [6, 8, 10, 12]


def test_growth_space_small_vit_matches_benchmark_notes():
    space = GrowthSpace(28, 6, 4, 0.5, 4)
    assert space.resolutions == [16, 20, 24, 28]
    assert space.depths == [3, 4, 5, 6]


def test_prog_schedule_equal_stages_and_growth():
    space = GrowthSpace(28, 6, 4, 0.5, 4)
    sched = prog_schedule(space, epochs=100)
    assert [s.start_epoch for s in sched] == [0, 25, 50, 75]
    assert sched.epochs == 100
    assert [s.config for s in sched] == [SubnetConfig(16, 3), SubnetConfig(20, 4), SubnetConfig(24, 5), SubnetConfig(28, 6)]
    assert sched.stage_at(0).stage == 0 and sched.stage_at(74).stage == 2 and sched.stage_at(99).stage == 3


def test_schedule_roundtrip_and_validation():
    sched = prog_schedule(GrowthSpace(28, 6, 4, 0.5, 4), epochs=8)
    again = GrowthSchedule.from_list(sched.to_list())
    assert again.to_list() == sched.to_list()
    bad = sched.to_list()
    bad[1]["start_epoch"] += 1
    with pytest.raises(ConfigError):
        GrowthSchedule.from_list(bad)
    with pytest.raises(ConfigError):
        GrowthSchedule.from_list([{"stage": 0}])


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError):
        GrowthSpace(28, 6, 4, ratio, 4)


def test_resolution_must_be_multiple_of_patch():
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        GrowthSpace(30, 6, 4)


@pytest.mark.parametrize(
    "epochs,stages,expected",
    [(10, 4, [0, 2, 5, 7, 10]), (7, 3, [0, 2, 4, 7]), (9, 4, [0, 2, 4, 6, 9]), (5, 3, [0, 1, 3, 5]), (4, 4, [0, 1, 2, 3, 4])],
)
def test_stage_boundaries_truncate_when_the_epochs_do_not_divide(epochs, stages, expected):
    """``int(linspace(0, E, S + 1))`` (the authors' code): truncated, never rounded to the nearest epoch."""
    assert stage_boundaries(epochs, stages) == expected
    assert [s.start_epoch for s in prog_schedule(GrowthSpace(28, 6, 4, 0.5, stages), epochs)] == expected[:-1]


def test_more_stages_than_epochs_refused():
    with pytest.raises(ConfigError, match="need at least"):
        stage_boundaries(3, 4)


def test_progstack_1_2_5():
    sched = progstack_schedule(28, 12, epochs=16)
    assert [s.depth for s in sched] == [3, 6, 12]
    assert [s.epochs for s in sched] == [2, 4, 10]
