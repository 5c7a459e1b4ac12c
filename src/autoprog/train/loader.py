"""Batches for training and evaluation.

In-memory datasets (Fashion-MNIST, MNIST, CIFAR-10) are resized *once per stage* to the stage's
resolution and batched by index gathering: no per-sample Python work on the hot path. Lazy datasets
(image folders) and per-sample augmentation (RandAugment) go through a ``DataLoader``; a dataset that
can decode at a given size (``set_load_resolution``, as image folders) is told the stage's
resolution, so each image is resized once, when it is decoded; other batches are resized on the fly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from autoprog.data import resize_uint8


def materialise(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images uint8 (N,C,H,W), targets int64 (N,))`` if the dataset lives in memory, else ``None``."""
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        return images, dataset.targets  # type: ignore[attr-defined]
    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if inner is not None and indices is not None:
        base = materialise(inner)
        if base is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            return base[0][idx], base[1][idx]
    return None


class BatchSource:
    """Yields ``(uint8 images at the asked resolution, targets)`` batches from one dataset.

    Args:
        dataset: a dataset of ``(uint8 CHW tensor, int)`` items.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (seeded by ``seed + epoch``, a pure function of the epoch).
        drop_last: drop the last incomplete batch (training).
        seed: base seed of the shuffling.
        force_loader: always go through a ``DataLoader`` (e.g. for per-sample augmentation).
        rank, world_size: multi-process training: every process draws the same epoch order and
            takes every ``world_size``-th sample from position ``rank`` (as ``DistributedSampler``);
            with ``drop_last`` all shards have the same length, so all processes step together.
        downsize: ``downsize(images, size)`` brings a batch (uint8 ``(N, C, H, W)``) to a smaller
            size (default: :func:`~autoprog.data.resize_uint8`, antialiased bilinear; e.g.
            :func:`~autoprog.data.resize.low_frequency_crop`, whose float output is served as is).
            With another than the default, lazy datasets decode at their full size first.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        force_loader: bool = False,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        downsize: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        self.dataset = dataset
        self.downsize = downsize or resize_uint8
        self._decode_resized = downsize is None  # a lazy dataset may decode straight to the size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.pin_memory = pin_memory
        self.world_size = world_size
        self._memory = None if force_loader else materialise(dataset)
        self._resized: dict[int, torch.Tensor] = {}

    def _shard_size(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.world_size == 1:
            return n
        return n // self.world_size if self.drop_last else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this process sees per epoch."""
        return len(self) * self.batch_size if self.drop_last else self._shard_size()

    def _images_at(self, resolution: int) -> torch.Tensor:
        assert self._memory is not None
        if resolution not in self._resized:
            self._resized = {resolution: self.downsize(self._memory[0], resolution)}  # keep one size only
        return self._resized[resolution]

    def epoch(self, epoch: int, resolution: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, at ``resolution`` pixels, from batch ``start`` on.

        A resumed run starts inside an epoch: the first ``start`` batches are neither loaded nor
        augmented, so per-sample augmentation (RandAugment draws from Python's ``random``) continues
        from the checkpointed random state exactly as the uninterrupted run did (in-process loading;
        with ``num_workers > 0`` the workers' own random streams restart and cannot match).
        """
        n = len(self.dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            keep = (n // self.world_size) * self.world_size if self.drop_last else n
            order = order[:keep][self.rank :: self.world_size]
        if self._memory is not None:
            images, targets = self._images_at(resolution), self._memory[1]
            for i in range(start, len(self)):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield images[idx], targets[idx]
            return
        load_at = resolution if self._decode_resized else None  # None: the dataset's full size
        _set_load_resolution(self.dataset, load_at)  # workers start with it
        # The iterator draws its workers' base seed from torch's global generator; a resumed epoch
        # drew it before the checkpoint already, so its random state is put back after the draw.
        rng = torch.random.get_rng_state() if start else None
        batches = iter(
            DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=order[start * self.batch_size :].tolist(),
                drop_last=self.drop_last,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
        )
        if rng is not None:
            torch.random.set_rng_state(rng)
        while True:
            # set again before every batch: another source over the same files (a search's scoring
            # data) may have asked for another size in between; in-process loading reads it now
            _set_load_resolution(self.dataset, load_at)
            try:
                x, y = next(batches)
            except StopIteration:
                return
            yield self.downsize(x, resolution), y  # a no-op when decoded at the size already


def _set_load_resolution(dataset: Dataset, resolution: int | None) -> None:
    """Tell the innermost dataset that decodes files (through subsets and augmentation wrappers) to
    decode at ``resolution``; a no-op for datasets that cannot."""
    while dataset is not None:
        setter = getattr(dataset, "set_load_resolution", None)
        if setter is not None:
            setter(resolution)
            return
        dataset = getattr(dataset, "dataset", None)
