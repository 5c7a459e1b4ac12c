"""Reading finished runs and the numbers the report derives from them: run kinds and metrics
(``RunKind``, ``Metric``, ``metric_info``), loading ``summary.json`` and ``log.jsonl`` into ``Run``
objects (``load_run``, ``read_log``, ``run_kind``, ``run_metric``, run labels and grouping), the number
formatting every table uses (``fmt_*``, an en dash for missing values), the ratios against a reference
run, per-stage FLOPs, and the loss series of fine-tuning runs (``loss_points``, ``smooth``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoprog.errors import AutoprogError

RunKind = Literal["pretrain", "finetune"]
"""What wrote a run directory: ``autoprog pretrain`` or ``autoprog finetune``."""

KIND_NAMES: dict[RunKind, str] = {"pretrain": "pre-training", "finetune": "fine-tuning"}
"""How the page names each kind of run."""

DASH = "–"
"""Shown for a value that is missing, null or not finite."""


@dataclass(frozen=True)
class Metric:
    """How the page shows a fine-tuning run's headline metric (``summary["metric"]``).

    Attributes:
        key: The summary key holding the value (``fid``, ``top1``, ...).
        name: What the page calls it (``FID``, ``top-1 (%)``).
        spec: The format spec of the value.
        higher_is_better: True (top-1), False (FID), or None when not known.
    """

    key: str
    name: str
    spec: str
    higher_is_better: bool | None

    @property
    def label(self) -> str:
        """The column header: the name and the direction, e.g. ``FID ↓``."""
        return self.name + {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]

    @property
    def axis_label(self) -> str:
        """The plot axis label, e.g. ``FID (lower is better)``."""
        return (
            self.name
            + {True: " (higher is better)", False: " (lower is better)", None: ""}[self.higher_is_better]
        )


_METRICS = {
    "fid": Metric("fid", "FID", ".2f", False),
    "top1": Metric("top1", "top-1 (%)", ".2f", True),
    "dino": Metric("dino", "DINO", ".3f", True),
    "clip_t": Metric("clip_t", "CLIP-T", ".3f", True),
}


def metric_info(key: str) -> Metric:
    """The display rules of the metric stored under ``key`` (unknown keys: ``.4g``, no direction)."""
    return _METRICS.get(key, Metric(key, key, ".4g", None))


# ----------------------------------------------------------------------------------------- loading


def run_kind(summary: Mapping[str, Any]) -> RunKind:
    """Whether a ``summary.json`` was written by ``autoprog finetune`` or ``autoprog pretrain``.

    Fine-tuning summaries count steps (no ``epochs``) and carry their metric's name (``metric``; older
    ones only a ``fid`` value) and a schedule of unfreezing levels; anything else is pre-training.
    """
    if "epochs" in summary:
        return "pretrain"
    schedule = _list_of_dicts(summary.get("schedule"))
    if "metric" in summary or "fid" in summary or any("level" in s for s in schedule):
        return "finetune"
    return "pretrain"


def run_metric(summary: Mapping[str, Any]) -> str | None:
    """The summary key of a fine-tuning run's headline metric.

    ``summary["metric"]`` when present; older runs lack it and are ``fid`` runs when they hold a
    ``fid`` key, ``top1`` runs when they hold a ``top1`` key; None otherwise.
    """
    metric = summary.get("metric")
    if isinstance(metric, str) and metric:
        return metric
    for key in ("fid", "top1"):
        if key in summary:
            return key
    return None


@dataclass(frozen=True)
class Run:
    """One finished run as the report sees it.

    Attributes:
        label: The name shown for the run (its directory's name).
        path: The run directory.
        summary: The parsed ``summary.json``.
        epochs: The ``epoch`` records of ``log.jsonl``, in order (pre-training runs).
        steps: The ``step`` records of ``log.jsonl``, in order (fine-tuning runs only: a
            pre-training run's are not kept, the page does not show them).
    """

    label: str
    path: Path
    summary: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kind(self) -> RunKind:
        """``pretrain`` or ``finetune`` (see ``run_kind``)."""
        return run_kind(self.summary)


def load_run(run_dir: Path, label: str | None = None) -> Run:
    """Read a run directory's ``summary.json`` and the records of its ``log.jsonl`` the page uses.

    Args:
        run_dir: The run directory.
        label: The name to show (default: the directory's name).

    Returns:
        The run.

    Raises:
        AutoprogError: The directory has no readable ``summary.json``, or ``log.jsonl`` is not JSON lines.
    """
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise AutoprogError(
            f"{run_dir}: no summary.json (not a finished `autoprog pretrain` or `autoprog finetune` run directory)"
        )
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AutoprogError(f"{summary_path}: cannot read: {_one_line(e)}") from e
    if not isinstance(summary, dict):
        raise AutoprogError(f"{summary_path}: not a JSON object")
    keep_steps = run_kind(summary) == "finetune"
    epochs: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    log_path = run_dir / "log.jsonl"
    if log_path.is_file():
        for record in read_log(log_path):
            if record.get("event") == "epoch":
                epochs.append(record)
            elif keep_steps and record.get("event") == "step":
                steps.append(record)
    return Run(label or _dir_name(run_dir), run_dir, summary, epochs, steps)


def read_log(log_path: Path) -> Iterator[dict[str, Any]]:
    """The records (JSON objects) of a ``log.jsonl``, in order; blank lines and non-objects are skipped.

    Args:
        log_path: The file.

    Yields:
        Each record.

    Raises:
        AutoprogError: The file cannot be read, or a line is not JSON.
    """
    try:
        with log_path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AutoprogError(f"{log_path}:{n}: not JSON: {e.msg}") from e
                if isinstance(record, dict):
                    yield record
    except (OSError, UnicodeDecodeError) as e:
        raise AutoprogError(f"{log_path}: cannot read: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _dir_name(path: Path) -> str:
    return path.name or path.resolve().name or str(path)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Directory names; names shared by several runs get their parent's name, then a counter."""
    names = [_dir_name(p) for p in run_dirs]
    counts = Counter(names)
    labels = [
        n if counts[n] == 1 else f"{_dir_name(p.resolve().parent)}/{n}"
        for p, n in zip(run_dirs, names, strict=True)
    ]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def _groups(runs: Sequence[Run]) -> list[tuple[RunKind, list[Run]]]:
    """The runs by kind, kinds in order of first appearance, runs in the given order."""
    groups: dict[RunKind, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.kind, []).append(run)
    return list(groups.items())


# ------------------------------------------------------------------------------------- formatting


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, null, NaN, infinite, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _fmt(value: Any, spec: str) -> str:
    x = _number(value)
    if x is None:
        return value if isinstance(value, str) and value else DASH
    return format(x, spec)


def fmt_top1(value: Any) -> str:
    """Top-1 accuracy (%) with 2 decimals, e.g. ``87.25``."""
    return _fmt(value, ".2f")


def fmt_seconds(value: Any) -> str:
    """Seconds with 1 decimal, e.g. ``123.4``."""
    return _fmt(value, ".1f")


def fmt_flops(value: Any) -> str:
    """FLOPs in scientific notation with 3 significant digits, e.g. ``1.23e+12``."""
    return _fmt(value, ".2e")


def fmt_ratio(value: Any) -> str:
    """A ratio with 3 decimals, e.g. ``0.543``."""
    return _fmt(value, ".3f")


def fmt_metric(key: str, value: Any) -> str:
    """A fine-tuning metric's value as its column shows it (FID and top-1: 2 decimals)."""
    return _fmt(value, metric_info(key).spec)


def fmt_mib(value: Any) -> str:
    """Bytes as MiB with 1 decimal, e.g. ``926.0``."""
    x = _number(value)
    return DASH if x is None else format(x / 2**20, ".1f")


def _fmt_int(value: Any) -> str:
    x = _number(value)
    if x is not None and x.is_integer():
        return str(int(x))
    return _fmt(value, "g")


def _fmt_text(value: Any) -> str:
    if value is None or value == "":
        return DASH
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------- numbers


def reference_run(runs: Sequence[Run]) -> Run | None:
    """The run ratios are taken against: the first whose method is ``full``, or None.

    The report calls it once per kind of run, so that a fine-tuning run is compared with a ``full``
    fine-tuning run and a pre-training run with a ``full`` pre-training run.
    """
    return next((r for r in runs if r.summary.get("method") == "full"), None)


def time_ratio(run: Run, reference: Run | None) -> float | None:
    """``wall_clock_s`` of ``run`` over that of ``reference`` (None when not computable)."""
    if reference is None:
        return None
    t, t_full = _number(run.summary.get("wall_clock_s")), _number(reference.summary.get("wall_clock_s"))
    if t is None or t_full is None or t_full <= 0:
        return None
    return t / t_full


def realised_over_theoretical(run: Run, reference: Run | None) -> float | None:
    """Realised over theoretical speed-up: ``(t_full / t_run) / (full_flops / train_flops)``.

    ``full_flops`` and ``train_flops`` are the run's own; ``t_full`` is the reference run's wall-clock.
    1.0 means the FLOPs the run saved turned into the same saving of wall-clock time.
    """
    if reference is None:
        return None
    values = _positive(reference.summary.get("wall_clock_s"), run.summary.get("wall_clock_s"),
                       run.summary.get("full_flops"), run.summary.get("train_flops"))  # fmt: skip
    if values is None:
        return None
    t_full, t, full, train = values
    return (t_full / t) / (full / train)


def _positive(*values: Any) -> list[float] | None:
    """The values as floats if every one is a finite number > 0, else None."""
    numbers = [_number(v) for v in values]
    return (
        [x for x in numbers if x is not None and x > 0]
        if all(x is not None and x > 0 for x in numbers)
        else None
    )


def _flops_ratio(summary: Mapping[str, Any]) -> float | None:
    ratio = _number(summary.get("flops_ratio"))
    if ratio is not None:
        return ratio
    train, full = _number(summary.get("train_flops")), _number(summary.get("full_flops"))
    return train / full if train is not None and full else None


def stage_flops(stages: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """Per-stage FLOPs: differences of consecutive ``train_flops_cumulative`` (the first from 0)."""
    out: list[float | None] = []
    previous: float | None = 0.0
    for stage in stages:
        cumulative = _number(stage.get("train_flops_cumulative"))
        out.append(None if cumulative is None or previous is None else cumulative - previous)
        previous = cumulative
    return out


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def smooth(values: Sequence[float], span: float) -> list[float]:
    """Exponential moving average with ``alpha = 2 / (span + 1)``, debiased at the start (as Adam's
    moments and TensorBoard's smoothing are), so the first point is the first value.

    Args:
        values: The series.
        span: The averaging span in points (1: no smoothing).

    Returns:
        The smoothed series, as long as ``values``.
    """
    beta = 1.0 - 2.0 / (max(span, 1.0) + 1.0)
    out, acc = [], 0.0
    for t, v in enumerate(values, 1):
        acc = beta * acc + (1.0 - beta) * v
        out.append(acc / (1.0 - beta**t))
    return out


def loss_points(run: Run) -> list[tuple[int, float]]:
    """``(step, loss)`` of a run's ``step`` records, by step; a step logged twice keeps its last
    record (a resumed run appends what it trained again); non-finite losses are left out."""
    by_step: dict[int, float | None] = {}
    for record in run.steps:
        step = _number(record.get("step"))
        if step is not None:
            by_step[int(step)] = _number(record.get("loss"))
    return [(step, loss) for step, loss in sorted(by_step.items()) if loss is not None]
