"""``autoprog finetune --resume`` continues a killed run exactly; a non-finite loss rolls back or stops
(issue 7, items 1 and 4, fine-tuning).

Exactness is checked against an uninterrupted run with the same ``--threads``: final weights (online,
EMA, saved model), optimizer state, training generator, every logged loss and ``summary.json``
without its timings. AutoProg's searches weigh *measured* step times, which differ between any two
runs; the search scenarios therefore replace the timer (``measure_step_times`` as
:class:`~autoprog.search.step_times.StepTimes` calls it) by a deterministic
cost, the FLOPs of the same step, in every process of a comparison, so that a mismatch can only come
from the resume. ``prog`` needs no such replacement and runs the plain CLI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.adapters.diffusers_dit import DiTDenoiser
from autoprog.checkpoint import load_checkpoint
from autoprog.cli import main
from autoprog.train.diffusion import GaussianDiffusion
from autoprog.train.source import make_source

STEPS = 40

#: Run in a child process: ``python -c DRIVER KILL_AT autoprog-args...``. Replaces the step timer by
#: the step's FLOPs (deterministic) and, with ``KILL_AT > 0``, SIGKILLs itself inside the training
#: step that makes the KILL_AT-th diffusion-loss call (after its forward, before its backward).
DRIVER = """
import os, signal, sys
from torch.utils.flop_counter import FlopCounterMode
import autoprog.search.step_times as step_times
from autoprog.train.diffusion import GaussianDiffusion

def flops_as_seconds(n, configure, step, repeats=3, warmup=1, device=None):
    out = []
    for i in range(n):
        configure(i)
        with FlopCounterMode(display=False) as counter:
            step(i)
        out.append(counter.get_total_flops() * 1e-12)
    return out

step_times.measure_step_times = flops_as_seconds
kill_at, calls, loss = int(sys.argv.pop(1)), [0], GaussianDiffusion.loss

def killing_loss(self, *args, **kwargs):
    value = loss(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return value

GaussianDiffusion.loss = killing_loss
from autoprog.cli import main
sys.exit(main(sys.argv[1:]))
"""


def flops_as_seconds(n, configure, step, repeats=3, warmup=1, device=None) -> list[float]:
    """The in-process twin of DRIVER's timer."""
    from torch.utils.flop_counter import FlopCounterMode

    out = []
    for i in range(n):
        configure(i)
        with FlopCounterMode(display=False) as counter:
            step(i)
        out.append(counter.get_total_flops() * 1e-12)
    return out


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    root = make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=200, n_test=50)
    make_source("dit-tiny", data_dir=str(root), log=lambda _m: None)  # made once, before any child process
    return root


def args(cells: Path, out: Path, method: str, *extra: str) -> list[str]:
    return [
        "finetune", "--model", "dit-tiny", "--data", "fashion-mnist", "--data-dir", str(cells), "--method", method,
        "--steps", str(STEPS), "--batch-size", "8", "--fid-samples", "0", "--time-repeats", "1", "--threads", "1",
        "--progress", "off", "--out", str(out), *extra,
    ]  # fmt: skip


def child(argv: list[str], kill_at: int = 0, plain: bool = False) -> subprocess.Popen:
    """The CLI in a child process (``plain``: ``-m autoprog.cli``; else DRIVER)."""
    cmd = [sys.executable, "-m", "autoprog.cli"] if plain else [sys.executable, "-c", DRIVER, str(kill_at)]
    return subprocess.Popen(cmd + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


TIMINGS = {"wall_clock_s", "search_time_s", "scoring_time_s", "environment", "peak_mem_bytes"}


def strip(obj):
    """``summary.json`` without measured times and the options that may differ on resume."""
    if isinstance(obj, dict):
        return {
            k: strip(v)
            for k, v in obj.items()
            if k not in TIMINGS and k not in ("out", "resume", "checkpoint_every")
        }
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], dict):
            assert_same_tensors(a[k], b[k], f"{what}.{k}")
        else:
            assert torch.equal(a[k], b[k]), f"{what}.{k} differs"


def assert_same_run(ref: Path, run: Path) -> None:
    """``run`` (interrupted and resumed) ended exactly where ``ref`` (uninterrupted) did."""
    s_ref, s_run = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    assert strip(s_run) == strip(s_ref)
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (ref, run))
    assert (b["phase"], b["step"]) == (a["phase"], a["step"]) == ("done", STEPS)
    for key in ("model", "ema", "optimizer"):
        assert_same_tensors(a[key], b[key], key)
    assert torch.equal(a["rng"][0]["gen"], b["rng"][0]["gen"])
    m_ref, m_run = (DiTDenoiser.load(d / "model").state_dict() for d in (ref, run))
    assert_same_tensors(m_ref, m_run, "model/")
    # every optimizer step logged once, with the same loss (what was logged after the checkpoint was dropped)
    steps_ref = [r for r in records(ref) if r["event"] == "step"]
    steps_run = [r for r in records(run) if r["event"] == "step"]
    assert [r["step"] for r in steps_ref] == list(range(STEPS))
    assert steps_run == steps_ref


def kill_when_logged(proc: subprocess.Popen, out: Path, target: int, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` once ``out/log.jsonl`` holds ``target`` step records."""
    log, t0 = out / "log.jsonl", time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (rc {proc.returncode}) before {target} steps were logged: {proc.stderr.read()}"
            )
        if log.exists() and log.read_text().count('"event": "step"') >= target:
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            return
        time.sleep(0.002)
    proc.kill()
    pytest.fail("timed out waiting for the run's steps")


def resume_record(out: Path) -> dict:
    found = [r for r in records(out) if r["event"] == "resume"]
    assert len(found) == 1
    return found[0]


# -- (a) + (b): killed at a random step, resumed; a damaged last.pt falls back to last.pt.prev ------------


def test_prog_killed_at_random_step_resumes_exactly(tmp_path, cells, capsys):
    target = random.Random(20240607).randint(5, STEPS - 12)  # leaves >= 12 steps: the kill lands mid-run
    killed = child(args(cells, tmp_path / "run", "prog", "--checkpoint-every", "2"), plain=True)
    kill_when_logged(killed, tmp_path / "run", target)
    assert not (tmp_path / "run" / "summary.json").exists()
    # (b) a copy whose newest checkpoint is damaged: it resumes from the previous one, as exactly
    shutil.copytree(tmp_path / "run", tmp_path / "damaged")
    last = tmp_path / "damaged" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    prev_step = load_checkpoint(last.with_name("last.pt.prev"))["step"]

    resumed = child(args(cells, tmp_path / "run", "prog", "--checkpoint-every", "2", "--resume"), plain=True)
    assert main(args(cells, tmp_path / "ref", "prog")) == 0  # the uninterrupted reference, meanwhile
    capsys.readouterr()
    assert main(args(cells, tmp_path / "damaged", "prog", "--checkpoint-every", "2", "--resume")) == 0
    assert "loaded the previous checkpoint" in capsys.readouterr().out
    assert resume_record(tmp_path / "damaged")["step"] == prev_step
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    assert 0 < resume_record(tmp_path / "run")["step"] < STEPS
    assert_same_run(tmp_path / "ref", tmp_path / "run")
    assert_same_run(tmp_path / "ref", tmp_path / "damaged")


@pytest.mark.parametrize("method", ["autoprog-one", "autoprog-zero"])
def test_search_methods_killed_and_resumed_exactly(tmp_path, cells, monkeypatch, method):
    """autoprog-one: killed inside a supernet-search phase (resumes with the candidates' losses and
    the sampler's state); autoprog-zero: killed in the first steps of a random stage, so it resumes
    from the stage-boundary checkpoint and runs that stage's zero-shot search again (a mid-stage
    resume is the prog test's). The child process is killed at a chosen step by itself."""
    rng = random.Random(11 if method == "autoprog-one" else 12)
    extra = ["--search-fraction", "0.6"] if method == "autoprog-one" else []
    # 4 stages of 10 steps; autoprog-one's supernet trains the first 6 of a stage (stage 1: 10..15).
    # Killed inside step kill_at - 1: the last checkpoint is at the even step before it.
    kill_at = rng.randint(13, 16) if method == "autoprog-one" else rng.choice([11, 12, 21, 22, 31, 32])
    killed = child(args(cells, tmp_path / "run", method, "--checkpoint-every", "2", *extra), kill_at=kill_at)
    monkeypatch.setattr("autoprog.search.step_times.measure_step_times", flops_as_seconds)
    assert main(args(cells, tmp_path / "ref", method, *extra)) == 0
    assert killed.wait(timeout=300) == -signal.SIGKILL, killed.stderr.read()
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] == (kill_at - 1) // 2 * 2
    if method == "autoprog-one":
        assert saved["phase"] == "search" and saved["stage"] == 1
        assert 0 < saved["search"]["done"] < saved["search"]["n_steps"]
        assert sum(map(len, saved["search"]["losses"])) == saved["search"]["done"]
    else:
        assert saved["phase"] == "done" and saved["step"] % 10 == 0  # the next stage's search runs again
    assert main(args(cells, tmp_path / "run", method, "--checkpoint-every", "2", "--resume", *extra)) == 0
    assert_same_run(tmp_path / "ref", tmp_path / "run")


# -- (c) nothing to resume ---------------------------------------------------------------------------------


def test_resume_without_checkpoint_is_one_line_error(tmp_path, cells, capsys):
    rc = main(args(cells, tmp_path / "empty", "prog", "--resume"))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("autoprog: error: --resume: no checkpoint in")


def test_resume_with_another_config_names_the_option(tmp_path, cells, capsys):
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    assert main(args(cells, out, "prog", "--steps", "4")) == 0
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    assert load_checkpoint(ckpt / "last.pt")["phase"] == "done"
    rc = main(args(cells, out, "prog", "--steps", "4", "--lr", "0.001", "--resume"))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"--resume: the run in {out} used --lr (default), not 0.001" in err
    # the same options (and another --threads) resume: nothing left to train, the results are written
    assert main(args(cells, out, "prog", "--steps", "4", "--threads", "2", "--resume")) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


# -- (d) non-finite losses -----------------------------------------------------------------------------------


def nan_at(monkeypatch, calls: set[int]) -> list[int]:
    """Make the diffusion loss NaN at the given (1-based) calls; returns the call counter."""
    loss, n = GaussianDiffusion.loss, [0]

    def patched(self, *a, **kw):
        n[0] += 1
        value = loss(self, *a, **kw)
        return value * float("nan") if n[0] in calls else value

    monkeypatch.setattr(GaussianDiffusion, "loss", patched)
    return n


def test_nonfinite_loss_rolls_back_with_a_lower_lr(tmp_path, cells, monkeypatch, capsys):
    out = tmp_path / "run"
    n = nan_at(monkeypatch, {8})  # step 7; the last checkpoint is at step 6
    rc = main(
        args(cells, out, "prog", "--steps", "12", "--checkpoint-every", "3", "--nonfinite-lr-factor", "0.25")
    )
    assert rc == 0
    assert n[0] == 12 + 1 + 1  # 12 steps, the NaN one, step 6 trained again after the rollback
    assert "rolling back" in capsys.readouterr().out
    recs = records(out)
    # the shared policy's record (autoprog.run.nonfinite), as pretrain's: with the loss
    assert {"event": "nonfinite", "step": 7, "loss": "nan", "action": "rollback", "lr_scale": 0.25} in recs
    assert [r["step"] for r in recs if r["event"] == "step"] == list(range(12))  # each step logged once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nonfinite_rollbacks"] == 1 and summary["lr_scale"] == 0.25
    assert load_checkpoint(out / "checkpoints" / "last.pt")["lr_scale"] == 0.25  # persists in the state


def test_nonfinite_loss_stops_with_one_line_error(tmp_path, cells, monkeypatch, capsys):
    out = tmp_path / "run"
    nan_at(monkeypatch, {5})
    rc = main(args(cells, out, "prog", "--steps", "12", "--checkpoint-every", "2", "--on-nonfinite", "stop"))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(
        "autoprog: error: non-finite training loss (nan) at step 4; stopped (--on-nonfinite stop"
    )
    assert records(out)[-1] == {"event": "nonfinite", "step": 4, "action": "stop", "lr_scale": 1.0}
    assert not (out / "summary.json").exists()


def test_nonfinite_loss_stops_after_max_rollbacks(tmp_path, cells, monkeypatch):
    from autoprog.errors import AutoprogError
    from autoprog.train.config import FinetuneConfig
    from autoprog.train.finetune import finetune

    nan_at(monkeypatch, set(range(5, 100)))  # diverged for good from step 4 on
    cfg = FinetuneConfig(model="dit-tiny", data="fashion-mnist", data_dir=str(cells), method="full", steps=8,
                         batch_size=8, fid_samples=0, out=str(tmp_path / "run"), progress=False, threads=1,
                         checkpoint_every=2, max_rollbacks=2)  # fmt: skip
    with pytest.raises(AutoprogError, match=r"at step 4; stopped \(2 rollback\(s\) done, at most 2 allowed; last checkpoint: "):
        finetune(cfg, log=lambda _m: None)
    actions = [(r["action"], r["lr_scale"]) for r in records(tmp_path / "run") if r["event"] == "nonfinite"]
    assert actions == [("rollback", 0.5), ("rollback", 0.25), ("stop", 0.25)]
