"""AutoProg-Zero's first pre-training decision under several rule variants, without training (issue 16).

Stage 0 of an ``autoprog-zero`` run votes on the freshly initialised network, so its decision (and,
under the ``horizon`` rule, the whole schedule once it picks full depth: every later stage has one
candidate) is a function of the configuration and the seed alone. This script sets a run up exactly
as ``autoprog pretrain`` does (same seeding and order, so the same initial weights and probe), takes
the controller's first epoch, which runs the stage-0 search, and stops. Each variant is a
``bench pretrain`` variant of ``autoprog-zero`` (``autoprog-zero:search_ntk_tensors=weights``,
``autoprog-zero:vote_weights=time=2,ntk=1,zico=1``, ...).

    python benchmarks/zero_shot_stage0.py --name zero-shot-stage0-8ep --seeds 0,1,2 \
        --variants autoprog-zero,autoprog-zero:search_ntk_tensors=weights -- --train-subset 5000 --epochs 8

Everything after ``--`` is ``autoprog bench pretrain``'s options (the configurations it would run). Writes ``<results-dir>/<name>.{json,md,png}``:
per variant and seed the chosen sub-network and every candidate's NTK condition number, ZiCo, step
time and ranks. The time ballot is measured, so a choice that the time ballot decides can differ
from machine to machine; the NTK and ZiCo are deterministic for a seed on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from autoprog.adapters import create_adapter
from autoprog.bench import parse_pretrain_variant, split_variants
from autoprog.cli import _pretrain_config, build_parser  # the configs bench pretrain makes
from autoprog.controller import create_plan
from autoprog.distributed import DistContext
from autoprog.growth.operators import create_operator
from autoprog.growth.schedule import GrowthSpace
from autoprog.run import environment
from autoprog.run.process import setup_process
from autoprog.train import peers
from autoprog.train.config import PretrainConfig
from autoprog.train.memory_check import check_memory_fits
from autoprog.train.pretrain import count_flops, create_controller, create_schedule
from autoprog.train.pretrain_data import load_pretrain_data
from autoprog.train.pretrain_step import TrainStep


def stage0_search(cfg: PretrainConfig) -> dict[str, Any]:
    """The stage-0 search record of ``cfg`` (an ``autoprog-zero`` run), set up as ``pretrain`` does."""
    if cfg.method != "autoprog-zero":
        raise SystemExit(f"a variant of autoprog-zero is needed, got {cfg.method}")
    ctx = DistContext()
    device = setup_process(cfg.threads, cfg.seed, cfg.device, ctx)
    data = load_pretrain_data(cfg, ctx, device)
    info = data.info
    adapter = create_adapter(cfg.model, img_size=info.image_size, in_chans=info.in_chans,
                             num_classes=info.num_classes, patch_size=cfg.patch_size, depth=cfg.depth,
                             drop_path_rate=cfg.drop_path, embed_dim=cfg.embed_dim,
                             num_heads=cfg.num_heads)  # fmt: skip
    space = GrowthSpace(adapter.full.resolution, adapter.full.depth, adapter.resolution_step, cfg.ratio, cfg.stages)
    epochs = peers.trained_epochs(cfg)
    plan = create_plan(peers.plan_method(cfg.method), space, epochs, create_schedule(cfg, space))
    operator = create_operator(cfg.operator)
    flops = count_flops(adapter, space, plan, info.in_chans, peers.input_configs(None, epochs, adapter.full.depth))
    train_step = TrainStep(cfg, info.num_classes, device, ctx)  # as pretrain: same random draws before the model
    check_memory_fits(adapter, cfg.model, cfg.batch_size, info.in_chans, device, train_step.amp_dtype)
    ctl = create_controller(cfg, adapter, plan, operator, data, flops, device, ctx, train_step)
    spec = ctl.begin_epoch()
    assert spec is not None
    records = [e.detail for e in spec.events if e.kind == "search"]
    if not records:
        raise SystemExit("stage 0 had nothing to search (a fixed first stage?)")
    return records[0]


def _schedule_note(record: dict[str, Any]) -> str:
    c = record["chosen"]
    return f"{c['resolution']}/{c['depth']}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# AutoProg-Zero's stage-0 vote: `{result['name']}`", "",
             f"- command: `{result['command']}`", f"- machine: {result['environment']}",
             "- nothing trained: the vote on the initial network, set up as `autoprog pretrain` sets it up.", "",
             "| variant | seed | chosen | candidates: res/depth (total; ranks time, ntk, zico) |", "|---|---|---|---|"]  # fmt: skip
    for row in result["rows"]:
        cells = ", ".join(
            f"{c['resolution']}/{c['depth']} ({c['total']:g}; {c['ranks']['time']},{c['ranks']['ntk']},{c['ranks']['zico']})"
            for c in row["record"]["candidates"]
        )
        lines.append(f"| {row['variant']} | {row['seed']} | {_schedule_note(row['record'])} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(4.5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for row in (r for r in result["rows"] if r["variant"] == variant):
            cands = row["record"]["candidates"]
            ax.plot([c["time"] for c in cands], [c["total"] for c in cands], "o", alpha=0.6, label=f"seed {row['seed']}")
            chosen = row["record"]["chosen"]
            for c in cands:
                if (c["resolution"], c["depth"]) == (chosen["resolution"], chosen["depth"]):
                    ax.plot([c["time"]], [c["total"]], "k*", ms=12)
                ax.annotate(f"{c['resolution']}/{c['depth']}", (c["time"], c["total"]), fontsize=7)
        ax.set_title(variant, fontsize=8)
        ax.set_xlabel("step time (s)")
        ax.set_ylabel("vote total (lower wins)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--variants", default="autoprog-zero")
    p.add_argument("--seeds", default="0")
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(ours)
    parser = build_parser()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autoprog-stage0-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for spec in split_variants(args.variants):
                label, method, options = parse_pretrain_variant(spec)
                ns = parser.parse_args(["bench", "pretrain", "--methods", method, "--progress", "off", *rest])
                cfg = _pretrain_config(ns, method=method, seed=seed, out=os.path.join(tmp, str(len(rows))), **options)
                record = stage0_search(cfg)
                print(f"{label} seed {seed}: chose {_schedule_note(record)} ({record['search_time_s']:.1f}s)", flush=True)
                rows.append({"variant": label, "seed": seed, "record": record})
    env = environment(torch.device(cfg.device or "cpu"))
    result = {"name": args.name, "command": "python benchmarks/zero_shot_stage0.py " + " ".join(argv),
              "environment": f"{env.get('cpu')}, {env.get('threads')} threads, device {env.get('device')}",
              "rows": rows}  # fmt: skip
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / args.name
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(markdown(result))
    plot(result, Path(f"{stem}.png"))
    print(f"wrote {stem}.json, .md, .png")
    return result


if __name__ == "__main__":
    main()
