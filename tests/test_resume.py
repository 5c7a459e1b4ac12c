"""Exact resume of ``autoprog pretrain`` and rollback on a non-finite loss.

A run killed with SIGKILL (at a step chosen at random, inside AutoProg-One's supernet search too,
and at a stage boundary, where AutoProg-Zero searches) and continued with ``--resume`` must end
with the same parameters, the same per-step losses and the same ``summary.json`` (timings aside) as
a run never interrupted. The search's runtime term is FLOPs here (``--search-runtime flops``):
measured times would make two uninterrupted runs differ already.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.cli import main
from autoprog.controller import GrowthController, create_plan
from autoprog.growth.schedule import GrowthSpace

TINY = ["--depth", "4", "--epochs", "8", "--batch-size", "32", "--train-subset", "128", "--val-size", "32",
        "--test-subset", "60", "--progress", "off", "--threads", "1", "--search-samples", "32",
        "--search-runtime", "flops", "--checkpoint-every", "1"]  # fmt: skip
CONFIGS = {
    "autoprog-one": ["--method", "autoprog-one"],
    "autoprog-zero": ["--method", "autoprog-zero", "--ntk-samples", "4"],
    "resnet-prog": ["--model", "resnet18", "--method", "prog"],  # the checkpoint records blocks per stage
    "prog-identity-mixup": [
        "--method",
        "prog",
        "--operator",
        "identity",
        "--mixup",
        "0.2",
        "--drop-path",
        "0.1",
        "--adaptive-reg",
        "--reprob",
        "0.25",
    ],  # fmt: skip
    # the peers (issue 17): an input schedule's per-epoch size, a random crop per step, fewer epochs
    "progressive-resizing-crop": ["--method", "progressive-resizing", "--input-transform", "crop"],
    "efficienttrain": ["--method", "efficienttrain"],
    "efficienttrain-randaug": ["--method", "efficienttrain", "--randaug", "rand-m9-mstd0.5-inc1"],
    "full-equal-time": ["--method", "full-equal-time", "--equal-time-ratio", "0.6"],  # 5 of 8 epochs
    "autoprog-one-lowfreq": ["--method", "autoprog-one", "--input-transform", "lowfreq"],
    "autoprog-one-trial": ["--method", "autoprog-one", "--search-rule", "trial"],  # trials at stage starts
}
TIMING_KEYS = {"wall_clock_s", "environment", "config", "peak_mem_bytes"}  # measurements, not results


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=300, n_test=60)


class _References(dict):
    """One uninterrupted run per configuration, made the first time a test asks for it."""

    def __init__(self, data_dir: Path, tmp_path_factory) -> None:
        super().__init__()
        self.data_dir, self.tmp_path_factory = data_dir, tmp_path_factory

    def __missing__(self, name: str) -> Path:
        out = self.tmp_path_factory.mktemp("ref") / name
        assert main(["pretrain", *CONFIGS[name], "--data-dir", str(self.data_dir), "--out", str(out), *TINY]) == 0
        self[name] = out
        return out


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run per configuration (made on first use)."""
    return _References(data_dir, tmp_path_factory)


def _cmd(args: list[str], data_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "autoprog.cli",
        "pretrain",
        *args,
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        *TINY,
    ]


def _steps_logged(out: Path) -> int:
    try:
        return (out / "log.jsonl").read_text().count('"event": "step"')
    except FileNotFoundError:
        return 0


def kill_at_step(cmd: list[str], out: Path, target: int) -> None:
    """Start ``cmd`` and SIGKILL it once ``target`` steps are in its log (checkpointed every step)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while _steps_logged(out) < target and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if not (k.endswith("_time_s") or k in TIMING_KEYS)}
    if isinstance(d, list):
        return [_clean(x) for x in d]
    return d


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert _clean(sa) == _clean(sb)
    wa, wb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    steps = [
        [(r["step"], r["loss"], r["resolution"], r["depth"]) for r in log if r["event"] == "step"]
        for log in (la, lb)
    ]
    assert steps[0] == steps[1]  # the log was cut back to the checkpoint: no step twice


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("autoprog-one", (1, 3)),
        ("autoprog-one", (9, 11)),
        ("autoprog-zero", (8, 8)),  # at the end of stage 0: the resumed run searches stage 1 again
        ("autoprog-zero", (9, 14)),  # inside stage 1: the checkpoint holds its decision
        ("prog-identity-mixup", (5, 27)),
        ("resnet-prog", (5, 12)),
        ("progressive-resizing-crop", (9, 26)),  # 16 px for 5 epochs, then 20, 24, 28
        ("efficienttrain", (3, 22)),
        ("efficienttrain-randaug", (6, 22)),  # RandAugment's magnitude changes every epoch
        ("full-equal-time", (5, 18)),  # 20 steps
        ("autoprog-one-lowfreq", (2, 3)),  # inside the supernet search, on low-frequency crops
        ("autoprog-one-trial", (8, 10)),  # about stage 1's start: its trials run again, or were recorded
    ],
)
def test_killed_run_resumes_exactly(data_dir, reference, tmp_path, name, window):
    target = random.Random(f"{name}{window}").randint(*window)  # a random step, reproducible
    out = tmp_path / "run"
    cmd = _cmd(CONFIGS[name], data_dir, out)
    kill_at_step(cmd, out, target)
    assert not (out / "summary.json").exists()
    assert main([*cmd[3:], "--resume"]) == 0
    resumes = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"resume"' in x]
    assert len(resumes) == 1 and resumes[0]["step"] >= 1
    if name == "autoprog-one" and resumes[0]["step"] % 8 < 4:  # the stage's first epoch is its search
        assert resumes[0]["searching"]
    assert_same_run(reference[name], out)


@pytest.mark.slow
def test_a_corrupted_last_checkpoint_falls_back_to_the_previous_one(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    cmd = _cmd(CONFIGS["autoprog-one"], data_dir, out)
    kill_at_step(cmd, out, 13)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated, as by a full disk
    assert main([*cmd[3:], "--resume"]) == 0
    assert_same_run(reference["autoprog-one"], out)


def test_resume_refuses_what_it_cannot_continue(data_dir, tmp_path, capsys):
    out = tmp_path / "nothing"
    assert (
        main(
            [
                "pretrain",
                "--method",
                "prog",
                "--data-dir",
                str(data_dir),
                "--out",
                str(out),
                *TINY,
                "--resume",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint" in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_with_another_configuration_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    kill_at_step(_cmd(CONFIGS["autoprog-one"], data_dir, out), out, 3)
    rc = main(["pretrain", *CONFIGS["autoprog-one"], "--data-dir", str(data_dir), "--out", str(out), *TINY,
               "--lr", "0.01", "--resume"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--lr" in err


def _nan_at(monkeypatch, at_calls: set[int]) -> None:
    """Make the training loss NaN at the given calls (loss spikes), as a fault injector."""
    original = torch.nn.CrossEntropyLoss.forward
    calls = {"n": 0}

    def forward(self, logits, target):
        calls["n"] += 1
        loss = original(self, logits, target)
        return loss * float("nan") if calls["n"] in at_calls else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", forward)


def _nan_once(monkeypatch, at_call: int) -> None:
    _nan_at(monkeypatch, {at_call})


@pytest.mark.slow
def test_a_nonfinite_loss_rolls_back_with_a_lower_lr(data_dir, tmp_path, monkeypatch):
    _nan_once(monkeypatch, at_call=7)
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "prog", "--data-dir", str(data_dir), "--out", str(out), *TINY]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["nonfinite_rollbacks"] == 1 and s["steps"] == 32
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    nonfinite = [r for r in records if r["event"] == "nonfinite"]
    assert len(nonfinite) == 1 and nonfinite[0]["action"] == "rollback" and nonfinite[0]["lr_scale"] == 0.5
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(32))  # no step trained on the NaN, none twice
    assert all(r["loss"] == r["loss"] for r in steps)  # no NaN in the log
    after = [r for r in steps if r["step"] >= nonfinite[0]["step"]]
    assert after and all(r["lr"] > 0 for r in after)


@pytest.mark.slow
def test_two_rollbacks_to_the_same_checkpoint_keep_both_records(data_dir, tmp_path, monkeypatch):
    """Issue 18: the second rollback to a checkpoint cuts the log back to it again, past the first
    rollback's record; both records stay in the log all the same."""
    _nan_at(monkeypatch, {7, 8})  # step 6; right after rolling back to the step-6 checkpoint, step 6 again
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "prog", "--data-dir", str(data_dir), "--out", str(out), *TINY]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["nonfinite_rollbacks"] == 2 and s["steps"] == 32
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    nonfinite = [r for r in records if r["event"] == "nonfinite"]
    assert [(r["step"], r["action"], r["lr_scale"]) for r in nonfinite] == [(6, "rollback", 0.5), (6, "rollback", 0.25)]
    resumes = [r for r in records if r["event"] == "resume"]
    assert [(r["step"], r["rollbacks"], r["lr_scale"]) for r in resumes] == [(6, 2, 0.25)]
    assert records.index(nonfinite[-1]) < records.index(resumes[0])
    assert [r["step"] for r in records if r["event"] == "step"] == list(range(32))  # none twice, none lost


@pytest.mark.slow
def test_rollbacks_used_up_stop_with_every_record_in_the_log(data_dir, tmp_path, monkeypatch, capsys):
    _nan_at(monkeypatch, set(range(7, 100)))  # diverged for good from step 6 on
    out = tmp_path / "run"
    rc = main(["pretrain", "--method", "prog", "--data-dir", str(data_dir), "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "non-finite training loss (nan) at step 6; stopped (3 rollback(s) done, at most 3 allowed;" in err
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    actions = [(r["action"], r["lr_scale"]) for r in records if r["event"] == "nonfinite"]
    assert actions == [("rollback", 0.5), ("rollback", 0.25), ("rollback", 0.125), ("stop", 0.125)]
    assert records[-1]["event"] == "nonfinite"  # the stop record is the last line, not overwritten


def test_a_nonfinite_loss_with_stop_is_a_one_line_error(data_dir, tmp_path, monkeypatch, capsys):
    _nan_once(monkeypatch, at_call=2)
    out = tmp_path / "run"
    rc = main(
        [
            "pretrain",
            "--method",
            "full",
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
            *TINY,
            "--on-nonfinite",
            "stop",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "non-finite training loss (nan) at step 1; stopped (--on-nonfinite stop;" in err
    assert not (out / "summary.json").exists()
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last == {"event": "nonfinite", "step": 1, "action": "stop", "lr_scale": 1.0}


def test_controller_state_round_trip_mid_search(tiny_adapter):
    """A controller restored mid-search continues exactly as the original (same samples, same weights)."""
    _round_trip_mid_search(tiny_adapter, GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3))


def test_controller_state_round_trip_mid_search_of_a_resnet():
    """The same with a ResNet's supernet, whose first stages start without blocks (fresh, ``None`` sources)."""
    from autoprog.adapters import TorchvisionResNetAdapter

    adapter = TorchvisionResNetAdapter("resnet18", img_size=16, in_chans=1, num_classes=10)
    space = GrowthSpace(16, 4, 4, ratio=0.5, num_stages=3)
    ctl = GrowthController(adapter, create_plan("autoprog-one", space, 3), steps_per_epoch=2,
                           score_fn=lambda net, c: 0.0, search_epochs=1, runtime_fn=lambda c: 1.0)  # fmt: skip
    ctl.begin_epoch()
    assert ctl.state_dict()["structure"]["sources"] == [None, None, 0, 1]  # layer1/2 have no block at depth 2
    _round_trip_mid_search(adapter, space)


def _round_trip_mid_search(tiny_adapter, space: GrowthSpace) -> None:
    def score(net, config):
        return float(net(torch.ones(2, 1, config.resolution, config.resolution)).abs().mean())

    def make() -> GrowthController:
        torch.manual_seed(0)
        return GrowthController(tiny_adapter, create_plan("autoprog-one", space, 3), steps_per_epoch=2,
                                score_fn=score, search_epochs=1, runtime_fn=lambda c: c.resolution * c.depth)  # fmt: skip

    def train(ctl: GrowthController, steps: int) -> list:
        seen = []
        for _ in range(steps):
            c = ctl.next_config()
            x = torch.full((2, 1, c.resolution, c.resolution), 0.5)
            loss = ctl.model(x).pow(2).mean()
            ctl.optimizer.zero_grad()
            loss.backward()
            ctl.optimizer.step()
            ctl.end_step(0.01)
            seen.append(c)
        return seen

    a = make()
    a.begin_epoch()
    train(a, 1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain tensors and values only
    b = make()
    b.load_state_dict(state)
    assert b.searching and b.model is not a.model
    assert train(a, 1) == train(b, 1)
    events_a, events_b = a.end_epoch(), b.end_epoch()
    assert [e.kind for e in events_a] == [e.kind for e in events_b] and "search" in [e.kind for e in events_a]
    assert _clean(a.searches) == _clean(b.searches) and a.current == b.current
    for (n, p), (m, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert n == m and torch.equal(p, q)
