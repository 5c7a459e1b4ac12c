"""Safe, atomic checkpoints.

Why each piece is there:

* **Atomic write.** :func:`save_checkpoint` writes to a temporary file beside the target, flushes
  it to disk (``fsync``) and only then renames it over the target (``os.replace``, atomic on
  POSIX and Windows). A crash, a full disk or a kill at any moment leaves either the old complete
  checkpoint or the new complete one, never a half-written file under the real name. Without the
  ``fsync`` the rename can reach the disk before the data does, and a power cut leaves an empty or
  truncated file under the real name.
* **Safe load.** :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors and
  plain containers only. A file holding any other pickled object is refused *before* that object
  is built, because unpickling an arbitrary object can run arbitrary code.
* **Clear errors.** Every reason a file cannot be loaded (missing, empty, truncated, corrupted, not
  a checkpoint, pickled objects) becomes one :class:`~autoprog.errors.CheckpointError` whose
  one-line message names the file and the reason, so the CLI can print it without a traceback.
* **A previous copy.** ``save_checkpoint(..., keep_previous=True)`` keeps the checkpoint it replaces
  as ``<path>.prev``; :func:`load_latest_checkpoint` falls back to it (with a warning) when the
  newest file cannot be loaded, e.g. after a disk fault or a copy that was cut short.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprog.errors import CheckpointError

#: Suffix of the previous checkpoint kept by ``save_checkpoint(..., keep_previous=True)``.
PREVIOUS_SUFFIX = ".prev"


class CheckpointFallbackWarning(UserWarning):
    """:func:`load_latest_checkpoint` loaded ``<path>.prev`` because ``<path>`` could not be loaded."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where ``save_checkpoint(path, keep_previous=True)`` keeps the checkpoint it replaced."""
    path = Path(path)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, *, keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically: temp file beside it, ``fsync``, rename into place.

    Args:
        state: what to save; keep it to tensors, numbers, strings, ``None`` and lists/tuples/dicts
            of them, so that :func:`load_checkpoint` (``weights_only=True``) can read it back.
        path: the checkpoint file; its folder is created if needed.
        keep_previous: first move an existing ``path`` to ``<path>.prev`` (replacing an older
            ``.prev``), so the last good checkpoint survives if the new one is later damaged. An
            existing ``path`` that is not a complete zip archive (what ``torch.save`` writes) is not
            moved there: the older ``.prev`` is the better copy then.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The temporary file has a unique name in the same folder (same file system, so the rename is
    atomic) and is removed if writing fails; after a successful call it never remains.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name (two writers never share a temp file), created like any new file (0666 less
    # the umask, unlike tempfile.mkstemp's 0600) and only if it does not exist yet.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file() and zipfile.is_zipfile(path):
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data.

    Uses ``torch.load(weights_only=True)``, so a file that holds pickled Python objects (which
    could run code while being loaded) is refused without building them.

    Raises:
        CheckpointError: the file is missing, empty, truncated, corrupted, not a ``torch.save``
            checkpoint, holds pickled objects other than tensors and plain containers, or does not
            hold a dict. The one-line message names the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a folder, not a file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # any failure to decode is a property of the file: name it, one line
        raise CheckpointError(f"checkpoint {path}: {_why_unloadable(path, e)}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def load_latest_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load ``path``, or, if it cannot be loaded, the previous checkpoint ``<path>.prev``.

    Meant for resuming: a newest checkpoint damaged after it was written (disk fault, a copy cut
    short, or a crash between the two renames of ``keep_previous``) costs the work since the
    previous one instead of the whole run.

    Args:
        path: the newest checkpoint (as passed to ``save_checkpoint(..., keep_previous=True)``).
        map_location: as for :func:`load_checkpoint`.
        log: called with the fallback message; ``None`` issues a :class:`CheckpointFallbackWarning`.

    Raises:
        CheckpointError: neither file can be loaded; the message gives both reasons.
    """
    try:
        return load_checkpoint(path, map_location)
    except CheckpointError as newest:
        prev = previous_path(path)
        try:
            state = load_checkpoint(prev, map_location)
        except CheckpointError as older:
            raise CheckpointError(f"no loadable checkpoint: {newest}; {older}") from newest
        message = f"{newest}; loaded the previous checkpoint {prev} instead"
        if log is None:
            warnings.warn(message, CheckpointFallbackWarning, stacklevel=2)
        else:
            log(message)
        return state


def _why_unloadable(path: Path, error: Exception) -> str:
    """One line saying why ``torch.load`` failed on ``path``."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text) if "Weights only load failed" in text else None
    if refused:
        # torch's weights-only unpickler met a global (a class or function to call): name it.
        return (
            f"refused: it holds a pickled Python object ({refused.group(1)}), not only tensors and "
            "plain containers; loading it could run arbitrary code"
        )
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "the file is empty"
    if head == b"PK\x03\x04":  # a zip archive, as torch.save writes
        if not zipfile.is_zipfile(path):
            return f"truncated or corrupted ({size} bytes, the zip archive is incomplete)"
        return f"corrupted ({_first_line(text)})"
    return f"not a checkpoint written by torch.save ({size} bytes of an unknown format)"


def _first_line(text: str, limit: int = 200) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "no details")
    line = line.split(". ")[0].rstrip(".")  # the first sentence: torch's advice that follows is noise here
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so a completed rename survives a power cut (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders: its renames need no such flush
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def random_state(rng: Any = random) -> list[Any]:
    """A ``random.Random``'s (default: the ``random`` module's) state as plain lists, which load
    with ``weights_only=True`` (its native form holds a tuple the safe loader rebuilds as a list)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_random_state(state: list[Any], rng: Any = random) -> None:
    """Restore :func:`random_state`."""
    rng.setstate((state[0], tuple(state[1]), state[2]))


def global_rng_states(device: torch.device | None = None) -> dict[str, Any]:
    """The process's global RNG states, checkpoint-safe: torch's (and CUDA's on ``device``),
    Python's and NumPy's (augmentations, drop-path and timm's Mixup draw from them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_states(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore :func:`global_rng_states`."""
    torch.set_rng_state(state["torch"])
    set_random_state(state["python"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


__all__ = [
    "global_rng_states",
    "random_state",
    "set_global_rng_states",
    "set_random_state",
    "CheckpointFallbackWarning",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "save_checkpoint",
]
