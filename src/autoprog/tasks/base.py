"""What ``autoprog finetune`` needs to know about one kind of model: the :class:`FinetuneTask` protocol.

Progressive fine-tuning (paper Sec. 4, Algorithm 2) is the same loop for every model: stages, a
search (AutoProg-Zero's zero-shot vote, AutoProg-One's supernet, or Prog's manual plan) picks a
learnable sub-network (input resolution x unfreezing level), the optimizer and the EMA copy are
rebuilt by parameter name, the stage trains. Only four things depend on the model, and a task
supplies them:

* **which parameters form the blocks** that unfreeze (:attr:`FinetuneTask.block_paths`, in the
  interleaved order of Sec. 4.1.1) and which learn at every level (:meth:`always_learnable`);
* **the training loss** of a batch, with the stage's Unique Stage Identifier (Sec. 4.1.2) when SID
  is on: a stage embedding for class-conditional models, a stage token in the caption for
  text-to-image models, nothing for a classifier;
* **fixed probe data** for the zero-shot proxies (Eq. 12-17): the same inputs for every candidate,
  and the output whose NTK is taken;
* **the evaluation** at the end (FID for a generator, top-1 for a classifier) and how to save the
  result.

A task is made by a factory from a source folder (``create_*_task``); :func:`autoprog.tasks.create_finetune_task`
picks the factory from what the folder holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from autoprog.data.datasets import DatasetInfo


@runtime_checkable
class FinetuneTask(Protocol):
    """One model family and objective for :func:`autoprog.train.finetune.finetune`.

    Attributes:
        model: the network being fine-tuned. Its parameter names key the unfreezing, the optimizer
            state and the EMA copy; ``model(*probe_inputs)`` is never called by the loop directly.
        full_resolution: the input side the source was trained at (the last stage's resolution).
        channels: input channels of the images the loop reads from the dataset.
        patch_size: every resolution of the unfreezing space is a multiple of this.
        block_paths: module path of each unfreezable block, in unfreezing order.
        metric: the summary key of :meth:`evaluate`'s headline number (``"fid"``: lower is better;
            ``"top1"``: higher is better).
        stage_identifiers: whether the family has a Unique Stage Identifier (Sec. 4.1.2); without
            one, ``stage_id`` is always ``None`` and ``--sid`` is refused.
        default_lr: the learning rate when the user gives none (the paper's per setting: 1e-4 for
            DiT, 1e-5 for Stable Diffusion, 5e-6 for DreamBooth, Sec. 5.1.2).
    """

    model: nn.Module
    full_resolution: int
    channels: int
    patch_size: int
    block_paths: list[str]
    metric: str
    default_lr: float
    stage_identifiers: bool

    def bind_data(self, info: DatasetInfo) -> None:
        """Called once with the training set's :class:`~autoprog.data.datasets.DatasetInfo`
        before training (class names for captions, the number of classes checked against the
        source's). Raise :class:`autoprog.errors.ConfigError` when the data cannot be used."""
        ...

    def always_learnable(self, name: str) -> bool:
        """Parameters that learn at every unfreezing level even inside a frozen block."""
        ...

    def method_parameters(self, method: str, lora_rank: int) -> Callable[[str], bool] | None:
        """Set up a parameter-efficient baseline (``bitfit``, ``difffit``, ``lora``) on :attr:`model`
        and return the predicate of its learnable parameter names; ``None`` for the methods that
        learn whole blocks. Raise :class:`autoprog.errors.ConfigError` for a method the family lacks."""
        ...

    def loss(
        self,
        net: nn.Module,
        images: Tensor,
        labels: Tensor,
        resolution: int,
        stage_id: int | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Scalar training loss of one batch. ``net`` is :attr:`model` or its DDP wrapper (call it,
        not :attr:`model`, so gradients synchronise); ``images`` are the loader's uint8 ``(N, C, h, w)``
        on the CPU, to be brought to the sub-network's input ``resolution`` (they usually are at it
        already; AutoProg-One's supernet reads at the largest candidate's); ``stage_id`` is the
        current stage's identifier (``None`` without SID); all randomness (noise, timesteps,
        condition dropout) is drawn from ``generator``."""
        ...

    def probe(
        self, images: Tensor, labels: Tensor, resolution: int, stage_id: int | None, seed: int
    ) -> tuple[Tensor, ...]:
        """Fixed proxy data from full-resolution uint8 ``images`` and ``labels``, at input
        ``resolution``: ``inputs + (target,)``, every tensor with the batch as its first dimension,
        on the model's device, random parts drawn from ``seed`` only (the same for every candidate)."""
        ...

    def output(self, model: nn.Module, *inputs: Tensor) -> Tensor:
        """The output whose NTK is taken (Eq. 12-16), shape ``(N, ...)``, for ``probe(...)[:-1]``."""
        ...

    def probe_loss(self, model: nn.Module, probe: tuple[Tensor, ...]) -> Tensor:
        """The training loss on a probe batch (ZiCo's gradients, Eq. 17, and the step-time measurement)."""
        ...

    def evaluate(
        self, model: nn.Module, out: Path, stage_id: int | None, log: Callable[[str], None]
    ) -> dict[str, Any]:
        """Summary entries of the fine-tuned ``model`` (the EMA copy when there is one), at least
        :attr:`metric` (``None`` when evaluation is switched off); may write files under ``out``
        (samples, grids). ``stage_id``: the last stage's identifier, or ``None`` without SID."""
        ...

    def save(self, model: nn.Module, path: Path) -> None:
        """Write the fine-tuned ``model`` to the folder ``path`` in the family's own format."""
        ...


__all__ = ["FinetuneTask"]
