"""The data of a pre-training run: training subset, validation split, test split, normalisation.

Training uses a class-balanced ``--train-subset``; per-epoch validation uses ``--val-size`` images
carved from the unused training images, never the test split (no tuning on it); the test split
(optionally a class-balanced ``--test-subset``) is evaluated once, at the end. Images stay uint8
until the batch is on the device, where :meth:`PretrainData.prep` standardises them per channel.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from autoprog.adapters.base import ModelAdapter, input_size_step
from autoprog.data import DatasetInfo, class_balanced_subset, load_dataset, split_train_val
from autoprog.data.augment import RandAugmentDataset
from autoprog.data.resize import resize_batch
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError
from autoprog.train import peers
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource

EVAL_BATCH = 512
"""Batch size of validation and test passes."""


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, standardised per channel."""
    return (x.float().div_(255.0) - mean) / std


@dataclass
class PretrainData:
    """The splits and their batch sources.

    Attributes:
        info: the dataset's size, channels, classes, mean and std.
        train_set, val_set, test_set: the splits (``val_set`` is ``None`` when no image is left).
        train: the training batches (this process's shard); :meth:`train_source` rebuilds it with
            another RandAugment policy (adaptive regularisation).
        val, test: the evaluation batches (this process's shard).
        fixed: the first training images in order, unaugmented: the search's scoring batches.
        mean, std: per-channel statistics on the device, (1, C, 1, 1).
        loader_args: the training batches' batch size, seed, shard and loader settings.
        randaug: the RandAugment policy of ``train`` (``None``: none).
        size_note: how the input size was chosen, for the run's first line (:func:`input_size`).
    """

    info: DatasetInfo
    train_set: Dataset
    val_set: Dataset | None
    test_set: Dataset
    train: BatchSource
    val: BatchSource | None
    test: BatchSource
    fixed: BatchSource
    mean: torch.Tensor
    std: torch.Tensor
    loader_args: dict[str, Any]
    randaug: str | None = None
    size_note: str = ""

    def prep(
        self, x: torch.Tensor, resolution: int | None = None, adapter: ModelAdapter | None = None,
        transform: str = "bilinear",
    ) -> torch.Tensor:  # fmt: skip
        """A uint8 batch on the device -> the model's input; resized to ``resolution`` first when
        given (a supernet's smaller candidate of this step): by ``adapter`` (bilinear), or by
        ``transform`` (``--input-transform``: nearest, crop, lowfreq)."""
        if resolution is None or adapter is None:
            return normalise(x, self.mean, self.std)
        if transform != "bilinear":
            return normalise(resize_batch(x, resolution, transform), self.mean, self.std)  # type: ignore[arg-type]
        return (adapter.prepare_input(x.float(), resolution) / 255.0 - self.mean) / self.std

    def train_source(self, randaug: str | None) -> BatchSource:
        """The training batches, with RandAugment ``randaug`` (per-sample, so through a loader)."""
        self.randaug = randaug
        return _train_source(self.train_set, randaug, self.loader_args)


def load_pretrain_data(cfg: PretrainConfig, ctx: DistContext, device: torch.device) -> PretrainData:
    """Load and split ``cfg.data``; seed Python's and NumPy's generators afterwards (timm's Mixup
    draws from NumPy)."""
    train_full = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=cfg.img_size)
    size, size_note = input_size(cfg, train_full.info.image_size)
    if size != train_full.info.image_size:  # the data's own size, rounded to the model's step
        train_full = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=size)
    test_set = load_dataset(cfg.data, "test", data_dir=cfg.data_dir, image_size=size)
    if cfg.test_subset is not None and cfg.test_subset < len(test_set):
        test_set = class_balanced_subset(test_set, cfg.test_subset, seed=cfg.seed)
    n_train, val_size = split_sizes(cfg, len(train_full))
    pool = class_balanced_subset(train_full, n_train + val_size, seed=cfg.seed)
    train_set, val_set = _split_pool(pool, n_train, cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    downsize = peers.batch_downsize(cfg)  # --input-transform: how the sources bring images to a stage's size
    loader = {"batch_size": cfg.batch_size, "seed": cfg.seed, "pin_memory": device.type == "cuda",
              "num_workers": cfg.workers, "downsize": downsize, **shard}  # fmt: skip
    train = _train_source(train_set, cfg.randaug, loader)
    if len(train) == 0:
        raise ConfigError(f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})")
    info = train_full.info
    return PretrainData(
        info=info,
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        train=train,
        val=BatchSource(val_set, EVAL_BATCH, shuffle=False, drop_last=False, downsize=downsize, **shard)
        if val_set is not None
        else None,
        test=BatchSource(test_set, EVAL_BATCH, shuffle=False, drop_last=False, **shard),
        fixed=BatchSource(train_set, min(256, cfg.search_samples), shuffle=False, drop_last=False, downsize=downsize),
        mean=torch.tensor(info.mean, device=device).view(1, -1, 1, 1),
        std=torch.tensor(info.std, device=device).view(1, -1, 1, 1),
        loader_args=loader,
        randaug=cfg.randaug,
        size_note=size_note,
    )


def input_size(cfg: PretrainConfig, native: int) -> tuple[int, str]:
    """The full input size of the run and how it was chosen: ``--img-size``, or the data's own size
    (``native``: an image folder's median shorter side, :func:`~autoprog.data.image_folder_size`)
    rounded down to the model's step (a ViT's patch size, 4 px for a ResNet)."""
    if cfg.img_size is not None:
        return cfg.img_size, "--img-size"
    step = input_size_step(cfg.model, cfg.patch_size)
    size = max(step, native // step * step)
    if size == native:
        return size, "the data's size"
    return size, f"the data's {native}px, rounded down to a multiple of {step}"


def split_sizes(cfg: PretrainConfig, available: int) -> tuple[int, int]:
    """``(training images, validation images)`` taken from a training split of ``available`` images:
    ``--val-size`` (at most a tenth) for validation, ``--train-subset`` (or the rest) for training."""
    val_size = min(cfg.val_size, available // 10)
    return min(cfg.train_subset or available, available - val_size), val_size


def _train_source(train_set: Dataset, randaug: str | None, loader: dict[str, Any]) -> BatchSource:
    data = RandAugmentDataset(train_set, randaug) if randaug else train_set
    return BatchSource(data, shuffle=True, drop_last=True, force_loader=bool(randaug), **loader)


def _split_pool(pool: Dataset, n_train: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """First ``n_train`` of a class-balanced pool for training, the rest (if any) for validation."""
    if len(pool) <= n_train:  # type: ignore[arg-type]
        return pool, None
    val_fraction = (len(pool) - n_train) / len(pool)  # type: ignore[arg-type]
    return split_train_val(pool, val_fraction, seed)


__all__ = ["PretrainData", "input_size", "load_pretrain_data", "normalise", "split_sizes"]
