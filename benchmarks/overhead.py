"""Library overhead: ``autoprog pretrain`` at full size against a plain PyTorch loop (issue 9).

Both train the same model (the default ViT: timm ``vit_tiny_patch16_224``, patch 4, depth 6,
28x28x1) on the same batches (Fashion-MNIST, a class-balanced subset, the same ``BatchSource``),
with the same optimizer (AdamW, the same parameter groups), LR schedule, loss and thread count. The
plain loop is nothing but forward, loss, backward, step. ``autoprog`` runs ``--method full`` with no
validation split, so its clock (``wall_clock_s``) covers what the library adds per step: the
controller's per-step calls, LR setting, FLOP accounting (a cached lookup), the per-step log record
and the progress bar. Runs alternate (plain, autoprog, plain, ...) and the ratio of the medians is
reported, since this machine is shared and noisy.

    .venv/bin/python benchmarks/overhead.py --trials 3 --epochs 2 --train-subset 5000

Writes ``benchmarks/results/overhead.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autoprog.adapters.base import create_adapter
from autoprog.data import class_balanced_subset, load_dataset
from autoprog.optim import build_optimizer, cosine_lr, set_lr
from autoprog.run import environment
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.pretrain import pretrain

RESULTS = Path(__file__).resolve().parent / "results"


def plain_loop(cfg: PretrainConfig) -> tuple[float, int]:
    """The reference: the same model, batches and optimizer, no library around the step."""
    torch.manual_seed(cfg.seed)
    train = load_dataset(cfg.data, "train", data_dir=cfg.data_dir)
    train = class_balanced_subset(train, cfg.train_subset, seed=cfg.seed)
    info = train.info
    adapter = create_adapter(cfg.model, img_size=info.image_size, in_chans=info.in_chans, num_classes=info.num_classes,
                             patch_size=cfg.patch_size, depth=cfg.depth)  # fmt: skip
    model = adapter.create_model(adapter.full.depth)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    source = BatchSource(train, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    total = len(source) * cfg.epochs
    warmup = int(cfg.warmup_epochs * len(source))
    step = 0
    model.train()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        for x, y in source.epoch(epoch, adapter.full.resolution):
            set_lr(optimizer, cosine_lr(step, total, cfg.lr, warmup, cfg.min_lr))
            loss = F.cross_entropy(
                model((x.float() / 255.0 - mean) / std), y, label_smoothing=cfg.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return time.perf_counter() - t0, step


def autoprog_run(cfg: PretrainConfig) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        cfg.out = out
        s = pretrain(cfg, log=lambda _m: None)
    return s["wall_clock_s"], s["steps"]


def _trials(rows: list[dict], loop: str) -> str:
    return ", ".join(format(r["steps_per_s"], ".3f") for r in rows if r["loop"] == loop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="overhead")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = PretrainConfig(method="full", epochs=a.epochs, train_subset=a.train_subset, val_size=0, test_subset=100,
                         threads=a.threads, progress=False)  # fmt: skip
    rows = []
    for trial in range(a.trials):
        for kind, fn in (("plain", plain_loop), ("autoprog", autoprog_run)):
            seconds, steps = fn(PretrainConfig(**{**cfg.__dict__}))
            rows.append(
                {
                    "trial": trial,
                    "loop": kind,
                    "seconds": seconds,
                    "steps": steps,
                    "steps_per_s": steps / seconds,
                }
            )
            print(
                f"trial {trial} {kind:8s} {steps} steps in {seconds:.1f}s = {steps / seconds:.2f} steps/s",
                flush=True,
            )
    med = {
        k: statistics.median(r["steps_per_s"] for r in rows if r["loop"] == k) for k in ("plain", "autoprog")
    }
    ratio = med["autoprog"] / med["plain"]
    per_trial = [
        next(r for r in rows if r["trial"] == t and r["loop"] == "autoprog")["steps_per_s"]
        / next(r for r in rows if r["trial"] == t and r["loop"] == "plain")["steps_per_s"]
        for t in range(a.trials)
    ]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    result = {
        "name": a.name,
        "command": f"python benchmarks/overhead.py --trials {a.trials} --epochs {a.epochs} --train-subset {a.train_subset} --threads {a.threads}",
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "machine": environment(torch.device("cpu")),
        "runs": rows,
        "median_steps_per_s": med,
        "ratio": ratio,
        "ratio_per_trial": per_trial,
        "target": 0.97,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# Library overhead ({result['date']}, commit {commit})",
        "",
        f"`{result['command']}`",
        "",
        "| loop | median steps/s | trials |",
        "|---|---|---|",
        *(f"| {k} | {med[k]:.3f} | {_trials(rows, k)} |" for k in med),
        "",
        f"**autoprog ÷ plain = {ratio:.3f}** (per trial: {', '.join(f'{x:.3f}' for x in per_trial)}; target ≥ 0.97).",
    ]
    (RESULTS / f"{a.name}.md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, k in enumerate(("plain", "autoprog")):
        ys = [r["steps_per_s"] for r in rows if r["loop"] == k]
        ax.scatter([i] * len(ys), ys, label=k)
        ax.hlines(med[k], i - 0.2, i + 0.2, color="k")
    ax.set_xticks([0, 1], ["plain loop", "autoprog"])
    ax.set_ylabel("training steps / s")
    ax.set_title(f"autoprog ÷ plain = {ratio:.3f}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{a.name}.png", dpi=120)
    print("\n".join(md))


if __name__ == "__main__":
    main()
