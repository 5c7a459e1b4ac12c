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
