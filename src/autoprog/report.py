"""``autoprog report RUN_DIR [RUN_DIR ...] --out DIR``: compare finished runs on one page.

Reads each run directory's ``summary.json`` and ``log.jsonl`` (as written by ``autoprog pretrain``)
and writes into ``--out``:

* ``report.html``: self-contained (the plots are embedded as base64 PNG data URIs);
* ``report.md``: the same content, linking the PNG files;
* ``accuracy_vs_time.png``, ``accuracy_vs_flops.png``: validation top-1 per epoch and the final
  test top-1 (a star) against training wall-clock and training FLOPs;
* ``schedule.png``: each run's stages as bars over epochs, annotated with resolution and depth;
* ``stage_cost.png``: wall-clock and FLOPs of every stage, grouped by run.

Ratios are taken against the first run whose method is ``full``, when there is one. Every string
read from the files is HTML-escaped; missing, null or non-finite numbers show as an en dash.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprog.errors import AutoprogError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DASH = "–"
"""Shown for a value that is missing, null or not finite."""

CHOSEN_MARK = "✓"
"""Shown in the ``chosen`` column of a search table for the candidate the search picked."""

PLOT_FILES = ("accuracy_vs_time.png", "accuracy_vs_flops.png", "schedule.png", "stage_cost.png")
"""The PNG files ``write_report`` writes, in the order the page shows them."""

_PLOT_CAPTIONS = {
    "accuracy_vs_time.png": "Top-1 against training wall-clock: validation per epoch (line), final test (star).",
    "accuracy_vs_flops.png": "Top-1 against training FLOPs: validation per epoch (line), final test (star).",
    "schedule.png": "Growth schedules: each run's stages over epochs with resolution (px) and depth (d).",
    "stage_cost.png": "Wall-clock and FLOPs spent in each stage, per run.",
}
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
    "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
    "tr.chosen td{font-weight:bold;background:#eaf6ea}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}"
)


# --------------------------------------------------------------------------------------------- CLI


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand on an argparse subparsers object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "report",
        help="compare finished runs: an HTML page and a markdown file with tables and plots",
        description="Compare finished `autoprog pretrain` runs: report.html (self-contained), report.md and PNG plots.",
    )
    p.add_argument("runs", nargs="+", help="run directories (each with summary.json and log.jsonl)")
    p.add_argument("--out", default="report", help="folder for report.html, report.md and the plots (default: %(default)s)")
    p.add_argument("--title", default=None, help="page title (default: the runs' names)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_report(args: argparse.Namespace) -> Path:
    """Run the ``report`` subcommand.

    Args:
        args: Parsed arguments with ``runs``, ``out`` and ``title``.

    Returns:
        The path of the written ``report.html``.
    """
    path = write_report([Path(r) for r in args.runs], Path(args.out), getattr(args, "title", None))
    print(f"autoprog report: {len(args.runs)} run(s) -> {path}")
    return path


# ----------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Run:
    """One finished run as the report sees it.

    Attributes:
        label: The name shown for the run (its directory's name).
        path: The run directory.
        summary: The parsed ``summary.json``.
        epochs: The ``epoch`` records of ``log.jsonl``, in order.
    """

    label: str
    path: Path
    summary: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)


def load_run(run_dir: Path, label: str | None = None) -> Run:
    """Read a run directory's ``summary.json`` and the ``epoch`` records of its ``log.jsonl``.

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
        raise AutoprogError(f"{run_dir}: no summary.json (not a finished `autoprog pretrain` run directory)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AutoprogError(f"{summary_path}: cannot read: {_one_line(e)}") from e
    if not isinstance(summary, dict):
        raise AutoprogError(f"{summary_path}: not a JSON object")
    return Run(label or _dir_name(run_dir), run_dir, summary, _read_epoch_records(run_dir / "log.jsonl"))


def _read_epoch_records(log_path: Path) -> list[dict[str, Any]]:
    """The ``event == "epoch"`` records of a ``log.jsonl`` (none if the file is absent)."""
    if not log_path.is_file():
        return []
    records: list[dict[str, Any]] = []
    try:
        with log_path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AutoprogError(f"{log_path}:{n}: not JSON: {e.msg}") from e
                if isinstance(record, dict) and record.get("event") == "epoch":
                    records.append(record)
    except (OSError, UnicodeDecodeError) as e:
        raise AutoprogError(f"{log_path}: cannot read: {_one_line(e)}") from e
    return records


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _dir_name(path: Path) -> str:
    return path.name or path.resolve().name or str(path)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Directory names; names shared by several runs get their parent's name, then a counter."""
    names = [_dir_name(p) for p in run_dirs]
    counts = Counter(names)
    labels = [n if counts[n] == 1 else f"{_dir_name(p.resolve().parent)}/{n}" for p, n in zip(run_dirs, names, strict=True)]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


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
    """The run ratios are taken against: the first whose method is ``full``, or None."""
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
    return [x for x in numbers if x is not None and x > 0] if all(x is not None and x > 0 for x in numbers) else None


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


def _summary_table(runs: Sequence[Run], reference: Run | None) -> _Table:
    headers = ("run", "method", "model", "data", "epochs", "top-1 (%)", "wall-clock (s)", "train FLOPs",
               "full FLOPs", "FLOPs ratio", "time ratio", "realised / theoretical")  # fmt: skip
    rows = []
    for run in runs:
        s = run.summary
        rows.append((
            run.label, _fmt_text(s.get("method")), _fmt_text(s.get("model")), _fmt_text(s.get("data")),
            _fmt_int(s.get("epochs")), fmt_top1(s.get("top1")), fmt_seconds(s.get("wall_clock_s")),
            fmt_flops(s.get("train_flops")), fmt_flops(s.get("full_flops")), fmt_ratio(_flops_ratio(s)),
            fmt_ratio(time_ratio(run, reference)), fmt_ratio(realised_over_theoretical(run, reference)),
        ))  # fmt: skip
    return _Table(headers, tuple(rows))


def _summary_note(reference: Run | None) -> str:
    base = (
        "wall-clock (s): the run's training time (summary wall_clock_s); FLOPs ratio: train FLOPs / FLOPs "
        "of training the full model for all epochs."
    )
    if reference is None:
        return base + f" No run has method full, so time ratio and realised / theoretical are {DASH}."
    return (
        base + f" time ratio: wall-clock / wall-clock of {reference.label} (method full); realised / theoretical: "
        "(t_full / t_run) / (full FLOPs / train FLOPs), 1.000 when the FLOPs saved are saved in time too."
    )


def _schedule_table(summary: Mapping[str, Any]) -> _Table:
    keys = ("stage", "start_epoch", "end_epoch", "resolution", "depth")
    rows = tuple(tuple(_fmt_int(s.get(k)) for k in keys) for s in _list_of_dicts(summary.get("schedule")))
    return _Table(keys, rows)


def _stage_table(summary: Mapping[str, Any]) -> _Table:
    headers = ("stage", "start_epoch", "end_epoch", "resolution", "depth", "wall_clock_s", "FLOPs",
               "train_flops_cumulative", "params")  # fmt: skip
    stages = _list_of_dicts(summary.get("stages"))
    rows = tuple(
        (*(_fmt_int(s.get(k)) for k in headers[:5]), fmt_seconds(s.get("wall_clock_s")), fmt_flops(flops),
         fmt_flops(s.get("train_flops_cumulative")), _fmt_int(s.get("params")))  # fmt: skip
        for s, flops in zip(stages, stage_flops(stages), strict=True)
    )
    return _Table(headers, rows)


def _is_chosen(candidate: Mapping[str, Any], chosen: Any) -> bool:
    if not isinstance(chosen, dict):
        return False
    return candidate.get("resolution") == chosen.get("resolution") and candidate.get("depth") == chosen.get("depth")


def _search_blocks(search: Mapping[str, Any]) -> list[_Block]:
    chosen = search.get("chosen")
    candidates = _list_of_dicts(search.get("candidates"))
    marks = [_is_chosen(c, chosen) for c in candidates]
    rows = tuple(
        (_fmt_int(c.get("resolution")), _fmt_int(c.get("depth")), _fmt(c.get("loss"), ".4f"),
         _fmt(c.get("runtime_s"), ".4f"), _fmt(c.get("score"), ".4f"), CHOSEN_MARK if mark else "")  # fmt: skip
        for c, mark in zip(candidates, marks, strict=True)
    )
    chosen_text = (
        f"{_fmt_int(chosen.get('resolution'))}px, depth {_fmt_int(chosen.get('depth'))}" if isinstance(chosen, dict) else DASH
    )
    details = (
        f"start epoch {_fmt_int(search.get('start_epoch'))}, search epochs {_fmt_int(search.get('search_epochs'))}, "
        f"balancing_factor {fmt_ratio(search.get('balancing_factor'))}, "
        f"search_time_s {fmt_seconds(search.get('search_time_s'))}, chosen {chosen_text}."
    )
    table = _Table(("resolution", "depth", "loss", "runtime_s", "score", "chosen"), rows,
                   frozenset(i for i, m in enumerate(marks) if m))  # fmt: skip
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


def _run_blocks(run: Run) -> list[_Block]:
    blocks: list[_Block] = [
        _Heading(f"Run {run.label}", 2),
        _Paragraph(_run_details(run)),
        _Heading("Schedule", 3),
        _schedule_table(run.summary),
        _Heading("Stages", 3),
        _stage_table(run.summary),
    ]
    searches = _list_of_dicts(run.summary.get("search"))
    if searches:
        total = fmt_seconds(run.summary.get("search_time_s"))
        blocks += [_Heading("Search", 3), _Paragraph(f"{len(searches)} searched stage(s), search_time_s {total} in all.")]
        for search in searches:
            blocks += _search_blocks(search)
    return blocks


def build_blocks(runs: Sequence[Run], title: str) -> list[_Block]:
    """The report's content, independent of output format.

    Args:
        runs: The runs, in the order given.
        title: The page title.

    Returns:
        Headings, paragraphs, tables and plot references, in page order.
    """
    reference = reference_run(runs)
    blocks: list[_Block] = [
        _Heading(title, 1),
        _Heading("Summary", 2),
        _summary_table(runs, reference),
        _Paragraph(_summary_note(reference)),
        _Heading("Plots", 2),
        *(_Plot(name, _PLOT_CAPTIONS[name]) for name in PLOT_FILES),
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


def plot_accuracy(runs: Sequence[Run], x_key: str, x_label: str) -> bytes:
    """Top-1 against ``x_key`` (``wall_clock_s`` or ``train_flops``): a line per run, a star at the end.

    Args:
        runs: The runs.
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


def _text_color(rgba: tuple[float, float, float, float]) -> str:
    r, g, b, _ = rgba
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def plot_schedule(runs: Sequence[Run]) -> bytes:
    """Each run's stages as horizontal bars over epochs, annotated ``<resolution>px d<depth>``.

    Colour follows resolution; supernet search epochs (AutoProg-One) are hatched.

    Args:
        runs: The runs.

    Returns:
        PNG bytes.
    """
    from matplotlib import colormaps
    from matplotlib.patches import Patch

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
            start, end = _number(stage.get("start_epoch")), _number(stage.get("end_epoch"))
            if start is None or end is None or end <= start:
                continue
            res = _number(stage.get("resolution"))
            color = cmap(0.2 + 0.7 * ((res - lo) / (hi - lo) if res is not None and hi > lo else 1.0))
            ax.barh(y, end - start, left=start, height=0.6, color=color, edgecolor="black", lw=0.8)
            label = f"{_fmt_int(stage.get('resolution'))}px\nd{_fmt_int(stage.get('depth'))}"
            ax.text((start + end) / 2, y, label, ha="center", va="center", fontsize=7, color=_text_color(color))
        for search in _list_of_dicts(run.summary.get("search")):
            start, width = _number(search.get("start_epoch")), _number(search.get("search_epochs"))
            if start is not None and width:
                ax.barh(y, width, left=start, height=0.6, fill=False, hatch="//", edgecolor="white", lw=0)
                searched = True
    ax.set_yticks(range(len(runs)), [_mpl_text(r.label) for r in reversed(runs)])
    ax.set_ylim(-0.6, len(runs) - 0.4)
    ax.set_xlabel("epoch")
    ax.set_title("growth schedule (colour: resolution)", fontsize=9)
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
    """All plots of the report as PNG bytes, by file name (the keys of ``PLOT_FILES``)."""
    return {
        "accuracy_vs_time.png": plot_accuracy(runs, "wall_clock_s", "training wall-clock (s)"),
        "accuracy_vs_flops.png": plot_accuracy(runs, "train_flops", "training FLOPs"),
        "schedule.png": plot_schedule(runs),
        "stage_cost.png": plot_stage_cost(runs),
    }


# ------------------------------------------------------------------------------------------ entry


def write_report(run_dirs: Sequence[Path], out_dir: Path, title: str | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and the plots comparing ``run_dirs`` into ``out_dir``.

    Args:
        run_dirs: Run directories written by ``autoprog pretrain``, in the order to show them.
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
