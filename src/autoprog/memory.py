"""Memory: the peak per stage, the memory available, and what a training step keeps for its backward.

Peak per stage (reported as ``peak_mem_bytes`` in ``summary.json``'s ``stages``): on a GPU, the
CUDA caching allocator's peak of allocated bytes since the stage began; on the CPU, the process's
peak resident set size (``VmHWM``), reset at the stage's start through ``/proc/self/clear_refs``
where Linux allows it (otherwise the peak since the process began).

Before training, :func:`saved_activation_bytes` measures what autograd keeps for the backward pass
of one sample (each storage once, parameters excluded) and :func:`available_memory_bytes` what the
device has free, so that a run which cannot fit is refused before it starts
(:mod:`autoprog.train.memory_check`) instead of being killed by the kernel without a word.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring a new peak (a stage's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int | None:
    """The peak since :func:`reset_peak_memory` (``None`` where it cannot be read)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = None) -> int:
    """Bytes autograd keeps for the backward pass of a training forward of ``model`` on ``x``.

    The tensors saved for backward (``torch.autograd.graph.saved_tensors_hooks``), each storage
    counted once, the parameters' own storages left out: the activations a training step holds at
    its peak, with the kernels the device really runs (a fused attention saves no attention map).
    A lower bound of the step's memory beyond weights, gradients and optimizer state: temporaries
    of the forward and the backward come on top. BatchNorm layers run in eval mode, so a batch of
    one works on any map size (they save their input either way). Under ``amp_dtype`` the forward
    runs in autocast, as training does.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    autocast = (torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())  # fmt: skip
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            out = model(x)
            out.float().logsumexp(-1).sum()  # the loss saves the logits too
    finally:
        model.train(was_training)
    del out
    return sum(storages.values())


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get: free GPU memory (``torch.cuda.mem_get_info``), or on
    the CPU ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's headroom under a memory
    limit (a container's ``memory.max``); ``None`` where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):  # fmt: skip
        try:
            cap, used = Path(limit).read_text().strip(), Path(usage).read_text().strip()
            if cap != "max" and int(cap) < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
                figures.append(max(0, int(cap) - int(used)))
                break
        except (OSError, ValueError):
            continue
    return min(figures) if figures else None


__all__ = ["available_memory_bytes", "peak_memory_bytes", "reset_peak_memory", "saved_activation_bytes"]
