"""``autoprog report RUN_DIR [RUN_DIR ...] --out DIR``: compare finished runs on one page.

Reads each run directory's ``summary.json`` and ``log.jsonl``, as written by ``autoprog pretrain``
or ``autoprog finetune``, and writes into ``--out``:

* ``report.html``: self-contained (the plots are embedded as base64 PNG data URIs);
* ``report.md``: the same content, linking the PNG files;
* for pre-training runs: ``accuracy_vs_time.png``, ``accuracy_vs_flops.png`` (validation top-1 per
  epoch and the final test top-1, a star, against training wall-clock and training FLOPs),
  ``schedule.png`` (each run's stages as bars over epochs, annotated with resolution and depth) and
  ``stage_cost.png`` (wall-clock and FLOPs of every stage, grouped by run);
* for fine-tuning runs: ``quality_vs_time.png``, ``quality_vs_flops.png`` (the run's final metric,
  FID or top-1, one point per run, against wall-clock and FLOPs), ``loss_vs_steps.png`` (the
  training loss of the ``step`` records, smoothed, with the stage boundaries), ``schedule.png``
  (stages as bars over steps, annotated with resolution and unfreezing level, like the paper's
  Tab. XXI) and ``stage_cost.png``.

A run is a fine-tuning run when its summary has no ``epochs`` but a ``metric`` or ``fid`` key or a
schedule over steps with unfreezing levels; otherwise it is a pre-training run. A report mixing both
kinds keeps them apart: one summary table and one set of plots per kind (the plot files then carry a
``pretrain_`` or ``finetune_`` prefix), and ratios are taken per kind, against the first run of that
kind whose method is ``full``, when there is one. Every string read from the files is HTML-escaped;
missing, null or non-finite numbers show as an en dash.

``--tensorboard DIR`` also replays each run's ``log.jsonl`` into TensorBoard event files under
``DIR/<run label>/`` (see :mod:`autoprog.tensorboard`).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autoprog.errors import AutoprogError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RunKind = Literal["pretrain", "finetune"]
"""What wrote a run directory: ``autoprog pretrain`` or ``autoprog finetune``."""

KIND_NAMES: dict[RunKind, str] = {"pretrain": "pre-training", "finetune": "fine-tuning"}
"""How the page names each kind of run."""

DASH = "–"
"""Shown for a value that is missing, null or not finite."""

CHOSEN_MARK = "✓"
"""Shown in the ``chosen`` column of a search table for the candidate the search picked."""

PLOT_FILES = ("accuracy_vs_time.png", "accuracy_vs_flops.png", "schedule.png", "stage_cost.png")
"""The PNG files ``write_report`` writes for pre-training runs, in the order the page shows them."""

FINETUNE_PLOT_FILES = (
    "quality_vs_time.png",
    "quality_vs_flops.png",
    "loss_vs_steps.png",
    "schedule.png",
    "stage_cost.png",
)
"""The PNG files ``write_report`` writes for fine-tuning runs, in the order the page shows them."""

_PLOT_CAPTIONS: dict[RunKind, dict[str, str]] = {
    "pretrain": {
        "accuracy_vs_time.png": "Top-1 against training wall-clock: validation per epoch (line), final test (star).",
        "accuracy_vs_flops.png": "Top-1 against training FLOPs: validation per epoch (line), final test (star).",
        "schedule.png": "Growth schedules: each run's stages over epochs with resolution (px) and depth (d).",
        "stage_cost.png": "Wall-clock and FLOPs spent in each stage, per run.",
    },
    "finetune": {
        "quality_vs_time.png": "Final metric (FID: lower is better; top-1: higher is better) against training "
        "wall-clock, one point per run.",
        "quality_vs_flops.png": "Final metric (FID: lower is better; top-1: higher is better) against training "
        "FLOPs, one point per run.",
        "loss_vs_steps.png": "Training loss per step (thin) and smoothed (thick); dashed lines: stage boundaries; "
        "shaded: AutoProg-One's supernet steps.",
        "schedule.png": "Unfreezing schedules: each run's stages over steps with resolution (px) and unfreezing "
        "level (L).",
        "stage_cost.png": "Wall-clock and FLOPs spent in each stage, per run.",
    },
}
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
    "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
    "tr.chosen td{font-weight:bold;background:#eaf6ea}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}"
)


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


# --------------------------------------------------------------------------------------------- CLI


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand on an argparse subparsers object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "report",
        help="compare finished runs: an HTML page and a markdown file with tables and plots",
        description="Compare finished `autoprog pretrain` and `autoprog finetune` runs: report.html "
        "(self-contained), report.md and PNG plots.",
    )
    p.add_argument("runs", nargs="+", help="run directories (each with summary.json and log.jsonl)")
    p.add_argument(
        "--out",
        default="report",
        help="folder for report.html, report.md and the plots (default: %(default)s)",
    )
    p.add_argument("--title", default=None, help="page title (default: the runs' names)")
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also replay each run's log.jsonl into TensorBoard event files under DIR/<run name>/ "
        "(needs the tensorboard package)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_report(args: argparse.Namespace) -> Path:
    """Run the ``report`` subcommand.

    Args:
        args: Parsed arguments with ``runs``, ``out``, ``title`` and ``tensorboard``.

    Returns:
        The path of the written ``report.html``.

    Raises:
        AutoprogError: See ``write_report`` and ``replay_tensorboard``.
    """
    run_dirs = [Path(r) for r in args.runs]
    tensorboard_dir = getattr(args, "tensorboard", None)
    if tensorboard_dir is not None:  # refuse before writing anything
        _check_tensorboard_targets(run_dirs, Path(tensorboard_dir))
    path = write_report(run_dirs, Path(args.out), getattr(args, "title", None))
    print(f"autoprog report: {len(run_dirs)} run(s) -> {path}")
    if tensorboard_dir is not None:
        written = replay_tensorboard(run_dirs, Path(tensorboard_dir))
        print(f"autoprog report: TensorBoard event files -> {', '.join(str(p) for p in written)}")
    return path


def _check_tensorboard_targets(run_dirs: Sequence[Path], root: Path) -> None:
    """Refuse before writing: no tensorboard package, a run without ``log.jsonl``, or a target folder
    that already holds event files (a replay would add a second copy of every point)."""
    from autoprog.tensorboard import EVENT_FILE_PREFIX, require_tensorboard

    require_tensorboard()
    for run_dir, label in zip(run_dirs, _labels(run_dirs), strict=True):
        if not (run_dir / "log.jsonl").is_file():
            raise AutoprogError(f"{run_dir}: no log.jsonl to replay into TensorBoard")
        target = root / label
        if target.is_dir() and any(p.name.startswith(EVENT_FILE_PREFIX) for p in target.iterdir()):
            raise AutoprogError(
                f"{target} already holds TensorBoard event files: delete them or choose another --tensorboard"
            )


def replay_tensorboard(run_dirs: Sequence[Path], root: Path) -> list[Path]:
    """Replay each run's ``log.jsonl`` into TensorBoard event files under ``root/<run label>/``.

    Args:
        run_dirs: Finished run directories.
        root: The folder to give to ``tensorboard --logdir``.

    Returns:
        The folders written, one per run, in order.

    Raises:
        AutoprogError: The tensorboard package is missing (a ``ConfigError``), a folder already holds
            event files, or a ``log.jsonl`` is missing or not JSON lines.
    """
    from autoprog.tensorboard import TensorBoardLog

    run_dirs = [Path(p) for p in run_dirs]
    _check_tensorboard_targets(run_dirs, root)
    written = []
    for run_dir, label in zip(run_dirs, _labels(run_dirs), strict=True):
        target = root / label
        sink = TensorBoardLog(target)
        try:
            for record in read_log(run_dir / "log.jsonl"):
                sink.write(record)
        finally:
            sink.close()
        written.append(target)
    return written


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


# ----------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    marked: frozenset[int] = frozenset()  # rows to highlight (the chosen candidate)


@dataclass(frozen=True)
class _Plot:
    filename: str
    caption: str


_Block = _Heading | _Paragraph | _Table | _Plot


def _ratio_cells(run: Run, reference: Run | None) -> tuple[str, ...]:
    s = run.summary
    return (
        fmt_seconds(s.get("wall_clock_s")), fmt_flops(s.get("train_flops")), fmt_flops(s.get("full_flops")),
        fmt_ratio(_flops_ratio(s)), fmt_ratio(time_ratio(run, reference)),
        fmt_ratio(realised_over_theoretical(run, reference)),
    )  # fmt: skip


_RATIO_HEADERS = (
    "wall-clock (s)",
    "train FLOPs",
    "full FLOPs",
    "FLOPs ratio",
    "time ratio",
    "realised / theoretical",
)


def _summary_table(runs: Sequence[Run], reference: Run | None) -> _Table:
    """Pre-training runs: epochs and test top-1."""
    headers = ("run", "method", "model", "data", "epochs", "top-1 (%)", *_RATIO_HEADERS)
    rows = []
    for run in runs:
        s = run.summary
        rows.append((
            run.label, _fmt_text(s.get("method")), _fmt_text(s.get("model")), _fmt_text(s.get("data")),
            _fmt_int(s.get("epochs")), fmt_top1(s.get("top1")), *_ratio_cells(run, reference),
        ))  # fmt: skip
    return _Table(headers, tuple(rows))


def _metric_keys(runs: Sequence[Run]) -> list[str]:
    """The metric kinds of these fine-tuning runs, in order of first appearance."""
    return list(dict.fromkeys(m for r in runs if (m := run_metric(r.summary)) is not None))


def _finetune_summary_table(runs: Sequence[Run], reference: Run | None) -> _Table:
    """Fine-tuning runs: steps and a column per metric kind present (a run fills its own metric's)."""
    metrics = _metric_keys(runs)
    headers = (
        "run",
        "method",
        "model",
        "data",
        "steps",
        *(metric_info(m).label for m in metrics),
        *_RATIO_HEADERS,
    )
    rows = []
    for run in runs:
        s = run.summary
        own = run_metric(s)
        cells = tuple(fmt_metric(m, s.get(m)) if m == own else DASH for m in metrics)
        rows.append((
            run.label, _fmt_text(s.get("method")), _fmt_text(s.get("model")), _fmt_text(s.get("data")),
            _fmt_int(s.get("steps")), *cells, *_ratio_cells(run, reference),
        ))  # fmt: skip
    return _Table(headers, tuple(rows))


def _summary_note(reference: Run | None, kind: RunKind = "pretrain") -> str:
    if kind == "pretrain":
        base = (
            "wall-clock (s): the run's training time (summary wall_clock_s); FLOPs ratio: train FLOPs / FLOPs "
            "of training the full model for all epochs."
        )
    else:
        base = (
            "FID ↓: lower is better; top-1 ↑: higher is better (each run's final evaluation, its summary's "
            "metric); wall-clock (s): the run's training time, searches included (summary wall_clock_s); "
            "FLOPs ratio: train FLOPs / FLOPs of training every parameter at full resolution for all steps."
        )
    if reference is None:
        return base + f" No run has method full, so time ratio and realised / theoretical are {DASH}."
    return (
        base
        + f" time ratio: wall-clock / wall-clock of {reference.label} (method full); realised / theoretical: "
        "(t_full / t_run) / (full FLOPs / train FLOPs), 1.000 when the FLOPs saved are saved in time too."
    )


def _schedule_table(summary: Mapping[str, Any]) -> _Table:
    keys = ("stage", "start_epoch", "end_epoch", "resolution", "depth")
    rows = tuple(tuple(_fmt_int(s.get(k)) for k in keys) for s in _list_of_dicts(summary.get("schedule")))
    return _Table(keys, rows)


def _finetune_schedule_table(summary: Mapping[str, Any]) -> _Table:
    """The unfreezing schedule: per stage its steps, resolution, unfreezing level, learnable parameters."""
    keys = ("stage", "start_step", "end_step", "resolution", "level", "trainable_params")
    rows = tuple(tuple(_fmt_int(s.get(k)) for k in keys) for s in _list_of_dicts(summary.get("schedule")))
    return _Table((*keys[:-1], "learnable params"), rows)


def _stage_table(summary: Mapping[str, Any]) -> _Table:
    headers = ("stage", "start_epoch", "end_epoch", "resolution", "depth", "wall_clock_s", "FLOPs",
               "train_flops_cumulative", "params")  # fmt: skip
    stages = _list_of_dicts(summary.get("stages"))
    rows = tuple(
        (
            *(_fmt_int(s.get(k)) for k in headers[:5]),
            fmt_seconds(s.get("wall_clock_s")),
            fmt_flops(flops),
            fmt_flops(s.get("train_flops_cumulative")),
            _fmt_int(s.get("params")),
        )  # fmt: skip
        for s, flops in zip(stages, stage_flops(stages), strict=True)
    )
    return _Table(headers, rows)


def _finetune_stage_table(summary: Mapping[str, Any]) -> _Table:
    headers = ("stage", "start_step", "end_step", "resolution", "level", "steps_trained", "mean_loss", "wall_clock_s",
               "FLOPs", "train_flops_cumulative", "peak memory (MiB)")  # fmt: skip
    stages = _list_of_dicts(summary.get("stages"))
    rows = tuple(
        (
            *(_fmt_int(s.get(k)) for k in headers[:6]),
            _fmt(s.get("mean_loss"), ".4f"),
            fmt_seconds(s.get("wall_clock_s")),
            fmt_flops(flops),
            fmt_flops(s.get("train_flops_cumulative")),
            fmt_mib(s.get("peak_mem_bytes")),
        )  # fmt: skip
        for s, flops in zip(stages, stage_flops(stages), strict=True)
    )
    return _Table(headers, rows)


def _unit(search: Mapping[str, Any]) -> Literal["depth", "level"]:
    """What a search record chose besides resolution: ``depth`` (pre-training) or ``level`` (fine-tuning)."""
    chosen = search.get("chosen")
    if isinstance(chosen, dict) and "level" in chosen:
        return "level"
    return "level" if any("level" in c for c in _list_of_dicts(search.get("candidates"))) else "depth"


def _is_chosen(candidate: Mapping[str, Any], chosen: Any, unit: str = "depth") -> bool:
    if not isinstance(chosen, dict):
        return False
    return candidate.get("resolution") == chosen.get("resolution") and candidate.get(unit) == chosen.get(unit)


def _chosen_text(chosen: Any, unit: str) -> str:
    if not isinstance(chosen, dict):
        return DASH
    return f"{_fmt_int(chosen.get('resolution'))}px, {unit} {_fmt_int(chosen.get(unit))}"


def _search_blocks(search: Mapping[str, Any]) -> list[_Block]:
    """One searched stage: a heading, a line of details and a table of the candidates (chosen marked).

    Handles the four records: AutoProg-One and AutoProg-Zero, each in pre-training (``depth``,
    epochs) and fine-tuning (unfreezing ``level``, steps).
    """
    chosen = search.get("chosen")
    candidates = _list_of_dicts(search.get("candidates"))
    unit = _unit(search)
    marks = [_is_chosen(c, chosen, unit) for c in candidates]
    heading = _Heading(f"Stage {_fmt_int(search.get('stage'))} search", 4)
    marked = frozenset(i for i, m in enumerate(marks) if m)
    if search.get("search") == "zero-shot" or "weights" in search:
        return _zero_shot_search_blocks(search, candidates, marks)
    if unit == "level":  # AutoProg-One fine-tuning: a supernet over unfreezing configurations (Sec. 5.1.2)
        rows = tuple(
            (
                _fmt_int(c.get("resolution")),
                _fmt_int(c.get("level")),
                _fmt_int(c.get("steps")),
                _fmt(c.get("loss"), ".4f"),
                _fmt(c.get("time"), ".4g"),
                _fmt(c.get("score"), ".4g"),
                CHOSEN_MARK if mark else "",
            )  # fmt: skip
            for c, mark in zip(candidates, marks, strict=True)
        )
        details = (
            f"supernet (AutoProg-One) from step {_fmt_int(search.get('start_step'))} for "
            f"{_fmt_int(search.get('supernet_steps'))} steps, search_time_s {fmt_seconds(search.get('search_time_s'))}, "
            f"chosen {_chosen_text(chosen, unit)}."
        )
        table = _Table(
            ("resolution", "level", "supernet steps", "loss", "runtime", "score", "chosen"), rows, marked
        )
        return [heading, _Paragraph(details), table]
    rows = tuple(
        (
            _fmt_int(c.get("resolution")),
            _fmt_int(c.get("depth")),
            _fmt(c.get("loss"), ".4f"),
            _fmt(c.get("runtime_s"), ".4f"),
            _fmt(c.get("score"), ".4f"),
            CHOSEN_MARK if mark else "",
        )  # fmt: skip
        for c, mark in zip(candidates, marks, strict=True)
    )
    details = (
        f"start epoch {_fmt_int(search.get('start_epoch'))}, search epochs {_fmt_int(search.get('search_epochs'))}, "
        f"balancing_factor {fmt_ratio(search.get('balancing_factor'))}, "
        f"search_time_s {fmt_seconds(search.get('search_time_s'))}, chosen {_chosen_text(chosen, unit)}."
    )
    table = _Table(("resolution", "depth", "loss", "runtime_s", "score", "chosen"), rows, marked)
    return [heading, _Paragraph(details), table]


def _zero_shot_search_blocks(
    search: Mapping[str, Any], candidates: list[dict[str, Any]], marks: list[bool]
) -> list[_Block]:
    """AutoProg-Zero's record (Sec. 4.2): each candidate's proxies, runtime term, ranks and rank sum (Eq. 19).

    Fine-tuning records (unfreezing ``level``, from step ``start_step``) also show each candidate's
    learnable parameters; pre-training ones (``depth``, at epoch ``start_epoch``) do not have them.
    """
    chosen = search.get("chosen")
    unit = _unit(search)
    finetune = unit == "level"
    rows = tuple(
        (
            _fmt_int(c.get("resolution")),
            _fmt_int(c.get(unit)),
            *((_fmt_int(c.get("trainable_params")),) if finetune else ()),
            _fmt(c.get("log_ntk"), ".3f"),
            _fmt(c.get("zico"), ".2f"),
            _fmt(c.get("time"), ".4g"),
            _fmt(c.get("total"), "g"),
            CHOSEN_MARK if mark else "",
        )  # fmt: skip
        for c, mark in zip(candidates, marks, strict=True)
    )
    weights = search.get("weights")
    weights_text = (
        ", ".join(f"{k} {_fmt(v, 'g')}" for k, v in weights.items()) if isinstance(weights, dict) else DASH
    )
    where = (
        f"step {_fmt_int(search.get('start_step'))}"
        if finetune
        else f"epoch {_fmt_int(search.get('start_epoch'))}"
    )
    details = (
        f"zero-shot (AutoProg-Zero) at {where}, vote weights {weights_text}, "
        f"search_time_s {fmt_seconds(search.get('search_time_s'))}, chosen {_chosen_text(chosen, unit)}."
    )
    headers = ("resolution", unit, *(("learnable params",) if finetune else ()), "log NTK κ", "ZiCo", "runtime",
               "rank sum", "chosen")  # fmt: skip
    table = _Table(headers, rows, frozenset(i for i, m in enumerate(marks) if m))
    return [_Heading(f"Stage {_fmt_int(search.get('stage'))} search", 4), _Paragraph(details), table]


def _run_details(run: Run) -> str:
    s = run.summary
    parts = [
        f"directory {run.path}",
        f"method {_fmt_text(s.get('method'))}",
        f"operator {_fmt_text(s.get('operator'))}",
        f"seed {_fmt_int(s.get('seed'))}",
        f"{_fmt_int(s.get('train_samples'))} training images",
        f"{_fmt_int(s.get('steps'))} steps",
        f"{_fmt_int(s.get('params'))} params",
        f"full model: depth {_fmt_int(s.get('full_depth'))} at {_fmt_int(s.get('full_resolution'))}px",
    ]
    if _number(s.get("top1_ema")) is not None:
        parts.append(f"EMA top-1 {fmt_top1(s.get('top1_ema'))}")
    return "; ".join(parts) + "."


def _schedule_text(summary: Mapping[str, Any]) -> str:
    """The unfreezing schedule in one line, e.g. ``16px L2 → 16px L3 → 28px L4``."""
    stages = _list_of_dicts(summary.get("schedule"))
    return (
        " → ".join(f"{_fmt_int(s.get('resolution'))}px L{_fmt_int(s.get('level'))}" for s in stages) or DASH
    )


def _finetune_details(run: Run) -> str:
    s = run.summary
    config = s.get("config") if isinstance(s.get("config"), dict) else {}
    metric = run_metric(s)
    sid = s.get("sid")
    parts = [
        f"directory {run.path}",
        f"method {_fmt_text(s.get('method'))}"
        + ("" if sid is None else f" ({'with' if sid else 'without'} SID)"),
        f"source {_fmt_text(s.get('source'))}",
        f"task {_fmt_text(s.get('task'))}",
        f"metric {_fmt_text(metric)}"
        + ("" if metric is None else f" {fmt_metric(metric, s.get(metric))}")
        + (f" on {_fmt_int(s['fid_samples'])} samples" if metric == "fid" and "fid_samples" in s else ""),
        f"seed {_fmt_int(s.get('seed'))}",
        f"{_fmt_int(s.get('train_samples'))} training images",
        f"{_fmt_int(s.get('steps'))} steps x batch {_fmt_int(config.get('batch_size'))}",
        f"lr {_fmt(s.get('lr'), 'g')}",
        f"{_fmt_int(s.get('params'))} params",
        f"full model: {_fmt_int(s.get('full_depth'))} blocks at {_fmt_int(s.get('full_resolution'))}px",
        f"schedule {_schedule_text(s)}",
        f"mixed precision {_fmt_text(s.get('mixed_precision'))}",
        f"non-finite rollbacks {_fmt_int(s.get('nonfinite_rollbacks'))}",
    ]
    for key in ("clip_t", "dino"):
        if key != metric and _number(s.get(key)) is not None:
            parts.append(f"{metric_info(key).name} {fmt_metric(key, s.get(key))}")
    return "; ".join(parts) + "."


def _run_blocks(run: Run) -> list[_Block]:
    finetune = run.kind == "finetune"
    blocks: list[_Block] = [
        _Heading(f"Run {run.label}", 2),
        _Paragraph(_finetune_details(run) if finetune else _run_details(run)),
        _Heading("Schedule", 3),
        _finetune_schedule_table(run.summary) if finetune else _schedule_table(run.summary),
        _Heading("Stages", 3),
        _finetune_stage_table(run.summary) if finetune else _stage_table(run.summary),
    ]
    searches = _list_of_dicts(run.summary.get("search"))
    if searches:
        total = fmt_seconds(run.summary.get("search_time_s"))
        blocks += [
            _Heading("Search", 3),
            _Paragraph(f"{len(searches)} searched stage(s), search_time_s {total} in all."),
        ]
        for search in searches:
            blocks += _search_blocks(search)
    return blocks


def plot_files(kind: RunKind, mixed: bool = False) -> tuple[str, ...]:
    """The PNG file names of one kind's plots; ``mixed``: the report has both kinds, so the names
    carry the kind as a prefix (``finetune_schedule.png``)."""
    names = PLOT_FILES if kind == "pretrain" else FINETUNE_PLOT_FILES
    return tuple(f"{kind}_{n}" for n in names) if mixed else names


def build_blocks(runs: Sequence[Run], title: str) -> list[_Block]:
    """The report's content, independent of output format.

    Each kind of run (pre-training, fine-tuning) gets its own summary table, ratios and plots; with a
    single kind the headings are plain ``Summary`` and ``Plots``. The runs' own sections follow in
    the order given.

    Args:
        runs: The runs, in the order given.
        title: The page title.

    Returns:
        Headings, paragraphs, tables and plot references, in page order.
    """
    groups = _groups(runs)
    mixed = len(groups) > 1
    blocks: list[_Block] = [_Heading(title, 1)]
    if mixed:
        blocks.append(_Paragraph(
            "These runs mix pre-training and fine-tuning: each kind has its own summary, plots and full run to "
            "take ratios against."
        ))  # fmt: skip
    for kind, group in groups:
        suffix = f": {KIND_NAMES[kind]}" if mixed else ""
        reference = reference_run(group)
        table = (
            _summary_table(group, reference)
            if kind == "pretrain"
            else _finetune_summary_table(group, reference)
        )
        captions = _PLOT_CAPTIONS[kind]
        blocks += [
            _Heading("Summary" + suffix, 2),
            table,
            _Paragraph(_summary_note(reference, kind)),
            _Heading("Plots" + suffix, 2),
            *(
                _Plot(name, captions[base])
                for name, base in zip(plot_files(kind, mixed), plot_files(kind), strict=True)
            ),
        ]
    for run in runs:
        blocks += _run_blocks(run)
    return blocks


# -------------------------------------------------------------------------------------- rendering


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.headers)
    rows = []
    for i, row in enumerate(table.rows):
        cls = ' class="chosen"' if i in table.marked else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _html_block(block: _Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, _Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, _Paragraph):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, _Table):
        return _html_table(block)
    data = base64.b64encode(images[block.filename]).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(block.caption)}">'
        f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
    )


def render_html(blocks: Sequence[_Block], images: Mapping[str, bytes], title: str) -> str:
    """A self-contained HTML page: every string escaped, every plot a base64 data URI.

    Args:
        blocks: The content, from ``build_blocks``.
        images: PNG bytes by file name, for every plot the blocks reference.
        title: The page title.

    Returns:
        The page.
    """
    body = "\n".join(_html_block(b, images) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _md_esc(text: str) -> str:
    text = html.escape(text, quote=False)
    for ch in "\\`*[]|":
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.split())


def _md_table(table: _Table) -> str:
    lines = ["| " + " | ".join(_md_esc(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    for i, row in enumerate(table.rows):
        cells = [_md_esc(c) for c in row]
        if i in table.marked:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_block(block: _Block) -> str:
    if isinstance(block, _Heading):
        return "#" * block.level + " " + _md_esc(block.text)
    if isinstance(block, _Paragraph):
        return _md_esc(block.text)
    if isinstance(block, _Table):
        return _md_table(block)
    return f"![{_md_esc(block.caption)}]({block.filename})\n\n{_md_esc(block.caption)}"


def render_markdown(blocks: Sequence[_Block]) -> str:
    """The same content as markdown, with the plots linked as PNG files next to it.

    Args:
        blocks: The content, from ``build_blocks``.

    Returns:
        The markdown text.
    """
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# ------------------------------------------------------------------------------------------ plots


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, so no global figure state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _mpl_text(text: str) -> str:
    """Text matplotlib shows verbatim: ``$`` does not start mathtext, a leading ``_`` is not hidden."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555")


def plot_accuracy(runs: Sequence[Run], x_key: str, x_label: str) -> bytes:
    """Top-1 against ``x_key`` (``wall_clock_s`` or ``train_flops``): a line per run, a star at the end.

    Args:
        runs: The (pre-training) runs.
        x_key: The key read from the ``epoch`` records (validation curve) and the summary (final test).
        x_label: The x-axis label.

    Returns:
        PNG bytes.
    """
    fig = _new_figure(6.8, 4.3)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        points = [(_number(r.get(x_key)), _number(r.get("val_top1"))) for r in run.epochs]
        points = [(x, y) for x, y in points if x is not None and y is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "-o", color=color, ms=3, lw=1.2, label=_mpl_text(run.label))
        x_end, top1 = _number(run.summary.get(x_key)), _number(run.summary.get("top1"))
        if x_end is not None and top1 is not None:
            ax.plot([x_end], [top1], marker="*", ms=13, ls="none", color=color, markeredgecolor="black",
                    label=None if points else _mpl_text(run.label))  # fmt: skip
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("validation top-1 per epoch (lines), final test top-1 (stars)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


def plot_quality(runs: Sequence[Run], x_key: str, x_label: str) -> bytes:
    """Fine-tuning runs' final metric against ``x_key`` (``wall_clock_s`` or ``train_flops``).

    A fine-tuning run is evaluated once, at the end, so each run is one point. Runs of different
    metrics (FID, top-1) get one panel per metric, each labelled with its direction.

    Args:
        runs: The fine-tuning runs.
        x_key: The summary key of the x value.
        x_label: The x-axis label.

    Returns:
        PNG bytes.
    """
    metrics = _metric_keys(runs) or [None]
    fig = _new_figure(5.2 * len(metrics) + 1.6, 4.3)
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        drawn = False
        for i, run in enumerate(runs):
            if metric is None or run_metric(run.summary) != metric:
                continue
            x, y = _number(run.summary.get(x_key)), _number(run.summary.get(metric))
            if x is None or y is None:
                continue
            ax.plot([x], [y], marker="o", ms=9, ls="none", color=f"C{i % 10}", markeredgecolor="black",
                    label=_mpl_text(run.label))  # fmt: skip
            ax.annotate(_mpl_text(run.label), (x, y), xytext=(6, 4), textcoords="offset points", fontsize=7)
            drawn = True
        if metric is None:
            _empty_note(ax, "no evaluation metric in these runs' summaries")
        else:
            info = metric_info(metric)
            ax.set_ylabel(info.axis_label)
            ax.set_title(f"final {info.name} per run", fontsize=9)
            if not drawn:
                _empty_note(ax, f"no run has a {info.name} value")
            ax.margins(x=0.15, y=0.15)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def plot_loss(runs: Sequence[Run]) -> bytes:
    """Fine-tuning runs' training loss against step, from the ``step`` records of ``log.jsonl``.

    Each run: the loss per step (thin, faint), smoothed (``smooth`` with a span of 1/20 of the run's
    steps), dashed lines at the schedule's stage boundaries and AutoProg-One's supernet steps shaded.

    Args:
        runs: The fine-tuning runs.

    Returns:
        PNG bytes.
    """
    fig = _new_figure(8.0, 4.3)
    ax = fig.add_subplot()
    drawn = False
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        points = loss_points(run)
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, color=color, lw=0.6, alpha=0.35)
            ax.plot(steps, smooth(losses, len(losses) / 20), color=color, lw=1.8, label=_mpl_text(run.label))
            drawn = True
        for stage in _list_of_dicts(run.summary.get("schedule"))[1:]:
            start = _number(stage.get("start_step"))
            if start is not None:
                ax.axvline(start, color=color, ls="--", lw=0.9, alpha=0.7)
        for search in _list_of_dicts(run.summary.get("search")):
            start, width = _number(search.get("start_step")), _number(search.get("supernet_steps"))
            if start is not None and width:
                ax.axvspan(start, start + width, color=color, alpha=0.1, lw=0)
    if not drawn:
        _empty_note(ax, "no step records in these runs' log.jsonl")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss per step (thin), smoothed (thick); dashed: stage boundaries", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


def _text_color(rgba: tuple[float, float, float, float]) -> str:
    r, g, b, _ = rgba
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


@dataclass(frozen=True)
class _ScheduleAxis:
    """Where a kind of run keeps its schedule's extent and what it grows: the keys of its records."""

    start: str  # a stage's and a search's first epoch/step
    end: str
    unit: str  # depth or level
    unit_mark: str  # the label's prefix of the unit, e.g. "d" in "16px d3"
    search_width: str  # supernet epochs/steps of a search record
    x_label: str
    title: str


_SCHEDULE_AXES: dict[RunKind, _ScheduleAxis] = {
    "pretrain": _ScheduleAxis(
        "start_epoch",
        "end_epoch",
        "depth",
        "d",
        "search_epochs",
        "epoch",
        "growth schedule (colour: resolution)",
    ),  # fmt: skip
    "finetune": _ScheduleAxis(
        "start_step",
        "end_step",
        "level",
        "L",
        "supernet_steps",
        "step",
        "unfreezing schedule (colour: resolution; L: unfreezing level)",
    ),  # fmt: skip
}


def plot_schedule(runs: Sequence[Run], kind: RunKind = "pretrain") -> bytes:
    """Each run's stages as horizontal bars, annotated ``<resolution>px d<depth>`` over epochs
    (pre-training) or ``<resolution>px L<level>`` over steps (fine-tuning).

    Colour follows resolution; supernet search epochs or steps (AutoProg-One) are hatched.

    Args:
        runs: The runs, all of ``kind``.
        kind: Which records' keys to read.

    Returns:
        PNG bytes.
    """
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    axis = _SCHEDULE_AXES[kind]
    fig = _new_figure(8.0, 1.2 + 0.65 * len(runs))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    schedules = [_list_of_dicts(r.summary.get("schedule")) for r in runs]
    resolutions = [x for sched in schedules for s in sched if (x := _number(s.get("resolution"))) is not None]
    lo, hi = (min(resolutions), max(resolutions)) if resolutions else (0.0, 0.0)
    searched = False
    for i, (run, sched) in enumerate(zip(runs, schedules, strict=True)):
        y = len(runs) - 1 - i
        for stage in sched:
            start, end = _number(stage.get(axis.start)), _number(stage.get(axis.end))
            if start is None or end is None or end <= start:
                continue
            res = _number(stage.get("resolution"))
            color = cmap(0.2 + 0.7 * ((res - lo) / (hi - lo) if res is not None and hi > lo else 1.0))
            ax.barh(y, end - start, left=start, height=0.6, color=color, edgecolor="black", lw=0.8)
            label = f"{_fmt_int(stage.get('resolution'))}px\n{axis.unit_mark}{_fmt_int(stage.get(axis.unit))}"
            ax.text(
                (start + end) / 2, y, label, ha="center", va="center", fontsize=7, color=_text_color(color)
            )
        for search in _list_of_dicts(run.summary.get("search")):
            start, width = _number(search.get(axis.start)), _number(search.get(axis.search_width))
            if start is not None and width:
                ax.barh(y, width, left=start, height=0.6, fill=False, hatch="//", edgecolor="white", lw=0)
                searched = True
    ax.set_yticks(range(len(runs)), [_mpl_text(r.label) for r in reversed(runs)])
    ax.set_ylim(-0.6, len(runs) - 0.4)
    ax.set_xlabel(axis.x_label)
    ax.set_title(axis.title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if searched:
        ax.legend(handles=[Patch(facecolor="grey", hatch="//", edgecolor="white", label="supernet search")],
                  fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # fmt: skip
    return _png(fig)


def plot_stage_cost(runs: Sequence[Run]) -> bytes:
    """Per-stage wall-clock (left) and FLOPs (right), bars grouped by stage, one colour per run.

    Args:
        runs: The runs.

    Returns:
        PNG bytes.
    """
    fig = _new_figure(10.0, 4.0)
    ax_time, ax_flops = fig.subplots(1, 2)
    stages = [_list_of_dicts(r.summary.get("stages")) for r in runs]
    n_stages = max((len(s) for s in stages), default=0)
    width = 0.8 / max(len(runs), 1)
    for i, (run, run_stages) in enumerate(zip(runs, stages, strict=True)):
        if not run_stages:
            continue
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(run_stages))]
        times = [_number(s.get("wall_clock_s")) or 0.0 for s in run_stages]
        flops = [f or 0.0 for f in stage_flops(run_stages)]
        ax_time.bar(xs, times, width, color=f"C{i % 10}", label=_mpl_text(run.label))
        ax_flops.bar(xs, flops, width, color=f"C{i % 10}")
    for ax, y_label in ((ax_time, "wall-clock (s)"), (ax_flops, "FLOPs")):
        ax.set_xticks(range(n_stages))
        ax.set_xlabel("stage")
        ax.set_ylabel(y_label)
        ax.grid(axis="y", alpha=0.3)
    ax_time.set_title("wall-clock per stage", fontsize=9)
    ax_flops.set_title("training FLOPs per stage", fontsize=9)
    if ax_time.get_legend_handles_labels()[0]:
        ax_time.legend(fontsize=8)
    return _png(fig)


def render_plots(runs: Sequence[Run]) -> dict[str, bytes]:
    """All plots of the report as PNG bytes, by file name: ``plot_files(kind, mixed)`` for each kind
    of run present (``mixed`` when both kinds are), each kind's plots drawn from its own runs."""
    groups = _groups(runs)
    mixed = len(groups) > 1
    images: dict[str, bytes] = {}
    for kind, group in groups:
        if kind == "pretrain":
            plots = [
                plot_accuracy(group, "wall_clock_s", "training wall-clock (s)"),
                plot_accuracy(group, "train_flops", "training FLOPs"),
                plot_schedule(group, kind),
                plot_stage_cost(group),
            ]
        else:
            plots = [
                plot_quality(group, "wall_clock_s", "training wall-clock (s)"),
                plot_quality(group, "train_flops", "training FLOPs"),
                plot_loss(group),
                plot_schedule(group, kind),
                plot_stage_cost(group),
            ]
        images.update(zip(plot_files(kind, mixed), plots, strict=True))
    return images


# ------------------------------------------------------------------------------------------ entry


def write_report(run_dirs: Sequence[Path], out_dir: Path, title: str | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and the plots comparing ``run_dirs`` into ``out_dir``.

    Args:
        run_dirs: Run directories written by ``autoprog pretrain`` or ``autoprog finetune`` (both kinds
            may be mixed: each gets its own summary and plots), in the order to show them.
        out_dir: Output folder (created if needed).
        title: Page title (default: ``autoprog report: <run names>``).

    Returns:
        The path of ``report.html``.

    Raises:
        AutoprogError: No run given, a run directory without a readable ``summary.json``, or ``out_dir``
            cannot be written.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise AutoprogError("report: no run directories given")
    runs = [load_run(p, label) for p, label in zip(run_dirs, _labels(run_dirs), strict=True)]
    title = title or "autoprog report: " + ", ".join(r.label for r in runs)
    images = render_plots(runs)
    blocks = build_blocks(runs, title)
    out_dir = Path(out_dir)
    html_path = out_dir / "report.html"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (out_dir / name).write_bytes(data)
        (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
        html_path.write_text(render_html(blocks, images, title), encoding="utf-8")
    except OSError as e:
        raise AutoprogError(f"{out_dir}: cannot write the report: {_one_line(e)}") from e
    return html_path
