"""Multi-process training on the engines people already run: ``torch.distributed`` + DDP.

``autoprog pretrain`` / ``finetune`` read the launcher's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), which ``torchrun`` and ``accelerate launch`` both set, so
the same command runs on one process or many. Progressive training adds three rules on top of
plain DDP:

- the model changes shape (growth) or learnable set (unfreezing) between stages, so it is wrapped
  anew after each change, over its learnable parameters only (:meth:`DistContext.wrap`);
- every decision (a search's choice) rests on numbers that differ per process (measured times), so
  the inputs of a decision are broadcast from rank 0 (:meth:`DistContext.broadcast`) and all
  processes train the same sub-network;
- metrics are reduced across processes (:meth:`DistContext.all_reduce_sum`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (``world_size == 1``: no process group, everything a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (a picklable object: a decision or its inputs)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (float64 on the CPU for gloo, on the GPU for NCCL)."""
        if not self.distributed:
            return list(values)
        device = (
            torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        )
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``model`` for the training forward: in DDP over its learnable parameters when distributed.

        Call again after every growth or unfreezing. ``find_unused_parameters``: an elastic
        supernet skips blocks (every process skips the same ones: sampling is seeded alike).
        """
        if not self.distributed or not any(p.requires_grad for p in model.parameters()):
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(
            model,
            device_ids=device_ids,
            find_unused_parameters=find_unused_parameters,
        )

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(device_type: str = "cpu") -> DistContext:
    """Join the process group a launcher set up (``torchrun``, ``accelerate launch``), if any.

    Backend: NCCL for CUDA, gloo otherwise. Single-process runs (no ``WORLD_SIZE`` > 1) get a
    context whose collectives are no-ops.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(rank, world, local)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def parameter_digest(model: nn.Module) -> str:
    """A SHA-256 of every parameter's name and bytes: equal digests mean identical parameters."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class RankLog:
    """Each process's own record of its decisions: ``OUT/ranks/rank{r}.jsonl`` (multi-process only).

    Every record (a stage start, a search) is written with a digest of the process's parameters and
    without per-process timings (keys ending in ``_time_s``), so the files of all processes are equal
    exactly when they took the same decisions and hold the same weights.
    """

    def __init__(self, out: str | os.PathLike, ctx: DistContext) -> None:
        self._file = None
        if ctx.distributed:
            folder = Path(out) / "ranks"
            folder.mkdir(parents=True, exist_ok=True)
            self._file = (folder / f"rank{ctx.rank}.jsonl").open("w")

    def write(self, record: dict[str, Any], model: nn.Module) -> None:
        if self._file is None:
            return
        same = {k: v for k, v in record.items() if not k.endswith("_time_s")}
        self._file.write(json.dumps({**same, "param_digest": parameter_digest(model)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


__all__ = ["DistContext", "RankLog", "init_distributed", "parameter_digest", "shutdown_distributed"]
