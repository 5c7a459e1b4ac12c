"""The run's output folder (``--out``): made before any work, removed again if the start fails.

``autoprog pretrain`` / ``finetune`` create ``--out`` (and its missing parents) and write a test
file in it before anything is loaded, so a folder that cannot be written (``/proc/...``, below a
file, read-only) is one line at once rather than a traceback after the data and model are loaded.
A run that then fails leaves nothing behind: the folders it created are removed while they hold
no file; a folder that existed before is left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from autoprog.errors import ConfigError, one_line


def make_run_dir(out: str | os.PathLike[str]) -> Path | None:
    """Create ``out`` and check it can be written; return the topmost folder this call created
    (``out`` or one of its parents), or ``None`` when ``out`` existed.

    Raises:
        ConfigError: the folder cannot be created or written (the system's reason in the message).
    """
    path = Path(out)
    created = None
    try:
        for folder in (path, *path.parents):
            if folder.exists():
                break
            created = folder
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".autoprog-write-test-")
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        remove_if_empty(created)
        raise ConfigError(
            f"--out {out} cannot be created or written ({getattr(e, 'strerror', None) or one_line(e)}); "
            "choose a folder you can write to"
        ) from None
    return created


def remove_if_empty(folder: str | os.PathLike[str] | None) -> bool:
    """Remove ``folder`` and its sub-folders if none of them holds a file; return whether it went."""
    try:
        if folder is None or not Path(folder).is_dir():
            return False
    except (OSError, ValueError):
        return False
    tree = list(os.walk(folder, topdown=False))
    if any(files for _, _, files in tree):
        return False
    try:
        for root, _, _ in tree:  # deepest first
            os.rmdir(root)
    except OSError:  # another process wrote into it meanwhile
        return False
    return True
