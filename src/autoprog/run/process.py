"""This process's part of a run: its device, threads and seed, the mixed-precision dtype, and the
machine facts recorded with every result (``summary.json``'s ``environment``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

import autoprog
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError


def device_type(requested: str | None) -> str:
    """``"cuda"`` or ``"cpu"``: the process group's device kind for ``--device`` (``None``: CUDA when
    there is a GPU)."""
    on_cuda = (requested or "").startswith("cuda") or (not requested and torch.cuda.is_available())
    return "cuda" if on_cuda else "cpu"


def select_device(requested: str | None, ctx: DistContext) -> torch.device:
    """``--device``, else this process's GPU (``LOCAL_RANK``) when there is one, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def setup_process(threads: int | None, seed: int, requested: str | None, ctx: DistContext) -> torch.device:
    """Set torch's threads (``--threads``, when given) and seed; return the device to train on."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return select_device(requested, ctx)


def mixed_precision_dtype(setting: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``no`` / ``bf16`` / ``fp16`` (``None``: read ``ACCELERATE_MIXED_PRECISION``,
    which ``accelerate launch --mixed_precision`` sets)."""
    value = (setting or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if value not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed precision must be no, bf16 or fp16, got {value!r}")
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[value]


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 training's gradient scaler (checkpointed with the run), ``None`` for bf16 and fp32."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Backward and one optimizer step; with fp16's ``scaler``, scaled gradients and steps skipped
    on overflow. Gradients must have been zeroed."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def environment(device: torch.device) -> dict[str, Any]:
    """Machine facts recorded with every result."""
    env: dict[str, Any] = {
        "autoprog": autoprog.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


__all__ = ["backward_and_step", "device_type", "environment", "grad_scaler", "mixed_precision_dtype", "select_device", "setup_process"]
