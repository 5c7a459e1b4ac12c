"""The room a DiT fine-tuning benchmark has (issue 20): the FID floor and the source's start.

A fine-tuning benchmark can only separate methods if fine-tuning moves FID a clear part of the way
from where the source starts to where real images sit. For one source and target this measures,
with the settings of ``autoprog bench finetune`` (the same sample count, DDIM steps, guidance and
reference statistics: ``--fid-samples`` samples against ``--fid-reference`` class-balanced
training images of the target):

* **floor**: FID of ``--fid-samples`` real held-out images of the target (its test split,
  class-balanced, one draw per seed): what a perfect generator scores at this sample count;
* **start**: FID of the source before any fine-tuning, sampled for the target's class indices,
  one sampling seed each;
* optionally (``--finetuned RESULT.json``) the fine-tuned FIDs of a ``bench finetune`` result, to
  say which share of the start-to-floor gap each method closed.

Nothing is trained here, except the built-in source itself on first use (cached, as ``finetune``
makes it). Writes ``benchmarks/results/<name>.{json,md,png}``.

    .venv/bin/python benchmarks/dit_source_gap.py --source dit-fmnist --data mnist-5k --seeds 0,1,2 \\
        --finetuned benchmarks/results/finetune-mnist5k-3200.json
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

from autoprog.data import class_balanced_subset, load_dataset
from autoprog.eval.fid import fid, reference_statistics
from autoprog.run import environment
from autoprog.tasks import create_finetune_task
from autoprog.tasks.dit import DiTTask, fid_samples
from autoprog.train.config import FinetuneConfig
from autoprog.train.source import resolve_model

RESULTS = Path(__file__).resolve().parent / "results"


def floor_fid(cfg: FinetuneConfig, seed: int, device: torch.device) -> float:
    """FID of ``cfg.fid_samples`` class-balanced test images of ``cfg.data`` (draw ``seed``) against
    the training reference the fine-tuning runs use."""
    test = load_dataset(cfg.data, "test", data_dir=cfg.data_dir)
    subset = class_balanced_subset(test, cfg.fid_samples, seed=seed)
    images = torch.stack([subset[i][0] for i in range(len(subset))])
    ref = reference_statistics(cfg.data, "train", cfg.fid_reference, data_dir=cfg.data_dir, device=device)
    return fid(images, ref, device=device)


def start_fid(task: DiTTask, cfg: FinetuneConfig, seed: int, device: torch.device) -> float:
    """FID of the source as it is, sampled for the target's classes with sampling seed ``seed``."""
    cfg = dataclasses.replace(cfg, seed=seed)
    f = task.codec.downsample if task.codec is not None else 1
    model = task.model.to(device).eval()
    images = fid_samples(
        model, cfg, task.diffusion, task.num_classes, task.full_resolution // f, task.model.in_channels,
        stage_id=None, device=device, decode=task.codec.decode if task.codec is not None else None,
    )  # fmt: skip
    ref = reference_statistics(cfg.data, "train", cfg.fid_reference, data_dir=cfg.data_dir, device=device)
    return fid(images, ref, device=device)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}  # fmt: skip


def finetuned_rows(path: Path, floor: float, start: float) -> list[dict[str, Any]]:
    """Per method of a ``bench finetune`` result: its mean FID and the share of the start-to-floor
    gap it closed (``(start - fid) / (start - floor)``)."""
    result = json.loads(path.read_text())
    rows = []
    for row in result["aggregate"]:
        value = row.get("fid_mean")
        if value is None:
            continue
        rows.append({"method": row["method"], "fid": value, "closed": (start - value) / (start - floor)})
    return rows


def markdown(report: dict[str, Any]) -> str:
    fl, st = report["floor"], report["start"]
    lines = [
        f"# Benchmark `{report['name']}`",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}, git commit {report['git_commit']}",
        f"- source `{report['source']}` -> {report['data']}: {report['fid_samples']} samples "
        f"(DDIM-{report['sample_steps']}, guidance {report['guidance']}) against {report['fid_reference']} "
        "class-balanced training images; nothing fine-tuned here.",
        "",
        "| what | FID per seed | mean ± std |",
        "|---|---|---|",
        f"| floor: real held-out test images | {', '.join(f'{v:.2f}' for v in fl['values'])} | "
        f"{fl['mean']:.2f} ± {fl['std']:.2f} |",
        f"| start: the source, not fine-tuned | {', '.join(f'{v:.2f}' for v in st['values'])} | "
        f"{st['mean']:.2f} ± {st['std']:.2f} |",
        "",
        f"Gap from start to floor: {st['mean'] - fl['mean']:.2f} FID points.",
    ]
    if report.get("finetuned"):
        lines += ["", f"Fine-tuned (from `{report['finetuned_from']}`):", "",
                  "| method | FID | share of the gap closed |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {r['method']} | {r['fid']:.2f} | {100 * r['closed']:.1f} % |" for r in report["finetuned"]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["floor (real)", "start (source)"] + [r["method"] for r in report.get("finetuned", [])]
    values = [report["floor"]["mean"], report["start"]["mean"]] + [r["fid"] for r in report.get("finetuned", [])]
    errors = [report["floor"]["std"], report["start"]["std"]] + [0.0] * len(report.get("finetuned", []))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.bar(names, values, yerr=errors, color=["C2", "C3"] + ["C0"] * (len(names) - 2))
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(f"{report['name']}: room for fine-tuning")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    d = FinetuneConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="dit-fmnist", help="a built-in DiT source or a DiT folder")
    parser.add_argument("--data", default="mnist-5k", help="the fine-tuning target")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds (and real-image draws)")
    parser.add_argument("--fid-samples", type=int, default=d.fid_samples)
    parser.add_argument("--fid-reference", type=int, default=d.fid_reference)
    parser.add_argument("--finetuned", type=Path, default=None, help="a bench finetune result to place on the gap")
    parser.add_argument("--name", default="dit-source-gap")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    device = torch.device("cpu")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = FinetuneConfig(model=args.source, data=args.data, data_dir=args.data_dir, fid_samples=args.fid_samples,
                         fid_reference=args.fid_reference, sid=False)  # fmt: skip
    cfg.validate()
    folder = resolve_model(args.source, data_dir=args.data_dir)
    task = create_finetune_task(folder, cfg, num_stages=1, device=device)
    if not isinstance(task, DiTTask):
        raise SystemExit(f"--source {args.source}: not a DiT source")
    task.bind_data(load_dataset(cfg.data, "train", data_dir=cfg.data_dir).info)
    floor = _stats([floor_fid(cfg, s, device) for s in seeds])
    print(f"floor (real test images): {floor['mean']:.2f} ± {floor['std']:.2f}", flush=True)
    start = _stats([start_fid(task, cfg, s, device) for s in seeds])
    print(f"start (the source): {start['mean']:.2f} ± {start['std']:.2f}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    report: dict[str, Any] = {
        "name": args.name,
        "command": ".venv/bin/python benchmarks/dit_source_gap.py " + " ".join(argv or []),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit, "environment": environment(device), "source": args.source, "data": args.data,
        "fid_samples": cfg.fid_samples, "fid_reference": cfg.fid_reference, "sample_steps": cfg.sample_steps,
        "guidance": cfg.guidance, "seeds": seeds, "floor": floor, "start": start,
    }  # fmt: skip
    if args.finetuned is not None:
        report["finetuned_from"] = str(args.finetuned)
        report["finetuned"] = finetuned_rows(args.finetuned, floor["mean"], start["mean"])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / args.name
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(markdown(report))
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
