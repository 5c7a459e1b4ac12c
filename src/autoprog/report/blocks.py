"""The report's content as a document model, independent of output format: the blocks (``_Heading``,
``_Paragraph``, ``_Table``, ``_Plot``), the plot file names and captions, and everything that turns runs
into blocks: the summary tables per kind, each run's schedule, stage and search tables, and
``build_blocks``, which lays out the whole page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autoprog.report.runs import (
    DASH,
    KIND_NAMES,
    Run,
    RunKind,
    _flops_ratio,
    _fmt,
    _fmt_int,
    _fmt_text,
    _groups,
    _list_of_dicts,
    _number,
    fmt_flops,
    fmt_metric,
    fmt_mib,
    fmt_ratio,
    fmt_seconds,
    fmt_top1,
    metric_info,
    realised_over_theoretical,
    reference_run,
    run_metric,
    stage_flops,
    time_ratio,
)

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
