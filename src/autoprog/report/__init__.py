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
from collections.abc import Sequence
from pathlib import Path

from autoprog.errors import AutoprogError
from autoprog.report.blocks import (
    CHOSEN_MARK,
    FINETUNE_PLOT_FILES,
    PLOT_FILES,
    build_blocks,
    plot_files,
)
from autoprog.report.plots import (
    plot_accuracy,
    plot_loss,
    plot_quality,
    plot_schedule,
    plot_stage_cost,
    render_plots,
)
from autoprog.report.render import render_html, render_markdown
from autoprog.report.runs import (
    DASH,
    KIND_NAMES,
    Metric,
    Run,
    RunKind,
    _labels,
    _one_line,
    fmt_flops,
    fmt_metric,
    fmt_mib,
    fmt_ratio,
    fmt_seconds,
    fmt_top1,
    load_run,
    loss_points,
    metric_info,
    read_log,
    realised_over_theoretical,
    reference_run,
    run_kind,
    run_metric,
    smooth,
    stage_flops,
    time_ratio,
)

__all__ = [
    "CHOSEN_MARK",
    "DASH",
    "FINETUNE_PLOT_FILES",
    "KIND_NAMES",
    "PLOT_FILES",
    "Metric",
    "Run",
    "RunKind",
    "add_report_parser",
    "build_blocks",
    "fmt_flops",
    "fmt_metric",
    "fmt_mib",
    "fmt_ratio",
    "fmt_seconds",
    "fmt_top1",
    "load_run",
    "loss_points",
    "metric_info",
    "plot_accuracy",
    "plot_files",
    "plot_loss",
    "plot_quality",
    "plot_schedule",
    "plot_stage_cost",
    "read_log",
    "realised_over_theoretical",
    "reference_run",
    "render_html",
    "render_markdown",
    "render_plots",
    "replay_tensorboard",
    "run_kind",
    "run_metric",
    "run_report",
    "smooth",
    "stage_flops",
    "time_ratio",
    "write_report",
]


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
        "(default: off; needs the tensorboard package)",
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
