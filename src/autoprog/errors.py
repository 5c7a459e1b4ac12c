"""User-facing errors: the CLI prints their message on one line and exits non-zero.

:func:`user_error_message` says which other exceptions a user causes too (a file that cannot be
written, memory that runs out) and words them; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class AutoprogError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""


class DatasetNotFoundError(AutoprogError):
    """A dataset's files are missing; the message names how to get them."""


class ConfigError(AutoprogError, ValueError):
    """An invalid configuration value (bad name, out-of-range number, mismatched schedule)."""


class CheckpointError(AutoprogError):
    """A checkpoint file cannot be loaded (missing, truncated, corrupted, not a checkpoint, or holding
    pickled objects that ``weights_only`` loading refuses); the message names the file and why."""


class NonFiniteLoss(FloatingPointError):
    """A NaN/inf training loss, raised before the step's backward (nothing trains on it); carries the
    value, the step and the learning-rate scale in force. ``pretrain`` / ``finetune`` roll back to
    the last checkpoint with a lower learning rate, or stop (``--on-nonfinite``)."""

    def __init__(self, value: float, step: int, lr_scale: float) -> None:
        super().__init__(f"non-finite loss {value} at step {step}")
        self.value, self.step, self.lr_scale = value, step, lr_scale


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def is_out_of_memory(error: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (a GPU), ``MemoryError`` (Python), or the CPU allocator's failure
    (a plain ``RuntimeError``: "DefaultCPUAllocator: can't allocate memory")."""
    import torch

    device_oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError  # torch < 2.4: cuda's
    if isinstance(error, device_oom | MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def user_error_message(error: BaseException, context: str = "") -> str | None:
    """The one-line message of an error the user's input or machine caused, ``None`` for anything else
    (a bug, which keeps its traceback).

    * :class:`AutoprogError`: its message.
    * Out of memory (:func:`is_out_of_memory`): what could not be allocated, with ``context`` (the
      configuration that ran out, e.g. ``"--model resnet50 --batch-size 128 --img-size 224"``) and
      what to lower.
    * ``OSError``: a file or folder that cannot be read or written (permission, not a folder, a full
      disk, an unreadable image): ``path: reason``.
    * BatchNorm's refusal of a single value per channel in training (``--batch-size 1`` on a
      ResNet whose last stage is 1x1 at the stage's resolution).
    """
    if isinstance(error, AutoprogError):
        return one_line(error)
    if is_out_of_memory(error):
        text = one_line(error)
        asked = re.search(r"[Tt]ried to allocate (\d+) bytes|[Tt]ried to allocate ([\d.]+ [KMGT]iB)", text)
        if asked is not None:
            size = f"{int(asked.group(1)) / 2**30:.2f} GiB" if asked.group(1) else asked.group(2)
            what = f"tried to allocate {size}{' on the GPU' if 'CUDA' in text else ''}"
        else:
            what = text.split(". ")[0]
        where = f" with {context}" if context else ""
        return f"out of memory{where} ({what}); lower --batch-size or --img-size, or use --mixed-precision bf16 on a GPU"
    if isinstance(error, ValueError) and str(error).startswith("Expected more than 1 value per channel when training"):
        where = f" ({context})" if context else ""
        return (
            f"a BatchNorm layer got one value per channel in training{where}: a batch of one on a 1x1 feature "
            "map (a ResNet's last stage at a small input); use --batch-size 2 or more, or a larger --img-size"
        )
    if isinstance(error, OSError):
        paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
        if paths and error.strerror:
            return one_line(OSError(f"{' -> '.join(paths)}: {error.strerror}"))
        return one_line(error)
    return None
