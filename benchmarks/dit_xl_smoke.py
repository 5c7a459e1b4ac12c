"""Real-scale smoke test: a DiT-XL/2 pipeline, random weights, fine-tuned by AutoProg-Zero's pieces on the CPU.

Not a quality benchmark: nothing here learns anything useful. It checks that the latent-DiT path
holds at DiT-XL/2's size (issue 20) and measures what it costs on this machine:

1. **Build**: ``DiTTransformer2DModel`` with ``facebook/DiT-XL-2-256``'s exact transformer config
   (28 blocks, width 1152, 16 heads, patch 2, 32 x 32 x 4 latents = 256 px, 1,000 classes, learned
   sigma: 8 output channels; 750 M parameters in diffusers' layout, which gives every block its own
   timestep and class embedder: the original's 675 M plus 27 copies of them), an ``AutoencoderKL``
   (``--vae real``: Stable Diffusion's VAE config, the one DiT uses, 84 M parameters, at full size;
   ``--vae tiny``: the same 8x downsampling with few channels), a ``DDIMScheduler`` with DiT's
   betas; saved with ``DiTPipeline.save_pretrained``.
2. **Load** it as ``autoprog finetune`` does (:func:`autoprog.tasks.create_finetune_task`:
   ``DiTTask``, the VAE's digest for the latent cache).
3. **Search**: stage 0 of AutoProg-Zero in the paper's space (4 stages, ratio 0.25: 64 .. 256 px;
   4 interleaved levels): the step time of each candidate, then
   :func:`autoprog.search.zero_shot.zero_shot_search` (NTK condition number by per-sample gradients
   over the candidate's learnable parameters, in chunks of at most 2^26 gradient entries; ZiCo on 2
   batches; ranked vote). The NTK / ZiCo time and peak RSS of every candidate are recorded.
4. **Train** a few steps of the chosen sub-network (AdamW on its learnable parameters, EMA), then
   **unfreeze** to the next stage (one step up on both axes, optimizer state carried by name) and
   train a few more. Step times, the latent cache's encodes and each phase's peak RSS.
5. **Full NTK**: the NTK condition number with *every* parameter learnable, at the smallest
   resolution: the per-sample gradients of all 750 M parameters, chunked.
6. **Save** ``model/`` as a ``DiTPipeline`` folder, load it with ``DiTPipeline.from_pretrained`` and
   draw one image (a few DDIM steps, decoded by the VAE).

Each phase's results are written as soon as it ends (``benchmarks/results/<name>.json`` / ``.md``,
plus ``.png``: the RSS over time), so a run stopped by a timeout keeps what it measured. First check
the fit at reduced depth, then run the full size once, alone on the machine::

    .venv/bin/python benchmarks/dit_xl_smoke.py --depth 2 --name dit-xl-smoke-depth2     # dry run
    timeout 1500 .venv/bin/python benchmarks/dit_xl_smoke.py                              # 28 blocks
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"

#: facebook/DiT-XL-2-256's transformer/config.json (diffusers names); ``num_layers`` is --depth.
DIT_XL_2: dict[str, Any] = {
    "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": 8, "num_layers": 28,
    "sample_size": 32, "patch_size": 2, "num_embeds_ada_norm": 1000, "norm_num_groups": 32,
    "activation_fn": "gelu-approximate", "norm_type": "ada_norm_zero", "norm_elementwise_affine": False,
    "attention_bias": True,
}  # fmt: skip
#: Stable Diffusion's VAE (stabilityai/sd-vae-ft-ema, DiT's): 8x downsampling, 4 latent channels.
SD_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 256, "scaling_factor": 0.18215,
}  # fmt: skip
#: The same geometry with few channels (for a machine the real VAE does not fit).
TINY_VAE: dict[str, Any] = {**SD_VAE, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1}
#: DiT's noise schedule (linear betas 1e-4 .. 0.02, 1,000 steps).
SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
    "clip_sample": False, "set_alpha_to_one": True,
}  # fmt: skip


def rss_bytes() -> int:
    """The process's resident set size now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class RssTimeline:
    """Samples the RSS every ``interval`` seconds in a thread, with named phase marks."""

    def __init__(self, interval: float = 0.25) -> None:
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, int]] = []
        self.marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_bytes()))
            self._stop.wait(0.25)

    def mark(self, name: str) -> None:
        self.marks.append((time.perf_counter() - self.t0, name))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Phase:
    """``with Phase(report, "name") as p: ...``: wall seconds and peak RSS (VmHWM, reset at the start)
    of the block, stored in ``report["phases"]`` and written out at the end of the block."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.name = bench, name
        self.info: dict[str, Any] = {"phase": name}

    def __enter__(self) -> Phase:
        from autoprog.memory import reset_peak_memory

        gc.collect()
        reset_peak_memory(torch.device("cpu"))
        self.bench.timeline.mark(self.name)
        self.bench.log(f"[{self.name}] ...")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, kind, value, tb) -> None:
        from autoprog.memory import peak_memory_bytes

        self.info.update(
            seconds=time.perf_counter() - self.t0, peak_rss_bytes=peak_memory_bytes(torch.device("cpu")),
            rss_after_bytes=rss_bytes(),
        )  # fmt: skip
        if kind is not None:
            self.info["error"] = f"{kind.__name__}: {str(value).strip().splitlines()[0] if str(value).strip() else ''}"
            self.bench.report["failed"] = {"phase": self.name, "error": self.info["error"],
                                           "traceback": traceback.format_exception(kind, value, tb)[-3:]}  # fmt: skip
        self.bench.report["phases"].append(self.info)
        self.bench.log(
            f"[{self.name}] {self.info['seconds']:.1f}s, peak RSS {gib(self.info['peak_rss_bytes'])}"
            + (f" FAILED {self.info['error']}" if kind is not None else "")
        )
        self.bench.write()


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


class Bench:
    """The report being built and its files."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.timeline = RssTimeline()
        self.report: dict[str, Any] = {"name": args.name, "phases": [], "settings": vars(args).copy()}

    def log(self, message: str) -> None:
        print(f"{time.perf_counter() - self.timeline.t0:7.1f}s {message}", flush=True)

    def write(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.report["rss_timeline"] = {"samples": self.timeline.samples[::4], "marks": self.timeline.marks}
        (RESULTS / f"{self.args.name}.json").write_text(json.dumps(self.report, indent=2, default=str))
        (RESULTS / f"{self.args.name}.md").write_text(markdown(self.report))
        plot(self.report, RESULTS / f"{self.args.name}.png")


def build_pipeline(folder: Path, depth: int, vae_kind: str, seed: int) -> dict[str, Any]:
    """DiT-XL/2 (``depth`` blocks) + VAE + DDIM scheduler, random weights, saved as a DiTPipeline."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(**{**DIT_XL_2, "num_layers": depth})
    vae = AutoencoderKL(**(SD_VAE if vae_kind == "real" else TINY_VAE))
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(**SCHEDULER)).save_pretrained(str(folder))
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folder.iterdir() if p.is_dir()}
    return {
        "transformer_params": sum(p.numel() for p in transformer.parameters()),
        "vae_params": sum(p.numel() for p in vae.parameters()),
        "folder_bytes": sizes,
    }


def main() -> None:  # noqa: PLR0915 - one phase after the other, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=28, help="transformer blocks (DiT-XL/2: 28)")
    parser.add_argument("--vae", choices=("real", "tiny"), default="real")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="training steps per stage")
    parser.add_argument("--ntk-samples", type=int, default=8, help="NTK probe samples (the library's default: 8)")
    parser.add_argument("--time-repeats", type=int, default=1, help="timed steps per candidate")
    parser.add_argument("--full-ntk", action=argparse.BooleanOptionalAction, default=True,
                        help="also take the NTK with every parameter learnable")  # fmt: skip
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="EMA copy (as finetune)")
    parser.add_argument("--sample", action=argparse.BooleanOptionalAction, default=True,
                        help="save model/, reload it with DiTPipeline and draw one image")  # fmt: skip
    parser.add_argument("--sample-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--name", default="dit-xl-smoke")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from autoprog.train.optim import build_optimizer, carry_state, state_by_name

    from autoprog.data import resize_uint8
    from autoprog.data.datasets import DatasetInfo
    from autoprog.ema import ModelEma
    from autoprog.search.one_shot import measure_step_times
    from autoprog.search.zero_shot import zero_shot_search
    from autoprog.tasks import create_finetune_task
    from autoprog.train.config import FinetuneConfig
    from autoprog.train.pretrain import environment
    from autoprog.unfreeze import UnfreezeSpace, level_blocks, set_trainable, zero_shot_candidates

    bench = Bench(args)
    r = bench.report
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    r.update(date=datetime.datetime.now().isoformat(timespec="seconds"), commit=commit.stdout.strip(),
             environment=environment(torch.device("cpu")), torch_threads=torch.get_num_threads(),
             load_average_at_start=os.getloadavg())  # fmt: skip
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dit-xl-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    try:
        with Phase(bench, "build") as p:
            p.info.update(build_pipeline(work / "pipe", args.depth, args.vae, seed=0))
            r["model"] = {**p.info, "depth": args.depth, "vae": args.vae}
        gc.collect()

        with Phase(bench, "load") as p:
            cfg = FinetuneConfig(model=str(work / "pipe"), data="random", method="autoprog-zero", stages=4,
                                 batch_size=args.batch_size, ntk_samples=args.ntk_samples, time_repeats=args.time_repeats,
                                 ema_decay=0.999 if args.ema else 0.0, fid_samples=0)  # fmt: skip
            task = create_finetune_task(work / "pipe", cfg, num_stages=cfg.stages, device=device)
            classes = [f"class {i}" for i in range(10)]
            task.bind_data(DatasetInfo("random", 10, 3, task.full_resolution, classes, (0.5,) * 3, (0.5,) * 3))
            model = task.model
            blocks = task.block_paths
            p.info.update(full_resolution=task.full_resolution, patch_size_px=task.patch_size, blocks=len(blocks),
                          learned_sigma=model.learned_sigma, params=sum(q.numel() for q in model.parameters()))  # fmt: skip

        # Data: random 256 px RGB images (the VAE encodes anything), 10 classes.
        g = torch.Generator().manual_seed(0)
        n_images = max(args.ntk_samples, 2 * args.batch_size, 4 * args.batch_size)
        images = torch.randint(0, 256, (n_images, 3, task.full_resolution, task.full_resolution), generator=g,
                               dtype=torch.uint8)  # fmt: skip
        labels = torch.arange(n_images) % 10
        space = UnfreezeSpace(task.full_resolution, task.patch_size, cfg.ratio, cfg.stages, cfg.levels)
        r["space"] = {"resolutions_px": space.resolutions, "latent_sides": [x // 8 for x in space.resolutions],
                      "levels": space.levels}  # fmt: skip

        def configure(c) -> int:
            learn = level_blocks(len(blocks), c.level, cfg.levels)
            return set_trainable(model, blocks, learn, always=task.always_learnable)

        def probe_batch(res: int, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
            return task.probe(images[lo:hi], labels[lo:hi], res, 0, seed=lo * 1009 + res)

        candidates = zero_shot_candidates(space, 0, None)
        with Phase(bench, "encode probes") as p:  # the VAE, once per image and resolution (cached)
            for res in sorted({c.resolution for c in candidates}):
                probe_batch(res, 0, n_images)
            p.info["cache"] = task.cache.stats()

        with Phase(bench, "search: step times") as p:
            probes = [probe_batch(c.resolution, 0, args.batch_size) for c in candidates]
            seconds = measure_step_times(
                len(candidates), lambda i: configure(candidates[i]),
                lambda i: task.probe_loss(model, probes[i]).backward(), repeats=args.time_repeats, warmup=1,
            )  # fmt: skip
            for q in model.parameters():
                q.grad = None
            step_time = dict(zip(candidates, seconds, strict=True))
            p.info["step_time_s"] = {f"{c.resolution}px L{c.level}": s for c, s in step_time.items()}

        with Phase(bench, "search: NTK + ZiCo") as p:
            marks: list[tuple[str, Any, float, int | None]] = []

            def at(event: str, c) -> None:
                from autoprog.memory import peak_memory_bytes, reset_peak_memory

                marks.append((event, c, time.perf_counter(), peak_memory_bytes(device)))
                reset_peak_memory(device)
                bench.log(f"  {event} {c.resolution}px level {c.level}")

            def ntk_inputs(c):
                at("ntk", c)
                return probe_batch(c.resolution, 0, args.ntk_samples)[:-1]

            def zico_batches(c):
                at("zico", c)
                bs = args.batch_size
                return [probe_batch(c.resolution, b * bs, (b + 1) * bs) for b in range(2)]

            def time_step(c):
                at("done", c)
                return step_time[c]

            winner, rows, _ = zero_shot_search(
                model, candidates, configure, forward=task.output, loss_fn=task.probe_loss, ntk_inputs=ntk_inputs,
                zico_batches=zico_batches, time_step=time_step, weights=cfg.weights(), seed=cfg.seed,
            )  # fmt: skip
            for i, row in enumerate(rows):
                (_, _, t_ntk, _), (_, _, t_zico, ntk_peak), (_, _, t_done, zico_peak) = marks[3 * i : 3 * i + 3]
                row.update(ntk_s=t_zico - t_ntk, zico_s=t_done - t_zico, ntk_peak_rss_bytes=ntk_peak,
                           zico_peak_rss_bytes=zico_peak,
                           ntk_chunks=-(-args.ntk_samples * row["trainable_params"] // 2**26))  # fmt: skip
            chosen = candidates[winner]
            p.info.update(candidates=rows, chosen={"resolution": chosen.resolution, "level": chosen.level})
            r["search"] = p.info

        # Training: the chosen sub-network, then one unfreezing (both axes one step up).
        gen = torch.Generator().manual_seed(1)
        state: dict[str, Any] = {"optimizer": None, "ema": None, "batch": 0}

        def train(c, k: int, phase: Phase) -> None:
            trainable = configure(c)
            old = state_by_name(state["optimizer"]) if state["optimizer"] is not None else {}
            state["optimizer"] = opt = build_optimizer(model, 1e-4, 0.0)
            carry_state(old, opt, {n: n for n, q in model.named_parameters() if q.requires_grad})
            if args.ema:
                if state["ema"] is None:
                    state["ema"] = ModelEma(model, 0.999)
                state["ema"].rebuild(model, trainable_only=True)
            times, losses, encodes = [], [], []
            for _ in range(args.steps):
                lo = (state["batch"] * args.batch_size) % len(images)
                state["batch"] += 1
                x = resize_uint8(images[lo : lo + args.batch_size], c.resolution)
                before = task.cache.encode_time_s
                t0 = time.perf_counter()
                loss = task.loss(model, x, labels[lo : lo + args.batch_size], c.resolution, k, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if state["ema"] is not None:
                    state["ema"].update(model, decay=0.999)
                times.append(time.perf_counter() - t0)
                encodes.append(task.cache.encode_time_s - before)
                losses.append(loss.item())
            phase.info.update(resolution=c.resolution, level=c.level, trainable_params=trainable, step_s=times,
                              encode_s=encodes, loss=losses, cache=task.cache.stats())  # fmt: skip

        with Phase(bench, "train stage 0") as p:
            train(chosen, 0, p)
        with Phase(bench, "train stage 1 (unfrozen)") as p:
            nxt = max(zero_shot_candidates(space, 1, chosen))
            train(nxt, 1, p)
        state["optimizer"] = None
        for q in model.parameters():
            q.grad = None
        gc.collect()

        if args.full_ntk:
            with Phase(bench, "NTK, every parameter learnable") as p:
                from autoprog.proxies import ntk_condition_number

                for q in model.parameters():
                    q.requires_grad_(True)
                res = space.resolutions[0]
                model.eval()
                kappa = ntk_condition_number(model, probe_batch(res, 0, args.ntk_samples)[:-1], task.output)
                model.train()
                n = sum(q.numel() for q in model.parameters())
                p.info.update(resolution=res, params=n, samples=args.ntk_samples, ntk=kappa,
                              chunk_groups=-(-args.ntk_samples * n // 2**26))  # fmt: skip

        if args.sample:
            with Phase(bench, "save model/ + DiTPipeline sample") as p:
                from diffusers import DiTPipeline

                final = state["ema"].module if state["ema"] is not None else model
                state["ema"] = None
                t0 = time.perf_counter()
                task.save(final, work / "model")
                p.info["save_s"] = time.perf_counter() - t0
                del final
                gc.collect()
                pipe = DiTPipeline.from_pretrained(str(work / "model"))
                t0 = time.perf_counter()
                out = pipe(class_labels=[3], guidance_scale=1.5, num_inference_steps=args.sample_steps, output_type="pt",
                           generator=torch.Generator().manual_seed(0)).images  # fmt: skip
                p.info.update(sample_s=time.perf_counter() - t0, sample_shape=list(out.shape),
                              model_files=sorted(x.name for x in (work / "model").iterdir()))  # fmt: skip
        r["latent_cache"] = task.cache.stats()
        r["done"] = True
    finally:
        r["load_average_at_end"] = os.getloadavg()
        bench.timeline.stop()
        bench.write()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    """The report as markdown (written after every phase)."""
    m = r.get("model", {})
    lines = [
        f"# {r['name']}: DiT-XL/2 latent pipeline on the CPU (smoke test, random weights)",
        "",
        f"Date {r.get('date')}, commit {r.get('commit')}, {r.get('environment', {}).get('cpu', '')}, "
        f"{r.get('torch_threads')} threads, load average (1, 5, 15 min) {_load(r.get('load_average_at_start'))} at the "
        f"start, {_load(r.get('load_average_at_end'))} at the end (2 cores: above 2, other processes shared them). "
        f"Settings: `{json.dumps(r['settings'])}`.",
        "",
        f"Transformer: {m.get('transformer_params', 0) / 1e6:.1f} M parameters ({m.get('depth')} blocks), "
        f"VAE ({m.get('vae')}): {m.get('vae_params', 0) / 1e6:.1f} M. "
        + ("**Finished.**" if r.get("done") else f"**Not finished**: {r.get('failed', {}).get('phase', 'stopped')} "
           f"({r.get('failed', {}).get('error', 'killed or still running')})."),
        "",
        "Peak RSS is the kernel's VmHWM, reset at each phase's start.",
        "",
        "| phase | seconds | peak RSS | RSS after | notes |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for ph in r["phases"]:
        notes = ""
        if "step_s" in ph:
            notes = (f"{ph['resolution']} px level {ph['level']}, {ph['trainable_params'] / 1e6:.0f} M learnable; "
                     f"steps {', '.join(f'{s:.1f}' for s in ph['step_s'])} s (encoding in them: "
                     f"{', '.join(f'{s:.1f}' for s in ph['encode_s'])} s)")  # fmt: skip
        elif "cache" in ph:
            notes = f"{ph['cache']['encoded']} images encoded"
        elif "step_time_s" in ph:
            notes = ", ".join(f"{k}: {v:.2f} s" for k, v in ph["step_time_s"].items())
        elif "chosen" in ph:
            notes = f"chose {ph['chosen']['resolution']} px level {ph['chosen']['level']}"
        elif "ntk" in ph:
            notes = f"{ph['params'] / 1e6:.0f} M parameters, {ph['samples']} samples at {ph['resolution']} px, ~{ph['chunk_groups']} chunks"
        elif "sample_shape" in ph:
            notes = f"save {ph['save_s']:.0f} s, sample {ph['sample_s']:.0f} s, image {ph['sample_shape']}"
        elif "params" in ph:
            notes = f"{ph['params'] / 1e6:.1f} M parameters, {ph['full_resolution']} px, steps of {ph['patch_size_px']} px"
        if "error" in ph:
            notes += f" FAILED: {ph['error']}"
        lines.append(f"| {ph['phase']} | {ph['seconds']:.1f} | {gib(ph['peak_rss_bytes'])} | {gib(ph['rss_after_bytes'])} | {notes} |")
    if "search" in r:
        lines += ["", "Stage-0 search, per candidate:", "",
                  "| candidate | learnable | NTK s | NTK chunks | NTK peak RSS | ZiCo s | step s | log κ | ZiCo | total |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in r["search"]["candidates"]:
            lines.append(
                f"| {c['resolution']} px L{c['level']} | {c['trainable_params'] / 1e6:.0f} M | {c['ntk_s']:.1f} | {c['ntk_chunks']} | "
                f"{gib(c['ntk_peak_rss_bytes'])} | {c['zico_s']:.1f} | {c['time']:.2f} | {c['log_ntk']:.2f} | "
                f"{c['zico']:.1f} | {c['total']} |"
            )
    if "latent_cache" in r:
        lines += ["", f"Latent cache: `{json.dumps(r['latent_cache'])}`."]
    return "\n".join(lines) + "\n"


def _load(values: Any) -> str:
    return "-" if not values else "/".join(f"{v:.1f}" for v in values)


def plot(r: dict[str, Any], path: Path) -> None:
    """RSS over time with the phases marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    samples = r["rss_timeline"]["samples"]
    if not samples:
        return
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([t for t, _ in samples], [b / 2**30 for _, b in samples], lw=1)
    for t, name in r["rss_timeline"]["marks"]:
        ax.axvline(t, color="grey", lw=0.5)
        ax.text(t, ax.get_ylim()[1], name, rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (GiB)")
    ax.set_title(f"{r['name']}: resident memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
