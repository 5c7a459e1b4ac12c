"""The ``autoprog`` command line: ``pretrain``, ``finetune``, ``source``, ``bench pretrain|finetune``, ``report``.

Errors caused by the input (bad names, missing data, invalid numbers, a bad command line) print one
line, ``autoprog: error: ...``, and exit 2; ``--debug`` (before or after the subcommand) shows the
traceback instead. ``pretrain`` and ``finetune`` check the whole configuration, and refuse an
``--out`` folder that already holds a finished run unless ``--overwrite`` is given, before any work
starts. See ``docs/errors.md`` for every message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from autoprog.errors import AutoprogError
from autoprog.growth.operators import OPERATORS
from autoprog.train.config import (
    FINETUNE_METHODS,
    PRETRAIN_METHODS,
    FinetuneConfig,
    PretrainConfig,
    check_out_dir,
)

_PRETRAIN_FIELDS = {
    "model", "data", "data_dir", "test_subset", "method", "epochs", "out", "train_subset", "val_size", "seed", "ratio",
    "stages", "operator", "optimizer_state", "search_epochs", "search_samples", "search_snapshots", "recycle", "patch_size", "depth", "img_size", "batch_size", "lr", "min_lr", "weight_decay",
    "warmup_epochs", "label_smoothing", "drop_path", "ema_decay", "mixup", "cutmix", "randaug", "reprob", "adaptive_reg", "amp",
    "device", "threads", "eval_ema", "search_runtime", "resume", "checkpoint_every", "on_nonfinite", "nonfinite_lr_factor",
    "channels_last", "compile", "mixed_precision", "workers", "ntk_samples", "zico_batches", "vote_weights",
}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``autoprog: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"autoprog: error: {message} (see: {self.prog} --help)\n")


def _add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in --out (default: refuse when --out holds a summary.json)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint (exactly)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N optimizer steps (default: at stage boundaries only)",
    )
    p.add_argument(
        "--on-nonfinite",
        choices=("stop", "rollback"),
        default="rollback",
        help="on a NaN/inf loss: stop, or roll back to the last checkpoint with a lower LR (default)",
    )
    p.add_argument(
        "--nonfinite-lr-factor", type=float, default=0.5, help="LR multiplier at each rollback (default: 0.5)"
    )


def _add_train_args(p: argparse.ArgumentParser, *, for_bench: bool = False) -> None:
    d = PretrainConfig()
    p.add_argument("--model", default=d.model, help="timm ViT/DeiT name (default: %(default)s)")
    p.add_argument("--data", default=d.data, help="fashion-mnist, mnist-idx, mnist-5k, cifar10 or imagefolder:PATH")
    p.add_argument(
        "--data-dir", default=None, help="folder holding the dataset's files (overrides the default)"
    )
    if not for_bench:
        p.add_argument("--method", default=d.method, choices=PRETRAIN_METHODS)
        p.add_argument("--out", required=True, help="run directory (summary.json, log.jsonl, checkpoints)")
        _add_overwrite_arg(p)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument(
        "--train-subset",
        type=int,
        default=5000 if for_bench else None,
        help="class-balanced subset of the training split" + (" (default: %(default)s)" if for_bench else ""),
    )
    p.add_argument(
        "--val-size", type=int, default=d.val_size, help="validation images carved from unused training data"
    )
    p.add_argument(
        "--test-subset", type=int, default=None, help="evaluate on a class-balanced part of the test split"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--ratio", type=float, default=d.ratio, help="initial scaling ratio r0 of the growth space"
    )
    p.add_argument("--stages", type=int, default=d.stages, help="number of stages")
    p.add_argument("--operator", default=d.operator, choices=sorted(OPERATORS), help="growth operator")
    p.add_argument(
        "--optimizer-state",
        choices=("carry", "reset"),
        default=d.optimizer_state,
        help="at growth, grow AdamW's moments with the weights (carry) or start them afresh (reset)",
    )
    p.add_argument(
        "--search-epochs", type=int, default=d.search_epochs, help="supernet epochs per searched stage"
    )
    p.add_argument(
        "--search-samples",
        type=int,
        default=d.search_samples,
        help="fixed training images scored per candidate",
    )
    p.add_argument(
        "--search-snapshots",
        type=int,
        default=d.search_snapshots,
        help="loss snapshots in the last supernet epoch",
    )
    p.add_argument(
        "--no-recycle",
        dest="recycle",
        action="store_false",
        help="ablation: supernet epochs are extra, weights not inherited",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help=f"ViT patch size (default: {d.patch_size} for the default model, else the model's)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help=f"blocks of the full model: transformer blocks, or a ResNet's growable residual blocks "
        f"(default: {d.depth} for the default model, else the model's own)",
    )
    p.add_argument("--img-size", type=int, default=None, help="full input resolution (default: the data's)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--drop-path", type=float, default=d.drop_path)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="momentum of the EMA / MoGrow copy")
    p.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0 = off)")
    p.add_argument("--randaug", default=None, help="timm RandAugment string, e.g. rand-m9-mstd0.5-inc1")
    p.add_argument("--reprob", type=float, default=d.reprob, help="random-erasing probability (0 = off)")
    p.add_argument(
        "--adaptive-reg", action="store_true", help="RandAugment/drop-path/random-erasing rise with the stage"
    )
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CNNs on GPU)")
    p.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="autocast dtype; fp16 adds a gradient scaler (default: --amp's bf16, accelerate's setting, else no)",
    )
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes for lazy datasets")
    p.add_argument(
        "--compile",
        default=None,
        metavar="BACKEND",
        help="torch.compile the training forward (inductor, aot_eager, ...): once per model change",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--eval-ema", action="store_true", help="also report top-1 of the EMA model")
    p.add_argument(
        "--search-runtime",
        choices=("measured", "flops"),
        default="measured",
        help="AutoProg-One's/-Zero's runtime term: measured step time (default) or FLOPs (deterministic, reproducible)",
    )
    p.add_argument(
        "--ntk-samples",
        type=int,
        default=d.ntk_samples,
        help="autoprog-zero: samples of the NTK (default: %(default)s)",
    )
    p.add_argument(
        "--zico-batches",
        type=int,
        default=d.zico_batches,
        help="autoprog-zero: probe batches of ZiCo, each of --batch-size training images (default: %(default)s)",
    )
    p.add_argument(
        "--vote-weights",
        default=d.vote_weights,
        help="autoprog-zero: ranked-voting weights (default: %(default)s)",
    )
    _add_output_args(p)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """What both training commands print and log: progress bars, TensorBoard, tracebacks."""
    p.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bars (auto: on a terminal)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also log losses, validation, stages and searches as TensorBoard scalars in DIR "
        "(needs: pip install 'autoprog[tensorboard]')",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_finetune_args(p: argparse.ArgumentParser, *, for_bench: bool = False) -> None:
    d = FinetuneConfig()
    p.add_argument(
        "--model",
        default=d.model,
        help="source: a diffusers DiT folder or DiTPipeline folder (transformer/ + vae/ + scheduler/, a latent "
        "DiT), a text-to-image pipeline folder (unet/ + text_encoder/), a timm ViT: a timm folder (config.json + "
        "model.safetensors), timm:NAME with --weights, or an `autoprog pretrain` run folder, or a built-in "
        "source made on first use (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        "--weights-file",
        dest="weights_file",
        default=None,
        help="the state-dict file of --model timm:NAME (.safetensors, .bin, .pth)",
    )
    p.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="fine-tuning resolution of a classifier source (default: the source's); the position "
        "embedding is resampled to it",
    )
    p.add_argument(
        "--data",
        default=d.data,
        help="mnist-5k, fashion-mnist, mnist-idx, cifar10 or imagefolder:PATH (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir", default=None, help="folder holding the dataset's files (overrides the default)"
    )
    if not for_bench:
        p.add_argument("--method", default=d.method, choices=FINETUNE_METHODS)
        p.add_argument(
            "--out", required=True, help="run directory (summary.json, log.jsonl, samples.png, model/)"
        )
        _add_overwrite_arg(p)
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    p.add_argument(
        "--sid",
        dest="sid",
        action="store_true",
        default=None,
        help="Unique Stage Identifier (default: on for progressive methods)",
    )
    p.add_argument("--no-sid", dest="sid", action="store_false", help="ablation: no stage identifier")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--lr", type=float, default=d.lr, help="learning rate (default: the source family's: 1e-4 for a DiT)"
    )
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--stages", type=int, default=d.stages)
    p.add_argument(
        "--ratio", type=float, default=d.ratio, help="smallest resolution as a fraction of the full one"
    )
    p.add_argument("--levels", type=int, default=d.levels, help="unfreezing levels (interleaved blocks)")
    p.add_argument(
        "--cfg-dropout", type=float, default=d.cfg_dropout, help="label dropout for classifier-free guidance"
    )
    p.add_argument("--sid-dropout", type=float, default=d.sid_dropout, help="stage-id dropout")
    p.add_argument(
        "--ema-decay", type=float, default=d.ema_decay, help="EMA of the weights (0 = off); FID uses the EMA"
    )
    p.add_argument("--lora-rank", type=int, default=d.lora_rank)
    p.add_argument(
        "--ntk-samples", type=int, default=d.ntk_samples, help="samples of the NTK probe (AutoProg-Zero)"
    )
    p.add_argument("--zico-batches", type=int, default=d.zico_batches, help="batches of the ZiCo probe")
    p.add_argument("--time-repeats", type=int, default=d.time_repeats, help="timed steps per candidate")
    p.add_argument(
        "--search-runtime",
        choices=("measured", "flops"),
        default=d.search_runtime,
        help="the searches' runtime term: measured step time (default) or FLOPs (deterministic, reproducible)",
    )
    p.add_argument(
        "--vote-weights", default=d.vote_weights, help="ranked-voting weights (default: %(default)s)"
    )
    p.add_argument(
        "--search-fraction",
        type=float,
        default=d.search_fraction,
        help="AutoProg-One: supernet share of a searched stage",
    )
    p.add_argument(
        "--fid-samples", type=int, default=d.fid_samples, help="generated images for FID (0 = skip)"
    )
    p.add_argument(
        "--fid-reference",
        type=int,
        default=d.fid_reference,
        help="training images for the reference statistics",
    )
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="DDIM steps for sampling")
    p.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance scale")
    p.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="autocast dtype (default: what accelerate launch --mixed_precision set, else no)",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    _add_output_args(p)
    t2i = p.add_argument_group("text-to-image sources (a pipeline with unet/ + text_encoder/)")
    t2i.add_argument(
        "--instance-prompt",
        default=None,
        help='DreamBooth mode: caption of the subject\'s images, e.g. "a sks dog" (default LR 5e-6)',
    )
    t2i.add_argument(
        "--class-noun", default=None, help="DreamBooth: the subject's class (default: the data's class name)"
    )
    t2i.add_argument(
        "--prior-preservation",
        action="store_true",
        help='DreamBooth: also train on class images the source generates from "a [class noun]"',
    )
    t2i.add_argument(
        "--prior-loss-weight", type=float, default=d.prior_loss_weight, help="weight of the prior loss"
    )
    t2i.add_argument(
        "--class-images", type=int, default=d.class_images, help="class images for prior preservation"
    )
    t2i.add_argument(
        "--train-text-encoder", action="store_true", help="fine-tune the text encoder too (default: frozen)"
    )
    t2i.add_argument("--clip-model", default=None, help="local CLIP folder: report CLIP-T (else skipped)")
    t2i.add_argument(
        "--dino-model", default=None, help="local DINO ViT folder: report DreamBooth's DINO score"
    )


def _add_bench_args(p: argparse.ArgumentParser, kind: str, methods: str, example: str) -> None:
    """The options every ``autoprog bench <kind>`` shares."""
    p.add_argument(
        "--methods",
        default=methods,
        help=f"comma-separated methods, each optionally with options: {example} (default: %(default)s)",
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: --seed)")
    p.add_argument("--name", default=None, help=f"result name under benchmarks/results (default: {kind}[-quick])")
    p.add_argument("--results-dir", default="benchmarks/results", help="where the JSON/markdown/PNG go")
    p.add_argument("--runs-dir", default="runs/bench", help="where each run's directory goes")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoprog", description="Automated progressive learning for vision models")
    # Its own dest: a subcommand's --debug default (False) would otherwise overwrite this one's value.
    parser.add_argument("--debug", dest="debug_all", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train a model with a (progressive) method")
    _add_train_args(p)
    p.add_argument(
        "--schedule", dest="schedule_file", default=None, help="replay the schedule of a summary.json"
    )

    f = sub.add_parser("finetune", help="fine-tune a diffusion model with a (progressive) method")
    _add_finetune_args(f)

    src = sub.add_parser("source", help="pre-train (and cache) a built-in source model for fine-tuning")
    src.add_argument("name", nargs="?", default="dit-fmnist", help="built-in source (default: %(default)s)")
    src.add_argument("--out", default=None, help="folder to save it in (default: the cache)")
    src.add_argument("--data-dir", default=None, help="folder holding the source data's files")
    src.add_argument("--overwrite", action="store_true", help="re-make it even if it exists")
    src.add_argument("--debug", action="store_true", help="show tracebacks")

    bench = sub.add_parser("bench", help="run methods side by side and write a benchmark result")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    b = bench_sub.add_parser("pretrain", help="pre-training methods side by side")
    _add_train_args(b, for_bench=True)
    _add_bench_args(b, "pretrain", "full,prog", "prog:operator=mogrow")

    bf = bench_sub.add_parser("finetune", help="fine-tuning methods side by side")
    _add_finetune_args(bf, for_bench=True)
    _add_bench_args(bf, "finetune", "full,prog,autoprog-zero", "autoprog-zero:sid=false")

    from autoprog.report import add_report_parser

    add_report_parser(sub)
    return parser


def _pretrain_config(args: argparse.Namespace, **override) -> PretrainConfig:
    values = {k: v for k, v in vars(args).items() if k in _PRETRAIN_FIELDS or k == "schedule_file"}
    values["progress"] = {"on": True, "off": False}.get(getattr(args, "progress", "auto"))
    if values.get("model", PretrainConfig.model) != PretrainConfig.model:
        # another model keeps its own depth and patch size unless asked otherwise
        values["depth"] = values.get("depth")
        values["patch_size"] = values.get("patch_size")
        explicit_none = {"depth", "patch_size"}
    else:
        explicit_none = set()
    values.update(override)
    keep_none = {"train_subset", "test_subset", "progress"} | explicit_none
    return PretrainConfig(**{k: v for k, v in values.items() if v is not None or k in keep_none})


def _finetune_config(args: argparse.Namespace, **override) -> FinetuneConfig:
    fields = set(FinetuneConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["progress"] = {"on": True, "off": False}.get(getattr(args, "progress", "auto"))
    values.update(override)
    keep_none = {"sid", "progress", "data_dir", "device", "threads", "mixed_precision"}
    return FinetuneConfig(**{k: v for k, v in values.items() if v is not None or k in keep_none})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "pretrain":
            cfg = _pretrain_config(args)
            cfg.validate()
            check_out_dir(cfg.out, overwrite=args.overwrite)
            from autoprog.train.pretrain import pretrain

            pretrain(cfg)
        elif args.command == "finetune":
            fcfg = _finetune_config(args)
            fcfg.validate()
            check_out_dir(fcfg.out, overwrite=args.overwrite)
            from autoprog.train.finetune import finetune

            finetune(fcfg)
        elif args.command == "source":
            from autoprog.train.source import make_source

            print(make_source(args.name, out=args.out, data_dir=args.data_dir, overwrite=args.overwrite))
        elif args.command == "bench" and args.bench_command == "finetune":
            from autoprog.bench import bench_finetune

            bench_finetune(args, _finetune_config)
        elif args.command == "bench" and args.bench_command == "pretrain":
            from autoprog.bench import bench_pretrain

            bench_pretrain(args, _pretrain_config)
        elif args.command == "report":
            from autoprog.report import run_report

            run_report(args)
        return 0
    except AutoprogError as e:
        if args.debug_all or getattr(args, "debug", False):
            raise
        print(f"autoprog: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprog: interrupted", file=sys.stderr)
        return 130


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
