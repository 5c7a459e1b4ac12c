"""Transfer fine-tuning of a pre-trained ViT classifier (``autoprog finetune --model PRETRAIN_RUN``):
progressive unfreezing and AutoProg-Zero's zero-shot search on a classifier (NTK on the logits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.cli import main
from autoprog.errors import ConfigError
from autoprog.tasks import create_finetune_task, source_kind
from autoprog.tasks.classifier import ClassifierTask
from autoprog.train.config import FinetuneConfig

PRETRAIN = ["--depth", "4", "--epochs", "2", "--batch-size", "32", "--train-subset", "128", "--val-size", "32",
            "--test-subset", "64", "--progress", "off", "--method", "full"]  # fmt: skip
FINETUNE = ["--data", "mnist-5k", "--steps", "8", "--batch-size", "8", "--stages", "2", "--ntk-samples", "4",
            "--time-repeats", "1", "--ema-decay", "0", "--progress", "off"]  # fmt: skip


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    """A tiny ViT pre-trained (a few steps) on a Fashion-MNIST-format dataset."""
    root = tmp_path_factory.mktemp("vit-source")
    data = make_cell_dataset(root / "fmnist")
    assert run_cli("pretrain", "--data-dir", data, "--out", root / "run", *PRETRAIN) == 0
    return root / "run"


def test_source_kind_of_a_pretrain_run(vit_run, tmp_path):
    assert source_kind(vit_run) == "classifier"
    with pytest.raises(ConfigError, match="not a fine-tuning source"):
        source_kind(tmp_path)


def test_task_loads_the_pretrained_weights_and_replaces_the_head(vit_run):
    cfg = FinetuneConfig(model=str(vit_run), data="mnist-5k", method="autoprog-zero", stages=2)
    task = create_finetune_task(vit_run, cfg, num_stages=2, device=torch.device("cpu"))
    assert isinstance(task, ClassifierTask) and not task.stage_identifiers and task.metric == "top1"
    saved = torch.load(vit_run / "model.pt", weights_only=True)
    state = task.model.state_dict()
    assert torch.equal(state["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])
    assert task.block_paths == [f"blocks.{i}" for i in range(4)]
    from autoprog.data import load_dataset

    task.bind_data(load_dataset("mnist-5k", "train", image_size=28, in_chans=1).info)
    assert not torch.equal(task.model.state_dict()["head.weight"], saved["head.weight"])  # a new head
    # The probe is the classifier's input and labels; the NTK output is the logits.
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    x, y = task.probe(images, torch.arange(4), 16, None, seed=0)
    assert x.shape == (4, 1, 16, 16) and task.output(task.model, x).shape == (4, 10)
    assert torch.isfinite(task.probe_loss(task.model, (x, y)))


def test_autoprog_zero_transfers_a_vit(vit_run, tmp_path):
    out = tmp_path / "zero"
    assert run_cli("finetune", "--model", vit_run, "--method", "autoprog-zero", "--out", out, *FINETUNE) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "ClassifierTask" and s["metric"] == "top1" and 0.0 <= s["top1"] <= 100.0
    assert s["sid"] is False and s["lr"] == 1e-4 and s["test_samples"] == 500
    assert s["schedule"][-1]["resolution"] == 28 and s["schedule"][-1]["level"] == 4
    (search,) = s["search"]  # stage 0 searched, the last stage is the full model
    assert {"ntk", "zico", "time", "ranks", "total"} <= set(search["candidates"][0])
    assert all(c["ntk"] >= 1.0 for c in search["candidates"])
    chosen = search["chosen"]
    assert (
        s["schedule"][0]["resolution"] == chosen["resolution"]
        and s["schedule"][0]["level"] == chosen["level"]
    )
    # The fine-tuned model is itself a source for this task.
    assert source_kind(out / "model") == "classifier"


def test_prog_unfreezes_blocks_in_order(vit_run, tmp_path):
    out = tmp_path / "prog"
    assert run_cli("finetune", "--model", vit_run, "--method", "prog", "--out", out, *FINETUNE) == 0
    s = json.loads((out / "summary.json").read_text())
    levels = [st["level"] for st in s["schedule"]]
    params = [st["trainable_params"] for st in s["schedule"]]
    assert levels == sorted(levels) and levels[-1] == 4 and params[0] < params[-1]
    full = tmp_path / "full"
    assert run_cli("finetune", "--model", vit_run, "--method", "full", "--out", full, *FINETUNE) == 0
    assert json.loads((full / "summary.json").read_text())["flops_ratio"] == pytest.approx(1.0)
    assert s["flops_ratio"] < 1.0


def test_lora_on_a_classifier_is_a_one_line_error(vit_run, tmp_path, capsys):
    code = run_cli("finetune", "--model", vit_run, "--out", tmp_path / "x", *FINETUNE, "--method", "lora")
    err = capsys.readouterr().err
    assert (
        code == 2 and "--method lora is implemented for diffusion models only" in err and err.count("\n") == 1
    )


def test_runs_that_cannot_be_transferred_are_refused_before_building(tmp_path, capsys):
    run = tmp_path / "resnet-run"
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps({"config": {"model": "resnet18"}, "full_depth": 8, "full_resolution": 28})
    )
    torch.save({}, run / "model.pt")
    code = run_cli("finetune", "--model", run, "--out", tmp_path / "x", *FINETUNE)
    err = capsys.readouterr().err
    assert code == 2 and "supports timm ViT/DeiT runs, not resnet18" in err and err.count("\n") == 1
    (run / "summary.json").write_text("{}")
    assert run_cli("finetune", "--model", run, "--out", tmp_path / "x", *FINETUNE) == 2
    assert "not an `autoprog pretrain` run folder" in capsys.readouterr().err


def test_sid_is_refused_for_a_classifier(vit_run, tmp_path):
    cfg = FinetuneConfig(model=str(vit_run), data="mnist-5k", method="prog", sid=True, out=str(tmp_path / "x"),
                         steps=4, batch_size=8, stages=2, progress=False)  # fmt: skip
    from autoprog.train.finetune import finetune

    with pytest.raises(ConfigError, match="no stage identifiers"):
        finetune(cfg, log=lambda _m: None)
