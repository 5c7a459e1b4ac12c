"""``benchmarks/gpu/run.sh --dry-run``: the GPU evidence script, whole, on the CPU at toy size (issue 19),
and ``benchmarks/gpu/report.py`` on what it returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cell_dataset

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("diffusers")
pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def returned(tmp_path_factory) -> Path:
    """The folder a dry run returns (``$OUT``)."""
    tmp = tmp_path_factory.mktemp("gpu-script")
    env = {**os.environ, "OUT": str(tmp / "out"), "PYTHON": sys.executable, "GPU_DATA_DIR": str(make_cell_dataset(tmp / "fmnist")),
           "GPU_WORK": str(tmp / "work"), "PYTHONPATH": str(ROOT / "src"),
           "GPU_TIME_LIMIT_S": "400",  # a busy machine must not make the deadline skip a part
           # fewer runs than the dry run's all (each is a process start, seconds on 2 busy cores); the
           # runs left out take the same code path as those kept (autoprog-zero: prog's, with a search)
           "GPU_PT_METHODS": "full,prog,full-equal-time", "GPU_FT_METHODS": "full,prog"}  # fmt: skip
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not (tmp / "work").exists()  # the scratch folder is removed
    return tmp / "out"


@pytest.mark.slow
def test_dry_run_returns_every_part(returned):
    files = sorted(f.name for f in returned.iterdir())
    assert files == ["cuda-tests.xml", "dit-samples.npz", "log.txt", "results.json"]  # at most 8 files come back
    res = json.loads((returned / "results.json").read_text())
    assert res["dry_run"] and res["complete"] and res["skipped"] == []
    assert res["elapsed_s"] < res["settings"]["time_limit_s"] == 400
    assert res["cuda_tests"]["rc"] == 0 and res["cuda_tests"]["tests"] > 0
    assert res["cuda_tests"]["skipped"] == res["cuda_tests"]["tests"]  # no GPU here: every CUDA-only test skips
    assert [r["label"] for r in res["pretrain"]] == ["full", "prog", "full-equal-time:match=prog"]
    for r in res["pretrain"]:
        for key in ("top1", "wall_clock_s", "train_flops", "full_flops", "stages", "val_curve", "process_s"):
            assert key in r
        assert r["train_samples"] == 64 and r["config"]["device"] == "cpu"
        assert all(isinstance(st["peak_mem_bytes"], int) for st in r["stages"])
    eq = res["pretrain"][2]
    assert eq["equal_time_match"]["time_ratio"] == pytest.approx(
        res["pretrain"][1]["wall_clock_s"] / res["pretrain"][0]["wall_clock_s"]
    )
    assert [r["label"] for r in res["finetune"]] == ["full", "prog"]
    samples = np.load(returned / "dit-samples.npz")
    for r in res["finetune"]:
        assert r["fid"] is None and r["fid_samples"] == 10  # scored later, on the CPU
        images = samples[r["fid_samples_key"]]
        assert images.shape == (10, 1, 28, 28) and images.dtype == np.uint8
    assert [s["status"] for s in res["steps"]] == ["ok"] * len(res["steps"])


@pytest.mark.slow
def test_report_turns_the_returned_folder_into_results(returned, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        from report import build_report
    finally:
        sys.path.pop(0)
    result = build_report(returned, "gpu-dry", tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["gpu-dry-pretrain.png", "gpu-dry.json", "gpu-dry.md"]
    saved = json.loads((tmp_path / "gpu-dry.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [r["method"] for r in saved["aggregate"]] == ["full", "prog", "full-equal-time:match=prog"]
    assert all("realised_over_theoretical" in r for r in saved["aggregate"])
    assert [r["method"] for r in saved["finetune_aggregate"]] == ["full", "prog"]
    md = (tmp_path / "gpu-dry.md").read_text()
    assert "dry run" in md and "Peak memory per stage" in md and "FID not computed yet" in md
