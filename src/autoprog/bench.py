"""``autoprog bench pretrain``: methods side by side, same seed, data and budget; one results file.

Writes ``<results-dir>/<name>.json`` (``runs`` = the runs' ``summary.json`` objects, plus the
command, machine and git commit), ``<name>.md`` (a table) and ``<name>.png`` (top-1 against
wall-clock), and prints the table. Ratios are taken against ``full`` of the same seed, measured in
the same invocation (the machine is shared and noisy: never compare across invocations).

``full-equal-time:match=LABEL`` is full training matched to another variant's wall-clock: for each
seed it trains ``round(epochs * time_LABEL / time_full)`` epochs (halves up, at least 1), the two
times measured on that seed earlier in the same invocation, so ``LABEL`` and ``full`` must come
before it in ``--methods``.

``--resume`` continues an invocation that was cut short, in the same ``--runs-dir``: a run whose
folder holds a ``summary.json`` of the same configuration is reused as it is, one with a checkpoint
continues from it (``pretrain --resume``), the others run; a folder written under another
configuration is refused in one line. (Ratios then mix processes: the result's ``resumed`` lists
which runs were reused or continued.)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprog.errors import ConfigError
from autoprog.train.config import PRETRAIN_METHODS, PretrainConfig, check_same_config

QUICK = {"train_subset": 512, "val_size": 128, "test_subset": 500, "epochs": 4, "batch_size": 64}


def bench_pretrain(args: argparse.Namespace, make_config: Callable[..., PretrainConfig]) -> dict[str, Any]:
    from autoprog.run import environment
    from autoprog.train.pretrain import pretrain

    variants = [parse_pretrain_variant(v) for v in split_variants(args.methods, PRETRAIN_METHODS)]
    check_matches(variants)
    name = args.name or ("pretrain-quick" if args.quick else "pretrain")
    runs = _run_variants(
        args, variants, name, QUICK if args.quick else {}, make_config, pretrain, resolve=resolve_match
    )
    result = _result(name, runs, aggregate(runs), environment)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result["aggregate"])
    (results_dir / f"{name}.md").write_text(_markdown_report(result, table))
    plot_runs(runs, results_dir / f"{name}.png", title=name)
    print(table)
    print(f"wrote {results_dir / (name + '.json')}, .md, .png")
    return result


def _run_variants(
    args: argparse.Namespace,
    variants: list[tuple[str, str, dict[str, Any]]],
    name: str,
    overrides: dict[str, Any],
    make_config: Callable[..., Any],
    run: Callable[[Any], dict[str, Any]],
    resolve: Callable[[dict[str, Any], list[dict[str, Any]], int], tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Every (seed, variant) run, seeds outside and methods inside: each seed's runs sit side by side in time.

    ``resolve(options, runs_so_far, seed) -> (options, record)`` may turn a variant's options into
    config fields from the runs already done (``match=``); ``record`` goes into the run's summary.
    """
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for label, method, options in variants:
            out = run_folder(Path(args.runs_dir), name, label, seed)
            options, record = resolve(options, runs, seed) if resolve is not None else (options, {})
            cfg = make_config(args, method=method, seed=seed, out=str(out), **{**overrides, **options})
            done, how = _finished_or_resumable(cfg, out) if getattr(args, "bench_resume", False) else (None, None)
            print(f"== {name}: {label}, seed {seed}" + (f" ({how})" if how else ""), flush=True)
            if done is not None:
                summary = done
            else:
                summary = run(dataclasses.replace(cfg, resume=True) if how else cfg)
            if how:
                summary["bench_resumed"] = how
            summary.update(record)
            summary["label"] = label
            runs.append(summary)
    return runs


def run_folder(runs_dir: Path, name: str, label: str, seed: int) -> Path:
    """The folder of variant ``label``'s run of ``seed`` in the benchmark ``name`` under ``runs_dir``."""
    return runs_dir / name / f"{label.replace(':', '-').replace('=', '')}-seed{seed}"


def _finished_or_resumable(cfg: Any, out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``bench --resume``: ``(summary, "reused")`` for a finished run of ``cfg`` in ``out``,
    ``(None, "continued")`` for one with a checkpoint, ``(None, None)`` for nothing to reuse.

    Raises:
        ConfigError: ``out``'s finished run used another configuration (the option named).
    """
    path = out / "summary.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        check_same_config(summary.get("config", {}), cfg.to_dict(), out)
        return summary, "reused"
    if any((out / "checkpoints" / f).is_file() for f in ("last.pt", "last.pt.prev")):
        return None, "continued"
    return None, None


def _result(
    name: str, runs: list[dict[str, Any]], rows: list[dict[str, Any]], environment: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """The results file's object: command, date, commit, machine, aggregate rows and the runs."""
    import torch

    resumed = [f"{r['label']} seed {r['seed']}: {r['bench_resumed']}" for r in runs if r.get("bench_resumed")]
    return {
        "name": name,
        "command": "autoprog " + " ".join(sys.argv[1:]) if sys.argv and "autoprog" in sys.argv[0] else None,
        **({"resumed": resumed} if resumed else {}),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "environment": environment(torch.device(runs[0]["environment"]["device"])),
        "aggregate": rows,
        "runs": runs,
    }


def split_variants(text: str, methods: tuple[str, ...] = PRETRAIN_METHODS) -> list[str]:
    """``--methods`` split at the commas that start a new variant.

    A comma inside an option's value stays (``autoprog-zero:vote_weights=time=1,ntk=0,zico=0,full``
    is two variants): a piece that starts with ``key=value`` rather than a method name continues the
    previous variant.
    """
    variants: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        head = piece.split(":")[0]
        if variants and "=" in head and head not in methods:
            variants[-1] += "," + piece
        elif piece:
            variants.append(piece)
    return variants


def _number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_variant(
    spec: str, methods: tuple[str, ...] = PRETRAIN_METHODS, defaults: Any = None
) -> tuple[str, str, dict[str, Any]]:
    """``"prog:operator=mogrow:ratio=0.4"`` -> ``("prog:operator=mogrow:ratio=0.4", "prog", {...})``.

    Values are parsed as the config field's type (bool accepts true/false); ``defaults`` is the
    config whose fields are accepted (:class:`PretrainConfig` unless given).
    """
    parts = [p.strip() for p in spec.strip().split(":")]
    method, options = parts[0], {}
    if method not in methods:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(methods)}")
    defaults = PretrainConfig() if defaults is None else defaults
    for part in parts[1:]:
        key, _, value = part.partition("=")
        key = key.replace("-", "_")
        if not hasattr(defaults, key) or key in ("method", "seed", "out"):
            raise ConfigError(f"variant {spec!r}: {key!r} is not an option of this command")
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool) or (default is None and value.lower() in ("true", "false")):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                options[key] = value.lower() in ("true", "1")
            elif isinstance(default, int):
                options[key] = int(value)
            elif isinstance(default, float):
                options[key] = float(value)
            elif default is None:  # an optional number (e.g. finetune's lr) or text
                options[key] = _number_or_text(value)
            else:
                options[key] = value
        except ValueError:
            raise ConfigError(f"variant {spec!r}: bad value {value!r} for {key}") from None
    return spec.strip(), method, options


def parse_pretrain_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """:func:`parse_variant` for ``bench pretrain``, which also takes ``full-equal-time:match=LABEL``
    (``options["match"] = LABEL``; see the module docstring)."""
    parts = [p.strip() for p in spec.strip().split(":")]
    matches = [p.partition("=")[2].strip() for p in parts[1:] if p.partition("=")[0].strip() == "match"]
    label, method, options = parse_variant(":".join(p for p in parts if p.partition("=")[0].strip() != "match"))
    if matches:
        if method != "full-equal-time":
            raise ConfigError(f"variant {spec!r}: match= is an option of full-equal-time, not {method}")
        if len(matches) > 1 or not matches[0]:
            raise ConfigError(f"variant {spec!r}: give one match=LABEL (the variant whose time to match)")
        if "equal_time_epochs" in options or "equal_time_ratio" in options:
            raise ConfigError(f"variant {spec!r}: match= sets the epochs; drop equal_time_epochs / equal_time_ratio")
        options["match"] = matches[0]
    return spec.strip(), method, options


def check_matches(variants: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Every ``match=LABEL`` names a variant that runs before it, and ``full`` runs before it too.

    Raises:
        ConfigError: before anything runs.
    """
    for i, (label, _, options) in enumerate(variants):
        if "match" not in options:
            continue
        before = [v[0] for v in variants[:i]]
        for needed in (options["match"], "full"):
            if needed not in before:
                raise ConfigError(
                    f"variant {label!r} matches the time of {options['match']!r} against full's: "
                    f"list {needed!r} before it in --methods (it must have run on the same seed first)"
                )


def resolve_match(
    options: dict[str, Any], runs: list[dict[str, Any]], seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``match=LABEL`` -> ``equal_time_ratio = time_LABEL / time_full``, both of this seed, this invocation."""
    if "match" not in options:
        return options, {}
    options = dict(options)
    match = options.pop("match")
    times = {r["label"]: r["wall_clock_s"] for r in runs if r["seed"] == seed}
    ratio = times[match] / times["full"]
    return {**options, "equal_time_ratio": ratio}, {"equal_time_match": {"label": match, "time_ratio": ratio}}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: mean top-1 over seeds, and time/FLOPs ratios against ``full`` of the same seed."""
    by_seed_full = {r["seed"]: r for r in runs if r.get("label", r["method"]) == "full"}
    rows = []
    for label in dict.fromkeys(r.get("label", r["method"]) for r in runs):
        rs = [r for r in runs if r.get("label", r["method"]) == label]
        row: dict[str, Any] = {
            "method": label,
            "seeds": [r["seed"] for r in rs],
            "top1_mean": statistics.fmean(r["top1"] for r in rs),
            "top1_std": statistics.pstdev(r["top1"] for r in rs) if len(rs) > 1 else 0.0,
            "wall_clock_s_mean": statistics.fmean(r["wall_clock_s"] for r in rs),
            # against full's own FLOPs where the seed has a full run (a fixed sub-network's are its own)
            "flops_ratio": statistics.fmean(
                r["train_flops"] / by_seed_full.get(r["seed"], r)["full_flops"] for r in rs
            ),
            "search_time_s_mean": statistics.fmean(r.get("search_time_s", 0.0) for r in rs),
            "schedules": [_schedule_text(r) for r in rs],
        }
        vals = [r["val_top1"] for r in rs if r.get("val_top1") is not None]
        if len(vals) == len(rs):  # the validation split chooses defaults (the test split only reports)
            row["val_top1_mean"] = statistics.fmean(vals)
            row["val_top1_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        paired = [(r, by_seed_full[r["seed"]]) for r in rs if r["seed"] in by_seed_full]
        if paired:
            wall = statistics.fmean(r["wall_clock_s"] / f["wall_clock_s"] for r, f in paired)
            row["wall_clock_ratio"] = wall
            row["top1_delta_vs_full"] = statistics.fmean(r["top1"] - f["top1"] for r, f in paired)
            row["realised_over_theoretical"] = statistics.fmean(
                (f["wall_clock_s"] / r["wall_clock_s"]) / (r["full_flops"] / r["train_flops"])
                for r, f in paired
            )
        rows.append(row)
    return rows


def _schedule_text(run: dict[str, Any]) -> str:
    """A run's stages as ``16/3 20/4 24/5 28/6`` (resolution / depth)."""
    return " ".join(f"{s['resolution']}/{s['depth']}" for s in run.get("schedule", []) if "depth" in s)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | seeds | val top-1 (%) | top-1 (%) | Δ top-1 vs full | wall-clock (s) | of which search (s) "
        "| time ÷ full | FLOPs ÷ full | realised ÷ theoretical speed-up | schedule (first seed) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:

        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            return format(r[key], fmt) if key in r else "–"

        top1 = f"{r['top1_mean']:.2f}" + (f" ± {r['top1_std']:.2f}" if len(r["seeds"]) > 1 else "")
        val = "–"
        if "val_top1_mean" in r:
            val = f"{r['val_top1_mean']:.2f}" + (f" ± {r['val_top1_std']:.2f}" if len(r["seeds"]) > 1 else "")
        schedule = (r.get("schedules") or [""])[0]
        lines.append(
            f"| {r['method']} | {len(r['seeds'])} | {val} | {top1} | {f('top1_delta_vs_full', '+.2f')} | "
            f"{r['wall_clock_s_mean']:.1f} | {r.get('search_time_s_mean', 0.0):.1f} | {f('wall_clock_ratio', '.3f')} | {r['flops_ratio']:.3f} | "
            f"{f('realised_over_theoretical', '.3f')} | {schedule} |"
        )
    return "\n".join(lines)


def _markdown_report(result: dict[str, Any], table: str) -> str:
    env = result["environment"]
    run0 = result["runs"][0]
    cfg = run0["config"]
    return (
        f"# Benchmark `{result['name']}`\n\n"
        f"- command: `{result['command']}`\n"
        f"- date: {result['date']}, git commit {result['git_commit']}\n"
        f"- machine: {env['cpu']}, {env['threads']} threads, device {env['device']}"
        + (f" ({env['gpu']})" if "gpu" in env else "")
        + f"\n- setup: {cfg['model']} depth {run0['full_depth']} @ {run0['full_resolution']}px, "
        f"{cfg['data']} ({run0['train_samples']} training images), {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, lr {cfg['lr']}\n"
        "- top-1: final (online) model on the test split at full resolution; time: training incl. growth, "
        "excl. evaluation; ratios against `full` of the same seed in this same run.\n"
        + (
            f"- resumed (`--resume`): {'; '.join(result['resumed'])}. A reused run's time was measured in the "
            "invocation that made it.\n"
            if result.get("resumed")
            else ""
        )
        + f"\n{table}\n"
    )


def plot_runs(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 against wall-clock, one marker per run, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, method in enumerate(dict.fromkeys(r.get("label", r["method"]) for r in runs)):
        rs = [r for r in runs if r.get("label", r["method"]) == method]
        ax.scatter(
            [r["wall_clock_s"] for r in rs], [r["top1"] for r in rs], label=method, color=f"C{i}", s=40
        )
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# -- fine-tuning ----------------------------------------------------------------------------------
FINETUNE_QUICK = {"steps": 16, "batch_size": 8, "fid_samples": 20, "fid_reference": 20, "sample_steps": 4}


def bench_finetune(args: argparse.Namespace, make_config: Callable[..., Any]) -> dict[str, Any]:
    """``autoprog bench finetune``: fine-tuning methods side by side, one results file (same ``runs``
    format as the pre-training bench; quality is the task's metric: FID of a generator, lower is
    better, or top-1 of a classifier)."""
    from autoprog.run import environment
    from autoprog.train.config import FINETUNE_METHODS, FinetuneConfig
    from autoprog.train.finetune import finetune

    variants = [
        parse_variant(v, FINETUNE_METHODS, FinetuneConfig())
        for v in split_variants(args.methods, FINETUNE_METHODS)
    ]
    name = args.name or ("finetune-quick" if args.quick else "finetune")
    runs = _run_variants(args, variants, name, FINETUNE_QUICK if args.quick else {}, make_config, finetune)
    result = _result(name, runs, aggregate_finetune(runs), environment)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    table = finetune_table(result["aggregate"])
    cfg0 = runs[0]["config"]
    if runs[0].get("metric", "fid") == "fid":
        quality = (
            f"FID of {cfg0['fid_samples']} DDIM-{cfg0['sample_steps']} samples (guidance {cfg0['guidance']}) against "
            f"{cfg0['fid_reference']} training images"
        )
    else:
        quality = f"top-1 on the {runs[0].get('test_samples', '?')} test images of {cfg0['data']}"
    md = (
        f"# Benchmark `{name}`\n\n- command: `{result['command']}`\n- date: {result['date']}, git commit "
        f"{result['git_commit']}\n- machine: {result['environment']['cpu']}, {result['environment']['threads']} threads, "
        f"device {result['environment']['device']}\n- setup: source `{cfg0['model']}` -> {cfg0['data']} "
        f"({runs[0]['train_samples']} images), {cfg0['steps']} steps x batch {cfg0['batch_size']}, "
        f"lr {runs[0].get('lr', cfg0['lr'])}; {quality}\n- time: training incl. searches, excl. evaluation; ratios against `full` "
        f"of the same seed in this same run.\n\n{table}\n"
    )
    (results_dir / f"{name}.md").write_text(md)
    plot_finetune(runs, results_dir / f"{name}.png", title=name)
    print(table)
    print(f"wrote {results_dir / (name + '.json')}, .md, .png")
    return result


def aggregate_finetune(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: mean of the task's metric (``fid`` or ``top1``; keys ``fid_mean``, ``top1_mean``,
    ...), time / FLOPs ratios against ``full`` of the same seed, search share."""
    by_seed_full = {r["seed"]: r for r in runs if r.get("label", r["method"]) == "full"}
    metric = runs[0].get("metric", "fid") if runs else "fid"
    rows = []
    for label in dict.fromkeys(r.get("label", r["method"]) for r in runs):
        rs = [r for r in runs if r.get("label", r["method"]) == label]
        values = [r[metric] for r in rs if r.get(metric) is not None]
        row: dict[str, Any] = {
            "method": label,
            "metric": metric,
            "seeds": [r["seed"] for r in rs],
            f"{metric}_mean": statistics.fmean(values) if values else None,
            f"{metric}_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "wall_clock_s_mean": statistics.fmean(r["wall_clock_s"] for r in rs),
            "flops_ratio": statistics.fmean(r["train_flops"] / r["full_flops"] for r in rs),
            "search_time_s_mean": statistics.fmean(r.get("search_time_s", 0.0) for r in rs),
            "search_share": statistics.fmean(r.get("search_time_s", 0.0) / r["wall_clock_s"] for r in rs),
            "schedule": [(s["resolution"], s["level"]) for s in rs[0]["schedule"]],
        }
        paired = [(r, by_seed_full[r["seed"]]) for r in rs if r["seed"] in by_seed_full]
        if paired:
            row["wall_clock_ratio"] = statistics.fmean(
                r["wall_clock_s"] / f["wall_clock_s"] for r, f in paired
            )
            deltas = [
                r[metric] - f[metric]
                for r, f in paired
                if r.get(metric) is not None and f.get(metric) is not None
            ]
            if deltas:
                row[f"{metric}_delta_vs_full"] = statistics.fmean(deltas)
        rows.append(row)
    return rows


def finetune_table(rows: list[dict[str, Any]]) -> str:
    metric = rows[0].get("metric", "fid") if rows else "fid"
    name = "FID ↓" if metric == "fid" else "top-1 ↑" if metric == "top1" else metric
    short = name.split()[0]
    head = (
        f"| method | seeds | {name} | Δ {short} vs full | wall-clock (s) | time ÷ full | FLOPs ÷ full | search (s) "
        "| search share | schedule (px, level) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        mean, std = r.get(f"{metric}_mean"), r.get(f"{metric}_std", 0.0)
        fid = "–" if mean is None else f"{mean:.2f}" + (f" ± {std:.2f}" if len(r["seeds"]) > 1 else "")
        delta = f"{r[f'{metric}_delta_vs_full']:+.2f}" if f"{metric}_delta_vs_full" in r else "–"
        ratio = f"{r['wall_clock_ratio']:.3f}" if "wall_clock_ratio" in r else "–"
        sched = " → ".join(f"{p}/{lv}" for p, lv in r["schedule"])
        lines.append(
            f"| {r['method']} | {len(r['seeds'])} | {fid} | {delta} | {r['wall_clock_s_mean']:.1f} | {ratio} | "
            f"{r['flops_ratio']:.3f} | {r['search_time_s_mean']:.1f} | {100 * r['search_share']:.1f} % | {sched} |"
        )
    return "\n".join(lines)


def plot_finetune(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """The task's metric (FID or top-1) against wall-clock, one marker per run, one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = runs[0].get("metric", "fid") if runs else "fid"
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for i, label in enumerate(dict.fromkeys(r.get("label", r["method"]) for r in runs)):
        rs = [r for r in runs if r.get("label", r["method"]) == label and r.get(metric) is not None]
        ax.scatter([r["wall_clock_s"] for r in rs], [r[metric] for r in rs], label=label, color=f"C{i}", s=40)
    ax.set_xlabel("fine-tuning wall-clock (s)")
    ax.set_ylabel("FID (lower is better)" if metric == "fid" else f"{metric} (higher is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
