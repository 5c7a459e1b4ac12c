"""The CUDA paths that need a GPU (issue 19): they skip on a machine without one.

Run them with ``pytest -m cuda`` on a GPU machine (``benchmarks/gpu/run.sh`` does, first). Tests that
run on the CPU too and reach a CUDA path when a GPU is there (the default device is ``cuda`` when
available) carry the ``cuda`` marker where they live (``tests/test_cli.py``: fp16 with its gradient
scaler, ``--compile`` with ``--channels-last``, peak memory per stage).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.cli import main

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: A short Prog run on the GPU: 4 stages growing depth 2 -> 4 and resolution 12 -> 28.
GPU_RUN = ["--depth", "4", "--epochs", "4", "--batch-size", "256", "--train-subset", "512", "--val-size", "64",
           "--test-subset", "100", "--progress", "off", "--device", "cuda"]  # fmt: skip
#: Cached blocks the allocator may add for small tensors (new 2 MiB small-pool segments) without
#: the reservation having failed; one batch's activations at full size are far more (tested below).
SLACK = 16 * 2**20


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("fmnist"), n_train=640, n_test=200)


def _prog_run_reserved_bytes(fmnist_dir: Path, out: Path, monkeypatch, reserve: bool) -> tuple[int, int, dict]:
    """(bytes reserved right after the reservation, bytes reserved at the end, summary) of a Prog run."""
    from autoprog.train import pretrain_step

    after: list[int] = []
    original = pretrain_step.TrainStep.reserve_memory

    def spy(self, *args, **kwargs):
        if reserve:
            original(self, *args, **kwargs)
        torch.cuda.synchronize()
        after.append(torch.cuda.memory_reserved())

    monkeypatch.setattr(pretrain_step.TrainStep, "reserve_memory", spy)
    torch.cuda.empty_cache()
    assert main(["pretrain", "--method", "prog", "--data-dir", str(fmnist_dir), "--out", str(out), *GPU_RUN]) == 0
    torch.cuda.synchronize()
    end = torch.cuda.memory_reserved()
    return after[0], end, json.loads((out / "summary.json").read_text())


def test_reservation_holds_the_largest_configuration(fmnist_dir, tmp_path, monkeypatch):
    """The full model's forward/backward before training reserves what the last, largest stage
    needs: the allocator's reserved memory does not grow at any later growth (issue 9)."""
    reserved, end, s = _prog_run_reserved_bytes(fmnist_dir, tmp_path / "reserved", monkeypatch, reserve=True)
    assert [st["depth"] for st in s["schedule"]] == [2, 3, 3, 4] and s["schedule"][-1]["resolution"] == 28
    assert end <= reserved + SLACK, f"reserved {reserved / 2**20:.1f} MiB, grew to {end / 2**20:.1f} MiB"
    peaks = [st["peak_mem_bytes"] for st in s["stages"]]
    assert all(isinstance(p, int) and 0 < p <= reserved for p in peaks)  # each stage's peak fits the reservation
    assert peaks[-1] > peaks[0]  # the full model at 28 px needs more than depth 2 at 12 px


def test_without_the_reservation_memory_grows_at_the_last_growth(fmnist_dir, tmp_path, monkeypatch):
    """The control of the test above: with the reservation skipped, the later stages make the
    allocator reserve well beyond what it held when training started (so the test above can fail)."""
    reserved, end, _ = _prog_run_reserved_bytes(fmnist_dir, tmp_path / "none", monkeypatch, reserve=False)
    assert end > reserved + SLACK


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_gpu(fmnist_dir, tmp_path, precision):
    """bf16 autocast trains without a scaler; fp16 keeps a CUDA gradient scaler whose state is
    checkpointed; both learn the cell task and keep fp32 master weights."""
    out = tmp_path / precision
    args = ["pretrain", "--method", "prog", "--mixed-precision", precision, "--data-dir", str(fmnist_dir),
            "--out", str(out), *GPU_RUN, "--epochs", "8"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["environment"]["device"].startswith("cuda") and "gpu" in s["environment"]
    assert s["top1"] > 30.0  # well above chance (10 %)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    if precision == "fp16":
        assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    else:
        assert state.get("scaler") is None
    weights = torch.load(out / "model.pt", weights_only=True)  # the state dict
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())


def test_channels_last_resnet_trains_in_that_format(fmnist_dir, tmp_path, monkeypatch):
    """``--channels-last`` converts the CNN after every growth, so its convolutions see channels-last
    weights and inputs on the GPU."""
    from autoprog.run import module as run_module

    seen: list[bool] = []
    original = run_module.TrainModule.__call__

    def spy(self, model, *args, **kwargs):
        result = original(self, model, *args, **kwargs)
        convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4]
        seen.append(all(w.is_contiguous(memory_format=torch.channels_last) for w in convs))
        return result

    monkeypatch.setattr(run_module.TrainModule, "__call__", spy)
    out = tmp_path / "cl"
    args = ["pretrain", "--model", "resnet18", "--method", "prog", "--channels-last", "--data-dir", str(fmnist_dir),
            "--out", str(out), *GPU_RUN]  # fmt: skip
    assert main(args) == 0
    assert seen and all(seen)


def test_inductor_compiles_once_per_model_change(fmnist_dir, tmp_path, monkeypatch):
    """``--compile inductor`` on the GPU: one compilation per model (growth), the run finishes and learns."""
    compiled = []
    original = torch.compile

    def spy(module, **kwargs):
        compiled.append(kwargs.get("backend"))
        return original(module, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    out = tmp_path / "inductor"
    args = ["pretrain", "--method", "prog", "--compile", "inductor", "--stages", "2", "--data-dir", str(fmnist_dir),
            "--out", str(out), *GPU_RUN]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    depths = [st["depth"] for st in s["schedule"]]
    assert compiled == ["inductor"] * len(set(depths))
    assert s["top1"] > 20.0


def test_lazy_datasets_load_into_pinned_memory_on_the_gpu(tmp_path):
    """Image folders load through a DataLoader with ``pin_memory`` when the device is a GPU, so the
    copy to the device can overlap (``non_blocking``)."""
    from PIL import Image

    from autoprog.distributed import DistContext
    from autoprog.train.config import PretrainConfig
    from autoprog.train.pretrain_data import load_pretrain_data

    for split in ("train", "val"):
        for c in range(2):
            folder = tmp_path / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(8):
                Image.new("L", (16, 16), color=40 + 100 * c + i).save(folder / f"{i}.png")
    cfg = PretrainConfig(data=f"imagefolder:{tmp_path / 'images'}", batch_size=4, val_size=0, workers=1, img_size=16)
    data = load_pretrain_data(cfg, DistContext(), torch.device("cuda"))
    x, y = next(iter(data.train.epoch(0, 16)))
    assert data.train.pin_memory and x.is_pinned() and y.is_pinned()
    assert not load_pretrain_data(cfg, DistContext(), torch.device("cpu")).train.pin_memory
