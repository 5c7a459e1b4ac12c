"""The data of a fine-tuning run: training batches at each stage's resolution, and the searches' probe.

Images stay uint8 at the source's size and channels; the task (:mod:`autoprog.tasks`) scales them
and adds what its loss draws (noise, timesteps, label dropout). Two streams:

* :class:`StageBatches`, the training batches (this process's shard). An epoch keeps its order
  across stage boundaries: a new stage re-reads the current epoch at its own resolution from the
  same position (Sec. 4.1.1: each stage trains at its resolution). Its position (epoch, batches
  taken, resolution) is checkpointed, so ``--resume`` continues with the same batches.
* :class:`SearchProbe`, fixed training samples for the searches (Sec. 4.2: the NTK and ZiCo of
  every candidate on the same images, noise and timesteps; the step time on one batch of them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from autoprog.data import load_dataset
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError
from autoprog.tasks import FinetuneTask
from autoprog.train.config import FinetuneConfig
from autoprog.train.loader import BatchSource


def load_train_set(cfg: FinetuneConfig, task: FinetuneTask) -> Dataset:
    """The training split at the source's size and channels (uint8); the task learns its classes
    and statistics from it (:meth:`~autoprog.tasks.FinetuneTask.bind_data`)."""
    train_set = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=task.full_resolution,
                             in_chans=task.channels)  # fmt: skip
    task.bind_data(train_set.info)
    return train_set


class StageBatches:
    """The training batches of a run, read at the resolution of the stage that asks.

    Args:
        train_set: the training split.
        cfg: batch size and seed (each epoch's order is a function of ``seed`` and the epoch).
        ctx: this process's shard of every epoch.

    Raises:
        ConfigError: the training set is smaller than one batch.
    """

    def __init__(self, train_set: Dataset, cfg: FinetuneConfig, ctx: DistContext) -> None:
        self.source = BatchSource(train_set, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed,
                                  rank=ctx.rank, world_size=ctx.world_size)  # fmt: skip
        if len(self.source) == 0:
            raise ConfigError(
                f"the training set ({len(train_set)} images) is smaller than one batch ({cfg.batch_size})"  # type: ignore[arg-type]
            )
        # Position in the data: the epoch, the batches of it taken, the resolution its iterator was
        # made at (an epoch keeps the resolution it started with, across stage boundaries).
        self.epoch = 0
        self.taken = 0
        self.resolution = 0
        self._iter: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def next(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch at ``resolution``; a new resolution (a stage change) re-reads the current
        epoch at it from the same position, so every stage trains at its own resolution."""
        if self._iter is not None and self.resolution != resolution:
            self._iter = itertools.islice(self.source.epoch(self.epoch, resolution), self.taken, None)
            self.resolution = resolution
        while True:
            if self._iter is None:
                self._iter, self.resolution = self.source.epoch(self.epoch, resolution), resolution
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter, self.epoch, self.taken = None, self.epoch + 1, 0
                continue
            self.taken += 1
            return batch

    def state_dict(self) -> dict[str, int]:
        """The position, as ``last.pt``'s ``data``."""
        return {"epoch": self.epoch, "batches": self.taken, "resolution": self.resolution}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a checkpoint's position (inside an epoch: its remaining batches, in order)."""
        self.epoch, self.taken, self.resolution = state["epoch"], state["batches"], state["resolution"]
        if self.taken > 0:
            self._iter = itertools.islice(self.source.epoch(self.epoch, self.resolution), self.taken, None)


class SearchProbe:
    """Fixed training samples for the searches: the same images, noise and timesteps for every
    candidate (Sec. 4.2, Eq. 13), drawn once with their own seeded generator.

    Args:
        train_set: the training split.
        task: builds the model's inputs and target from the images (:meth:`FinetuneTask.probe`).
        cfg: how many samples the NTK (``ntk_samples``) and ZiCo (``zico_batches`` batches of
            ``batch_size``) take, and the seed.
        use_sid: the inputs carry the stage's identifier (Sec. 4.1.2).
    """

    def __init__(self, train_set: Dataset, task: FinetuneTask, cfg: FinetuneConfig, use_sid: bool) -> None:
        self.task, self.seed, self.use_sid = task, cfg.seed, use_sid
        probe_gen = torch.Generator().manual_seed(cfg.seed + 7919)
        n_probe = max(cfg.ntk_samples, cfg.batch_size * cfg.zico_batches)
        probe_idx = torch.randperm(len(train_set), generator=probe_gen)[:n_probe]  # type: ignore[arg-type]
        self.images = torch.stack([train_set[int(i)][0] for i in probe_idx])
        self.labels = torch.tensor([int(train_set[int(i)][1]) for i in probe_idx])

    def batch(self, resolution: int, lo: int, hi: int, stage: int) -> tuple[Any, ...]:
        """Probe samples ``lo:hi`` at ``resolution`` during ``stage``: the task's inputs + target
        (their random parts fixed by the samples and the resolution)."""
        seed = self.seed * 31 + lo * 1009 + resolution
        sid = stage if self.use_sid else None
        return self.task.probe(self.images[lo:hi], self.labels[lo:hi], resolution, sid, seed)


__all__ = ["SearchProbe", "StageBatches", "load_train_set"]
