"""``autoprog bench pretrain``: methods side by side, same seed, data and budget; one results file.

Writes ``<results-dir>/<name>.json`` (``runs`` = the runs' ``summary.json`` objects, plus the
command, machine and git commit), ``<name>.md`` (a table) and ``<name>.png`` (top-1 against
wall-clock), and prints the table. Ratios are taken against ``full`` of the same seed, measured in
the same invocation (the machine is shared and noisy: never compare across invocations).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprog.errors import ConfigError
from autoprog.train.config import PRETRAIN_METHODS, PretrainConfig

QUICK = {"train_subset": 512, "val_size": 128, "test_subset": 500, "epochs": 4, "batch_size": 64}


def bench_pretrain(args: argparse.Namespace, make_config: Callable[..., PretrainConfig]) -> dict[str, Any]:
    from autoprog.train.pretrain import environment, pretrain

    variants = [parse_variant(v) for v in args.methods.split(",") if v.strip()]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    name = args.name or ("pretrain-quick" if args.quick else "pretrain")
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    runs: list[dict[str, Any]] = []
    for seed in seeds:  # seeds outside, methods inside: every seed's runs sit side by side in time
        for label, method, options in variants:
            out = Path(args.runs_dir) / name / f"{label.replace(':', '-').replace('=', '')}-seed{seed}"
            cfg = make_config(args, method=method, seed=seed, out=str(out), **{**overrides, **options})
            print(f"== {name}: {label}, seed {seed}", flush=True)
            summary = pretrain(cfg)
            summary["label"] = label
            runs.append(summary)
    import torch

    result = {
        "name": name,
        "command": "autoprog " + " ".join(sys.argv[1:]) if sys.argv and "autoprog" in sys.argv[0] else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "environment": environment(torch.device(runs[0]["environment"]["device"])),
        "aggregate": aggregate(runs),
        "runs": runs,
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result["aggregate"])
    (results_dir / f"{name}.md").write_text(_markdown_report(result, table))
    plot_runs(runs, results_dir / f"{name}.png", title=name)
    print(table)
    print(f"wrote {results_dir / (name + '.json')}, .md, .png")
    return result


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``"prog:operator=mogrow:ratio=0.4"`` -> ``("prog:operator=mogrow:ratio=0.4", "prog", {...})``.

    Values are parsed as the :class:`PretrainConfig` field's type (bool accepts true/false).
    """
    parts = [p.strip() for p in spec.strip().split(":")]
    method, options = parts[0], {}
    if method not in PRETRAIN_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(PRETRAIN_METHODS)}")
    defaults = PretrainConfig()
    for part in parts[1:]:
        key, _, value = part.partition("=")
        key = key.replace("-", "_")
        if not hasattr(defaults, key) or key in ("method", "seed", "out"):
            raise ConfigError(f"variant {spec!r}: {key!r} is not a pretrain option")
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                options[key] = value.lower() in ("true", "1")
            elif isinstance(default, int):
                options[key] = int(value)
            elif isinstance(default, float):
                options[key] = float(value)
            else:
                options[key] = value
        except ValueError:
            raise ConfigError(f"variant {spec!r}: bad value {value!r} for {key}") from None
    return spec.strip(), method, options


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: mean top-1 over seeds, and time/FLOPs ratios against ``full`` of the same seed."""
    by_seed_full = {r["seed"]: r for r in runs if r.get("label", r["method"]) == "full"}
    rows = []
    for label in dict.fromkeys(r.get("label", r["method"]) for r in runs):
        rs = [r for r in runs if r.get("label", r["method"]) == label]
        row: dict[str, Any] = {
            "method": label,
            "seeds": [r["seed"] for r in rs],
            "top1_mean": statistics.fmean(r["top1"] for r in rs),
            "top1_std": statistics.pstdev(r["top1"] for r in rs) if len(rs) > 1 else 0.0,
            "wall_clock_s_mean": statistics.fmean(r["wall_clock_s"] for r in rs),
            "flops_ratio": statistics.fmean(r["train_flops"] / r["full_flops"] for r in rs),
            "search_time_s_mean": statistics.fmean(r.get("search_time_s", 0.0) for r in rs),
        }
        paired = [(r, by_seed_full[r["seed"]]) for r in rs if r["seed"] in by_seed_full]
        if paired:
            wall = statistics.fmean(r["wall_clock_s"] / f["wall_clock_s"] for r, f in paired)
            row["wall_clock_ratio"] = wall
            row["top1_delta_vs_full"] = statistics.fmean(r["top1"] - f["top1"] for r, f in paired)
            row["realised_over_theoretical"] = statistics.fmean(
                (f["wall_clock_s"] / r["wall_clock_s"]) / (r["full_flops"] / r["train_flops"]) for r, f in paired
            )
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | seeds | top-1 (%) | Δ top-1 vs full | wall-clock (s) | of which search (s) | time ÷ full "
        "| FLOPs ÷ full | realised ÷ theoretical speed-up |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            return format(r[key], fmt) if key in r else "–"

        top1 = f"{r['top1_mean']:.2f}" + (f" ± {r['top1_std']:.2f}" if len(r["seeds"]) > 1 else "")
        lines.append(
            f"| {r['method']} | {len(r['seeds'])} | {top1} | {f('top1_delta_vs_full', '+.2f')} | "
            f"{r['wall_clock_s_mean']:.1f} | {r.get('search_time_s_mean', 0.0):.1f} | {f('wall_clock_ratio', '.3f')} | {r['flops_ratio']:.3f} | "
            f"{f('realised_over_theoretical', '.3f')} |"
        )
    return "\n".join(lines)


def _markdown_report(result: dict[str, Any], table: str) -> str:
    env = result["environment"]
    run0 = result["runs"][0]
    cfg = run0["config"]
    return (
        f"# Benchmark `{result['name']}`\n\n"
        f"- command: `{result['command']}`\n"
        f"- date: {result['date']}, git commit {result['git_commit']}\n"
        f"- machine: {env['cpu']}, {env['threads']} threads, device {env['device']}"
        + (f" ({env['gpu']})" if "gpu" in env else "")
        + f"\n- setup: {cfg['model']} depth {run0['full_depth']} @ {run0['full_resolution']}px, "
        f"{cfg['data']} ({run0['train_samples']} training images), {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, lr {cfg['lr']}\n"
        "- top-1: final (online) model on the test split at full resolution; time: training incl. growth, "
        "excl. evaluation; ratios against `full` of the same seed in this same run.\n\n"
        f"{table}\n"
    )


def plot_runs(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 against wall-clock, one marker per run, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, method in enumerate(dict.fromkeys(r.get("label", r["method"]) for r in runs)):
        rs = [r for r in runs if r.get("label", r["method"]) == method]
        ax.scatter([r["wall_clock_s"] for r in rs], [r["top1"] for r in rs], label=method, color=f"C{i}", s=40)
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
