"""Multi-process training: ``autoprog pretrain`` under ``torchrun --nproc-per-node 2`` (gloo, CPU).

Every process keeps ``OUT/ranks/rank{r}.jsonl``: its stage and search records with a SHA-256 of its
parameters. Identical files mean both processes took the same decisions and hold the same weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.distributed import DistContext, parameter_digest
from autoprog.train.loader import BatchSource

TINY = ["--depth", "4", "--epochs", "4", "--batch-size", "16", "--train-subset", "128", "--val-size", "32",
        "--test-subset", "60", "--progress", "off", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("fmnist"), n_train=300, n_test=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "autoprog.cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _errors(stderr: str) -> str:
    """The lines that say what failed (each rank's error), then the end of the output."""
    lines = [x for x in stderr.splitlines() if "Error" in x or "error:" in x]
    return "\n".join(lines[-20:]) + "\n---\n" + stderr[-1500:]


def rank_logs(out: Path) -> list[list[dict]]:
    return [
        [json.loads(x) for x in (out / "ranks" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]


@pytest.mark.slow
def test_prog_under_torchrun_grows_identically_on_both_ranks(fmnist_dir, tmp_path):
    out = tmp_path / "prog"
    p = torchrun("pretrain", "--method", "prog", "--data-dir", str(fmnist_dir), "--out", str(out), *TINY)
    assert p.returncode == 0, _errors(p.stderr)
    r0, r1 = rank_logs(out)
    assert r0 == r1  # same stages, same parameter digests after every growth
    assert [(r["resolution"], r["depth"]) for r in r0] == [(16, 2), (20, 3), (24, 3), (28, 4)]
    assert len({r["param_digest"] for r in r0}) == 4
    s = json.loads((out / "summary.json").read_text())
    assert s["environment"]["world_size"] == 2
    assert s["steps"] == 4 * (128 // 2 // 16)  # each process trains on its half of the data
    assert [(st["resolution"], st["depth"]) for st in s["schedule"]] == [(16, 2), (20, 3), (24, 3), (28, 4)]
    assert 0 < s["flops_ratio"] < 1
    assert p.stdout.count("done: top-1") == 1  # only rank 0 reports


@pytest.mark.slow
def test_autoprog_one_under_torchrun_takes_one_decision(fmnist_dir, tmp_path):
    out = tmp_path / "ap1"
    p = torchrun("pretrain", "--method", "autoprog-one", "--search-samples", "32", "--data-dir", str(fmnist_dir),
                 "--out", str(out), *TINY)  # fmt: skip
    assert p.returncode == 0, _errors(p.stderr)
    r0, r1 = rank_logs(out)
    assert r0 == r1  # identical search records (rank 0's measured times) and parameters
    searches = [r for r in r0 if r["event"] == "search"]
    assert [r["stage"] for r in searches] == [0, 1, 2]
    assert all(len(r["candidates"]) >= 1 for r in searches)
    s = json.loads((out / "summary.json").read_text())
    assert [(x["chosen"]["resolution"], x["chosen"]["depth"]) for x in s["search"]] == [
        (r["chosen"]["resolution"], r["chosen"]["depth"]) for r in searches
    ]


def test_shards_are_disjoint_equal_and_cover_the_epoch():
    data = torch.utils.data.TensorDataset(torch.zeros(103, 1, 4, 4, dtype=torch.uint8), torch.arange(103))
    data.images, data.targets = data.tensors  # in memory, as the built-in datasets
    shards = [
        BatchSource(data, 10, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [torch.cat([y for _, y in s.epoch(5, 4)]) for s in shards]
    assert len(shards[0]) == len(shards[1]) == 5  # 51 samples each, 5 full batches
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())
    whole = BatchSource(data, 10, shuffle=True, drop_last=False, seed=3)
    order = torch.cat([y for _, y in whole.epoch(5, 4)])
    assert torch.equal(seen[0], order[:102:2][:50]) and torch.equal(seen[1], order[1:102:2][:50])
    evals = [BatchSource(data, 10, shuffle=False, drop_last=False, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(torch.cat([torch.cat([y for _, y in e.epoch(0, 4)]) for e in evals]).tolist()) == list(
        range(103)
    )


def test_single_process_context_is_a_no_op():
    ctx = DistContext()
    model = torch.nn.Linear(3, 2)
    assert ctx.wrap(model) is model and ctx.broadcast({"a": 1}) == {"a": 1}
    assert ctx.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0] and ctx.is_main and not ctx.distributed
    other = torch.nn.Linear(3, 2)
    assert parameter_digest(model) != parameter_digest(other)
    other.load_state_dict(model.state_dict())
    assert parameter_digest(model) == parameter_digest(other)


@pytest.mark.slow
def test_finetune_under_accelerate_launch_with_bf16(fmnist_dir, tmp_path):
    """``accelerate launch`` (torchrun underneath; gloo on CPU) with its mixed-precision flag:
    AutoProg-Zero's unfreezing decisions are rank 0's and both processes hold the same weights."""
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "autoprog.cli",
           "finetune", "--model", "dit-tiny", "--data", "fashion-mnist", "--data-dir", str(fmnist_dir),
           "--method", "autoprog-zero", "--steps", "12", "--batch-size", "8", "--fid-samples", "0",
           "--time-repeats", "1", "--out", str(out), "--progress", "off"]  # fmt: skip
    p = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert p.returncode == 0, _errors(p.stderr)
    r0, r1 = rank_logs(out)
    assert r0 == r1
    assert [r["stage"] for r in r0 if r["event"] == "search"] == [0, 1, 2]
    assert len([r for r in r0 if r["event"] == "stage"]) == 4
    s = json.loads((out / "summary.json").read_text())
    assert s["mixed_precision"] == "bf16" and s["environment"]["world_size"] == 2
    assert s["schedule"][-1]["level"] == 4 and 0 < s["flops_ratio"] < 1
