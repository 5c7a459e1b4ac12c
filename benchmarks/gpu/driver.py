"""The GPU evidence run (issue 19): CUDA tests, converged-scale pre-training, DiT fine-tuning, under one deadline.

Started by ``benchmarks/gpu/run.sh`` (see ``benchmarks/gpu/README.md``). Every training run is the
``autoprog`` command line in a subprocess; after each step ``results.json`` is rewritten, so a run cut
short by the deadline still returns what it finished, the most valuable part first:

a. ``pytest -m cuda`` (the CUDA paths; junit report ``cuda-tests.xml``);
b. pre-training on the whole Fashion-MNIST training split (minus the validation images), seed 0:
   ``full``, ``prog``, ``full-equal-time`` (matched to Prog's time, as ``bench``'s ``match=prog``)
   and ``autoprog-one``;
c. DiT fine-tuning (the 3,200-step setting of ``finetune-mnist5k-3200``): ``full``, ``prog``,
   ``autoprog-zero``; each run's FID samples (the same images ``finetune`` would score) go to
   ``dit-samples.npz``, scored on a CPU afterwards (``report.py --fid``);
d. pre-training seed 1, if time is left.

What comes back (``$OUT``, at most 8 files): ``results.json``, ``log.txt``, ``cuda-tests.xml``,
``dit-samples.npz``. Settings come from environment variables (``GPU_*``, listed in ``Settings``);
``--dry-run`` gives toy sizes on the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / "benchmarks" / "gpu" / "carry"
PRETRAIN_METHODS = ("full", "prog", "full-equal-time", "autoprog-one")
FINETUNE_METHODS = ("full", "prog", "autoprog-zero")


@dataclass
class Settings:
    """What the run does; each field can be set from the environment as ``GPU_<FIELD>`` (upper case)."""

    time_limit_s: float = 480.0  # the whole script, tests and packing included
    margin_s: float = 20.0  # kept free at the end for writing results
    device: str = "cuda"
    threads: int = 4  # torch CPU threads of each training process
    test_timeout_s: float = 150.0
    # (b) pre-training: the whole training split minus the validation images, bf16, a large batch.
    pt_model: str = "vit_tiny_patch16_224"
    pt_depth: int = 6
    pt_epochs: int = 30
    pt_batch_size: int = 1024
    pt_lr: float = 1e-3
    pt_val_size: int = 1000
    pt_train_subset: int = 0  # 0: the whole split minus the validation images
    pt_test_subset: int = 0  # 0: the whole test split (10k)
    pt_precision: str = "bf16"
    pt_seeds: str = "0,1"
    pt_methods: str = ",".join(PRETRAIN_METHODS)  # a subset, in this order (full-equal-time needs full and prog)
    pt_extra: str = ""  # more options for every pre-training run, e.g. "--search-samples 128 --stages 2"
    # (c) DiT fine-tuning, the committed 3,200-step setting (finetune-mnist5k-3200).
    ft_model: str = "dit-fmnist"
    ft_steps: int = 3200
    ft_batch_size: int = 32
    ft_precision: str = "no"
    ft_fid_samples: int = 300  # the committed benchmark's count (its reference: 1,000 training images)
    ft_reserve_s: float = 170.0  # kept for (c) while (b)'s seed 0 runs
    ft_extra: str = ""
    ft_methods: str = ",".join(FINETUNE_METHODS)
    data_dir: str = ""  # the Fashion-MNIST idx files (default: benchmarks/gpu/carry/fashion-mnist, else the system's)

    @classmethod
    def from_env(cls, dry_run: bool) -> Settings:
        s = cls(**DRY_RUN) if dry_run else cls()
        for f in fields(cls):
            value = os.environ.get(f"GPU_{f.name.upper()}")
            if value is not None:
                setattr(s, f.name, type(getattr(s, f.name))(value))
        return s


#: Toy sizes for ``--dry-run``: the whole script on a CPU in well under 2 minutes.
DRY_RUN: dict[str, Any] = {
    "time_limit_s": 110.0, "margin_s": 5.0, "device": "cpu", "threads": 1, "test_timeout_s": 60.0,
    "pt_depth": 2, "pt_epochs": 2, "pt_batch_size": 32, "pt_val_size": 32, "pt_train_subset": 64,
    "pt_test_subset": 50, "pt_precision": "no", "pt_seeds": "0",
    "pt_extra": "--stages 2 --search-samples 32 --search-epochs 1",
    "ft_model": "dit-tiny", "ft_steps": 4, "ft_batch_size": 4, "ft_fid_samples": 10, "ft_reserve_s": 20.0,
    "ft_extra": "--stages 2 --levels 2 --time-repeats 1 --ntk-samples 2 --sample-steps 2",
}  # fmt: skip


@dataclass
class Results:
    """``results.json``: rewritten after every step."""

    dry_run: bool
    settings: dict[str, Any]
    started: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    complete: bool = False
    elapsed_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # every command: name, rc, seconds, status
    skipped: list[dict[str, str]] = field(default_factory=list)  # what was not run, and why
    cuda_tests: dict[str, Any] = field(default_factory=dict)
    pretrain: list[dict[str, Any]] = field(default_factory=list)  # the runs' summary.json + label, val curve
    finetune: list[dict[str, Any]] = field(default_factory=list)  # the runs' summary.json + label, samples key


class Deadline(Exception):
    """The script's time is up (SIGTERM from run.sh's timeout, or the internal deadline)."""


class Driver:
    def __init__(self, settings: Settings, out: Path, work: Path, dry_run: bool) -> None:
        self.s, self.out, self.work = settings, out, work
        self.t0 = time.monotonic()
        self.results = Results(dry_run=dry_run, settings=asdict(settings))
        self.log_file = (out / "log.txt").open("a", buffering=1)
        self.samples: dict[str, Any] = {}
        self.child: subprocess.Popen | None = None
        self.last_seconds = 0.0  # of the last command, process start and evaluation included
        self.data_dir = settings.data_dir or next(
            (str(d) for d in (CARRY / "fashion-mnist",) if d.is_dir()), "/usr/share/datasets/fashion-mnist"
        )

    # -- bookkeeping ------------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.s.time_limit_s - self.s.margin_s - (time.monotonic() - self.t0)

    def log(self, line: str) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f}s]"
        print(f"{stamp} {line}", flush=True)
        self.log_file.write(f"{stamp} {line}\n")

    def write(self) -> None:
        self.results.elapsed_s = time.monotonic() - self.t0
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(asdict(self.results), indent=1, default=str))
        tmp.replace(self.out / "results.json")
        if self.samples:
            import numpy as np

            np.savez_compressed(self.out / "dit-samples.npz", **self.samples)

    def skip(self, what: str, why: str) -> None:
        self.log(f"SKIPPED {what}: {why}")
        self.results.skipped.append({"what": what, "why": why})
        self.write()

    def run(self, name: str, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> int | None:
        """``argv`` in a subprocess (its output into the log), killed at ``timeout`` seconds; the return code."""
        timeout = min(timeout, self.remaining())
        if timeout <= 1:
            raise Deadline(name)
        self.log(f"$ {' '.join(argv)}  (limit {timeout:.0f}s)")
        t = time.monotonic()
        self.child = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        try:
            rc: int | None = self.child.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, "timed out"
        except BaseException:  # the deadline (SIGTERM): the child goes too
            self.stop_child()
            raise
        self.stop_child()
        self.child = None
        seconds = self.last_seconds = time.monotonic() - t
        self.results.steps.append({"name": name, "rc": rc, "seconds": round(seconds, 1), "status": status})
        self.log(f"{name}: {status} (rc {rc}, {seconds:.1f}s)")
        self.write()
        return rc

    def stop_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGTERM)
            try:
                self.child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.child.pid, signal.SIGKILL)
                self.child.wait()

    def autoprog(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "autoprog.cli", *args]

    # -- the steps --------------------------------------------------------------------------------------
    def machine(self) -> None:
        import torch

        m: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                             "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}  # fmt: skip
        if shutil.which("nvidia-smi"):
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
            m["nvidia_smi"] = q.stdout.strip()
        from importlib.metadata import PackageNotFoundError, version

        for name in ("timm", "torchvision", "diffusers", "mlxtend", "peft", "transformers"):
            try:
                m[name] = version(name)
            except PackageNotFoundError:
                m[name] = "missing"
        self.results.machine = m
        self.log(f"machine: {json.dumps(m)}")
        self.write()

    def start_source(self) -> subprocess.Popen | None:
        """Make the DiT source on spare CPU cores while the GPU pre-trains (it trains on the CPU)."""
        if not self.has_diffusers():
            return None
        cmd = self.autoprog("source", self.s.ft_model, "--data-dir", self.data_dir)
        if not self.results.dry_run and shutil.which("taskset") and (os.cpu_count() or 1) >= 12:
            cmd = ["taskset", "-c", f"{(os.cpu_count() or 16) // 2}-{(os.cpu_count() or 16) - 1}", *cmd]
        threads = "1" if self.results.dry_run else str(max(1, (os.cpu_count() or 2) // 2))
        self.log(f"$ {' '.join(cmd)}  (background, {threads} threads)")
        log = (self.work / "source.log").open("w")
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)

    def has_diffusers(self) -> bool:
        return not str(self.results.machine.get("diffusers", "missing")).startswith("missing")

    def cuda_tests(self) -> None:
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                       if "mark.cuda" in p.read_text())  # fmt: skip
        if self.results.dry_run:  # on the CPU the CUDA-only file's tests skip: the plumbing alone
            files = ["tests/test_cuda.py"]
        xml = self.out / "cuda-tests.xml"
        rc = self.run("cuda-tests", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider",
                                     f"--junitxml={xml}", *files], self.s.test_timeout_s)  # fmt: skip
        self.results.cuda_tests = {"rc": rc, "files": files, **junit_counts(xml)}
        self.write()

    def pretrain_seed(self, seed: int) -> None:
        s = self.s
        common = ["--model", s.pt_model, "--depth", str(s.pt_depth), "--patch-size", "4", "--epochs", str(s.pt_epochs),
                  "--batch-size", str(s.pt_batch_size), "--lr", str(s.pt_lr), "--val-size", str(s.pt_val_size),
                  "--mixed-precision", s.pt_precision, "--device", s.device, "--threads", str(s.threads),
                  "--data-dir", self.data_dir, "--seed", str(seed), "--progress", "off", *s.pt_extra.split()]  # fmt: skip
        if s.pt_train_subset:
            common += ["--train-subset", str(s.pt_train_subset)]
        if s.pt_test_subset:
            common += ["--test-subset", str(s.pt_test_subset)]
        reserve = s.ft_reserve_s if seed == 0 else 0.0
        done: dict[str, dict[str, Any]] = {}
        for method in [m for m in PRETRAIN_METHODS if m in s.pt_methods.split(",")]:
            label, extra = method, []
            if method == "full-equal-time":
                if not {"full", "prog"} <= done.keys():
                    self.skip(f"pretrain {method} seed {seed}", "needs full's and prog's times of this seed")
                    continue
                ratio = done["prog"]["wall_clock_s"] / done["full"]["wall_clock_s"]
                label, extra = "full-equal-time:match=prog", ["--equal-time-ratio", f"{ratio:.6f}"]
            guess = estimate(method, done)
            if guess is not None and self.remaining() - reserve < guess:
                self.skip(f"pretrain {label} seed {seed}", f"{self.remaining():.0f}s left, needs ~{guess:.0f}s "
                          f"(+{reserve:.0f}s kept for fine-tuning)")  # fmt: skip
                continue
            out = self.work / "pretrain" / f"{method}-seed{seed}"
            rc = self.run(f"pretrain {label} seed {seed}",
                          self.autoprog("pretrain", "--method", method, "--out", str(out), "--overwrite", *common, *extra),
                          self.remaining() - reserve)  # fmt: skip
            if rc == 0:
                summary = read_pretrain_run(out)
                summary["label"], summary["process_s"] = label, self.last_seconds
                if method == "full-equal-time":
                    summary["equal_time_match"] = {"label": "prog", "time_ratio": ratio}
                done[method] = summary
                self.results.pretrain.append(summary)
                self.write()

    def finetune(self, source: subprocess.Popen | None) -> None:
        s = self.s
        if not self.has_diffusers():
            self.skip("fine-tuning (c)", "diffusers is not installed here and no wheel was carried "
                      "(run benchmarks/gpu/prepare.sh on the machine that launches the run)")  # fmt: skip
            return
        if source is not None:
            self.log("waiting for the DiT source ...")
            t = time.monotonic()
            try:
                rc = source.wait(timeout=max(1.0, self.remaining()))
            except subprocess.TimeoutExpired:
                os.killpg(source.pid, signal.SIGKILL)
                raise Deadline("source") from None
            self.results.steps.append({"name": f"source {s.ft_model} (waited for)", "rc": rc,
                                       "seconds": round(time.monotonic() - t, 1), "status": "ok" if rc == 0 else "failed"})  # fmt: skip
            self.log(f"source {s.ft_model}: rc {rc}\n" + (self.work / "source.log").read_text()[-2000:])
            if rc != 0:
                self.skip("fine-tuning (c)", f"making the source {s.ft_model} failed (rc {rc})")
                return
        common = ["--model", s.ft_model, "--data", "mnist-5k", "--steps", str(s.ft_steps), "--batch-size",
                  str(s.ft_batch_size), "--mixed-precision", s.ft_precision, "--device", s.device, "--threads",
                  str(s.threads), "--fid-samples", "0", "--progress", "off", *s.ft_extra.split()]  # fmt: skip
        done: dict[str, float] = {}
        for method in [m for m in FINETUNE_METHODS if m in s.ft_methods.split(",")]:
            guess = 0.8 * done["full"] if "full" in done else None
            if guess is not None and self.remaining() < guess:
                self.skip(f"finetune {method}", f"{self.remaining():.0f}s left, needs ~{guess:.0f}s")
                continue
            out = self.work / "finetune" / f"{method}-seed0"
            rc = self.run(f"finetune {method}", self.autoprog("finetune", "--method", method, "--out", str(out),
                                                              "--overwrite", *common), self.remaining())  # fmt: skip
            if rc != 0:
                continue
            summary = json.loads((out / "summary.json").read_text())
            summary["label"] = method
            done[method] = summary["wall_clock_s"]
            t = time.monotonic()
            try:
                images = sample_run(out, s.ft_fid_samples, s.device)
                self.samples[method] = images.numpy()
                summary["fid_samples_key"] = method
                summary["fid_samples"] = len(images)
                self.log(f"finetune {method}: {len(images)} FID samples in {time.monotonic() - t:.1f}s")
            except Exception as e:  # noqa: BLE001 (the run's summary still counts)
                self.log(f"finetune {method}: sampling failed: {type(e).__name__}: {e}")
            self.results.finetune.append(summary)
            self.write()

    def main(self) -> None:
        self.log(f"autoprog GPU evidence run: limit {self.s.time_limit_s:.0f}s, out {self.out}, work {self.work}")
        self.machine()
        source = None
        try:
            source = self.start_source()
            self.cuda_tests()
            seeds = [int(x) for x in self.s.pt_seeds.split(",") if x.strip()]
            self.pretrain_seed(seeds[0])
            self.finetune(source)
            source = None
            for seed in seeds[1:]:
                self.pretrain_seed(seed)
            self.results.complete = True
        except Deadline as e:
            self.log(f"time is up (at {e}): writing what is done")
        finally:
            self.stop_child()
            if source is not None and source.poll() is None:
                os.killpg(source.pid, signal.SIGKILL)
            self.write()
            self.log(f"done in {time.monotonic() - self.t0:.0f}s; complete: {self.results.complete}")


def estimate(method: str, done: dict[str, dict[str, Any]]) -> float | None:
    """Seconds a pre-training run is expected to take (process start and evaluation included), from
    full's run of the same seed; ``None`` before full has run."""
    if "full" not in done:
        return None
    full = done["full"]
    overhead = full.get("process_s", full["wall_clock_s"]) - full["wall_clock_s"]
    share = {"prog": 0.6, "full-equal-time": done.get("prog", full)["wall_clock_s"] / full["wall_clock_s"],
             "autoprog-one": 0.75}.get(method, 1.0)  # fmt: skip
    return overhead + share * full["wall_clock_s"] * 1.1


def read_pretrain_run(out: Path) -> dict[str, Any]:
    """A finished run's ``summary.json`` with its validation curve (from ``log.jsonl``)."""
    summary = json.loads((out / "summary.json").read_text())
    curve = []
    for line in (out / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "epoch":
            curve.append({k: r.get(k) for k in ("epoch", "stage", "train_loss", "val_top1", "wall_clock_s")})
    summary["val_curve"] = curve
    return summary


def sample_run(run_dir: Path, n: int, device: str):
    """The ``n`` FID samples of a finished ``finetune`` run (saved with ``--fid-samples 0``): the images
    its evaluation would have scored (:func:`autoprog.tasks.dit.fid_samples`, the EMA model saved in
    ``model/``, the last stage's identifier when SID is on)."""
    import dataclasses

    import torch

    from autoprog.adapters.diffusers_dit import DiTDenoiser
    from autoprog.tasks.dit import fid_samples
    from autoprog.train.config import FinetuneConfig
    from autoprog.train.diffusion import GaussianDiffusion

    summary = json.loads((run_dir / "summary.json").read_text())
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{k: v for k, v in summary["config"].items() if k in known})
    cfg = dataclasses.replace(cfg, fid_samples=n)
    dev = torch.device(device if device != "cuda" or torch.cuda.is_available() else "cpu")
    model = DiTDenoiser.load(run_dir / "model").to(dev)
    stage_id = len(summary["schedule"]) - 1 if summary["sid"] else None
    return fid_samples(model, cfg, GaussianDiffusion(), model.num_classes, model.sample_size, model.in_channels,
                       stage_id=stage_id, device=dev)  # fmt: skip


def junit_counts(path: Path) -> dict[str, Any]:
    """Tests, failures, errors, skipped and the failing tests' names of a pytest junit report."""
    if not path.is_file():
        return {"report": None}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts: dict[str, Any] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None]  # fmt: skip
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (the test of this script)")
    p.add_argument("--out", required=True, help="the folder that comes back (at most 8 files)")
    p.add_argument("--work", required=True, help="scratch folder for the runs (does not come back)")
    args = p.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    driver = Driver(Settings.from_env(args.dry_run), out, work, args.dry_run)

    def on_term(signum: int, frame: Any) -> None:
        raise Deadline(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    driver.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
