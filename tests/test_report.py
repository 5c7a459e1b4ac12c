"""``autoprog report``: the page, the markdown and the plots agree with the runs' summary.json and log.jsonl."""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import make_cell_dataset

from autoprog.cli import main
from autoprog.errors import AutoprogError
from autoprog.report import (
    FINETUNE_PLOT_FILES,
    PLOT_FILES,
    add_report_parser,
    load_run,
    loss_points,
    run_kind,
    run_metric,
    run_report,
    smooth,
    write_report,
)

METHODS = ("full", "prog", "autoprog-one")
TINY = ["--depth", "2", "--epochs", "4", "--batch-size", "32", "--train-subset", "64", "--val-size", "16",
        "--test-subset", "40", "--progress", "off", "--threads", "1"]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DASH = "–"
SUMMARY_HEADERS = ["run", "method", "model", "data", "epochs", "top-1 (%)", "wall-clock (s)", "train FLOPs",
                   "full FLOPs", "FLOPs ratio", "time ratio", "realised / theoretical"]  # fmt: skip
FT_SUMMARY_HEADERS = ["run", "method", "model", "data", "steps", "FID ↓", "top-1 (%) ↑", "wall-clock (s)", "train FLOPs",
                      "full FLOPs", "FLOPs ratio", "time ratio", "realised / theoretical"]  # fmt: skip
FT_RUNS = ("ft-full", "ft-zero", "ft-one", "ft-top1", "ft-old")
FT_COMMON = ["finetune", "--model", "dit-tiny", "--data", "fashion-mnist", "--batch-size", "8", "--time-repeats", "1",
             "--search-runtime", "flops", "--sample-steps", "2", "--progress", "off", "--threads", "1"]  # fmt: skip
FT_ARGS = {
    "ft-full": ["--method", "full", "--steps", "12", "--fid-samples", "4", "--fid-reference", "4"],
    "ft-zero": ["--method", "autoprog-zero", "--steps", "12", "--fid-samples", "4", "--fid-reference", "4"],
    # two stages of 8 steps, the first searched by a 6-step supernet; seed 3 samples every candidate
    "ft-one": ["--method", "autoprog-one", "--steps", "16", "--stages", "2", "--search-fraction", "0.75",
               "--seed", "3", "--fid-samples", "0"],
}  # fmt: skip


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three tiny real runs (full, prog, autoprog-one) on a learnable Fashion-MNIST-format dataset."""
    root = tmp_path_factory.mktemp("report-runs")
    data = make_cell_dataset(root / "data", n_train=100, n_test=40)
    out = {}
    for method in METHODS:
        extra = ["--search-samples", "32"] if method == "autoprog-one" else []
        out[method] = root / method
        argv = [
            "pretrain",
            "--method",
            method,
            "--data-dir",
            str(data),
            "--out",
            str(out[method]),
            *TINY,
            *extra,
        ]
        assert main(argv) == 0
    return out


@dataclass
class Page:
    """The parts of report.html a reader sees: headings, paragraphs, tables (with row classes) and images."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._text: list[str] | None = None
        self._rows: list[tuple[str, list[str]]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("h1", "h2", "h3", "h4", "p", "td", "th"):
            self._text = []
        elif tag == "table":
            self._rows = []
        elif tag == "tr" and self._rows is not None:
            self._rows.append((a.get("class") or "", []))
        elif tag == "img":
            self.page.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._rows is not None and self._text is not None:
            self._rows[-1][1].append("".join(self._text))
        elif tag in ("h1", "h2", "h3", "h4", "p") and self._text is not None:
            self.page.blocks.append((tag, "".join(self._text)))
        elif tag == "table" and self._rows is not None:
            self.page.blocks.append(("table", self._rows))
            self._rows = None
        if tag in ("h1", "h2", "h3", "h4", "p", "td", "th"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def parse_page(text: str) -> Page:
    parser = _PageParser()
    parser.feed(text)
    return parser.page


def section(page: Page, h2: str) -> list[tuple[str, Any]]:
    """The blocks after the ``<h2>`` with this text, up to the next ``<h2>``."""
    start = page.blocks.index(("h2", h2))
    end = next((i for i, (tag, _) in enumerate(page.blocks) if tag == "h2" and i > start), len(page.blocks))
    return page.blocks[start + 1 : end]


def table_after(blocks: list[tuple[str, Any]], heading: str) -> list[tuple[str, list[str]]]:
    """The first table after the heading with this text (header row dropped)."""
    start = next(i for i, (tag, text) in enumerate(blocks) if tag in ("h2", "h3", "h4") and text == heading)
    rows = next(content for tag, content in blocks[start:] if tag == "table")
    return rows[1:]


def summary_rows(
    page: Page, heading: str = "Summary", headers: list[str] = SUMMARY_HEADERS
) -> dict[str, list[str]]:
    rows = next(content for tag, content in section(page, heading) if tag == "table")
    assert rows[0][1] == headers
    return {cells[0]: cells for _, cells in rows[1:]}


@dataclass
class Report:
    out: Path
    html_path: Path
    html: str
    md: str
    page: Page


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Report:
    out = tmp_path_factory.mktemp("report") / "out"
    html_path = write_report([runs[m] for m in METHODS], out)
    html = html_path.read_text(encoding="utf-8")
    return Report(out, html_path, html, (out / "report.md").read_text(encoding="utf-8"), parse_page(html))


def summary_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


# ------------------------------------------------------------------------------------------- tests


def test_writes_self_contained_html_markdown_and_four_pngs(report):
    assert report.html_path == report.out / "report.html"
    assert report.html.startswith("<!DOCTYPE html>")
    pngs = {}
    for name in ("accuracy_vs_time.png", "accuracy_vs_flops.png", "schedule.png", "stage_cost.png"):
        data = (report.out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        width, height = struct.unpack(">II", data[16:24])  # IHDR
        assert width >= 300 and height >= 150, (name, width, height)
        assert len(data) > 5000, name  # a drawn chart, not an empty canvas
        pngs[name] = data
    assert set(PLOT_FILES) == set(pngs)
    # the page embeds exactly these four PNGs and links nothing outside itself
    assert len(report.page.images) == 4
    embedded = []
    for src in report.page.images:
        assert src.startswith("data:image/png;base64,")
        embedded.append(base64.b64decode(src.split(",", 1)[1]))
    assert sorted(embedded) == sorted(pngs.values())
    assert 'src="http' not in report.html and "href=" not in report.html
    # the markdown links the files
    for name in pngs:
        assert f"]({name})" in report.md


def test_summary_table_holds_the_summaries_numbers(report, runs):
    rows = summary_rows(report.page)
    assert list(rows) == list(METHODS)  # one row per run, labelled by directory name, in the given order
    full = summary_of(runs["full"])
    for method in METHODS:
        s = summary_of(runs[method])
        time_ratio = s["wall_clock_s"] / full["wall_clock_s"]
        realised_over_theoretical = (full["wall_clock_s"] / s["wall_clock_s"]) / (
            s["full_flops"] / s["train_flops"]
        )
        expected = [
            method, s["method"], s["model"], s["data"], str(s["epochs"]), f"{s['top1']:.2f}",
            f"{s['wall_clock_s']:.1f}", f"{s['train_flops']:.2e}", f"{s['full_flops']:.2e}",
            f"{s['flops_ratio']:.3f}", f"{time_ratio:.3f}", f"{realised_over_theoretical:.3f}",
        ]  # fmt: skip
        assert rows[method] == expected
        # the markdown carries the same row
        assert "| " + " | ".join(expected) + " |" in report.md
    assert rows["full"][-2:] == ["1.000", "1.000"]
    # progressive training really saved FLOPs in these runs, so the ratio columns are not trivially equal
    assert summary_of(runs["prog"])["train_flops"] < full["train_flops"]
    assert rows["prog"][9] != "1.000"


def test_ratios_without_a_full_run_are_dashes(runs, tmp_path):
    page = parse_page(
        write_report([runs["prog"], runs["autoprog-one"]], tmp_path / "r").read_text(encoding="utf-8")
    )
    rows = summary_rows(page)
    for method in ("prog", "autoprog-one"):
        s = summary_of(runs[method])
        assert rows[method][9] == f"{s['flops_ratio']:.3f}"
        assert rows[method][10:] == [DASH, DASH]


def test_schedule_and_stage_tables_per_run(report, runs):
    for method in METHODS:
        s = summary_of(runs[method])
        blocks = section(report.page, f"Run {method}")
        keys = ("stage", "start_epoch", "end_epoch", "resolution", "depth")
        schedule = [cells for _, cells in table_after(blocks, "Schedule")]
        assert schedule == [[str(st[k]) for k in keys] for st in s["schedule"]]
        stages = [cells for _, cells in table_after(blocks, "Stages")]
        assert len(stages) == len(s["stages"])
        previous = 0
        for cells, st in zip(stages, s["stages"], strict=True):
            per_stage = st["train_flops_cumulative"] - previous
            previous = st["train_flops_cumulative"]
            assert cells == [*(str(st[k]) for k in keys), f"{st['wall_clock_s']:.1f}", f"{per_stage:.2e}",
                             f"{st['train_flops_cumulative']:.2e}", str(st["params"])]  # fmt: skip
    prog = summary_of(runs["prog"])["schedule"]
    assert (
        len({(st["resolution"], st["depth"]) for st in prog}) > 1
    )  # it grew, so the tables show several configs


def test_search_table_lists_candidates_and_marks_the_chosen(report, runs):
    s = summary_of(runs["autoprog-one"])
    assert s["search"], "the tiny autoprog-one run should have searched"
    blocks = section(report.page, "Run autoprog-one")
    for search in s["search"]:
        heading = f"Stage {search['stage']} search"
        rows = table_after(blocks, heading)
        assert [[int(c[0]), int(c[1])] for _, c in rows] == [
            [c["resolution"], c["depth"]] for c in search["candidates"]
        ]
        for (_, cells), cand in zip(rows, search["candidates"], strict=True):
            assert cells[2] == ("–" if math.isnan(cand["loss"]) else f"{cand['loss']:.4f}")
        chosen = [cells for cls, cells in rows if cls == "chosen"]
        assert len(chosen) == 1 and chosen[0][5] == "✓"
        assert [int(chosen[0][0]), int(chosen[0][1])] == [
            search["chosen"]["resolution"],
            search["chosen"]["depth"],
        ]
        assert sum(cells[5] == "✓" for _, cells in rows) == 1
        details = blocks[blocks.index(("h4", heading)) + 1]
        assert details[0] == "p"
        assert f"balancing_factor {search['balancing_factor']:.3f}" in details[1]
        assert f"search_time_s {search['search_time_s']:.1f}" in details[1]
    for method in ("full", "prog"):
        assert ("h3", "Search") not in section(report.page, f"Run {method}")


def test_accuracy_curves_come_from_the_log_epoch_records(runs):
    for method in METHODS:
        lines = (runs[method] / "log.jsonl").read_text().splitlines()
        epochs = [r for r in map(json.loads, lines) if r["event"] == "epoch"]
        run = load_run(runs[method])
        assert run.label == method
        assert run.epochs == epochs
        assert all("val_top1" in r and "wall_clock_s" in r and "train_flops" in r for r in run.epochs)
    assert len(load_run(runs["full"]).epochs) == 4


def test_missing_summary_is_a_one_line_error(runs, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(AutoprogError, match="not-a-run") as err:
        write_report([runs["full"], empty], out)
    assert "\n" not in str(err.value)
    assert not (out / "report.html").exists()


def test_strings_from_the_files_are_escaped_and_nulls_are_dashes(runs, tmp_path):
    evil = tmp_path / "evil<b>$x$"
    amp = tmp_path / "a&b"
    for src, dst in ((runs["prog"], evil), (runs["autoprog-one"], amp)):
        dst.mkdir()
        shutil.copy(src / "log.jsonl", dst / "log.jsonl")
    s = summary_of(runs["prog"])
    s.update(model="<script>alert(1)</script>", top1=None)
    (evil / "summary.json").write_text(json.dumps(s))
    s = summary_of(runs["autoprog-one"])
    s["search"][0]["candidates"][0]["loss"] = float("nan")  # json writes NaN, as pretrain does
    (amp / "summary.json").write_text(json.dumps(s))

    out = tmp_path / "out"
    html = write_report([evil, amp], out).read_text(encoding="utf-8")
    assert "evil&lt;b&gt;$x$" in html and "a&amp;b" in html
    assert "<b>" not in html and "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "evil&lt;b&gt;" in md and "<b>" not in md and "<script>" not in md
    page = parse_page(html)
    rows = summary_rows(page)
    assert rows["evil<b>$x$"][2] == "<script>alert(1)</script>"  # shown as text, not markup
    assert rows["evil<b>$x$"][5] == DASH
    first = table_after(section(page, "Run a&b"), f"Stage {s['search'][0]['stage']} search")[0][1]
    assert first[2] == DASH
    for name in PLOT_FILES:  # `$` in a label must not start matplotlib's mathtext
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_report_subcommand_parser_and_runner(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="autoprog")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    defaults = parser.parse_args(["report", "some/run"])
    assert defaults.runs == ["some/run"] and str(defaults.out) == "report" and defaults.title is None
    out = tmp_path / "r"
    args = parser.parse_args(
        ["report", str(runs["full"]), str(runs["prog"]), "--out", str(out), "--title", "A <t>"]
    )
    assert args.command == "report" and args.runs == [str(runs["full"]), str(runs["prog"])]
    path = run_report(args)
    assert path == out / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "<title>A &lt;t&gt;</title>" in html and "<h1>A &lt;t&gt;</h1>" in html
    assert str(path) in capsys.readouterr().out


# ------------------------------------------------------------------------------ fine-tuning runs


@pytest.fixture(scope="module")
def ft_runs(tmp_path_factory) -> dict[str, Path]:
    """Three tiny real `autoprog finetune` runs (full and AutoProg-Zero with FID on 4 samples,
    AutoProg-One without FID) and two written from them: a top-1 run and an old run whose summary
    predates the ``metric`` key."""
    root = tmp_path_factory.mktemp("finetune-runs")
    cells = make_cell_dataset(root / "cells", n_train=100, n_test=20)
    out = {}
    for name, extra in FT_ARGS.items():
        out[name] = root / name
        assert main([*FT_COMMON, "--data-dir", str(cells), "--out", str(out[name]), *extra]) == 0
    for name, source, edit in (
        ("ft-top1", "ft-zero", {"metric": "top1", "top1": 87.25, "task": "ClassifierTask"}),
        ("ft-old", "ft-full", {}),
    ):
        out[name] = root / name
        out[name].mkdir()
        shutil.copy(out[source] / "log.jsonl", out[name] / "log.jsonl")
        s = summary_of(out[source])
        for key in ("metric", "fid", "fid_samples") if name == "ft-top1" else ("metric",):
            del s[key]
        s.update(edit)
        (out[name] / "summary.json").write_text(json.dumps(s))
    return out


@pytest.fixture(scope="module")
def ft_report(ft_runs, tmp_path_factory) -> Report:
    out = tmp_path_factory.mktemp("ft-report") / "out"
    html_path = write_report([ft_runs[name] for name in FT_RUNS], out)
    html = html_path.read_text(encoding="utf-8")
    return Report(out, html_path, html, (out / "report.md").read_text(encoding="utf-8"), parse_page(html))


def log_records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    return [
        r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["event"] == event
    ]


def test_finetune_runs_are_told_apart_from_pretrain_runs(runs, ft_runs):
    for method in METHODS:
        assert run_kind(summary_of(runs[method])) == "pretrain"
        assert load_run(runs[method]).kind == "pretrain"
        assert load_run(runs[method]).steps == []  # not kept: the page shows no per-step loss for them
    for name in FT_RUNS:
        assert run_kind(summary_of(ft_runs[name])) == "finetune"
    assert run_metric(summary_of(ft_runs["ft-zero"])) == "fid"
    assert run_metric(summary_of(ft_runs["ft-top1"])) == "top1"
    assert (
        "metric" not in summary_of(ft_runs["ft-old"]) and run_metric(summary_of(ft_runs["ft-old"])) == "fid"
    )
    # older fine-tuning summaries: no metric key, a fid value or a schedule of levels
    assert run_kind({"fid": None, "steps": 10}) == "finetune"
    assert run_kind({"steps": 10, "schedule": [{"stage": 0, "start_step": 0, "level": 2}]}) == "finetune"
    assert run_kind({"epochs": 4, "top1": 50.0, "steps": 16}) == "pretrain"
    assert run_metric({"top1": 1.0}) == "top1" and run_metric({"steps": 3}) is None


def test_finetune_report_writes_its_five_pngs(ft_report):
    pngs = {}
    for name in FINETUNE_PLOT_FILES:
        data = (ft_report.out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 300 and height >= 150, (name, width, height)
        assert len(data) > 5000, name
        pngs[name] = data
    assert {"quality_vs_time.png", "quality_vs_flops.png", "loss_vs_steps.png"} <= set(pngs)
    for name in ("accuracy_vs_time.png", "accuracy_vs_flops.png"):  # pre-training plots: not for these runs
        assert not (ft_report.out / name).exists()
    embedded = sorted(base64.b64decode(src.split(",", 1)[1]) for src in ft_report.page.images)
    assert embedded == sorted(pngs.values())
    for name in pngs:
        assert f"]({name})" in ft_report.md


def test_finetune_summary_table_holds_the_summaries_numbers(ft_report, ft_runs):
    rows = summary_rows(ft_report.page, headers=FT_SUMMARY_HEADERS)
    assert list(rows) == list(FT_RUNS)
    full = summary_of(ft_runs["ft-full"])
    for name in FT_RUNS:
        s = summary_of(ft_runs[name])
        fid = f"{s['fid']:.2f}" if s.get("fid") is not None else DASH
        top1 = f"{s['top1']:.2f}" if "top1" in s else DASH
        time_ratio = s["wall_clock_s"] / full["wall_clock_s"]
        realised = (full["wall_clock_s"] / s["wall_clock_s"]) / (s["full_flops"] / s["train_flops"])
        expected = [
            name, s["method"], s["model"], s["data"], str(s["steps"]), fid, top1, f"{s['wall_clock_s']:.1f}",
            f"{s['train_flops']:.2e}", f"{s['full_flops']:.2e}", f"{s['flops_ratio']:.3f}", f"{time_ratio:.3f}",
            f"{realised:.3f}",
        ]  # fmt: skip
        assert rows[name] == expected
        assert "| " + " | ".join(expected) + " |" in ft_report.md
    # the real FID runs have a number, the run evaluated without samples a dash, the top-1 run its top-1
    assert (
        rows["ft-zero"][5] != DASH and rows["ft-full"][5] != DASH and rows["ft-old"][5] == rows["ft-full"][5]
    )
    assert rows["ft-one"][5] == DASH and rows["ft-top1"][5:7] == [DASH, "87.25"]
    assert rows["ft-full"][-2:] == ["1.000", "1.000"]
    assert summary_of(ft_runs["ft-zero"])["flops_ratio"] < 1 and rows["ft-zero"][10] != "1.000"
    note = next(text for tag, text in section(ft_report.page, "Summary") if tag == "p")
    assert "wall-clock of ft-full (method full)" in note and "lower is better" in note


def test_finetune_schedule_and_stage_tables(ft_report, ft_runs):
    for name in ("ft-full", "ft-zero", "ft-one"):
        s = summary_of(ft_runs[name])
        blocks = section(ft_report.page, f"Run {name}")
        schedule = [cells for _, cells in table_after(blocks, "Schedule")]
        keys = ("stage", "start_step", "end_step", "resolution", "level", "trainable_params")
        assert schedule == [[str(st[k]) for k in keys] for st in s["schedule"]]
        stages = [cells for _, cells in table_after(blocks, "Stages")]
        previous = 0
        for cells, st in zip(stages, s["stages"], strict=True):
            assert cells[:6] == [str(st[k]) for k in (*keys[:5], "steps_trained")]
            mean_loss = DASH if st["mean_loss"] is None else f"{st['mean_loss']:.4f}"
            assert cells[6:] == [mean_loss, f"{st['wall_clock_s']:.1f}", f"{st['train_flops_cumulative'] - previous:.2e}",
                                 f"{st['train_flops_cumulative']:.2e}", f"{st['peak_mem_bytes'] / 2**20:.1f}"]  # fmt: skip
            previous = st["train_flops_cumulative"]
        details = blocks[0]
        assert details[0] == "p" and f"method {s['method']}" in details[1]
        path = " → ".join(f"{st['resolution']}px L{st['level']}" for st in s["schedule"])
        assert f"; schedule {path};" in details[1]
    zero = summary_of(ft_runs["ft-zero"])["schedule"]
    assert len({st["level"] for st in zero}) > 1 and zero[-1]["level"] == 4  # it unfroze step by step


def test_finetune_search_tables_mark_the_chosen_candidate(ft_report, ft_runs):
    for name, kind in (("ft-zero", "zero-shot"), ("ft-one", "supernet")):
        s = summary_of(ft_runs[name])
        assert s["search"], name
        blocks = section(ft_report.page, f"Run {name}")
        for search in s["search"]:
            heading = f"Stage {search['stage']} search"
            rows = table_after(blocks, heading)
            assert [[int(c[0]), int(c[1])] for _, c in rows] == [
                [c["resolution"], c["level"]] for c in search["candidates"]
            ]
            chosen = [cells for cls, cells in rows if cls == "chosen"]
            assert len(chosen) == 1 and chosen[0][-1] == "✓"
            assert sum(cells[-1] == "✓" for _, cells in rows) == 1
            assert [int(chosen[0][0]), int(chosen[0][1])] == [
                search["chosen"]["resolution"],
                search["chosen"]["level"],
            ]
            details = blocks[blocks.index(("h4", heading)) + 1][1]
            assert f"chosen {search['chosen']['resolution']}px, level {search['chosen']['level']}." in details
            assert f"search_time_s {search['search_time_s']:.1f}" in details
            for (_, cells), cand in zip(rows, search["candidates"], strict=True):
                if kind == "zero-shot":  # learnable params, log NTK, ZiCo, runtime, rank sum
                    assert cells[2:7] == [str(cand["trainable_params"]), f"{cand['log_ntk']:.3f}", f"{cand['zico']:.2f}",
                                          f"{cand['time']:.4g}", f"{cand['total']:g}"]  # fmt: skip
                else:  # supernet steps, loss, runtime, score (NaN or inf: a dash)
                    finite = [v if math.isfinite(v) else None for v in (cand["loss"], cand["score"])]
                    assert cells[2:6] == [str(cand["steps"]), DASH if finite[0] is None else f"{finite[0]:.4f}",
                                          f"{cand['time']:.4g}", DASH if finite[1] is None else f"{finite[1]:.4g}"]  # fmt: skip
            if kind == "zero-shot":
                assert f"at step {search['start_step']}," in details
            else:
                assert f"from step {search['start_step']} for {search['supernet_steps']} steps" in details
    assert ("h3", "Search") not in section(ft_report.page, "Run ft-full")


def test_finetune_loss_curve_comes_from_the_step_records(ft_runs):
    for name in ("ft-full", "ft-zero", "ft-one"):
        steps = log_records(ft_runs[name], "step")
        run = load_run(ft_runs[name])
        assert run.steps == steps and run.epochs == []
        assert loss_points(run) == [(r["step"], r["loss"]) for r in steps]
        assert [p[0] for p in loss_points(run)] == list(range(summary_of(ft_runs[name])["steps"]))
    one = log_records(ft_runs["ft-one"], "step")
    assert (
        sum(bool(r.get("supernet")) for r in one)
        == summary_of(ft_runs["ft-one"])["search"][0]["supernet_steps"]
    )
    # a step logged twice (a resumed run appending) keeps its last record; non-finite losses are left out
    run = load_run(ft_runs["ft-zero"])
    extra = [{"event": "step", "step": 0, "loss": 9.0}, {"event": "step", "step": 1, "loss": float("nan")}]
    points = dict(loss_points(type(run)(run.label, run.path, run.summary, [], run.steps + extra)))
    assert points[0] == 9.0 and 1 not in points


def test_smooth_is_a_debiased_moving_average():
    assert smooth([3.0, 1.0, 2.0], 1) == [3.0, 1.0, 2.0]
    assert smooth([2.0] * 5, 7) == pytest.approx([2.0] * 5)  # no pull towards 0 at the start
    assert smooth([0.0, 1.0], 3) == pytest.approx([0.0, 0.5 / 0.75])  # beta 0.5
    assert smooth([], 4) == []


def test_mixed_report_keeps_pretrain_and_finetune_apart(runs, ft_runs, tmp_path):
    dirs = [runs["full"], ft_runs["ft-zero"], runs["prog"], ft_runs["ft-full"]]
    out = tmp_path / "mixed"
    page = parse_page(write_report(dirs, out).read_text(encoding="utf-8"))
    pre = summary_rows(page, "Summary: pre-training")
    ft = summary_rows(page, "Summary: fine-tuning", FT_SUMMARY_HEADERS[:6] + FT_SUMMARY_HEADERS[7:])
    assert list(pre) == ["full", "prog"] and list(ft) == ["ft-zero", "ft-full"]
    # ratios within each kind: the fine-tuning run against the full fine-tuning run
    s, full = summary_of(ft_runs["ft-zero"]), summary_of(ft_runs["ft-full"])
    assert ft["ft-zero"][-2] == f"{s['wall_clock_s'] / full['wall_clock_s']:.3f}"
    p, pfull = summary_of(runs["prog"]), summary_of(runs["full"])
    assert pre["prog"][-2] == f"{p['wall_clock_s'] / pfull['wall_clock_s']:.3f}"
    expected = {f"pretrain_{n}" for n in PLOT_FILES} | {f"finetune_{n}" for n in FINETUNE_PLOT_FILES}
    assert {p.name for p in out.glob("*.png")} == expected
    assert len(page.images) == len(expected)
    assert [text for tag, text in page.blocks if tag == "h2"] == [
        "Summary: pre-training", "Plots: pre-training", "Summary: fine-tuning", "Plots: fine-tuning",
        "Run full", "Run ft-zero", "Run prog", "Run ft-full",
    ]  # fmt: skip
    # each run's section has its own kind's tables
    assert table_after(section(page, "Run prog"), "Schedule")  # epochs and depth
    assert ("h4", "Stage 0 search") in section(page, "Run ft-zero")


def test_report_replays_logs_into_tensorboard(ft_runs, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    argv = [
        "report",
        str(ft_runs["ft-zero"]),
        str(ft_runs["ft-one"]),
        "--out",
        str(tmp_path / "r"),
        "--tensorboard",
        str(tb),
    ]
    assert main(argv) == 0
    assert str(tb / "ft-zero") in capsys.readouterr().out
    for name in ("ft-zero", "ft-one"):
        acc = EventAccumulator(str(tb / name), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        steps = log_records(ft_runs[name], "step")
        assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
            (r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in steps
        ]
        stages = log_records(ft_runs[name], "stage")
        assert [(e.step, e.value) for e in acc.Scalars("stage/level")] == [
            (r["step"], r["level"]) for r in stages
        ]
        searches = summary_of(ft_runs[name])["search"]
        assert [e.value for e in acc.Scalars("search/time_s")] == pytest.approx(
            [r["search_time_s"] for r in searches]
        )
    # replaying again into the same folders would double every point: refused, nothing written
    assert main([*argv[:3], "--out", str(tmp_path / "r2"), "--tensorboard", str(tb)]) == 2
    assert "already holds TensorBoard event files" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
