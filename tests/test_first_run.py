"""A user's first run on their own images (issue 21): the data's size as the default input size,
defaults lowered to fit small data (said in one line), a run that cannot fit in memory refused
before training, and the README's "First run on your own images" command, run as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autoprog.adapters.base import create_adapter, input_size_step
from autoprog.cli import given_options, main
from autoprog.data import image_folder_size, load_dataset
from autoprog.memory import available_memory_bytes, saved_activation_bytes
from autoprog.train import memory_check
from autoprog.train.config import FinetuneConfig, PretrainConfig
from autoprog.train.fit_defaults import fit_defaults
from autoprog.train.memory_check import MemoryEstimate, estimate_training_memory
from autoprog.train.pretrain_data import input_size

README = Path(__file__).resolve().parents[1] / "README.md"
#: (width, height) of the images, in turn: odd sizes whose shorter sides have the median 32.
SIZES = [(32, 40), (36, 32), (32, 33), (45, 30)]


def make_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), train: int = 20,
                      val: int = 5, sizes: list[tuple[int, int]] = SIZES) -> Path:  # fmt: skip
    """``root/train/<class>/*.png`` and ``root/val/<class>/*.png``: odd sizes, RGB with a grey and an RGBA image."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                img = img.convert("L") if i == 1 else img.convert("RGBA") if i == 2 else img
                img.save(root / split / c / f"{i}.png")
    return root


def readme_commands() -> list[list[str]]:
    """The ``autoprog`` command lines of the README's first-run section, as argv lists."""
    section = README.read_text().split("## First run on your own images", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if "bin/autoprog " in line]


# ---------------------------------------------------------------------------------------------------
# The data's size.


def test_an_image_folder_defaults_to_its_median_shorter_side(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    assert image_folder_size(root / "train") == 32
    train, test = load_dataset(f"imagefolder:{root}", "train"), load_dataset(f"imagefolder:{root}", "test")
    assert train.info.image_size == test.info.image_size == 32  # val/ takes train/'s size
    assert train[0][0].shape == (3, 32, 32)
    assert load_dataset(f"imagefolder:{root}", "train", image_size=48)[0][0].shape == (3, 48, 48)
    same = make_image_folder(tmp_path / "same", sizes=[(64, 64)], train=2, val=1)
    assert image_folder_size(same / "train") == 64


def test_the_default_size_is_rounded_to_the_model_step_and_says_how_it_was_chosen():
    vit = PretrainConfig()  # patch 4
    assert input_size(vit, 28) == (28, "the data's size")
    assert input_size(vit, 30) == (28, "the data's 30px, rounded down to a multiple of 4")
    assert input_size(PretrainConfig(img_size=64), 28) == (64, "--img-size")
    assert input_size(PretrainConfig(model="resnet18", depth=None, patch_size=None), 62)[0] == 60
    assert input_size(PretrainConfig(patch_size=8), 5) == (8, "the data's 5px, rounded down to a multiple of 8")
    assert input_size_step("vit_small_patch16_224") == 16  # the name's own patch, without building the model
    assert input_size_step("vit_base_patch32_224", patch_size=4) == 4
    assert input_size_step("resnet50") == 4
    size, _ = input_size(PretrainConfig(model="vit_small_patch16_224", depth=None, patch_size=None), 100)
    assert size == 96 and create_adapter("vit_small_patch16_224", img_size=size, in_chans=3, num_classes=2,
                                         depth=1).full.resolution == 96  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Defaults that fit small data.


def test_fit_defaults_lowers_only_what_was_not_given():
    cfg = PretrainConfig(method="prog", epochs=2)
    fitted, notes = fit_defaults(cfg, 108, given={"method", "epochs"})
    assert (fitted.stages, fitted.batch_size) == (2, 64) and len(notes) == 2
    assert "--stages 2 instead of 4" in notes[0] and "--batch-size 64 instead of 128" in notes[1]
    assert all("\n" not in n for n in notes)
    assert cfg.stages == 4 and cfg.batch_size == 128  # the input is not changed
    kept, notes = fit_defaults(cfg, 108, given={"method", "epochs", "stages", "batch_size"})
    assert kept is cfg and notes == []
    assert fit_defaults(cfg, 20, given=set(), world_size=2)[0].batch_size == 8  # 10 images per process
    assert fit_defaults(cfg, None, given=set())[0].batch_size == 128  # data size not known yet
    assert fit_defaults(PretrainConfig(method="full", epochs=2), None, set())[0].stages == 4  # one stage anyway
    assert fit_defaults(PretrainConfig(method="autoprog-one", epochs=3), None, set())[0].stages == 3
    one = PretrainConfig(method="autoprog-one", epochs=1)
    assert fit_defaults(one, None, set())[0].stages == 4  # below 2 stages: the refusal stays
    ft, notes = fit_defaults(FinetuneConfig(method="prog", steps=3), 10, given=set())
    assert (ft.stages, ft.batch_size) == (3, 8) and "3 steps cannot hold 4 stages" in notes[0]


def test_the_cli_knows_which_options_were_given():
    assert given_options(["pretrain", "--out", "x", "--batch-size=64", "--stag", "2"]) == {"out", "batch_size", "stages"}
    assert given_options(["--debug", "pretrain", "--out", "x"]) == {"debug_all", "out"}


def test_an_explicit_value_keeps_the_refusal(tmp_path, capsys):
    root = make_image_folder(tmp_path / "imgs", train=4, val=1)
    base = ["pretrain", "--data", f"imagefolder:{root}", "--out", str(tmp_path / "out"), "--progress", "off"]
    assert main([*base, "--batch-size", "128"]) == 2
    assert "is smaller than one batch (128)" in capsys.readouterr().err
    assert main([*base, "--method", "prog", "--stages", "4", "--epochs", "2"]) == 2
    assert "4 stages need at least 4 epochs, got 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# Memory.


def test_saved_activations_grow_with_the_batch_and_leave_the_weights_out():
    adapter = create_adapter("vit_tiny_patch16_224", img_size=16, in_chans=1, num_classes=3, patch_size=4, depth=2)
    model = adapter.create_model()
    one = saved_activation_bytes(model, torch.zeros(1, 1, 16, 16))
    four = saved_activation_bytes(model, torch.zeros(4, 1, 16, 16))
    assert 0 < one and 3.5 * one <= four <= 4.5 * one
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert one < weights  # a 16 px image's activations are far smaller than the weights
    assert available_memory_bytes(torch.device("cpu")) > 0
    estimate = estimate_training_memory(adapter, 32, 1, torch.device("cpu"))
    assert estimate.fixed == 4 * weights and estimate.total == estimate.fixed + 32 * estimate.per_sample
    assert estimate.max_batch(estimate.total) == 32 and estimate.max_batch(estimate.fixed - 1) == 0


def test_memory_estimate_with_several_processes():
    e = MemoryEstimate(per_sample=10, fixed=100, batch=8, processes=2)
    assert e.total == 2 * (100 + 80) and e.max_batch(360) == 8 and e.max_batch(359) == 7


def test_a_run_that_cannot_fit_is_refused_before_training_in_one_line(tmp_path, capsys, monkeypatch):
    root = make_image_folder(tmp_path / "imgs", train=4, val=1)
    monkeypatch.setattr(memory_check, "available_memory_bytes", lambda device: 64 * 2**20)  # 64 MiB
    out = tmp_path / "out"
    argv = ["pretrain", "--data", f"imagefolder:{root}", "--img-size", "64", "--batch-size", "8", "--out", str(out),
            "--progress", "off", "--threads", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("autoprog: error: the run needs at least ")
    assert "64.0 MiB is available in RAM" in err and "256 tokens per image (patch 4)" in err
    assert "batch 8 x " in err and "lower --batch-size" in err and "--img-size or raise --patch-size" in err
    assert not (out / "log.jsonl").exists() and not (out / "checkpoints").exists()  # refused before training
    monkeypatch.setenv(memory_check.SKIP_ENV, "1")
    assert memory_check.check_memory_fits(create_adapter("resnet18", img_size=32, in_chans=3, num_classes=2), "resnet18",
                                          8, 3, torch.device("cpu")) is None  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The README's first run.


def test_readme_first_run_command_runs_as_written(tmp_path, monkeypatch, capsys):
    run, resume = readme_commands()
    assert run[0] == "pretrain" and resume == [*run, "--resume"]
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "my-images")
    torch.set_num_threads(1)
    assert main(run) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(line for line in lines if line.startswith("autoprog pretrain:"))
    assert "@ 32px (the data's size)" in first and "2 stage(s)" in first
    assert any("--stages 2 instead of 4 (the default)" in line for line in lines)
    summary = json.loads((tmp_path / "runs" / "first-run" / "summary.json").read_text())
    assert summary["full_resolution"] == 32 and summary["config"]["batch_size"] == 32
    assert (tmp_path / "runs" / "first-run" / "model.pt").is_file()
    shown = README.read_text().split("## First run on your own images", 1)[1]
    assert first in shown  # the README shows the first line this run printed


def test_the_memory_check_leaves_the_random_state_alone():
    adapter = create_adapter("vit_tiny_patch16_224", img_size=16, in_chans=1, num_classes=3, patch_size=4, depth=2)
    torch.manual_seed(0)
    estimate_training_memory(adapter, 8, 1, torch.device("cpu"))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # the run's model is initialised as without the check
