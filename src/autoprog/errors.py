"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


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
