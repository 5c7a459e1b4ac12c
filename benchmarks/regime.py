"""Regime check of an ``autoprog bench pretrain`` result (issue 17): is this a regime where
progressive training has something to win?

Two conditions, each printed with its figures:

1. **Capacity matters**: ``full`` beats every fixed sub-network trained for the same epochs (the
   variants ``full:img_size=R:depth=L``, i.e. the full method on a smaller model and input; their
   top-1 is at their own resolution, the only one they were trained at).
2. **There is time to win**: every ``full-equal-time`` variant (full training at a faster method's
   wall-clock, its cosine schedule fully decayed) loses at least ``--margin`` points (default 1) to
   ``full``.

And ``full``'s validation curve (top-1 after each epoch, from ``val_curve`` in its summary) is
drawn, so a reader sees how far from its plateau the budget is. Means over the seeds in the file;
nothing is trained here. Writes ``<name>-regime.md`` and ``<name>-regime.png`` beside the result.

    .venv/bin/python benchmarks/regime.py benchmarks/results/peers-fmnist-full.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _label(run: dict[str, Any]) -> str:
    return run.get("label", run["method"])


def _mean_top1(runs: list[dict[str, Any]], label: str) -> tuple[float, int]:
    values = [r["top1"] for r in runs if _label(r) == label]
    return statistics.fmean(values), len(values)


def regime_check(result: dict[str, Any], margin: float = 1.0) -> dict[str, Any]:
    """The two conditions (see the module docstring) and full's validation curve(s), as a dict:
    ``capacity`` and ``time`` (lists of rows with ``passed``), ``passed`` (both hold; ``None`` when
    a condition has no variant to judge), ``val_curves`` (per seed, ``[[epoch, val_top1], ...]``)."""
    runs = result["runs"]
    if not any(_label(r) == "full" for r in runs):
        raise SystemExit("regime check: the result has no `full` run")
    full, seeds = _mean_top1(runs, "full")
    labels = list(dict.fromkeys(_label(r) for r in runs))
    capacity = []
    for label in (x for x in labels if x.startswith("full:")):
        top1, n = _mean_top1(runs, label)
        run = next(r for r in runs if _label(r) == label)
        capacity.append({"variant": label, "subnet": f"{run['full_resolution']}/{run['full_depth']}", "seeds": n,
                         "top1": top1, "full_minus": full - top1, "passed": full > top1})  # fmt: skip
    time = []
    for label in (x for x in labels if x.startswith("full-equal-time")):
        top1, n = _mean_top1(runs, label)
        epochs = sorted({r["epochs"] for r in runs if _label(r) == label})
        time.append({"variant": label, "epochs": epochs, "seeds": n, "top1": top1, "full_minus": full - top1,
                     "passed": full - top1 >= margin})  # fmt: skip
    curves = {
        str(r["seed"]): [[c["epoch"], c["val_top1"]] for c in r.get("val_curve", []) if c.get("val_top1") is not None]
        for r in runs
        if _label(r) == "full"
    }
    verdicts = [all(x["passed"] for x in rows) for rows in (capacity, time) if rows]
    return {
        "name": result["name"], "full_top1": full, "full_seeds": seeds, "margin": margin,
        "capacity": capacity, "time": time, "val_curves": curves,
        "passed": all(verdicts) if len(verdicts) == 2 else None,
    }  # fmt: skip


def regime_markdown(check: dict[str, Any]) -> str:
    """The check as the markdown section the results file and the README quote."""
    verdict = {True: "**passed**", False: "**failed**", None: "**incomplete** (a condition has no variant)"}
    lines = [
        f"# Regime check of `{check['name']}`",
        "",
        f"Verdict: {verdict[check['passed']]}. `full`: {check['full_top1']:.2f} % test top-1 "
        f"(mean of {check['full_seeds']} seed(s)).",
        "",
        "## 1. Capacity matters: full beats every fixed sub-network trained for the same epochs",
        "",
        "| sub-network (res/depth) | variant | seeds | top-1 (%) | full − it (pt) | holds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {c['subnet']} | `{c['variant']}` | {c['seeds']} | {c['top1']:.2f} | {c['full_minus']:+.2f} | "
              f"{'yes' if c['passed'] else 'no'} |" for c in check["capacity"]]  # fmt: skip
    lines += [
        "",
        f"## 2. There is time to win: equal-time full loses at least {check['margin']:g} pt to full",
        "",
        "| variant | epochs | seeds | top-1 (%) | full − it (pt) | holds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| `{t['variant']}` | {', '.join(map(str, t['epochs']))} | {t['seeds']} | {t['top1']:.2f} | "
              f"{t['full_minus']:+.2f} | {'yes' if t['passed'] else 'no'} |" for t in check["time"]]  # fmt: skip
    lines += ["", "## full's validation top-1 after each epoch", ""]
    for seed, curve in check["val_curves"].items():
        points = ", ".join(f"{v:.1f}" for _, v in curve)
        gain = ""
        if len(curve) >= 4:
            q = curve[(3 * len(curve)) // 4 - 1]
            gain = f" (last quarter: {curve[-1][1] - q[1]:+.2f} pt from epoch {q[0] + 1} to {curve[-1][0] + 1})"
        lines.append(f"- seed {seed}: {points}{gain}")
    return "\n".join(lines) + "\n"


def plot_curves(check: dict[str, Any], path: Path) -> None:
    """full's validation curve per seed, with the fixed sub-networks' and equal-time runs' test top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (seed, curve) in enumerate(check["val_curves"].items()):
        ax.plot([e + 1 for e, _ in curve], [v for _, v in curve], marker="o", color=f"C{i}",
                label=f"full, validation, seed {seed}")  # fmt: skip
    for j, row in enumerate(check["capacity"] + check["time"]):
        name = row.get("subnet", row["variant"])
        ax.axhline(row["top1"], color=f"C{j + 3}", ls="--", lw=1, label=f"{name}: test {row['top1']:.1f}")
    ax.axhline(check["full_top1"], color="k", lw=1, label=f"full: test {check['full_top1']:.1f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{check['name']}: regime check")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="a bench pretrain result, e.g. benchmarks/results/NAME.json")
    parser.add_argument("--margin", type=float, default=1.0, help="points equal-time full must lose (default 1)")
    args = parser.parse_args(argv)
    if not args.result.is_file():
        raise SystemExit(f"regime check: no result file {args.result} (written by `autoprog bench pretrain`)")
    check = regime_check(json.loads(args.result.read_text()), args.margin)
    stem = args.result.with_suffix("")
    text = regime_markdown(check)
    Path(f"{stem}-regime.md").write_text(text)
    plot_curves(check, Path(f"{stem}-regime.png"))
    print(text)
    print(f"wrote {stem}-regime.md, .png")
    return check


if __name__ == "__main__":
    main()
