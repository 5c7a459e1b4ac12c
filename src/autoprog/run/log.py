"""Where a run's records and messages go.

A loop describes its run as a stream of JSON records (``{"event": "step", ...}``, ``"epoch"``,
``"stage"``, ``"search"``, ``"resume"``, ``"nonfinite"``, ...) and hands each one to
:meth:`RunLog.write`, which sends it to every sink:

* ``OUT/log.jsonl`` (rank 0): one line per record, flushed at once, so a killed run loses no
  record. A resumed run cuts the file back to the offset its checkpoint recorded
  (:meth:`RunLog.offset` at save time): what was logged after the checkpoint is trained, and
  logged, again.
* TensorBoard (``--tensorboard DIR``, rank 0): :class:`~autoprog.tensorboard.TensorBoardLog`.
* ``OUT/ranks/rank{r}.jsonl`` (multi-process runs, every process): the ``stage`` and ``search``
  records with a digest of the process's parameters (:class:`~autoprog.distributed.RankLog`).

Console messages are one line each (:func:`console`; rank 0 only, see
:func:`autoprog.run.job.run_job`); the progress bar (:func:`progress_bar`) shows on a terminal
unless ``--progress off``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from autoprog.distributed import DistContext, RankLog

#: Records also written to the per-rank logs, with a parameter digest: the run's decisions.
DECISION_EVENTS = ("stage", "search")


def console(message: str) -> None:
    """The default message sink: one line on stdout, flushed."""
    print(message, flush=True)


def quiet(message: str) -> None:
    """The message sink of processes other than rank 0."""


class RunLog:
    """The sinks of one attempt's records (see the module docstring).

    Args:
        out: the run's folder.
        ctx: this process's place in the job; only rank 0 writes ``log.jsonl`` and TensorBoard.
        resume_offset: resuming: the byte offset of ``log.jsonl`` at the checkpoint (the file is
            cut back to it); ``None``: a new run (the file is started afresh).
        tensorboard: the TensorBoard folder (``--tensorboard``), or ``None``.
        model: the model whose parameter digest the per-rank logs record (called at each decision:
            the model may have been replaced since).
        log: where to say that ``log.jsonl`` is shorter than at the checkpoint (then appended to).
    """

    def __init__(
        self,
        out: str | Path,
        ctx: DistContext,
        *,
        resume_offset: int | None = None,
        tensorboard: str | None = None,
        model: Callable[[], nn.Module] | None = None,
        log: Callable[[str], None] = console,
    ) -> None:
        self._file = _open_log(Path(out) / "log.jsonl", resume_offset, log) if ctx.is_main else None
        self._ranks = RankLog(out, ctx)
        self._tb = open_tensorboard(tensorboard) if ctx.is_main else None
        self._model = model

    def write(self, record: dict[str, Any]) -> None:
        """Send ``record`` to every sink (``log.jsonl`` is flushed at once)."""
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            self._tb.write(record)
        if record["event"] in DECISION_EVENTS and self._model is not None:
            self._ranks.write(record, self._model())

    def offset(self) -> int | None:
        """The byte offset of ``log.jsonl`` after the records written so far (a checkpoint keeps it);
        ``None`` on processes that do not write it."""
        if self._file is None:
            return None
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        self._ranks.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _open_log(path: Path, resume_offset: int | None, log: Callable[[str], None]) -> Any:
    if resume_offset is None or not path.exists():
        return path.open("w")
    if path.stat().st_size < resume_offset:
        log(f"  {path} is shorter than at the checkpoint: appending to it")
        return path.open("a")
    f = path.open("r+")
    f.seek(resume_offset)
    f.truncate()  # drop what was logged after the checkpoint: it is trained again
    return f


def append_record(out: str | Path, ctx: DistContext, record: dict[str, Any]) -> None:
    """Append one record to ``OUT/log.jsonl`` after the attempt's :class:`RunLog` was closed (rank 0)."""
    if ctx.is_main:
        with (Path(out) / "log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_records(out: str | Path, event: str) -> list[dict[str, Any]]:
    """The ``event`` records of ``OUT/log.jsonl`` in order (``[]`` when there is no log), e.g. the
    ``"epoch"`` records a validation curve is drawn from; a resumed run's file holds each epoch once."""
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if r.get("event") == event]


def open_tensorboard(log_dir: str | None) -> Any:
    """The run's :class:`~autoprog.tensorboard.TensorBoardLog` (``--tensorboard DIR``), or ``None``."""
    if not log_dir:
        return None
    from autoprog.tensorboard import TensorBoardLog

    return TensorBoardLog(log_dir)


def show_progress(setting: bool | None) -> bool:
    """Whether to draw a progress bar: ``--progress on`` / ``off``, else (``None``) on a terminal."""
    return setting is True or (setting is None and sys.stderr.isatty())


def progress_bar(iterable: Iterable[Any], *, show: bool, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` that leaves no line behind (``disable`` when not ``show``)."""
    return tqdm(iterable, disable=not show, leave=False, **kwargs)


__all__ = [
    "DECISION_EVENTS",
    "RunLog",
    "append_record",
    "console",
    "open_tensorboard",
    "progress_bar",
    "quiet",
    "show_progress",
]
