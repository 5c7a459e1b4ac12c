"""Pareto plot of an ``autoprog bench pretrain`` result: top-1 against wall-clock, one point per method.

Reads ``benchmarks/results/<name>.json`` (written by the bench) and writes ``<name>-pareto.png``
beside it, and ``<name>-pareto.md``: per method (variant label) the mean top-1 over seeds (± std)
against the mean wall-clock ratio to ``full`` of the same seed (± std), with the Pareto front:
the methods no other method beats on both axes (faster *and* at least as accurate, or as fast and
more accurate). Nothing is trained here.

    .venv/bin/python benchmarks/pareto.py benchmarks/results/peers-fmnist-5k-32ep.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any


def method_points(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant label: mean/std of top-1 and of the time ratio to full of the same seed."""
    runs = result["runs"]
    full = {r["seed"]: r for r in runs if r.get("label", r["method"]) == "full"}
    points = []
    for label in dict.fromkeys(r.get("label", r["method"]) for r in runs):
        rs = [r for r in runs if r.get("label", r["method"]) == label and r["seed"] in full]
        if not rs:
            continue
        top1 = [r["top1"] for r in rs]
        ratio = [r["wall_clock_s"] / full[r["seed"]]["wall_clock_s"] for r in rs]
        flops = [r["train_flops"] / full[r["seed"]]["full_flops"] for r in rs]
        points.append({
            "method": label, "seeds": len(rs),
            "top1_mean": statistics.fmean(top1), "top1_std": statistics.pstdev(top1) if len(rs) > 1 else 0.0,
            "time_ratio_mean": statistics.fmean(ratio), "time_ratio_std": statistics.pstdev(ratio) if len(rs) > 1 else 0.0,
            "flops_ratio": statistics.fmean(flops),
        })  # fmt: skip
    return points


def pareto_front(points: list[dict[str, Any]]) -> list[str]:
    """The labels no other point dominates (time no larger and top-1 no smaller, one strictly)."""

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        no_worse = a["time_ratio_mean"] <= b["time_ratio_mean"] and a["top1_mean"] >= b["top1_mean"]
        better = a["time_ratio_mean"] < b["time_ratio_mean"] or a["top1_mean"] > b["top1_mean"]
        return no_worse and better

    return [p["method"] for p in points if not any(dominates(q, p) for q in points if q is not p)]


def plot(points: list[dict[str, Any]], front: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, p in enumerate(points):
        ax.errorbar(p["time_ratio_mean"], p["top1_mean"], xerr=p["time_ratio_std"], yerr=p["top1_std"], fmt="o",
                    color=f"C{i % 10}", capsize=3, label=f"{p['method']} ({p['seeds']} seed{'s' * (p['seeds'] > 1)})")  # fmt: skip
    on_front = sorted((p for p in points if p["method"] in front), key=lambda p: p["time_ratio_mean"])
    ax.plot([p["time_ratio_mean"] for p in on_front], [p["top1_mean"] for p in on_front], "k--", lw=1,
            alpha=0.6, label="Pareto front")  # fmt: skip
    ax.set_xlabel("training wall-clock ÷ full (same seed, same invocation)")
    ax.set_ylabel("top-1 (%), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(points: list[dict[str, Any]], front: list[str], name: str) -> str:
    lines = [f"# Pareto front of `{name}`", "",
             "Top-1 (mean ± std over seeds) against wall-clock ÷ full of the same seed; ★: on the Pareto front.", "",
             "| method | seeds | top-1 (%) | time ÷ full | FLOPs ÷ full | front |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(points, key=lambda p: p["time_ratio_mean"]):
        lines.append(
            f"| {p['method']} | {p['seeds']} | {p['top1_mean']:.2f} ± {p['top1_std']:.2f} | "
            f"{p['time_ratio_mean']:.3f} ± {p['time_ratio_std']:.3f} | {p['flops_ratio']:.3f} | "
            f"{'★' if p['method'] in front else ''} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="an autoprog bench pretrain results JSON")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    points = method_points(result)
    if not points:
        raise SystemExit(f"{args.result}: no run has a full run of the same seed to compare with")
    front = pareto_front(points)
    stem = args.result.with_suffix("")
    plot(points, front, stem.with_name(stem.name + "-pareto.png"), title=result.get("name", stem.name))
    text = markdown(points, front, result.get("name", stem.name))
    stem.with_name(stem.name + "-pareto.md").write_text(text)
    print(text)
    print(f"wrote {stem}-pareto.png, -pareto.md")


if __name__ == "__main__":
    main()
