"""Reference runs: three short, deterministic runs whose numbers a refactor must leave unchanged.

Issue 18 ("what it must show"): before and after moving code of the training loops
(``autoprog.train.pretrain``, ``autoprog.train.finetune``) or of ``GrowthController``, these runs
must give the same numbers. Each run goes through the public Python API on one thread, with the
searches' runtime term taken from FLOPs (``search_runtime="flops"``), so nothing depends on the clock:

* ``pretrain-prog``: Prog, 4 epochs in 4 stages (growth by Interpolation; EMA evaluated too);
* ``pretrain-autoprog-one``: AutoProg-One, 5 epochs in 3 stages (two searched stages, 1 and 2
  epochs long: a supernet epoch alone, then one followed by a training epoch; its searches grow
  the resolution as well as the depth);
* ``finetune-autoprog-zero``: AutoProg-Zero fine-tuning of the ``dit-tiny`` source (made afresh in a
  private cache) for 12 steps, without FID (``fid_samples=0``, as the tests run it).

Pre-training uses the tests' "cell" dataset (``tests/conftest.py``, ``make_cell_dataset``): a
learnable 10-class dataset in Fashion-MNIST's format, written into a temporary folder.

What is recorded per run: every record of ``log.jsonl`` in order (``steps``: the step records with
their losses; ``events``: the others), ``summary.json`` (schedule, searches, final metrics,
``train_flops``, ``full_flops``, parameter counts, per-stage statistics), and the saved weights: a
SHA-256 digest of each (final model, every stage checkpoint's model / EMA / optimizer state) and,
for the final model, each tensor's sum of absolute values and of squares. Measurements that differ
between identical runs are left out: ``wall_clock_s``, ``search_time_s``, ``scoring_time_s``,
elapsed times, ``peak_mem_bytes``, the environment, and the configuration's paths (the inputs of a
run are recorded as ``config`` instead). Every search here takes FLOPs as its runtime term, so the
candidates' ``time`` / ``runtime_s`` are deterministic and kept.

Usage::

    python scripts/reference_runs.py --out tests/data/reference_runs.json     # write the golden file
    python scripts/reference_runs.py --check tests/data/reference_runs.json   # re-run, compare exactly
    python scripts/reference_runs.py --check FILE --rtol 1e-6                 # floats within 1e-6

``--check`` prints every difference (path, the file's value, this run's value) and exits with 1 if
there is any, else 0. Floats must be equal exactly unless ``--rtol`` is given; integers, strings and
the structure always must. With ``--rtol > 0`` the SHA-256 digests are not compared (no tolerance
applies to a hash; other float kernels change the last bits of the weights): the final models'
per-tensor sums stand in for them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The runs' inputs (``out`` and ``data_dir`` are added per run).
PRETRAIN_COMMON: dict[str, Any] = {
    "data": "fashion-mnist", "depth": 4, "batch_size": 8, "train_subset": 256, "val_size": 32,
    "test_subset": 100, "search_samples": 32, "search_runtime": "flops", "threads": 1, "progress": False,
    "search_rule": "paper",  # the runs were recorded before search rules: the paper's must reproduce them
}  # fmt: skip
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "pretrain-prog": ("pretrain", {**PRETRAIN_COMMON, "method": "prog", "epochs": 4, "stages": 4, "eval_ema": True}),
    "pretrain-autoprog-one": ("pretrain", {**PRETRAIN_COMMON, "method": "autoprog-one", "epochs": 5, "stages": 3,
                                           "batch_size": 16}),
    "finetune-autoprog-zero": ("finetune", {
        "model": "dit-tiny", "data": "fashion-mnist", "method": "autoprog-zero", "steps": 12, "batch_size": 8,
        "fid_samples": 0, "time_repeats": 1, "search_runtime": "flops", "threads": 1, "progress": False,
        "search_rule": "paper",
    }),
}  # fmt: skip
#: Measurements (they differ between identical runs) and machine facts: never compared.
UNRECORDED = frozenset(
    {
        "wall_clock_s",
        "search_time_s",
        "scoring_time_s",
        "elapsed",
        "elapsed_s",
        "stage_elapsed",
        "stage_elapsed_s",
        "peak_mem_bytes",
        "environment",
    }
)
DIGEST_KEY = "sha256"
DIGEST_GROUPS = ("stage_checkpoints", "last_checkpoint")  #: their values are digests too (model, ema, optimizer)


def make_cell_dataset(root: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """The tests' dataset (``tests/conftest.py``): the class is where a bright 7x7 cell is."""
    from autoprog.data import write_idx

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 7 * r : 7 * r + 7, 7 * q : 7 * q + 7] = 250
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


# -- what a run leaves behind, as plain deterministic values ------------------------------------


def scrub(obj: Any) -> Any:
    """``obj`` without the measurement keys of :data:`UNRECORDED`, at any depth."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if k not in UNRECORDED}
    if isinstance(obj, list | tuple):
        return [scrub(v) for v in obj]
    return obj


def digest(obj: Any) -> str:
    """SHA-256 of a nested structure of tensors and plain values (keys, dtypes, shapes and bytes)."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k, v in x.items():
                h.update(repr(k).encode())
                walk(v)
            h.update(b"}")
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def weights(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A state dict's digest, and per tensor ``[sum |w|, sum w^2]`` (comparable with a tolerance)."""
    sums = {}
    for name, t in state.items():
        v = t.detach().cpu().double()
        sums[name] = [float(v.abs().sum()), float(v.pow(2).sum())]
    return {DIGEST_KEY: digest(state), "tensor_sums": sums}


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("event") == "step"]
    return steps, [scrub(r) for r in records if r.get("event") != "step"]


def collect_pretrain(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    steps, events = read_log(out / "log.jsonl")
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    stages = {}
    for path in sorted((out / "checkpoints").glob("stage*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        stages[path.stem] = {k: digest(ckpt[k]) for k in ("model", "ema", "optimizer")}
    summary = {k: v for k, v in summary.items() if k != "config"}
    return {"steps": steps, "events": events, "summary": scrub(summary), "model": weights(model),
            "stage_checkpoints": stages}  # fmt: skip


def collect_finetune(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    from autoprog.adapters.diffusers_dit import DiTDenoiser

    steps, events = read_log(out / "log.jsonl")
    final = DiTDenoiser.load(out / "model")
    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    source = DiTDenoiser.load(summary["source"])
    summary = {k: v for k, v in summary.items() if k != "config"}
    summary["source"] = Path(summary["source"]).name  # the recipe's cache folder, not where the cache is
    return {"steps": steps, "events": events, "summary": scrub(summary), "model": weights(final.state_dict()),
            "source_model": {DIGEST_KEY: digest(source.state_dict())},
            "last_checkpoint": {k: digest(last[k]) for k in ("model", "ema", "optimizer")}}  # fmt: skip


@contextlib.contextmanager
def private_cache(folder: Path) -> Iterator[None]:
    """Sources are made afresh in ``folder`` (never taken from the user's cache, made by other code)."""
    old = os.environ.get("AUTOPROG_CACHE")
    os.environ["AUTOPROG_CACHE"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AUTOPROG_CACHE", None)
        else:
            os.environ["AUTOPROG_CACHE"] = old


def run_all(workdir: Path, log=print) -> dict[str, Any]:
    """Run every reference run in ``workdir`` and return what they recorded."""
    from autoprog.train.config import FinetuneConfig, PretrainConfig
    from autoprog.train.finetune import finetune
    from autoprog.train.pretrain import pretrain

    data = make_cell_dataset(workdir / "cells")
    results: dict[str, Any] = {}
    with private_cache(workdir / "cache"):
        for name, (kind, inputs) in RUNS.items():
            out = workdir / name
            t0 = time.perf_counter()
            if kind == "pretrain":
                summary = pretrain(PretrainConfig(**inputs, out=str(out), data_dir=str(data)), log=lambda _m: None)
                record = collect_pretrain(out, summary)
            else:
                summary = finetune(FinetuneConfig(**inputs, out=str(out), data_dir=str(data)), log=lambda _m: None)
                record = collect_finetune(out, summary)
            results[name] = {"kind": kind, "config": inputs, **record}
            log(f"{name}: {time.perf_counter() - t0:.1f}s")
    return results


# -- comparison ----------------------------------------------------------------------------------


def differences(expected: Any, actual: Any, rtol: float = 0.0, path: str = "") -> Iterator[str]:
    """Every place where ``actual`` differs from ``expected``: ``path: expected ... got ...``.

    Floats: equal (NaN equals NaN), or within ``rtol`` relative difference when ``rtol > 0``;
    everything else exactly. With ``rtol > 0`` the SHA-256 digests (the models' and the checkpoints') are skipped.
    """
    where = path or "<root>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k in expected:
            if k not in actual:
                yield f"{where}: key {k!r} is missing"
            elif not (rtol > 0 and (k == DIGEST_KEY or k in DIGEST_GROUPS)):
                yield from differences(expected[k], actual[k], rtol, f"{path}.{k}" if path else str(k))
        for k in actual:
            if k not in expected:
                yield f"{where}: new key {k!r} = {_short(actual[k])}"
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            yield f"{where}: {len(expected)} items expected, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            yield from differences(e, a, rtol, f"{path}[{i}]")
        return
    if isinstance(expected, float) and isinstance(actual, float):
        if math.isnan(expected) and math.isnan(actual):
            return
        if expected == actual or (rtol > 0 and math.isclose(expected, actual, rel_tol=rtol, abs_tol=0.0)):
            return
        rel = abs(actual - expected) / abs(expected) if expected else math.inf
        yield f"{where}: expected {expected!r}, got {actual!r} (relative difference {rel:.3g})"
        return
    if type(expected) is not type(actual) or expected != actual:
        yield f"{where}: expected {_short(expected)}, got {_short(actual)}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, help="run and write the results to this JSON file")
    action.add_argument("--check", type=Path, help="run and compare with this JSON file (exit 1 on any difference)")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default: exact)")
    parser.add_argument("--workdir", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.rtol < 0 or not math.isfinite(args.rtol):
        parser.error(f"--rtol must be a finite number >= 0, got {args.rtol}")
    expected = None
    if args.check is not None:
        try:
            expected = json.loads(args.check.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"reference_runs: cannot read {args.check}: {e}", file=sys.stderr)
            return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = run_all(args.workdir, log)
    else:
        with tempfile.TemporaryDirectory(prefix="autoprog-reference-") as tmp:
            results = run_all(Path(tmp), log)
    log(f"all runs: {time.perf_counter() - t0:.1f}s")
    results = json.loads(json.dumps(results))  # as the file holds it (tuples become lists)
    if expected is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.out}")
        return 0
    found = list(differences(expected, results, args.rtol))
    for line in found:
        print(line)
    tolerance = "exactly" if args.rtol == 0 else f"within rtol {args.rtol:g} (digests not compared)"
    if found:
        print(f"{len(found)} difference(s) from {args.check}")
        return 1
    print(f"identical to {args.check} ({tolerance})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
