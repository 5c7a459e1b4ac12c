"""Issue 17's data-rich benchmark: a narrower ViT (``--embed-dim`` / ``--num-heads``) that pre-trains
and transfers, full's validation curve in ``summary.json``, and the regime check
(``benchmarks/regime.py``) judging both conditions from a result file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script, make_cell_dataset

from autoprog.adapters import create_adapter
from autoprog.cli import main
from autoprog.errors import ConfigError
from autoprog.run import read_records
from autoprog.tasks import create_finetune_task
from autoprog.tasks.classifier import ClassifierTask
from autoprog.train.config import FinetuneConfig, PretrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _regime():
    return load_script(ROOT / "benchmarks" / "regime.py", "regime")


def test_the_width_options_reach_the_model():
    adapter = create_adapter("vit_tiny_patch16_224", img_size=16, in_chans=1, num_classes=10, patch_size=4, depth=2,
                             embed_dim=32, num_heads=2)  # fmt: skip
    model = adapter.create_model()
    assert model.embed_dim == 32 and model.blocks[0].attn.num_heads == 2
    assert model.blocks[0].attn.qkv.weight.shape == (96, 32)


def test_width_options_are_refused_in_one_line(capsys):
    with pytest.raises(ConfigError, match="set a ViT's width; resnet18 does not take them"):
        PretrainConfig(model="resnet18", depth=None, patch_size=None, embed_dim=64).validate()
    with pytest.raises(ConfigError, match="--embed-dim 100 is not divisible by --num-heads 3"):
        PretrainConfig(embed_dim=100, num_heads=3).validate()
    with pytest.raises(ConfigError, match="width 128 is not divisible"):  # the name's 3 heads
        create_adapter("vit_tiny_patch16_224", img_size=16, in_chans=1, num_classes=10, embed_dim=128)


def test_a_narrow_vit_pretrains_logs_its_curve_and_transfers(tmp_path):
    data = make_cell_dataset(tmp_path / "cells", n_train=96, n_test=20)
    out = tmp_path / "run"
    assert main(["pretrain", "--data-dir", str(data), "--out", str(out), "--depth", "2", "--epochs", "2",
                 "--batch-size", "32", "--train-subset", "64", "--val-size", "16", "--embed-dim", "32",
                 "--num-heads", "2", "--progress", "off"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["config"]["embed_dim"], summary["config"]["num_heads"]) == (32, 2)
    epochs = read_records(out, "epoch")
    assert [c["epoch"] for c in summary["val_curve"]] == [0, 1] == [r["epoch"] for r in epochs]
    assert [c["val_top1"] for c in summary["val_curve"]] == [r["val_top1"] for r in epochs]
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["blocks.0.attn.qkv.weight"].shape == (96, 32)
    cfg = FinetuneConfig(model=str(out), data="mnist-5k", method="full", stages=2)
    task = create_finetune_task(out, cfg, num_stages=2, device=torch.device("cpu"))
    assert isinstance(task, ClassifierTask) and task.model.embed_dim == 32
    assert torch.equal(task.model.state_dict()["blocks.1.attn.qkv.weight"], saved["blocks.1.attn.qkv.weight"])
    assert read_records(tmp_path / "nowhere", "epoch") == []


def _run(label: str, top1: float, seed: int = 0, **kw) -> dict:
    run = {"label": label, "method": label.split(":")[0], "seed": seed, "top1": top1, "epochs": 8,
           "full_resolution": 28, "full_depth": 6}  # fmt: skip
    return {**run, **kw}


def test_the_regime_check_judges_both_conditions(tmp_path):
    regime = _regime()
    curve = [{"epoch": e, "val_top1": v, "wall_clock_s": e} for e, v in enumerate([50.0, 60.0, 70.0, 74.0])]
    runs = [
        _run("full", 80.0, val_curve=curve),
        _run("full-equal-time:match=prog", 78.5, epochs=4),
        _run("full:img_size=16:depth=3", 76.0, full_resolution=16, full_depth=3),
        _run("prog", 79.0),
    ]
    check = regime.regime_check({"name": "r", "runs": runs})
    assert check["passed"] is True
    assert [c["subnet"] for c in check["capacity"]] == ["16/3"] and check["capacity"][0]["full_minus"] == 4.0
    assert check["time"][0]["epochs"] == [4] and check["time"][0]["passed"]
    assert check["val_curves"] == {"0": [[0, 50.0], [1, 60.0], [2, 70.0], [3, 74.0]]}
    text = regime.regime_markdown(check)
    assert "Verdict: **passed**" in text and "last quarter: +4.00 pt from epoch 3 to 4" in text

    runs[1]["top1"] = 79.5  # equal-time full within 1 pt: no time to win
    runs.append(_run("full:img_size=20:depth=6", 81.0, full_resolution=20))  # a sub-network beats full
    check = regime.regime_check({"name": "r", "runs": runs})
    assert check["passed"] is False
    assert [c["passed"] for c in check["capacity"]] == [True, False] and not check["time"][0]["passed"]
    assert regime.regime_check({"name": "r", "runs": runs[:1] + runs[2:3]})["passed"] is None  # no equal-time run

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"name": "bench", "runs": runs}))
    regime.main([str(path)])
    assert "Verdict: **failed**" in (tmp_path / "bench-regime.md").read_text()
    assert (tmp_path / "bench-regime.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no result file"):
        regime.main([str(tmp_path / "missing.json")])
