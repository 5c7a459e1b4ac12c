"""TensorBoard logging of a run's records (``--tensorboard``): ``log.jsonl`` records in, event files out.

``autoprog pretrain`` and ``autoprog finetune`` describe a run as a stream of JSON records (the lines
of ``log.jsonl``); :class:`TensorBoardLog` turns each record into TensorBoard scalars and texts, so the
same sink serves a live run (the trainer hands it each record as it writes it) and a finished one
(``autoprog report --tensorboard DIR`` replays its ``log.jsonl``). Tags (namespaced, as
``growth/depth`` or ``search/score`` elsewhere in the library):

* ``step`` records: ``train/loss`` at ``step`` and ``train/lr`` when the record has ``lr``. A
  pre-training step outside the step budget (``in_budget: false``: AutoProg-One's supernet epochs
  without weight recycling, which do not advance the step counter) goes to ``search/supernet_loss``
  instead; fine-tuning's supernet steps count as training steps and stay in ``train/loss``.
* ``epoch`` records (pre-training): ``val/top1``, ``train/loss_epoch``, ``epoch/wall_clock_s``,
  ``epoch/train_flops``, and ``epoch/lr``, ``epoch/resolution``, ``epoch/depth`` (from the record,
  else the last ``step`` / ``stage`` record before it), at the record's global ``step`` when it has
  one, else at its ``epoch`` index.
* ``stage`` records: ``stage/index``, ``stage/resolution``, ``stage/level`` (fine-tuning) or
  ``stage/depth`` (pre-training), ``stage/trainable_params`` (fine-tuning) or ``stage/params``, at
  ``step``.
* ``search`` records: ``search/time_s`` at the search's ``start_step`` (else the last step seen), and
  a markdown text ``search/chosen``: the chosen sub-network and a table of the candidates' scores.
* ``regularization`` records: ``regularization/<name>`` for each number; ``nonfinite`` and
  ``resume`` records: a text under ``events/<event>`` (and ``train/lr_scale`` when given).

Other records are ignored. Example::

    from autoprog.tensorboard import TensorBoardLog

    with TensorBoardLog("runs/tb/ap0") as tb:    # then: tensorboard --logdir runs/tb
        tb.write({"event": "step", "step": 0, "stage": 0, "loss": 1.27})

Needs the ``tensorboard`` package (``pip install 'autoprog[tensorboard]'``); writing goes through
``torch.utils.tensorboard.SummaryWriter``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from autoprog.errors import ConfigError

EVENT_FILE_PREFIX = "events.out.tfevents."
"""How TensorBoard's event files are named (``SummaryWriter`` appends time, host and process)."""

MISSING_MESSAGE = "--tensorboard needs the tensorboard package: pip install 'autoprog[tensorboard]'"
"""The message of the ``ConfigError`` raised when the ``tensorboard`` package is not installed."""

_CANDIDATE_SCORES = ("steps", "loss", "runtime_s", "time", "score", "log_ntk", "zico", "total")
"""Numbers of a search candidate shown in the ``search/chosen`` text, when the record has them."""


def require_tensorboard() -> Callable[..., Any]:
    """``torch.utils.tensorboard.SummaryWriter``, or a ``ConfigError`` when tensorboard is missing.

    Returns:
        The ``SummaryWriter`` class.

    Raises:
        ConfigError: The ``tensorboard`` package cannot be imported (message: ``MISSING_MESSAGE``).
    """
    try:
        # Imported first: a torch.utils.tensorboard imported earlier must not hide its absence.
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(MISSING_MESSAGE) from e
    return SummaryWriter


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if not _is_number(value):
        return "–" if value is None else str(value)
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


class TensorBoardLog:
    """A sink of run records that writes TensorBoard event files into ``log_dir``.

    Args:
        log_dir: The folder of this run's event files (created if needed); point
            ``tensorboard --logdir`` at it or at its parent.

    Raises:
        ConfigError: The ``tensorboard`` package is not installed (``MISSING_MESSAGE``).
    """

    def __init__(self, log_dir: str | Path) -> None:
        writer_class = require_tensorboard()
        self.log_dir = Path(log_dir)
        self._writer = writer_class(log_dir=str(self.log_dir), flush_secs=30)
        self._step = 0  # the last global step seen: where records without one are placed
        self._lr: float | None = None  # the last step record's learning rate
        self._config: dict[str, Any] = {}  # the current stage's resolution and depth (pre-training)
        self._closed = False
        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "step": self._on_step,
            "epoch": self._on_epoch,
            "stage": self._on_stage,
            "search": self._on_search,
            "regularization": self._on_regularization,
            "nonfinite": self._on_note,
            "resume": self._on_note,
        }

    def write(self, record: Mapping[str, Any]) -> None:
        """Turn one record (a ``log.jsonl`` line, parsed) into scalars and texts.

        Records of other events, and values that are not numbers, are skipped.

        Args:
            record: The record, with its ``event`` key.

        Raises:
            ValueError: The sink is closed.
        """
        if self._closed:
            raise ValueError(f"TensorBoardLog({self.log_dir}) is closed")
        handler = self._handlers.get(record.get("event"))
        if handler is not None:
            handler(record)

    def close(self) -> None:
        """Flush the event file and close it (a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._writer.flush()
            self._writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- events

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if _is_number(value):
            self._writer.add_scalar(tag, float(value), global_step=step)

    def _step_of(self, record: Mapping[str, Any], key: str = "step") -> int:
        value = record.get(key)
        if _is_number(value) and math.isfinite(value):
            return int(value)
        return self._step

    def _on_step(self, record: Mapping[str, Any]) -> None:
        step = self._step_of(record)
        self._step = step
        in_budget = record.get("in_budget", True) is not False
        self._scalar("train/loss" if in_budget else "search/supernet_loss", record.get("loss"), step)
        if _is_number(record.get("lr")):
            self._lr = float(record["lr"])
            if in_budget:
                self._scalar("train/lr", self._lr, step)
        for key in ("resolution", "depth"):
            if _is_number(record.get(key)) and in_budget and not record.get("supernet"):
                self._config[key] = record[key]

    def _on_epoch(self, record: Mapping[str, Any]) -> None:
        has_step = _is_number(record.get("step"))
        x = self._step_of(record) if has_step else self._step_of(record, "epoch")
        if has_step:
            self._step = x
        self._scalar("val/top1", record.get("val_top1"), x)
        self._scalar("train/loss_epoch", record.get("train_loss"), x)
        self._scalar("epoch/wall_clock_s", record.get("wall_clock_s"), x)
        self._scalar("epoch/train_flops", record.get("train_flops"), x)
        self._scalar("epoch/lr", record.get("lr", self._lr), x)
        for key in ("resolution", "depth"):
            self._scalar(f"epoch/{key}", record.get(key, self._config.get(key)), x)

    def _on_stage(self, record: Mapping[str, Any]) -> None:
        step = self._step_of(record)
        self._step = step
        self._scalar("stage/index", record.get("stage"), step)
        for key in ("resolution", "depth", "level", "trainable_params", "params"):
            self._scalar(f"stage/{key}", record.get(key), step)
        for key in ("resolution", "depth"):
            if _is_number(record.get(key)):
                self._config[key] = record[key]

    def _on_search(self, record: Mapping[str, Any]) -> None:
        step = self._step_of(record, "start_step")
        self._scalar("search/time_s", record.get("search_time_s"), step)
        self._writer.add_text("search/chosen", _search_text(record), global_step=step)

    def _on_regularization(self, record: Mapping[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("event", "stage"):
                self._scalar(f"regularization/{key}", value, self._step)

    def _on_note(self, record: Mapping[str, Any]) -> None:
        step = self._step_of(record)
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k != "event")
        self._writer.add_text(f"events/{record['event']}", text, global_step=step)
        self._scalar("train/lr_scale", record.get("lr_scale"), step)


def _search_text(record: Mapping[str, Any]) -> str:
    """A search record as markdown: what was chosen, then a table of the candidates (chosen in bold)."""
    chosen = record.get("chosen") if isinstance(record.get("chosen"), dict) else {}
    unit = "level" if "level" in chosen else "depth"
    candidates = [c for c in record.get("candidates") or [] if isinstance(c, dict)]
    if record.get("search") == "zero-shot" or "weights" in record:
        method = "AutoProg-Zero (zero-shot)"
    else:
        method = "AutoProg-One (supernet)"
    lines = [
        f"stage {_fmt(record.get('stage'))}: chose {_fmt(chosen.get('resolution'))}px, {unit} "
        f"{_fmt(chosen.get(unit))} of {len(candidates)} candidates by {method} in "
        f"{_fmt(record.get('search_time_s'))} s",
    ]
    scores = [k for k in _CANDIDATE_SCORES if any(k in c for c in candidates)]
    if candidates:
        header = ["resolution", unit, *scores]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for c in candidates:
            cells = [_fmt(c.get(k)) for k in header]
            if c.get("resolution") == chosen.get("resolution") and c.get(unit) == chosen.get(unit):
                cells = [f"**{cell}**" for cell in cells]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
