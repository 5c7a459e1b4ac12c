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
