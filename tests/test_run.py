"""The run machinery shared by the training loops (``autoprog.run``): log sinks, resumable state,
the non-finite policy and the re-wrapped training module. End-to-end runs are in test_resume.py."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autoprog.checkpoint import previous_path
from autoprog.distributed import DistContext
from autoprog.errors import AutoprogError, ConfigError, NonFiniteLoss
from autoprog.run import (
    Attempt,
    NonFinitePolicy,
    RunCheckpoint,
    RunLog,
    TrainModule,
    after_nonfinite,
    check_finite,
)

ONE = DistContext()


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- RunLog --------------------------------------------------------------------------------------


def test_log_records_are_on_disk_as_soon_as_written(tmp_path):
    log = RunLog(tmp_path, ONE)
    log.write({"event": "step", "step": 0})
    assert lines(tmp_path / "log.jsonl") == [{"event": "step", "step": 0}]  # before close: a kill loses nothing
    log.close()


def test_a_resumed_log_is_cut_back_to_the_checkpoint_offset(tmp_path):
    with RunLog(tmp_path, ONE) as log:
        log.write({"event": "step", "step": 0})
        offset = log.offset()
        log.write({"event": "step", "step": 1})  # after the checkpoint: trained again on resume
    with RunLog(tmp_path, ONE, resume_offset=offset) as log:
        log.write({"event": "resume", "step": 1})
    assert lines(tmp_path / "log.jsonl") == [{"event": "step", "step": 0}, {"event": "resume", "step": 1}]


def test_a_log_shorter_than_at_the_checkpoint_is_appended_to(tmp_path):
    (tmp_path / "log.jsonl").write_text(json.dumps({"event": "step", "step": 0}) + "\n")
    said = []
    with RunLog(tmp_path, ONE, resume_offset=10_000, log=said.append) as log:
        log.write({"event": "resume", "step": 5})
    assert [r["event"] for r in lines(tmp_path / "log.jsonl")] == ["step", "resume"]
    assert len(said) == 1 and "shorter than at the checkpoint" in said[0]


def test_only_rank_zero_writes_the_log(tmp_path):
    with RunLog(tmp_path, DistContext(rank=1, world_size=1)) as log:
        log.write({"event": "step", "step": 0})
        assert log.offset() is None
    assert not (tmp_path / "log.jsonl").exists()


# -- RunCheckpoint ---------------------------------------------------------------------------------


def test_resume_without_a_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--resume: no checkpoint in"):
        RunCheckpoint(tmp_path).load({"lr": 1.0}, "pretrain", lambda s: True)


def test_resume_refuses_another_kind_and_another_configuration(tmp_path):
    checkpoint = RunCheckpoint(tmp_path)
    checkpoint.save({"kind": "finetune", "config": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="not a resumable checkpoint of autoprog pretrain"):
        checkpoint.load({"lr": 1.0}, "pretrain", lambda s: "controller" in s)
    with pytest.raises(ConfigError, match="--lr"):
        checkpoint.load({"lr": 2.0}, "finetune", lambda s: s["kind"] == "finetune")
    assert checkpoint.load({"lr": 1.0}, "finetune", lambda s: s["kind"] == "finetune")["kind"] == "finetune"


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    checkpoint = RunCheckpoint(tmp_path)
    checkpoint.save({"step": 1, "config": {}})
    checkpoint.save({"step": 2, "config": {}})  # step 1's file is kept as last.pt.prev
    checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:100])
    said = []
    assert checkpoint.load({}, "pretrain", lambda s: True, log=said.append)["step"] == 1
    assert len(said) == 1 and "last.pt.prev" in said[0]


# -- the non-finite policy -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_raises_with_the_step_and_lr_scale(value):
    with pytest.raises(NonFiniteLoss) as e:
        check_finite(value, 7, 0.5, ONE)
    assert (e.value.step, e.value.lr_scale) == (7, 0.5)
    check_finite(1.25, 7, 0.5, ONE)


def test_a_rollback_lowers_the_lr_and_keeps_every_record(tmp_path):
    checkpoint = RunCheckpoint(tmp_path)
    checkpoint.save({"config": {}})
    policy = NonFinitePolicy("rollback", max_rollbacks=3, lr_factor=0.5)
    said: list[str] = []
    first = after_nonfinite(NonFiniteLoss(float("nan"), 6, 1.0), Attempt(), policy, checkpoint, ONE, said.append)
    second = after_nonfinite(NonFiniteLoss(float("nan"), 6, 0.5), first, policy, checkpoint, ONE, said.append)
    assert (second.resume, second.lr_scale, second.rollbacks) == (True, 0.25, 2)
    assert [(r["step"], r["action"], r["lr_scale"]) for r in second.notes] == [(6, "rollback", 0.5), (6, "rollback", 0.25)]
    assert len(said) == 2 and "rolling back to" in said[1]


def test_the_previous_checkpoint_alone_is_one_to_roll_back_to(tmp_path):
    checkpoint = RunCheckpoint(tmp_path)
    checkpoint.path.parent.mkdir(parents=True)
    torch.save({"config": {}}, previous_path(checkpoint.path))
    attempt = after_nonfinite(NonFiniteLoss(float("nan"), 3, 1.0), Attempt(), NonFinitePolicy(), checkpoint, ONE,
                              lambda _m: None)  # fmt: skip
    assert attempt.resume and attempt.rollbacks == 1


@pytest.mark.parametrize(
    ("policy", "rollbacks", "checkpointed", "why"),
    [
        (NonFinitePolicy("stop"), 0, True, "(--on-nonfinite stop; last checkpoint: "),
        (NonFinitePolicy("rollback", max_rollbacks=2), 2, True, "(2 rollback(s) done, at most 2 allowed; last checkpoint: "),
        (NonFinitePolicy("rollback"), 0, False, "(no checkpoint to roll back to; last checkpoint: none)"),
    ],
)
def test_a_stop_says_why_in_one_line_and_logs_it(tmp_path, policy, rollbacks, checkpointed, why):
    checkpoint = RunCheckpoint(tmp_path)
    if checkpointed:
        checkpoint.save({"config": {}})
    attempt = Attempt(resume=True, lr_scale=0.25, rollbacks=rollbacks)
    with pytest.raises(AutoprogError) as e:
        after_nonfinite(NonFiniteLoss(float("inf"), 9, 0.25), attempt, policy, checkpoint, ONE, lambda _m: None)
    message = str(e.value)
    assert message.startswith("non-finite training loss (inf) at step 9; stopped ") and why in message
    assert "\n" not in message
    assert lines(tmp_path / "log.jsonl") == [{"event": "nonfinite", "step": 9, "action": "stop", "lr_scale": 0.25}]


def test_replay_writes_again_only_the_rollbacks_the_cut_log_lost():
    a, b, c = ({"event": "nonfinite", "step": s, "action": "rollback", "lr_scale": x} for s, x in
               [(3, 0.5), (8, 0.25), (8, 0.25)])  # fmt: skip  # c equals b: a factor of 1 would repeat one
    written: list[dict] = []
    # a was logged before the checkpoint (the checkpoint keeps it); b and c were cut with the log
    records = Attempt(resume=True, notes=(a, b, c)).replay([a], written.append)
    assert written == [b, c] and records == [a, b, c]
    assert Attempt(resume=True).replay([a], written.append) == [a] and written == [b, c]


# -- TrainModule ---------------------------------------------------------------------------------


def test_the_training_module_is_rebuilt_once_per_model_version(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, backend: compiled.append(backend) or module)
    wrap = TrainModule(ONE, compile="eager", channels_last=True)
    model = nn.Sequential(nn.Conv2d(3, 2, 3))
    assert not model[0].weight.is_contiguous(memory_format=torch.channels_last)
    for version in (0, 0, 0, 1, 1, 2):
        assert wrap(model, version) is model  # one process: no DDP
    assert compiled == ["eager"] * 3
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
