"""Peak memory per stage (reported as ``peak_mem_bytes`` in ``summary.json``'s ``stages``).

On a GPU: the CUDA caching allocator's peak of allocated bytes since the stage began. On the CPU:
the process's peak resident set size (``VmHWM``), reset at the stage's start through
``/proc/self/clear_refs`` where Linux allows it (otherwise the peak since the process began).
"""

from __future__ import annotations

from pathlib import Path

import torch


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


__all__ = ["peak_memory_bytes", "reset_peak_memory"]
