"""How much of a FID difference is sampling noise: each saved fine-tuned DiT, sampled with several seeds.

``autoprog finetune`` reports one FID per run, from ``--fid-samples`` DDIM samples drawn with a
generator seeded by the run's ``--seed``. This script reloads the final models that a
``bench finetune`` invocation saved (``RUNS_DIR/<name>/<method>-seed0/model``), draws the same
number of samples with other seeds, and reports each model's FID spread. The spread of one model
across sampling seeds is a lower bound on the noise between two runs (training seeds add more).
Nothing is trained here.

    .venv/bin/python benchmarks/fid_noise.py --runs runs/bench3200/finetune-mnist5k-3200 --seeds 0,1,2

Writes ``benchmarks/results/fid-noise.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import torch

from autoprog.adapters.diffusers_dit import DiTDenoiser
from autoprog.run import environment
from autoprog.tasks.dit import evaluate_fid
from autoprog.train.config import FinetuneConfig
from autoprog.train.diffusion import GaussianDiffusion

RESULTS = Path(__file__).resolve().parent / "results"


def fid_of(run_dir: Path, seed: int, device: torch.device) -> float:
    """FID of the run's saved model with the sampling generator of ``seed`` (otherwise its own settings)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{k: v for k, v in summary["config"].items() if k in known})
    cfg = dataclasses.replace(cfg, seed=seed)
    model = DiTDenoiser.load(run_dir / "model").to(device).eval()
    stage_id = summary["config"]["stages"] - 1 if model.stage_embedding is not None else None
    value, _ = evaluate_fid(
        model, cfg, GaussianDiffusion(), model.num_classes, model.sample_size, model.in_channels,
        stage_id=stage_id, device=device, log=lambda _m: None,
    )  # fmt: skip
    assert value is not None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="a bench finetune runs folder (RUNS_DIR/<name>)")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds (0 repeats the run's own FID)")
    parser.add_argument("--name", default="fid-noise")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device("cpu")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for run_dir in sorted(p for p in Path(args.runs).iterdir() if (p / "model").is_dir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        values = [fid_of(run_dir, s, device) for s in seeds]
        rows.append(
            {
                "run": run_dir.name,
                "method": summary["method"],
                "reported_fid": summary.get("fid"),
                "fids": values,
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        )
        print(f"{run_dir.name}: " + ", ".join(f"{v:.2f}" for v in values), flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {
        "name": args.name,
        "command": f".venv/bin/python benchmarks/fid_noise.py --runs {args.runs} --seeds {args.seeds}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "environment": environment(device),
        "seeds": seeds,
        "rows": rows,
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"# Benchmark `{args.name}`",
        "",
        f"- command: `{out['command']}`",
        f"- date: {out['date']}, git commit {commit}",
        "- each run's saved final model (the EMA), sampled again with each seed: the same sample count, "
        "DDIM steps, guidance and reference statistics as the run; only the sampling generator changes.",
        "",
        "| run | FID per sampling seed (" + ", ".join(map(str, seeds)) + ") | mean | std | mean − full's mean |",
        "|---|---|---|---|---|",
    ]
    full = next((r for r in rows if r["method"] == "full"), None)
    for r in rows:
        delta = "–" if full is None or r is full else f"{r['mean'] - full['mean']:+.2f}"
        lines.append(
            f"| {r['run']} | {', '.join(f'{v:.2f}' for v in r['fids'])} | {r['mean']:.2f} | {r['std']:.2f} | {delta} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["fids"]), r["fids"], color=f"C{i}", alpha=0.7)
        ax.errorbar(i, r["mean"], yerr=r["std"], color="black", capsize=4, fmt="_")
    ax.set_xticks(range(len(rows)), [r["method"] for r in rows])
    ax.set(ylabel="FID ↓ (one point per sampling seed)", title="FID spread across sampling seeds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)
    plt.close(fig)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
