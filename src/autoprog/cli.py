"""The ``autoprog`` command line: ``pretrain``, ``finetune``, ``source``, ``bench pretrain|finetune``, ``report``.

Errors a user causes (bad names, missing data, invalid numbers, a bad command line, a model folder
whose config and weights disagree, a file or folder that cannot be read or written, memory that runs
out: :func:`autoprog.errors.user_error_message`) print one line, ``autoprog: error: ...``, and exit
2; ``--debug`` (before or after the subcommand) shows the traceback instead. ``--out`` is created
(and tried with a test file) before any work, and removed again if the run fails while it is still
empty (:mod:`autoprog.run_dir`). ``pretrain`` and ``finetune`` check the whole configuration, and refuse an
``--out`` folder that already holds a finished run unless ``--overwrite`` is given, before any work
starts. See ``docs/errors.md`` for every message.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from autoprog.errors import one_line, user_error_message  # noqa: F401 (one_line: the CLI's helper)
from autoprog.growth.operators import OPERATORS
from autoprog.run_dir import make_run_dir, remove_if_empty
from autoprog.train.config import (
    FINETUNE_METHODS,
    PRETRAIN_METHODS,
    FinetuneConfig,
    PretrainConfig,
    check_out_dir,
)
from autoprog.train.fit_defaults import fit_defaults

_PRETRAIN_FIELDS = {
    "model", "data", "data_dir", "test_subset", "method", "epochs", "out", "train_subset", "val_size", "seed", "ratio",
    "stages", "operator", "optimizer_state", "search_epochs", "search_samples", "search_snapshots", "recycle", "patch_size", "depth", "img_size", "embed_dim", "num_heads", "batch_size", "lr", "min_lr", "weight_decay",
    "warmup_epochs", "label_smoothing", "drop_path", "ema_decay", "mixup", "cutmix", "randaug", "reprob", "adaptive_reg", "amp",
    "device", "threads", "eval_ema", "search_runtime", "resume", "checkpoint_every", "on_nonfinite", "nonfinite_lr_factor",
    "channels_last", "compile", "mixed_precision", "workers", "ntk_samples", "zico_batches", "vote_weights",
    "search_rule", "search_reach", "search_exam", "search_sampling", "search_supernet_fraction", "search_w_floor",
    "search_ntk_tensors", "search_trial_fraction", "search_w_fit",
    "input_transform", "equal_time_epochs", "equal_time_ratio", "initial_scale", "delay_fraction", "finetune_fraction",
    "size_increment", "efficienttrain_schedule",
}  # fmt: skip


class _HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default: ``(default: X)`` is added unless the help says it in words
    (options whose default is ``None`` must: "the data's", "off", ...); a flag's default is off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "(default" in help_text or not action.option_strings or action.default is argparse.SUPPRESS:
            return help_text
        if action.nargs == 0:  # a flag (store_true / store_false)
            return f"{help_text} (default: off)"
        return f"{help_text} (default: %(default)s)" if action.default is not None else help_text


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``autoprog: error: ...``, exit 2) instead of usage + error, and
    every option's default in ``--help`` (:class:`_HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"autoprog: error: {message} (see: {self.prog} --help)\n")


#: The option groups of ``pretrain`` / ``finetune`` (and their ``bench``), in ``--help`` order.
GROUPS = ("data", "model", "method and schedule", "search", "optimisation", "speed", "reliability", "output")


def _group(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The option group ``title`` of ``p`` (one of :data:`GROUPS`, or another title, appended).

    Add an option to its group wherever it is defined: ``_group(p, "speed").add_argument(...)``.
    The first call makes all of :data:`GROUPS` in their order; argparse does not show empty ones.
    """
    groups = {g.title: g for g in p._action_groups}
    if GROUPS[0] not in groups:
        groups.update({t: p.add_argument_group(t) for t in GROUPS})
    if title not in groups:
        groups[title] = p.add_argument_group(title)
    return groups[title]


def _add_reliability_args(p: argparse.ArgumentParser) -> None:
    g = _group(p, "reliability")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in --out (default: refuse when --out holds a summary.json)",
    )
    g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint (exactly)"
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N optimizer steps (default: at stage boundaries only)",
    )
    g.add_argument(
        "--on-nonfinite",
        choices=("stop", "rollback"),
        default="rollback",
        help="on a NaN/inf loss: stop, or roll back to the last checkpoint with a lower LR",
    )
    g.add_argument("--nonfinite-lr-factor", type=float, default=0.5, help="LR multiplier at each rollback")


_DATA_DIR_HELP = (
    "folder holding the dataset's files (default: /usr/share/datasets/fashion-mnist for fashion-mnist; "
    "mnist-idx and cifar10 need it; mnist-5k and imagefolder:PATH ignore it)"
)


def _add_train_args(p: argparse.ArgumentParser, *, for_bench: bool = False) -> None:
    d = PretrainConfig()
    data = _group(p, "data")
    data.add_argument("--data", default=d.data, help="fashion-mnist, mnist-idx, mnist-5k, cifar10 or imagefolder:PATH")
    data.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    data.add_argument(
        "--train-subset",
        type=int,
        default=5000 if for_bench else None,
        help="class-balanced subset of the training split" + ("" if for_bench else " (default: all of it)"),
    )
    data.add_argument(
        "--val-size", type=int, default=d.val_size, help="validation images carved from unused training data"
    )
    data.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="evaluate on a class-balanced part of the test split (default: all of it)",
    )

    model = _group(p, "model")
    model.add_argument("--model", default=d.model, help="timm ViT/DeiT name or torchvision resnet18/34/50/101")
    model.add_argument(
        "--depth",
        type=int,
        default=None,
        help=f"blocks of the full model: transformer blocks, or a ResNet's growable residual blocks "
        f"(default: {d.depth} for the default model, else the model's own)",
    )
    model.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help=f"ViT patch size (default: {d.patch_size} for the default model, else the model's)",
    )
    model.add_argument("--img-size", type=int, default=None, help="full input resolution (default: the data's)")
    model.add_argument("--embed-dim", type=int, default=None, help="ViT token width (default: the model name's)")
    model.add_argument(
        "--num-heads", type=int, default=None, help="ViT attention heads, dividing the width (default: the name's)"
    )

    method = _group(p, "method and schedule")
    if not for_bench:
        method.add_argument(
            "--method",
            default=d.method,
            choices=PRETRAIN_METHODS,
            help="full model throughout, prog (uniform growth), autoprog-one (supernet search), autoprog-zero "
            "(zero-shot search) or progstack",
        )
    method.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    method.add_argument("--stages", type=int, default=d.stages, help="number of stages")
    method.add_argument("--ratio", type=float, default=d.ratio, help="initial scaling ratio r0 of the growth space")
    method.add_argument("--operator", default=d.operator, choices=sorted(OPERATORS), help="growth operator")
    method.add_argument(
        "--optimizer-state",
        choices=("carry", "reset"),
        default=d.optimizer_state,
        help="at growth, grow AdamW's moments with the weights (carry) or start them afresh (reset)",
    )

    search = _group(p, "search")
    search.add_argument(
        "--search-epochs", type=int, default=d.search_epochs, help="autoprog-one: supernet epochs per searched stage"
    )
    search.add_argument(
        "--search-samples",
        type=int,
        default=d.search_samples,
        help="autoprog-one: fixed training images scored per candidate",
    )
    search.add_argument(
        "--search-snapshots",
        type=int,
        default=d.search_snapshots,
        help="autoprog-one: loss snapshots in the last supernet epoch",
    )
    search.add_argument(
        "--no-recycle",
        dest="recycle",
        action="store_false",
        help="ablation: supernet epochs are extra, weights not inherited",
    )
    search.add_argument(
        "--search-runtime",
        choices=("measured", "flops"),
        default="measured",
        help="AutoProg-One's/-Zero's runtime term: measured step time or FLOPs (deterministic, reproducible)",
    )
    search.add_argument("--ntk-samples", type=int, default=d.ntk_samples, help="autoprog-zero: samples of the NTK")
    search.add_argument(
        "--zico-batches",
        type=int,
        default=d.zico_batches,
        help="autoprog-zero: probe batches of ZiCo, each of --batch-size training images",
    )
    _add_search_rule_args(search, pretrain=True)

    opt = _group(p, "optimisation")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="images per optimizer step (per process)")
    opt.add_argument("--lr", type=float, default=d.lr, help="AdamW's peak learning rate")
    opt.add_argument("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine decay")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's weight decay")
    opt.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="epochs of linear warm-up")
    opt.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="of the cross-entropy")
    opt.add_argument("--drop-path", type=float, default=d.drop_path, help="stochastic depth rate of the full model")
    opt.add_argument("--ema-decay", type=float, default=d.ema_decay, help="momentum of the EMA / MoGrow copy")
    opt.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0 = off)")
    opt.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0 = off)")
    opt.add_argument("--randaug", default=None, help="timm RandAugment string, e.g. rand-m9-mstd0.5-inc1 (default: off)")
    opt.add_argument("--reprob", type=float, default=d.reprob, help="random-erasing probability (0 = off)")
    opt.add_argument(
        "--adaptive-reg", action="store_true", help="RandAugment/drop-path/random-erasing rise with the stage"
    )
    opt.add_argument("--seed", type=int, default=d.seed, help="seed of the data subsets, initialisation and order")

    speed = _group(p, "speed")
    speed.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    speed.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="autocast dtype; fp16 adds a gradient scaler (default: --amp's bf16, accelerate's setting, else no)",
    )
    speed.add_argument("--channels-last", action="store_true", help="channels-last memory format (CNNs on GPU)")
    speed.add_argument(
        "--compile",
        default=None,
        metavar="BACKEND",
        help="torch.compile the training forward (inductor, aot_eager, ...): once per model change (default: off)",
    )
    speed.add_argument("--workers", type=int, default=0, help="data-loader worker processes for lazy datasets")
    speed.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    speed.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's)")

    out = _group(p, "output")
    if not for_bench:
        out.add_argument("--out", required=True, help="run directory (summary.json, log.jsonl, checkpoints)")
        _add_reliability_args(p)
    out.add_argument("--eval-ema", action="store_true", help="also report top-1 of the EMA model")
    _add_peer_args(p)
    _add_output_args(p)


def _add_peer_args(p: argparse.ArgumentParser) -> None:
    """The peers' options (docs/methods/full-equal-time.md, progressive-resizing.md, efficienttrain.md)."""
    from autoprog.data.resize import INPUT_TRANSFORMS
    from autoprog.growth.input_schedule import EFFICIENTTRAIN_SCHEDULES

    d = PretrainConfig()
    g = _group(p, "method and schedule")  # the peers (full-equal-time, progressive-resizing, efficienttrain)
    g.add_argument(
        "--input-transform",
        choices=INPUT_TRANSFORMS,
        default=None,
        help="how inputs are brought to a smaller size: bilinear, nearest, crop (a random window), lowfreq "
        "(EfficientTrain's low-frequency crop) (default: bilinear; progressive-resizing: nearest; efficienttrain: lowfreq)",
    )
    g.add_argument(
        "--equal-time-epochs", type=int, default=None, help="full-equal-time: the epochs to train (--epochs: the budget) (default: none; or --equal-time-ratio)"
    )
    g.add_argument(
        "--equal-time-ratio",
        type=float,
        default=None,
        help="full-equal-time: a time ratio R; trains round(R x --epochs) epochs (halves up, at least 1) "
        "(default: none; or --equal-time-epochs)",
    )
    g.add_argument("--initial-scale", type=float, default=d.initial_scale,
                   help="progressive-resizing: the side's initial scale (default: %(default)s)")  # fmt: skip
    g.add_argument("--delay-fraction", type=float, default=d.delay_fraction,
                   help="progressive-resizing: part of training at the initial scale (default: %(default)s)")  # fmt: skip
    g.add_argument("--finetune-fraction", type=float, default=d.finetune_fraction,
                   help="progressive-resizing: last part of training at full size (default: %(default)s)")  # fmt: skip
    g.add_argument("--size-increment", type=int, default=d.size_increment,
                   help="progressive-resizing: sides are multiples of this (default: %(default)s)")  # fmt: skip
    g.add_argument(
        "--efficienttrain-schedule",
        choices=tuple(EFFICIENTTRAIN_SCHEDULES),
        default=d.efficienttrain_schedule,
        help="efficienttrain: the authors' DeiT schedule (deit), their other models' (generic) or EfficientTrain v1's "
        "(default: %(default)s)",
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """What both training commands print and log: progress bars, TensorBoard, tracebacks."""
    out = _group(p, "output")
    out.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bars (auto: on a terminal)",
    )
    out.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also log losses, validation, stages and searches as TensorBoard scalars in DIR "
        "(default: off; needs: pip install 'autoprog[tensorboard]')",
    )
    out.add_argument("--debug", action="store_true", help="show tracebacks")



def _add_search_rule_args(search: argparse._ArgumentGroup, *, pretrain: bool) -> None:
    """The search rule and its per-field overrides (:mod:`autoprog.search.rules`)."""
    from autoprog.search.rules import DEFAULT_SEARCH_RULE, SEARCH_RULES

    search.add_argument(
        "--search-rule",
        choices=tuple(SEARCH_RULES),
        default=DEFAULT_SEARCH_RULE,
        help="how searched stages choose: horizon (a supernet judged by the model it leads to), trial "
        "(autoprog-one: each candidate trained alone for a few steps, then judged on validation images) or paper "
        "(Sec. 3.2 and the authors' code as published)",
    )
    bool_arg = argparse.BooleanOptionalAction
    search.add_argument(
        "--search-reach",
        action=bool_arg,
        default=None,
        help="keep the full resolution reachable one grid step per stage left (default: the rule's)",
    )
    if pretrain:
        search.add_argument(
            "--search-exam",
            choices=("train", "validation", "trial"),
            default=None,
            help="autoprog-one's exam: a supernet scored on training images at the candidate's size (train) or "
            "on validation images at the full size (validation), or each candidate trained alone for a few "
            "steps, then validation images at its own size (trial) (default: the rule's)",
        )
        search.add_argument(
            "--search-trial-fraction",
            type=float,
            default=None,
            help="autoprog-one, trial exam: each candidate's trial as a fraction of the stage's steps "
            "(default: the rule's)",
        )
        search.add_argument(
            "--search-sampling",
            choices=("random", "rounds"),
            default=None,
            help="autoprog-one: supernet steps drawn at random or in shuffled rounds (default: the rule's)",
        )
        search.add_argument(
            "--search-supernet-fraction",
            type=float,
            default=None,
            help="autoprog-one: supernet steps as a fraction of the stage, instead of --search-epochs "
            "(default: the rule's)",
        )
        search.add_argument(
            "--search-w-floor",
            type=float,
            default=None,
            help="autoprog-one: least balancing factor of Eq. 6 (default: the rule's)",
        )
        search.add_argument(
            "--search-w-fit",
            action=bool_arg,
            default=None,
            help="autoprog-one: fit Eq. 6's balancing factor over the candidates (floored at --search-w-floor), "
            "or use --search-w-floor itself (default: the rule's)",
        )
    search.add_argument(
        "--search-ntk-tensors",
        choices=("all", "weights"),
        default=None,
        help="autoprog-zero: the learnable tensors the NTK differentiates: all, or weights (names with "
        "'weight', TE-NAS's and the authors' set) (default: the rule's)",
    )
    search.add_argument(
        "--vote-weights",
        default=None,
        help="autoprog-zero's ranked-voting weights, e.g. time=1,ntk=0.5,zico=0.5 (default: the rule's)",
    )

def _add_finetune_args(p: argparse.ArgumentParser, *, for_bench: bool = False) -> None:
    d = FinetuneConfig()
    data = _group(p, "data")
    data.add_argument("--data", default=d.data, help="mnist-5k, fashion-mnist, mnist-idx, cifar10 or imagefolder:PATH")
    data.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)

    _group(p, "model").add_argument(
        "--model",
        default=d.model,
        help="source: a diffusers DiT folder or DiTPipeline folder (transformer/ + vae/ + scheduler/, a latent "
        "DiT), a text-to-image pipeline folder (unet/ + text_encoder/), a timm ViT: a timm folder (config.json + "
        "model.safetensors), timm:NAME with --weights, or an `autoprog pretrain` run folder, or a built-in "
        "source made on first use",
    )
    _group(p, "model").add_argument(
        "--weights",
        "--weights-file",
        dest="weights_file",
        default=None,
        help="the state-dict file of --model timm:NAME, .safetensors, .bin or .pth (default: none: other sources hold their own)",
    )
    _group(p, "model").add_argument(
        "--img-size",
        type=int,
        default=None,
        help="fine-tuning resolution of a classifier source (default: the source's); the position "
        "embedding is resampled to it",
    )

    method = _group(p, "method and schedule")
    if not for_bench:
        method.add_argument(
            "--method",
            default=d.method,
            choices=FINETUNE_METHODS,
            help="full, the bitfit / difffit / lora baselines, or progressive unfreezing: prog, autoprog-one, "
            "autoprog-zero",
        )
    method.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    method.add_argument("--stages", type=int, default=d.stages, help="number of stages")
    method.add_argument(
        "--ratio", type=float, default=d.ratio, help="smallest resolution as a fraction of the full one"
    )
    method.add_argument("--levels", type=int, default=d.levels, help="unfreezing levels (interleaved blocks)")
    method.add_argument(
        "--sid",
        dest="sid",
        action="store_true",
        default=None,
        help="Unique Stage Identifier (default: on for progressive methods)",
    )
    method.add_argument("--no-sid", dest="sid", action="store_false", help="ablation: no stage identifier")
    method.add_argument("--lora-rank", type=int, default=d.lora_rank, help="rank of the LoRA adapters (--method lora)")

    search = _group(p, "search")
    search.add_argument(
        "--ntk-samples", type=int, default=d.ntk_samples, help="samples of the NTK probe (AutoProg-Zero)"
    )
    search.add_argument("--zico-batches", type=int, default=d.zico_batches, help="batches of the ZiCo probe")
    search.add_argument("--time-repeats", type=int, default=d.time_repeats, help="timed steps per candidate")
    search.add_argument(
        "--search-runtime",
        choices=("measured", "flops"),
        default=d.search_runtime,
        help="the searches' runtime term: measured step time or FLOPs (deterministic, reproducible)",
    )
    _add_search_rule_args(search, pretrain=False)
    search.add_argument(
        "--search-fraction",
        type=float,
        default=d.search_fraction,
        help="AutoProg-One: supernet share of a searched stage",
    )

    opt = _group(p, "optimisation")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="images per optimizer step (per process)")
    opt.add_argument(
        "--lr", type=float, default=d.lr, help="learning rate (default: the source family's: 1e-4 for a DiT)"
    )
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's weight decay")
    opt.add_argument(
        "--cfg-dropout", type=float, default=d.cfg_dropout, help="label dropout for classifier-free guidance"
    )
    opt.add_argument("--sid-dropout", type=float, default=d.sid_dropout, help="stage-id dropout")
    opt.add_argument(
        "--ema-decay", type=float, default=d.ema_decay, help="EMA of the weights (0 = off); FID uses the EMA"
    )
    opt.add_argument("--seed", type=int, default=d.seed, help="seed of the data order, noise and new weights")

    speed = _group(p, "speed")
    speed.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="autocast dtype (default: what accelerate launch --mixed_precision set, else no)",
    )
    speed.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    speed.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's)")

    out = _group(p, "output")
    if not for_bench:
        out.add_argument("--out", required=True, help="run directory (summary.json, log.jsonl, samples.png, model/)")
        _add_reliability_args(p)
    out.add_argument("--fid-samples", type=int, default=d.fid_samples, help="generated images for FID (0 = skip)")
    out.add_argument("--fid-reference", type=int, default=d.fid_reference, help="training images for the reference statistics")
    out.add_argument("--sample-steps", type=int, default=d.sample_steps, help="DDIM steps for sampling")
    out.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance scale")
    _add_output_args(p)
    t2i = _group(p, "text-to-image sources (a pipeline with unet/ + text_encoder/)")
    t2i.add_argument(
        "--instance-prompt",
        default=None,
        help='DreamBooth mode: caption of the subject\'s images, e.g. "a sks dog"; its LR is 5e-6 (default: off)',
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
    t2i.add_argument("--clip-model", default=None, help="local CLIP folder: report CLIP-T (default: none, skipped)")
    t2i.add_argument(
        "--dino-model", default=None, help="local DINO ViT folder: report DreamBooth's DINO score (default: none, skipped)"
    )


def _add_bench_args(p: argparse.ArgumentParser, kind: str, methods: str, example: str) -> None:
    """The options every ``autoprog bench <kind>`` shares."""
    g = _group(p, "benchmark")
    g.add_argument("--methods", default=methods, help=f"comma-separated methods, each optionally with options: {example}")
    g.add_argument("--seeds", default=None, help="comma-separated seeds (default: --seed)")
    g.add_argument("--name", default=None, help=f"result name under benchmarks/results (default: {kind}[-quick])")
    g.add_argument("--results-dir", default="benchmarks/results", help="where the JSON/markdown/PNG go")
    g.add_argument("--runs-dir", default="runs/bench", help="where each run's directory goes")
    g.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    g.add_argument(
        "--resume",
        dest="bench_resume",  # not the runs' own resume (a config field): each run's is decided per folder
        action="store_true",
        help="continue a cut invocation in the same --runs-dir: reuse finished runs of the same configuration, "
        "continue those with a checkpoint, run the rest",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoprog", description="Automated progressive learning for vision models")
    # Its own dest: a subcommand's --debug default (False) would otherwise overwrite this one's value.
    parser.add_argument("--debug", dest="debug_all", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    about = "pre-train a model with a (progressive) method"
    p = sub.add_parser("pretrain", help=about, description=f"{about.capitalize()}: a timm ViT/DeiT or a "
                       "torchvision ResNet, grown in depth and input size (Sec. 3 of the paper).")  # fmt: skip
    _add_train_args(p)
    _group(p, "method and schedule").add_argument(
        "--schedule", dest="schedule_file", default=None, help="replay the schedule of a summary.json (default: the method's)"
    )

    about = "fine-tune a diffusion model, a text-to-image model or a classifier with a (progressive) method"
    f = sub.add_parser("finetune", help=about, description=f"{about.capitalize()}: a diffusers DiT, a "
                       "text-to-image pipeline (UNet + CLIP text encoder) or a ViT from `autoprog pretrain`, "
                       "unfrozen progressively (Sec. 4 of the paper).")  # fmt: skip
    _add_finetune_args(f)

    src = sub.add_parser("source", help="pre-train (and cache) a built-in source model for fine-tuning")
    src.add_argument("name", nargs="?", default="dit-fmnist", help="built-in source (default: %(default)s)")
    src.add_argument("--out", default=None, help="folder to save it in (default: the cache)")
    src.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the source data's files (default: /usr/share/datasets/fashion-mnist for fashion-mnist)",
    )
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


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options typed on the command line ``argv`` (abbreviations and
    ``--opt=value`` included): ``argv`` parsed again with every default suppressed."""
    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return set(vars(parser.parse_args(argv))) - {"command", "bench_command"}


def _pretrain_train_images(cfg: PretrainConfig, given: set[str], world_size: int) -> int | None:
    """The training images of a ``pretrain`` run, when the batch might not fit them (``None``
    otherwise): an image folder (listed, not decoded), a dataset in a ``--data-dir`` of one's own,
    or a ``--train-subset`` below one batch per process; the standard datasets hold a batch."""
    small_subset = cfg.train_subset is not None and cfg.train_subset < cfg.batch_size * world_size
    own_data = cfg.data.strip().lower().startswith("imagefolder:") or cfg.data_dir is not None
    if "batch_size" in given or not (small_subset or own_data):
        return None
    from autoprog.data import load_dataset
    from autoprog.train.pretrain_data import split_sizes

    return split_sizes(cfg, len(load_dataset(cfg.data, "train", data_dir=cfg.data_dir, image_size=cfg.img_size)))[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    made = None  # the folder this run created for --out: removed again if the start fails
    context = ""  # the configuration, for an out-of-memory message
    try:
        if args.command == "pretrain":
            given = given_options(argv)
            cfg, notes = fit_defaults(_pretrain_config(args), None, given)  # stages the epochs can hold
            cfg.validate()
            check_out_dir(cfg.out, overwrite=args.overwrite)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            cfg, more = fit_defaults(cfg, _pretrain_train_images(cfg, given, world), given, world)  # a batch the data holds
            if os.environ.get("RANK", "0") == "0":
                for note in notes + more:
                    print(f"autoprog: {note}", flush=True)
            context = _context(cfg)
            made = make_run_dir(cfg.out)
            from autoprog.train.pretrain import pretrain

            pretrain(cfg)
        elif args.command == "finetune":
            from autoprog.tasks import check_source

            # stages the steps can hold (the batch is checked against the data once it is loaded)
            fcfg, notes = fit_defaults(_finetune_config(args), None, given_options(argv))
            fcfg.validate(check_source)
            check_out_dir(fcfg.out, overwrite=args.overwrite)
            if os.environ.get("RANK", "0") == "0":
                for note in notes:
                    print(f"autoprog: {note}", flush=True)
            context = _context(fcfg)
            made = make_run_dir(fcfg.out)
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
    except KeyboardInterrupt:
        remove_if_empty(made)
        print("autoprog: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for what a user causes (errors.user_error_message); a bug keeps its traceback
        remove_if_empty(made)
        message = user_error_message(e, context)
        if message is None or args.debug_all or getattr(args, "debug", False):
            raise
        print(f"autoprog: error: {message}", file=sys.stderr)
        return 2


def _context(cfg: PretrainConfig | FinetuneConfig) -> str:
    """The options that size a run's memory, as the user would type them."""
    parts = [f"--model {cfg.model}", f"--method {cfg.method}", f"--batch-size {cfg.batch_size}"]
    if getattr(cfg, "img_size", None):
        parts.append(f"--img-size {cfg.img_size}")
    if cfg.mixed_precision:
        parts.append(f"--mixed-precision {cfg.mixed_precision}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
