"""``autoprog.tensorboard``: run records in, TensorBoard scalars and texts out (read back from the event files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from autoprog.cli import main
from autoprog.errors import ConfigError
from autoprog.tensorboard import EVENT_FILE_PREFIX, MISSING_MESSAGE, TensorBoardLog

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

# What `autoprog pretrain` writes (see train/pretrain.py): a stage, steps with lr, an epoch record,
# a supernet step outside the budget, a search, the next stage.
PRETRAIN_RECORDS: list[dict[str, Any]] = [
    {"event": "regularization", "stage": 0, "randaug": 1, "drop_path": 0.0, "reprob": 0.05},
    {"event": "stage", "stage": 0, "epoch": 0, "step": 0, "resolution": 14, "depth": 2, "params": 1000},
    {"event": "step", "step": 0, "epoch": 0, "stage": 0, "loss": 2.5, "lr": 0.001, "resolution": 14, "depth": 2,
     "in_budget": True},
    {"event": "step", "step": 1, "epoch": 0, "stage": 0, "loss": 2.25, "lr": 0.002, "resolution": 14, "depth": 2,
     "in_budget": True},
    {"event": "epoch", "epoch": 0, "step": 2, "stage": 0, "train_loss": 2.375, "val_top1": 31.5, "wall_clock_s": 4.0,
     "train_flops": 1.5e9},
    {"event": "step", "step": 2, "epoch": 1, "stage": 1, "loss": 2.0, "lr": 0.002, "resolution": 28, "depth": 3,
     "in_budget": False},
    {"event": "search", "stage": 1, "start_epoch": 1, "search_epochs": 1, "balancing_factor": 0.5,
     "candidates": [{"resolution": 14, "depth": 3, "loss": 2.1, "runtime_s": 0.01, "score": 0.3},
                    {"resolution": 28, "depth": 3, "loss": 2.0, "runtime_s": 0.04, "score": 0.4}],
     "chosen": {"resolution": 14, "depth": 3}, "search_time_s": 1.25},
    {"event": "stage", "stage": 1, "epoch": 2, "step": 2, "resolution": 14, "depth": 3, "params": 1500},
    {"event": "epoch", "epoch": 1, "stage": 1, "train_loss": 2.0, "val_top1": None},  # no step: at the epoch
]  # fmt: skip

# What `autoprog finetune` writes (see train/finetune.py): an AutoProg-Zero search, stages of levels, steps.
FINETUNE_RECORDS: list[dict[str, Any]] = [
    {"event": "search", "stage": 0, "start_step": 0, "weights": {"time": 1.0, "ntk": 0.5, "zico": 0.5},
     "candidates": [{"resolution": 8, "level": 1, "log_ntk": 3.25, "zico": 171.5, "time": 0.18, "total": 8.0},
                    {"resolution": 16, "level": 2, "log_ntk": 2.75, "zico": 239.5, "time": 0.04, "total": 2.0}],
     "chosen": {"resolution": 16, "level": 2}, "search_time_s": 5.5},
    {"event": "stage", "stage": 0, "step": 0, "resolution": 16, "level": 2, "trainable_params": 79696},
    {"event": "step", "step": 0, "stage": 0, "loss": 1.25},
    {"event": "step", "step": 1, "stage": 0, "loss": 1.125},
    {"event": "stage", "stage": 1, "step": 2, "resolution": 28, "level": 4, "trainable_params": 117520},
    {"event": "step", "step": 2, "stage": 1, "loss": 1.0, "supernet": True, "resolution": 28, "level": 4},
    {"event": "nonfinite", "step": 3, "action": "rollback", "lr_scale": 0.5},
    {"event": "resume", "step": 2, "stage": 1, "phase": "train", "lr_scale": 0.5, "rollbacks": 1},
    {"event": "step", "step": 2, "stage": 1, "loss": 0.875},
    {"event": "something-new", "step": 9, "loss": 5.0},  # unknown events are ignored
]  # fmt: skip


def read_back(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, Any]]:
    """``(step, value)`` of a tag's points; the values compare equal to the float32 the event file keeps."""
    return [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars(tag)]


def texts(acc: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{tag}/text_summary")]


def write_all(log_dir: Path, records: list[dict[str, Any]]) -> EventAccumulator:
    sink = TensorBoardLog(log_dir)
    for record in records:
        sink.write(record)
    sink.close()
    return read_back(log_dir)


def test_pretrain_records_become_scalars(tmp_path):
    acc = write_all(tmp_path / "pre", PRETRAIN_RECORDS)
    assert scalars(acc, "train/loss") == [(0, 2.5), (1, 2.25)]
    assert scalars(acc, "train/lr") == [(0, 0.001), (1, 0.002)]
    assert scalars(acc, "search/supernet_loss") == [(2, 2.0)]  # outside the budget: not a training step
    # the epoch record at its global step; the one without a step at its epoch index
    assert scalars(acc, "val/top1") == [(2, 31.5)]  # null top-1 skipped
    assert scalars(acc, "train/loss_epoch") == [(2, 2.375), (1, 2.0)]
    assert scalars(acc, "epoch/wall_clock_s") == [(2, 4.0)]
    assert scalars(acc, "epoch/train_flops") == [(2, 1.5e9)]
    assert scalars(acc, "epoch/lr") == [(2, 0.002), (1, 0.002)]  # the last step's lr
    assert scalars(acc, "epoch/resolution") == [(2, 14), (1, 14)]  # the stage's, not the supernet step's
    assert scalars(acc, "epoch/depth") == [(2, 2), (1, 3)]
    assert scalars(acc, "stage/resolution") == [(0, 14), (2, 14)]
    assert scalars(acc, "stage/depth") == [(0, 2), (2, 3)]
    assert scalars(acc, "stage/params") == [(0, 1000), (2, 1500)]
    assert scalars(acc, "stage/index") == [(0, 0), (2, 1)]
    assert scalars(acc, "search/time_s") == [(2, 1.25)]  # no start_step: the last step seen
    assert scalars(acc, "regularization/reprob") == [(0, 0.05)]
    assert "stage/level" not in acc.Tags()["scalars"]
    [(step, text)] = texts(acc, "search/chosen")
    assert step == 2 and text.startswith("stage 1: chose 14px, depth 3 of 2 candidates by AutoProg-One")
    assert "| resolution | depth | loss | runtime_s | score |" in text
    assert (
        "| **14** | **3** | **2.1** | **0.01** | **0.3** |" in text and "| 28 | 3 | 2 | 0.04 | 0.4 |" in text
    )


def test_finetune_records_become_scalars(tmp_path):
    acc = write_all(tmp_path / "ft", FINETUNE_RECORDS)
    # every step record in order, the supernet step and the step trained again after the resume included
    assert scalars(acc, "train/loss") == [(0, 1.25), (1, 1.125), (2, 1.0), (2, 0.875)]
    assert scalars(acc, "stage/level") == [(0, 2), (2, 4)]
    assert scalars(acc, "stage/resolution") == [(0, 16), (2, 28)]
    assert scalars(acc, "stage/trainable_params") == [(0, 79696), (2, 117520)]
    assert scalars(acc, "search/time_s") == [(0, 5.5)]
    assert scalars(acc, "train/lr_scale") == [(3, 0.5), (2, 0.5)]
    assert {"val/top1", "train/lr", "stage/depth"}.isdisjoint(acc.Tags()["scalars"])
    [(step, text)] = texts(acc, "search/chosen")
    assert step == 0 and text.startswith("stage 0: chose 16px, level 2 of 2 candidates by AutoProg-Zero")
    assert "| resolution | level | time | log_ntk | zico | total |" in text
    assert "| **16** | **2** | **0.04** | **2.75** | **239.5** | **2** |" in text
    assert texts(acc, "events/nonfinite") == [(3, "step 3, action rollback, lr_scale 0.5")]
    assert texts(acc, "events/resume")[0][0] == 2


def test_sink_is_a_context_manager_and_closes_once(tmp_path):
    with TensorBoardLog(tmp_path / "cm") as sink:
        sink.write({"event": "step", "step": 5, "loss": 0.5})
        sink.write({"event": "step", "step": 6, "loss": "not a number"})  # skipped
    assert sink.log_dir == tmp_path / "cm"
    sink.close()  # a second close does nothing
    with pytest.raises(ValueError, match="closed"):
        sink.write({"event": "step", "step": 7, "loss": 0.25})
    assert [p.name.startswith(EVENT_FILE_PREFIX) for p in (tmp_path / "cm").iterdir()] == [True]
    assert scalars(read_back(tmp_path / "cm"), "train/loss") == [(5, 0.5)]


def test_missing_tensorboard_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    with pytest.raises(ConfigError) as err:
        TensorBoardLog(tmp_path / "x")
    assert (
        str(err.value) == "--tensorboard needs the tensorboard package: pip install 'autoprog[tensorboard]'"
    )
    assert str(err.value) == MISSING_MESSAGE
    assert not (tmp_path / "x").exists()
    # `autoprog report --tensorboard` says so on one line, before writing anything
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"method": "full", "steps": 2, "metric": "fid", "fid": 3.0}))
    (run / "log.jsonl").write_text(json.dumps(FINETUNE_RECORDS[2]) + "\n")
    argv = ["report", str(run), "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"autoprog: error: {MISSING_MESSAGE}"
    assert not (tmp_path / "r").exists() and not (tmp_path / "tb").exists()


def test_finetune_tensorboard_flag_logs_the_run(tmp_path):
    """``autoprog finetune --tensorboard DIR``: the run's step losses and stages as scalars."""
    out, tb = tmp_path / "run", tmp_path / "tb"
    args = ["finetune", "--model", "dit-tiny", "--method", "prog", "--steps", "8", "--batch-size", "8",
            "--fid-samples", "0", "--out", str(out), "--tensorboard", str(tb), "--progress", "off"]  # fmt: skip
    assert main(args) == 0
    acc = EventAccumulator(str(tb))
    acc.Reload()
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").open() if '"event": "step"' in line]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(losses)
    assert [e.value for e in acc.Scalars("stage/level")] == [1, 2, 3, 4]
