"""Refuse a pre-training run that cannot fit in memory before it trains (issue 21).

A 224 px image folder with the default ViT (patch 4) is 3,136 tokens per image; at batch 128 its
activations alone outgrow a 24 GB machine, and the kernel's out-of-memory killer ended such a run
without a word. So before training, the largest configuration of the run (the full model at full
resolution: every stage, candidate and input schedule is at most that) takes one training forward
on one image, and :func:`~autoprog.memory.saved_activation_bytes` measures what autograd keeps for
its backward. The run needs at least

    processes x (batch x activations per image + 4 x parameter bytes)

(weights, gradients and AdamW's two moments), a lower bound: temporaries, the momentum copy and
the allocator come on top. A run is refused only when even that bound exceeds the memory
available (:func:`~autoprog.memory.available_memory_bytes`), so no run that fits is refused.
``AUTOPROG_NO_MEMORY_CHECK=1`` skips the check (e.g. to lean on swap).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from autoprog.adapters.base import ModelAdapter
from autoprog.errors import ConfigError, is_out_of_memory
from autoprog.memory import available_memory_bytes, saved_activation_bytes

#: Set to 1 to skip the check.
SKIP_ENV = "AUTOPROG_NO_MEMORY_CHECK"


@dataclass(frozen=True)
class MemoryEstimate:
    """The least memory a run's training step needs, and what it is made of.

    Attributes:
        per_sample: activation bytes kept for the backward pass, per image, of the largest configuration.
        fixed: weights, gradients and AdamW's two moments of the full model (4 x its parameter bytes).
        batch: images per step and process.
        processes: processes sharing the device's memory (CPU processes on one machine).
    """

    per_sample: int
    fixed: int
    batch: int
    processes: int = 1

    @property
    def total(self) -> int:
        return self.processes * (self.fixed + self.batch * self.per_sample)

    def max_batch(self, available: int) -> int:
        """The largest batch whose estimate fits in ``available`` bytes (0: not even one image)."""
        return max(0, (available // self.processes - self.fixed) // max(1, self.per_sample))


def estimate_training_memory(
    adapter: ModelAdapter, batch_size: int, in_chans: int, device: torch.device,
    amp_dtype: torch.dtype | None = None, processes: int = 1,
) -> MemoryEstimate:  # fmt: skip
    """Measure the full model's training forward on one image on ``device`` (see the module docstring).
    The random state is left as it was: the run's own model is initialised exactly as without the check."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _estimate(adapter, batch_size, in_chans, device, amp_dtype, processes)


def _estimate(
    adapter: ModelAdapter, batch_size: int, in_chans: int, device: torch.device, amp_dtype: torch.dtype | None,
    processes: int,
) -> MemoryEstimate:  # fmt: skip
    model = adapter.create_model().to(device)
    side = adapter.full.resolution
    x = torch.zeros(1, in_chans, side, side, device=device)
    try:
        per_sample = saved_activation_bytes(model, x, amp_dtype)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise ConfigError(
            f"one image at {side}px does not fit in memory for the training forward of {_what(adapter)}; "
            f"lower --img-size{_model_hint(adapter)}"
        ) from e
    fixed = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    del model, x
    return MemoryEstimate(per_sample=per_sample, fixed=fixed, batch=batch_size, processes=processes)


def check_memory_fits(
    adapter: ModelAdapter, model_name: str, batch_size: int, in_chans: int, device: torch.device,
    amp_dtype: torch.dtype | None = None, local_processes: int = 1,
) -> MemoryEstimate | None:  # fmt: skip
    """Raise :class:`ConfigError` (one line: tokens per image, batch, the estimate, what to lower)
    when the run's training step cannot fit in the memory available; return the estimate, or
    ``None`` when the check is skipped (``AUTOPROG_NO_MEMORY_CHECK=1``, memory not readable)."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return None
    available = available_memory_bytes(device)
    if available is None:
        return None
    processes = local_processes if device.type == "cpu" else 1
    estimate = estimate_training_memory(adapter, batch_size, in_chans, device, amp_dtype, processes)
    if estimate.total > available:
        raise ConfigError(memory_message(estimate, available, adapter, model_name, device, amp_dtype))
    return estimate


def memory_message(
    estimate: MemoryEstimate, available: int, adapter: ModelAdapter, model_name: str, device: torch.device,
    amp_dtype: torch.dtype | None,
) -> str:  # fmt: skip
    """The refusal's one line."""
    where = "on the GPU" if device.type == "cuda" else "in RAM"
    procs = f" x {estimate.processes} processes" if estimate.processes > 1 else ""
    fits = estimate.max_batch(available)
    lower = f"lower --batch-size (at most {fits} fit)" if fits else "even a batch of 1 does not fit: lower"
    lower += f"{',' if fits else ''} --img-size{_model_hint(adapter)}"
    if device.type == "cuda" and amp_dtype is None:
        lower += ", or use --mixed-precision bf16"
    return (
        f"the run needs at least {_gib(estimate.total)} of memory but {_gib(available)} is available {where}: "
        f"{model_name} {_what(adapter)}, batch {estimate.batch} x {_gib(estimate.per_sample)} of activations per "
        f"image + {_gib(estimate.fixed)} of weights, gradients and AdamW state{procs}; {lower} "
        f"({SKIP_ENV}=1 skips this check)"
    )


def _what(adapter: ModelAdapter) -> str:
    side = adapter.full.resolution
    patch = getattr(adapter, "patch_size", None)
    if patch:
        return f"at {side}px is {(side // patch) ** 2:,} tokens per image (patch {patch})"
    return f"at {side}px"


def _model_hint(adapter: ModelAdapter) -> str:
    return " or raise --patch-size" if getattr(adapter, "patch_size", None) else " or --depth"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


__all__ = ["SKIP_ENV", "MemoryEstimate", "check_memory_fits", "estimate_training_memory", "memory_message"]
