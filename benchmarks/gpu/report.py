"""Turn the folder ``benchmarks/gpu/run.sh`` returned into committed results (issue 19).

    python benchmarks/gpu/report.py RETURNED_DIR --name gpu-h200 [--fid] [--results-dir benchmarks/results]

writes ``<results-dir>/<name>.json`` (the usual results format: ``runs`` = the runs' ``summary.json``
objects, plus ``aggregate``, the command, the machine, the CUDA tests), ``<name>.md`` and
``<name>-pretrain.png`` / ``<name>-finetune.png``. ``--fid`` scores the returned DiT samples on this
machine with the project's FID code (:func:`autoprog.eval.fid.fid` against
:func:`~autoprog.eval.fid.reference_statistics` of the run's data and ``fid_reference`` training
images, as ``finetune`` does), and puts each run's ``fid`` into its summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoprog.bench import (
    aggregate,
    aggregate_finetune,
    finetune_table,
    markdown_table,
    plot_finetune,
    plot_runs,
)


def score_samples(runs: list[dict[str, Any]], samples_file: Path, fid_reference: int | None = None) -> None:
    """Each fine-tuning run's ``fid`` from its returned samples (in place; ``fid_reference``
    overrides the runs' reference count, e.g. for a quick check)."""
    import numpy as np
    import torch

    from autoprog.eval.fid import fid, reference_statistics

    samples = np.load(samples_file)
    for r in runs:
        key = r.get("fid_samples_key")
        if key is None or key not in samples:
            continue
        images = torch.from_numpy(samples[key])
        n_ref = fid_reference or r["config"]["fid_reference"]
        ref = reference_statistics(r["data"], "train", n_ref, data_dir=r["config"].get("data_dir"))
        r["fid"], r["fid_samples"], r["fid_reference"] = fid(images, ref), len(images), n_ref
        print(f"FID {r['label']}: {r['fid']:.2f} ({len(images)} samples vs {n_ref} training images)")


def memory_table(runs: list[dict[str, Any]]) -> str:
    """Per run and stage: resolution, depth (or level), peak GPU memory (MiB), the stage's seconds."""
    lines = ["| run | stage | config | peak memory (MiB) | stage time (s) |", "|---|---|---|---|---|"]
    for r in runs:
        for st in r.get("stages", []):
            config = f"{st.get('resolution')} px, " + (f"depth {st['depth']}" if "depth" in st else f"level {st.get('level')}")
            peak = st.get("peak_mem_bytes")
            mib = "–" if peak is None else f"{peak / 2**20:.0f}"
            lines.append(f"| {r['label']} seed {r['seed']} | {st.get('stage')} | {config} | {mib} | {st.get('wall_clock_s', 0):.1f} |")
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """The issue's question: AutoProg-One at <= 0.55x full's time with top-1 >= full - 0.3?"""
    row = next((r for r in rows if r["method"] == "autoprog-one" and "wall_clock_ratio" in r), None)
    if row is None:
        return "AutoProg-One against full: not measured in this run."
    ok = row["wall_clock_ratio"] <= 0.55 and row["top1_delta_vs_full"] >= -0.3
    return (f"AutoProg-One: {row['wall_clock_ratio']:.3f}x full's time, top-1 {row['top1_delta_vs_full']:+.2f} pt "
            f"against full ({len(row['seeds'])} seed(s)): the target (<= 0.55x at >= -0.3 pt) is "
            f"{'met' if ok else 'not met'}.")  # fmt: skip


def build_report(returned: Path, name: str, results_dir: Path, fid: bool = False, fid_reference: int | None = None) -> dict[str, Any]:
    res = json.loads((returned / "results.json").read_text())
    pre, ft = res["pretrain"], res["finetune"]
    if fid and ft and (returned / "dit-samples.npz").is_file():
        score_samples(ft, returned / "dit-samples.npz", fid_reference)
    env = (pre or ft or [{}])[0].get("environment", {})
    result: dict[str, Any] = {
        "name": name,
        "command": "bash benchmarks/gpu/run.sh" + (" --dry-run" if res["dry_run"] else ""),
        "date": res["started"],
        "git_commit": None,
        "environment": env,
        "machine": res["machine"],
        "dry_run": res["dry_run"],
        "complete": res["complete"],
        "elapsed_s": res["elapsed_s"],
        "settings": res["settings"],
        "cuda_tests": res["cuda_tests"],
        "skipped": res["skipped"],
        "steps": res["steps"],
        "aggregate": aggregate(pre) if pre else [],
        "finetune_aggregate": aggregate_finetune(ft) if ft else [],
        "runs": pre,
        "finetune_runs": ft,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    gpu = env.get("gpu") or res["machine"].get("nvidia_smi") or "no GPU (a dry run on the CPU)"
    tests = res["cuda_tests"]
    s = res["settings"]
    md = [
        f"# GPU evidence `{name}`\n",
        f"- machine: {gpu}; torch {res['machine'].get('torch')}, python {res['machine'].get('python')}",
        f"- date: {res['started']}; {res['elapsed_s']:.0f} s of a {s['time_limit_s']:.0f} s limit; "
        f"complete: {res['complete']}" + ("; **dry run: toy sizes, no result**" if res["dry_run"] else ""),
        f"- CUDA tests (`pytest -m cuda`): {tests.get('passed', '?')} passed, {tests.get('failures', '?')} failed, "
        f"{tests.get('errors', '?')} errors, {tests.get('skipped', '?')} skipped"
        + (f"; failing: {', '.join(tests['failed'])}" if tests.get("failed") else ""),
    ]
    md += [f"- skipped: {x['what']}: {x['why']}" for x in res["skipped"]]
    if pre:
        r0 = pre[0]
        md += [f"\n## Pre-training: {r0['model']} depth {r0['full_depth']} @ {r0['full_resolution']} px, "
               f"{r0['train_samples']} training images, {r0['epochs']} epochs, batch {r0['config']['batch_size']}, "
               f"{(r0['config'].get('mixed_precision') or 'no').replace('no', 'fp32')}\n",
               "Top-1 on the test split; time: training incl. growth and searches, excl. evaluation; ratios against "
               "`full` of the same seed in this run.\n", markdown_table(result["aggregate"]), "", verdict(result["aggregate"]),
               "\nValidation top-1 of full over epochs: " + "; ".join(
                   f"seed {r['seed']}: " + ", ".join(f"{c['val_top1']:.1f}" for c in r.get("val_curve", []) if c.get("val_top1") is not None)
                   for r in pre if r["label"] == "full"),
               "\n### Peak memory per stage (GPU: allocated bytes; CPU: resident set)\n", memory_table(pre)]  # fmt: skip
        plot_runs(pre, results_dir / f"{name}-pretrain.png", title=f"{name}: pre-training")
    if ft:
        c0 = ft[0]["config"]
        scored = any(r.get("fid") is not None for r in ft)
        md += [f"\n## DiT fine-tuning: `{c0['model']}` -> {c0['data']}, {c0['steps']} steps x batch {c0['batch_size']}\n",
               (f"FID of {ft[0].get('fid_samples')} DDIM-{c0['sample_steps']} samples (guidance {c0['guidance']}) made on the GPU, "
                f"scored on the CPU against {ft[0].get('fid_reference', c0['fid_reference'])} training images."
                if scored else "FID not computed yet: run this script again with `--fid`."),
               "", finetune_table(result["finetune_aggregate"]), "\n### Peak memory per stage (GPU: allocated bytes; CPU: resident set)\n", memory_table(ft)]  # fmt: skip
        if scored:
            plot_finetune(ft, results_dir / f"{name}-finetune.png", title=f"{name}: DiT fine-tuning")
    (results_dir / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {results_dir / name}.json, .md, -pretrain.png" + (", -finetune.png" if ft else ""))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="benchmarks/gpu/run.sh's returned folder -> benchmarks/results/gpu-*")
    p.add_argument("returned", type=Path, help="the folder run.sh wrote ($OUT)")
    p.add_argument("--name", default="gpu-h200", help="result name (default: %(default)s)")
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--fid", action="store_true", help="score the returned DiT samples (FID, on this machine)")
    p.add_argument("--fid-reference", type=int, default=None, help="reference images (default: the runs' own)")
    args = p.parse_args(argv)
    build_report(args.returned, args.name, args.results_dir, fid=args.fid, fid_reference=args.fid_reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
