"""A user's own timm ViT as a fine-tuning source (issue 20): a timm hub folder (``config.json`` +
``model.safetensors`` / ``pytorch_model.bin``, written by ``timm.models.save_for_hf``) and
``--model timm:NAME --weights FILE``. The weights load as they are (the position embedding resampled
to the fine-tuning resolution), the head is replaced, every method runs, and no folder is taken for
another family's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import make_cell_dataset
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

from autoprog.adapters.timm_vit import resample_pos_embed
from autoprog.cli import main
from autoprog.data.datasets import DatasetInfo
from autoprog.errors import ConfigError
from autoprog.tasks import check_source, create_finetune_task, source_kind
from autoprog.tasks.classifier import ClassifierTask, read_classifier_source
from autoprog.train.config import FinetuneConfig

NAME = "vit_tiny_patch16_224"
INFO = DatasetInfo("cells", 10, 1, 16, [str(i) for i in range(10)], (0.2,), (0.3,))


def tiny_vit(num_classes: int = 7, seed: int = 0) -> torch.nn.Module:
    """timm's ViT-Tiny (width 192) at 16 px, patch 4 (a 4 x 4 grid), depth 2, grey input."""
    torch.manual_seed(seed)
    return timm.create_model(NAME, pretrained=False, img_size=16, patch_size=4, depth=2, num_classes=num_classes, in_chans=1)


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("timm") / "vit"
    save_for_hf(tiny_vit(), str(root), safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("timm-weights") / "my-vit.safetensors"
    save_file(tiny_vit(seed=1).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=64, n_test=20)


def _task(model: str | Path, **kw) -> ClassifierTask:
    cfg = FinetuneConfig(model=str(model), data="fashion-mnist", method="prog", stages=2, **kw)
    task = create_finetune_task(Path(str(model)), cfg, num_stages=2, device=torch.device("cpu"))
    assert isinstance(task, ClassifierTask)
    return task


def _assert_loaded(task: ClassifierTask, file_state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    state = task.model.state_dict()
    assert set(state) == set(file_state)
    for name, value in file_state.items():
        if name not in skip:
            assert torch.equal(state[name], value), name


def test_a_timm_folder_is_a_classifier_source_not_a_dit(timm_folder):
    assert sorted(p.name for p in timm_folder.iterdir()) == ["config.json", "model.safetensors"]
    assert source_kind(timm_folder) == "classifier" and check_source(timm_folder) == "classifier"
    src = read_classifier_source(timm_folder)
    assert (src.layout, src.architecture, src.model_args["img_size"]) == ("timm-folder", NAME, 16)


def test_a_timm_folder_loads_its_weights_and_gets_a_new_head(timm_folder):
    task = _task(timm_folder)
    file_state = load_file(str(timm_folder / "model.safetensors"))
    _assert_loaded(task, file_state)
    assert (task.full_resolution, task.patch_size, task.channels) == (16, 4, 1)
    assert task.block_paths == ["blocks.0", "blocks.1"]
    task.bind_data(INFO)
    assert task.model.head.out_features == 10  # the target's classes
    assert task.mean.flatten().tolist() == [0.5]  # the folder's pretrained_cfg normalisation
    x, y = task.probe(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), torch.arange(2), 8, None, seed=0)
    assert task.output(task.model, x).shape == (2, 10)


def test_the_position_embedding_is_resampled_to_the_fine_tuning_resolution(timm_folder):
    task = _task(timm_folder, img_size=24)
    file_state = load_file(str(timm_folder / "model.safetensors"))
    _assert_loaded(task, file_state, skip=("pos_embed",))
    assert task.full_resolution == 24 and task.model.pos_embed.shape == (1, 1 + 36, 192)
    expected = resample_pos_embed(file_state["pos_embed"], (6, 6), num_prefix_tokens=1)
    assert torch.equal(task.model.pos_embed.detach(), expected)
    with pytest.raises(ConfigError, match="--img-size 30 is not a multiple of the source's patch size 4"):
        _task(timm_folder, img_size=30)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_name_with_a_weights_file(weights_file, tmp_path, suffix):
    """Patch size, depth, channels and the trained resolution come from the weights' shapes."""
    path = weights_file
    if suffix == ".pth":
        path = tmp_path / "my-vit.pth"
        torch.save({"state_dict": tiny_vit(seed=1).state_dict(), "epoch": 3}, path)  # a training checkpoint
    task = _task(f"timm:{NAME}", weights_file=str(path))
    _assert_loaded(task, load_file(str(weights_file)))
    assert (task.full_resolution, task.patch_size, len(task.block_paths)) == (16, 4, 2)
    assert task.source.layout == "timm-name" and task.source.mean is None  # the data's statistics
    task.bind_data(INFO)
    assert task.mean.flatten().tolist() == pytest.approx([0.2])


FINETUNE = ["--data", "fashion-mnist", "--steps", "8", "--batch-size", "8", "--stages", "2", "--ntk-samples", "4",
            "--time-repeats", "1", "--ema-decay", "0", "--progress", "off", "--threads", "1"]  # fmt: skip


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.mark.parametrize("method", ["full", "bitfit", "prog", "autoprog-one", "autoprog-zero"])
def test_every_method_fine_tunes_a_timm_folder(timm_folder, cells, tmp_path, method):
    out = tmp_path / method
    assert run_cli("finetune", "--model", timm_folder, "--data-dir", cells, "--method", method, "--out", out, *FINETUNE) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "ClassifierTask" and 0.0 <= s["top1"] <= 100.0 and s["test_samples"] == 20
    assert s["schedule"][-1]["resolution"] == 16
    # model/ is a timm folder again: timm itself loads it, and so does autoprog
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architecture"] == NAME and config["num_classes"] == 10 and len(config["label_names"]) == 10
    back = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True)
    assert back.head.out_features == 10
    assert source_kind(out / "model") == "classifier"


def test_a_timm_name_and_weights_fine_tune_from_the_command_line(weights_file, cells, tmp_path):
    out = tmp_path / "zero"
    args = ["--model", f"timm:{NAME}", "--weights", weights_file, "--img-size", "24", "--method", "autoprog-zero"]
    assert run_cli("finetune", *args, "--data-dir", cells, "--out", out, *FINETUNE) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["source"] == f"timm:{NAME}" and s["full_resolution"] == 24 and s["schedule"][-1]["resolution"] == 24
    assert read_classifier_source(out / "model").model_args["img_size"] == 24


def _refusal(capsys, tmp_path, *args: object) -> str:
    code = run_cli("finetune", *args, "--out", tmp_path / "x", "--steps", "4")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("autoprog: error: ")


def test_wrong_timm_sources_name_the_layout_they_need(timm_folder, weights_file, tmp_path, capsys):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((timm_folder / "config.json").read_text())
    err = _refusal(capsys, tmp_path, "--model", no_weights)
    assert "config.json but no model.safetensors or pytorch_model.bin" in err and "save_for_hf" in err
    resnet = tmp_path / "resnet"
    resnet.mkdir()
    (resnet / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    assert "timm 'resnet50' is not a Vision Transformer" in _refusal(capsys, tmp_path, "--model", resnet)
    assert "is a file: weights alone do not say" in _refusal(capsys, tmp_path, "--model", weights_file)
    assert "needs the weights: add --weights FILE" in _refusal(capsys, tmp_path, "--model", f"timm:{NAME}")
    err = _refusal(capsys, tmp_path, "--model", timm_folder, "--weights", weights_file)
    assert "--weights goes with --model timm:NAME" in err
    err = _refusal(capsys, tmp_path, "--model", "timm:vit_small_patch16_224", "--weights", weights_file)
    assert "does not fit timm vit_small_patch16_224" in err
    with pytest.raises(ConfigError, match="--weights is for classifier sources"):
        FinetuneConfig(model="dit-tiny", weights_file=str(weights_file)).validate()
