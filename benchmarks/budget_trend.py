"""How the progressive methods' accuracy gap depends on the training budget (issue 3).

Reads committed ``autoprog bench pretrain`` results that differ only in ``--epochs`` (default: the
Fashion-MNIST 5k benchmarks at 8, 16 and 32 epochs) and puts them side by side: for every budget,
each method's top-1 and its gap to ``full`` of the same seed in the same invocation, its time and
FLOPs ratios; and, across budgets, the accuracy of ``full`` trained for half the epochs, which
costs about what a progressive run costs (0.5 of the FLOPs against Prog's 0.53 and AutoProg-One's
0.55): is growing better than simply training the full model for less time?

Only seed 0 is compared across budgets (the only seed every budget has); the 3-seed means of the
8-epoch benchmark are in its own result. Nothing is trained here.

    .venv/bin/python benchmarks/budget_trend.py

Writes ``benchmarks/results/budget-trend.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ("pretrain-fmnist-5k-8ep", "pretrain-fmnist-5k-16ep", "pretrain-fmnist-5k-32ep")


def seed_runs(result: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """The result's runs of one seed, by method label."""
    return {r.get("label", r["method"]): r for r in result["runs"] if r.get("seed") == seed}


def rows_of(results: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rows = []
    full_by_epochs = {}
    for result in results:
        runs = seed_runs(result, seed)
        if "full" in runs:
            full_by_epochs[runs["full"]["epochs"]] = runs["full"]
    for result in results:
        runs = seed_runs(result, seed)
        full = runs.get("full")
        if full is None:
            continue
        epochs = full["epochs"]
        half = full_by_epochs.get(epochs // 2)
        for label, r in runs.items():
            rows.append(
                {
                    "benchmark": result["name"],
                    "epochs": epochs,
                    "method": label,
                    "top1": r["top1"],
                    "delta_top1": r["top1"] - full["top1"],
                    "time_ratio": r["wall_clock_s"] / full["wall_clock_s"],
                    "flops_ratio": r["train_flops"] / full["train_flops"],
                    "schedule": [(s["resolution"], s["depth"]) for s in r["schedule"]],
                    "full_half_epochs_top1": half["top1"] if half is not None else None,
                }
            )
    return rows


def write_markdown(rows: list[dict[str, Any]], names: list[str], seed: int) -> str:
    lines = [
        "# Benchmark `budget-trend`",
        "",
        f"- command: `.venv/bin/python benchmarks/budget_trend.py` (reads {', '.join(f'`{n}`' for n in names)})",
        f"- seed {seed} of each; ratios against `full` of the same seed in the same invocation; top-1 on the "
        "10k test split; nothing new was trained for this table.",
        "- last column: `full` trained for half the epochs (another invocation, about the FLOPs of a "
        "progressive run): a progressive run should beat it to be worth its schedule.",
        "",
        "| epochs | method | top-1 (%) | Δ vs full | time ÷ full | FLOPs ÷ full | schedule (px, depth) | "
        "full at half the epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        half = "–" if r["full_half_epochs_top1"] is None else f"{r['full_half_epochs_top1']:.2f}"
        sched = " → ".join(f"{px}/{d}" for px, d in r["schedule"])
        lines.append(
            f"| {r['epochs']} | {r['method']} | {r['top1']:.2f} | {r['delta_top1']:+.2f} | "
            f"{r['time_ratio']:.3f} | {r['flops_ratio']:.3f} | {sched} | {half if r['method'] != 'full' else '–'} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, m in enumerate(methods):
        pts = sorted(((r["epochs"], r) for r in rows if r["method"] == m), key=lambda p: p[0])
        xs = [e for e, _ in pts]
        color = f"C{i}"  # one colour per method in both panels
        left.plot(xs, [r["top1"] for _, r in pts], marker="o", label=m, color=color)
        if m != "full":
            right.plot(xs, [r["delta_top1"] for _, r in pts], marker="o", label=m, color=color)
    left.set(xscale="log", xlabel="epochs (5,000 images)", ylabel="test top-1 (%)", title="top-1 by budget")
    right.axhline(0.0, color="grey", lw=0.8)
    right.axhline(-0.3, color="grey", lw=0.8, ls="--", label="issue 3's −0.3 pt")
    right.set(xscale="log", xlabel="epochs (5,000 images)", ylabel="Δ top-1 vs full (pt)", title="gap to full")
    for ax in (left, right):
        ax.set_xticks(sorted({r["epochs"] for r in rows}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", nargs="+", default=list(DEFAULT), help="result names under benchmarks/results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = [json.loads((RESULTS / f"{n}.json").read_text()) for n in args.results]
    rows = rows_of(results, args.seed)
    out = {
        "name": "budget-trend",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sources": [{"name": r["name"], "git_commit": r.get("git_commit"), "date": r.get("date")} for r in results],
        "seed": args.seed,
        "rows": rows,
    }
    (RESULTS / "budget-trend.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "budget-trend.md").write_text(write_markdown(rows, args.results, args.seed))
    plot(rows, RESULTS / "budget-trend.png")
    print((RESULTS / "budget-trend.md").read_text())


if __name__ == "__main__":
    main()
