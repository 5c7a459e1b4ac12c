"""Put the finished runs of a committed ``bench pretrain`` result back into a ``--runs-dir``, so that
``bench --resume`` reuses them instead of training them again (run folders are not committed; a fresh
checkout has none).

    python benchmarks/restore_runs.py benchmarks/results/ablation-search-32ep.json \
        --into peers-fmnist-5k-32ep --labels full,prog,autoprog-one,autoprog-zero --seeds 1

Each selected run's summary is written to ``<runs-dir>/<into>/<label>-seed<seed>/summary.json`` (the
folder name ``bench`` gives that label), without the result's own ``label`` and ``bench_resumed``
keys. ``bench --resume`` then checks its configuration against the variant's, as for any folder, and
refuses it in one line if they differ. An existing ``summary.json`` is never overwritten. The reused
run's time was measured in another invocation; the new result's ``resumed`` line says which runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoprog.bench import run_folder


def restore(result: Path, into: str, runs_dir: Path, labels: list[str] | None, seeds: list[int] | None) -> list[Path]:
    """Write the selected runs of ``result`` into ``runs_dir / into``; the paths written."""
    runs = json.loads(result.read_text())["runs"]
    written = []
    for run in runs:
        label = run.get("label", run["method"])
        if (labels is not None and label not in labels) or (seeds is not None and run["seed"] not in seeds):
            continue
        folder = run_folder(runs_dir, into, label, run["seed"])
        path = folder / "summary.json"
        if path.exists():
            print(f"kept {path} (already there)")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        summary = {k: v for k, v in run.items() if k not in ("label", "bench_resumed")}
        path.write_text(json.dumps(summary, indent=1))
        written.append(path)
        print(f"wrote {path}")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="a committed bench result (benchmarks/results/<name>.json)")
    p.add_argument("--into", required=True, help="the bench --name whose folders receive the runs")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("--labels", help="comma-separated variant labels (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds (default: all)")
    args = p.parse_args()
    labels = args.labels.split(",") if args.labels else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    if not restore(args.result, args.into, args.runs_dir, labels, seeds):
        raise SystemExit(f"nothing restored from {args.result} (labels {labels}, seeds {seeds})")


if __name__ == "__main__":
    main()
