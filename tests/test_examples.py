from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_loop_example_grows_through_the_schedule():
    seen = _load("own_loop_prog").main(epochs=4, steps_per_epoch=2, depth=4, batch_size=4)
    assert seen == [(16, 2), (20, 3), (24, 3), (28, 4)]


def test_own_loop_autoprog_one_example_searches_and_grows_to_full():
    result = _load("own_loop_autoprog_one").main(epochs=4, steps_per_epoch=3, depth=4, batch_size=8)
    schedule = result["schedule"]
    assert [s["stage"] for s in schedule] == [0, 1, 2]
    assert (schedule[-1]["resolution"], schedule[-1]["depth"]) == (28, 4) and result["depth"] == 4
    assert [r["stage"] for r in result["searches"]] == [0, 1]
    for record, stage in zip(result["searches"], schedule, strict=False):
        assert (record["chosen"]["resolution"], record["chosen"]["depth"]) == (
            stage["resolution"],
            stage["depth"],
        )
        assert all(c["loss"] > 0 for c in record["candidates"]) or len(record["candidates"]) == 1
    assert all(
        a["depth"] <= b["depth"] and a["resolution"] <= b["resolution"]
        for a, b in zip(schedule, schedule[1:], strict=False)
    )
