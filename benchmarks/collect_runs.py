"""Rebuild an ``autoprog bench pretrain`` result from the run folders of an invocation that was cut
short (killed before its last seed): the seeds whose every variant finished are kept, the others
left out, and the result says so.

    python benchmarks/collect_runs.py --name ablation-search-8ep --runs-dir runs/bench \
        --methods full,prog,autoprog-one --seeds 0,1,2 --command "benchmarks/tables/ablation_search.sh ..."

Writes ``<results-dir>/<name>.{json,md,png}`` as the bench itself does (same aggregate, table and
plot), with ``"collected": {"seeds": [...], "missing": [...]}`` added.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoprog.bench import (  # the bench's own report, unchanged
    _markdown_report,
    _result,
    aggregate,
    markdown_table,
    plot_runs,
    run_folder,
    split_variants,
)
from autoprog.run import environment
from autoprog.train.config import PRETRAIN_METHODS


def collect(name: str, runs_dir: Path, methods: str, seeds: list[int]) -> tuple[list[dict], list[str]]:
    labels = split_variants(methods, PRETRAIN_METHODS)
    runs, missing = [], []
    for seed in seeds:
        found = []
        for label in labels:
            path = run_folder(runs_dir, name, label, seed) / "summary.json"
            if not path.is_file():
                missing.append(f"{label} seed {seed}")
                continue
            summary = json.loads(path.read_text())
            summary["label"] = label
            found.append(summary)
        if len(found) == len(labels):  # a seed counts only with every variant: ratios are per seed
            runs.extend(found)
    return runs, missing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--methods", required=True)
    p.add_argument("--seeds", required=True)
    p.add_argument("--command", required=True, help="the command the runs came from")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, missing = collect(args.name, args.runs_dir, args.methods, seeds)
    if not runs:
        raise SystemExit(f"no seed of {args.name} has every variant finished (missing: {', '.join(missing)})")
    import torch

    result = _result(args.name, runs, aggregate(runs), lambda device: environment(torch.device("cpu")))
    result["command"] = args.command
    result["environment"] = runs[0]["environment"]
    kept = sorted({r["seed"] for r in runs})
    result["collected"] = {"seeds": kept, "missing": missing}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result["aggregate"])
    note = (f"- collected from the run folders (`benchmarks/collect_runs.py`): seeds {kept}"
            + (f"; not finished: {', '.join(missing)}" if missing else "") + "\n\n")
    md = _markdown_report(result, table).replace("\n\n|", "\n" + note + "|", 1)
    (args.results_dir / f"{args.name}.md").write_text(md)
    plot_runs(runs, args.results_dir / f"{args.name}.png", title=args.name)
    print(md)


if __name__ == "__main__":
    main()
