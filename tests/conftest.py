from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoprog.adapters import TimmViTAdapter
from autoprog.data import write_idx


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def tiny_adapter() -> TimmViTAdapter:
    """A tiny ViT (width 192 is timm's tiny; depth 6, 28x28 grey, patch 4)."""
    return TimmViTAdapter("vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=6)


def make_cell_dataset(root: Path, n_train: int = 400, n_test: int = 200) -> Path:
    """A learnable 10-class dataset in Fashion-MNIST's idx layout: the class is where a bright 7x7 cell is."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 7 * r : 7 * r + 7, 7 * q : 7 * q + 7] = 250
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


@pytest.fixture(scope="session", autouse=True)
def _autoprog_cache(tmp_path_factory):
    """Sources and FID statistics made by tests go to a throw-away cache, never the user's."""
    import os

    old = os.environ.get("AUTOPROG_CACHE")
    os.environ["AUTOPROG_CACHE"] = str(tmp_path_factory.mktemp("autoprog-cache"))
    yield
    if old is None:
        os.environ.pop("AUTOPROG_CACHE", None)
    else:
        os.environ["AUTOPROG_CACHE"] = old


def load_script(path: Path, name: str):
    """A script that is not a package module (``scripts/``, ``benchmarks/``), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
