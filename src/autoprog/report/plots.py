"""The report's matplotlib figures, each drawn on its own Agg canvas (no pyplot) and returned as PNG
bytes: top-1 against wall-clock and FLOPs (pre-training), the final metric against wall-clock and FLOPs
and the training loss per step (fine-tuning), the schedule chart and per-stage costs (both kinds), and
``render_plots``, which draws every plot of a report by file name.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoprog.report.blocks import _metric_keys, plot_files
from autoprog.report.runs import (
    Run,
    RunKind,
    _fmt_int,
    _groups,
    _list_of_dicts,
    _number,
    loss_points,
    metric_info,
    run_metric,
    smooth,
    stage_flops,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
