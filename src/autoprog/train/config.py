"""Configuration of a pre-training run: a plain dataclass the CLI fills and ``summary.json`` records.

``validate()`` checks every field before any work starts and raises :class:`ConfigError` with a
one-line message naming the option (``--epochs``, ...) and the value; it builds no model and reads
no data (only a ``--schedule`` file, which is small). Names are checked against the registries
below this layer (adapter families, datasets, growth operators). What only the fine-tuning tasks
know, a source folder's family, is given to :meth:`FinetuneConfig.validate` by its caller (the CLI
passes :func:`autoprog.tasks.check_source`); this module imports no task. The CLI prints the
message without a traceback; library users get the same errors from
:func:`~autoprog.train.pretrain.pretrain` and :func:`~autoprog.train.finetune.finetune`, which call
``validate()`` first (a fine-tuning source folder's own checks then come when its task is created).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from autoprog.errors import ConfigError

PRETRAIN_METHODS: tuple[str, ...] = (
    "full",
    "prog",
    "autoprog-one",
    "autoprog-zero",
    "progstack",
    "full-equal-time",
    "progressive-resizing",
    "efficienttrain",
)
Method = Literal[
    "full", "prog", "autoprog-one", "autoprog-zero", "progstack",
    "full-equal-time", "progressive-resizing", "efficienttrain",
]  # fmt: skip
#: Methods that grow the network through stages (the others train the full model throughout).
GROWTH_METHODS: tuple[str, ...] = ("prog", "autoprog-one", "autoprog-zero", "progstack")
#: The peers (:mod:`autoprog.train.peers`): the full model for fewer epochs, or on a scheduled input.
PEER_METHODS: tuple[str, ...] = ("full-equal-time", "progressive-resizing", "efficienttrain")
#: Methods whose input follows an input schedule (:mod:`autoprog.growth.input_schedule`).
INPUT_SCHEDULE_METHODS: tuple[str, ...] = ("progressive-resizing", "efficienttrain")


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run (defaults: a small ViT for 28x28 grey images).

    The default model is timm's ``vit_tiny_patch16_224`` (width 192, 3 heads) re-shaped for small
    images: patch 4, depth 6, the input size and channels of the data. ``ratio``/``stages``/
    ``operator`` only matter for progressive methods. ``ntk_samples``, ``zico_batches`` and
    ``vote_weights`` set AutoProg-Zero's zero-shot search (Sec. 4.2, Eq. 16-19; for pre-training,
    Sec. 5.2.3), with the defaults and syntax of :class:`FinetuneConfig`.

    The peers (:mod:`autoprog.train.peers`): ``full-equal-time`` trains the full model for
    ``equal_time_epochs`` epochs, or ``round(epochs * equal_time_ratio)`` (halves up, at least 1),
    with the cosine schedule decayed over them; ``progressive-resizing`` takes Composer's
    ``initial_scale``, ``delay_fraction``, ``finetune_fraction``, ``size_increment``;
    ``efficienttrain`` takes ``efficienttrain_schedule``. ``input_transform`` says how an input
    is brought to a smaller size (``bilinear``, ``nearest``, ``crop``, ``lowfreq``; ``None``: the
    method's own, bilinear for the growth methods).
    """

    model: str = "vit_tiny_patch16_224"
    data: str = "fashion-mnist"
    method: str = "full"
    epochs: int = 8
    out: str = "runs/pretrain"
    data_dir: str | None = None
    train_subset: int | None = None
    val_size: int = 1000
    test_subset: int | None = None
    seed: int = 0
    ratio: float = 0.5
    stages: int = 4
    operator: str = "interpolation"
    optimizer_state: str = "carry"
    schedule_file: str | None = None
    search_epochs: int = 2
    search_samples: int = 256
    search_snapshots: int = 2
    recycle: bool = True
    patch_size: int | None = 4
    depth: int | None = 6
    img_size: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    ema_decay: float = 0.998
    ema_warmup: bool = True
    mixup: float = 0.0
    cutmix: float = 0.0
    randaug: str | None = None
    reprob: float = 0.0
    adaptive_reg: bool = False
    amp: bool = False
    channels_last: bool = False
    compile: str | None = None
    mixed_precision: str | None = None
    workers: int = 0
    device: str | None = None
    threads: int | None = None
    progress: bool | None = None
    tensorboard: str | None = None
    eval_ema: bool = False
    search_runtime: str = "measured"
    ntk_samples: int = 8
    zico_batches: int = 2
    vote_weights: str | None = None
    search_rule: str = "horizon"
    search_reach: bool | None = None
    search_exam: str | None = None
    search_sampling: str | None = None
    search_supernet_fraction: float | None = None
    search_w_floor: float | None = None
    search_ntk_tensors: str | None = None
    search_trial_fraction: float | None = None
    search_w_fit: bool | None = None
    resume: bool = False
    checkpoint_every: int = 0
    on_nonfinite: str = "rollback"
    nonfinite_lr_factor: float = 0.5
    max_rollbacks: int = 3
    input_transform: str | None = None
    equal_time_epochs: int | None = None
    equal_time_ratio: float | None = None
    initial_scale: float = 0.5
    delay_fraction: float = 0.5
    finetune_fraction: float = 0.2
    size_increment: int = 4
    efficienttrain_schedule: str = "deit"
    extra: dict = field(default_factory=dict)

    def weights(self) -> dict[str, float]:
        """AutoProg-Zero's ballot weights: ``vote_weights`` parsed (``"time=1,ntk=0.5,zico=0.5"``,
        :func:`parse_vote_weights`), else the search rule's."""
        return dict(self.search().vote_weights)

    def search(self):  # -> autoprog.search.rules.SearchRule
        """The search rule of the run: ``search_rule`` with the ``search_*`` options that are set
        (and ``vote_weights``) overriding its fields (:mod:`autoprog.search.rules`)."""
        return _search_rule(self)

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line: the option, the value, what is valid) on the first bad field."""
        from autoprog.adapters.base import adapter_family, check_model_name
        from autoprog.data.datasets import check_dataset_name
        from autoprog.growth.operators import OPERATORS

        _check_field_types(self)
        _check_reliability(self)
        if self.compile is not None and self.compile not in ("inductor", "aot_eager", "eager", "cudagraphs"):
            raise ConfigError(
                f"--compile must be a torch.compile backend (inductor, aot_eager, eager, cudagraphs), got {self.compile!r}"
            )
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ConfigError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        _at_least("workers", self.workers, 0)
        if self.search_runtime not in ("measured", "flops"):
            raise ConfigError(f"--search-runtime must be measured or flops, got {self.search_runtime!r}")
        if self.method not in PRETRAIN_METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(PRETRAIN_METHODS)}")
        if self.operator not in OPERATORS:
            raise ConfigError(
                f"unknown operator {self.operator!r}; choose from {', '.join(sorted(OPERATORS))}"
            )
        if self.optimizer_state not in ("carry", "reset"):
            raise ConfigError(f"--optimizer-state must be carry or reset, got {self.optimizer_state!r}")
        check_model_name(self.model)
        check_dataset_name(self.data)
        _at_least("epochs", self.epochs, 1)
        _in_interval("ratio", self.ratio, 0.0, 1.0, low_open=True)
        _at_least("stages", self.stages, 1)
        if self.method in GROWTH_METHODS and self.stages > self.epochs:
            raise ConfigError(f"{self.stages} stages need at least {self.stages} epochs, got {self.epochs}")
        for name in ("search_epochs", "search_samples", "search_snapshots"):
            _at_least(name, getattr(self, name), 1)
        if self.method in ("autoprog-one", "autoprog-zero") and self.stages < 2:
            raise ConfigError(f"{self.method} needs at least 2 stages (the last one trains the full model)")
        _at_least("ntk_samples", self.ntk_samples, 2)
        _at_least("zico_batches", self.zico_batches, 2)
        self.weights()
        _at_least("batch_size", self.batch_size, 1)
        _at_least("val_size", self.val_size, 0)
        for name in ("test_subset", "train_subset", "patch_size", "depth", "img_size", "embed_dim", "num_heads",
                     "threads"):  # fmt: skip
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        options = getattr(adapter_family(self.model), "options", ())
        takes_width = "embed_dim" in options
        if not takes_width and (self.embed_dim is not None or self.num_heads is not None):
            raise ConfigError(f"--embed-dim / --num-heads set a ViT's width; {self.model} does not take them")
        if self.embed_dim is not None and self.num_heads is not None and self.embed_dim % self.num_heads:
            raise ConfigError(f"--embed-dim {self.embed_dim} is not divisible by --num-heads {self.num_heads}")
        takes_patches = "patch_size" in options
        if self.img_size is not None and self.patch_size is not None and takes_patches and self.img_size % self.patch_size:
            raise ConfigError(
                f"--img-size {self.img_size} is not a multiple of the patch size {self.patch_size}"
            )
        _positive("lr", self.lr)
        _in_interval("min_lr", self.min_lr, 0.0, math.inf)
        _in_interval("weight_decay", self.weight_decay, 0.0, math.inf)
        _in_interval("warmup_epochs", self.warmup_epochs, 0.0, math.inf)
        _in_interval("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _in_interval("drop_path", self.drop_path, 0.0, 1.0, high_open=True)
        _in_interval("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _in_interval("mixup", self.mixup, 0.0, math.inf)
        _in_interval("cutmix", self.cutmix, 0.0, math.inf)
        _in_interval("reprob", self.reprob, 0.0, 1.0)
        if self.randaug is not None:
            _check_randaug(self.randaug)
        _check_seed(self.seed)
        _check_device(self.device)
        if self.tensorboard:
            from autoprog.tensorboard import require_tensorboard

            require_tensorboard()
        if self.schedule_file is not None:
            check_schedule_file(self.schedule_file, self.epochs)
        _check_peers(self)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_peers(cfg: PretrainConfig) -> None:
    """The peers' options (:mod:`autoprog.train.peers`) and the input transform."""
    from autoprog.data.resize import INPUT_TRANSFORMS
    from autoprog.growth.input_schedule import EFFICIENTTRAIN_SCHEDULES, check_progressive_resizing

    transform = cfg.input_transform
    if transform is not None:
        if transform not in INPUT_TRANSFORMS:
            raise ConfigError(f"--input-transform must be one of {', '.join(INPUT_TRANSFORMS)}, got {transform!r}")
        if transform == "crop" and cfg.method not in INPUT_SCHEDULE_METHODS:
            raise ConfigError(
                f"--input-transform crop is for {' and '.join(INPUT_SCHEDULE_METHODS)} (a random window per batch); "
                f"--method {cfg.method} resizes its data once per stage: use bilinear, nearest or lowfreq"
            )
        if transform != "bilinear" and cfg.method == "autoprog-zero":
            raise ConfigError(
                f"--input-transform {transform} is not available for autoprog-zero (its zero-shot probe is resized "
                "bilinearly inside the controller); use it with prog or autoprog-one"
            )
    check_progressive_resizing(cfg.initial_scale, cfg.delay_fraction, cfg.finetune_fraction, cfg.size_increment)
    if cfg.efficienttrain_schedule not in EFFICIENTTRAIN_SCHEDULES:
        raise ConfigError(
            f"--efficienttrain-schedule must be one of {', '.join(EFFICIENTTRAIN_SCHEDULES)}, "
            f"got {cfg.efficienttrain_schedule!r}"
        )
    given = [n for n in ("equal_time_epochs", "equal_time_ratio") if getattr(cfg, n) is not None]
    if cfg.method == "full-equal-time":
        if len(given) != 1:
            raise ConfigError(
                "--method full-equal-time needs exactly one of --equal-time-epochs N (the epochs to train) and "
                "--equal-time-ratio R (a time ratio: trains round(R x --epochs) epochs)"
                + (", got both" if given else "")
            )
        if cfg.equal_time_epochs is not None:
            _at_least("equal_time_epochs", cfg.equal_time_epochs, 1)
        else:
            _in_interval("equal_time_ratio", cfg.equal_time_ratio, 0.0, math.inf, low_open=True)
    elif given:
        raise ConfigError(f"{_flag(given[0])} is an option of --method full-equal-time, not {cfg.method}")
    if cfg.method in PEER_METHODS and cfg.schedule_file is not None:
        raise ConfigError(f"--schedule replays a growth schedule; --method {cfg.method} trains the full model")
    if cfg.method == "efficienttrain" and cfg.adaptive_reg:
        raise ConfigError(
            "--adaptive-reg cannot be combined with --method efficienttrain: both set RandAugment's magnitude"
        )


def _search_rule(cfg: PretrainConfig | FinetuneConfig):
    from autoprog.search.rules import create_search_rule

    overrides: dict = {"reach": cfg.search_reach, "ntk_tensors": cfg.search_ntk_tensors}
    if isinstance(cfg, PretrainConfig):
        overrides.update(exam=cfg.search_exam, sampling=cfg.search_sampling,
                         supernet_fraction=cfg.search_supernet_fraction, w_floor=cfg.search_w_floor,
                         trial_fraction=cfg.search_trial_fraction, w_fit=cfg.search_w_fit)  # fmt: skip
    if cfg.vote_weights is not None:
        overrides["vote_weights"] = parse_vote_weights(cfg.vote_weights)
    return create_search_rule(cfg.search_rule, **overrides)


def parse_vote_weights(text: str) -> dict[str, float]:
    """Ranked voting's ballot weights (Eq. 19) from ``"time=1,ntk=0.5,zico=0.5"``.

    Raises:
        ConfigError: an entry that is not ``key=number``, a non-finite number, or keys other than
            ``time``, ``ntk``, ``zico`` (``time`` required).
    """
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--vote-weights: bad entry {part!r} (want key=number)") from None
        if not math.isfinite(out[key.strip()]):
            raise ConfigError(f"--vote-weights: {part!r} is not a finite number")
    if set(out) - {"time", "ntk", "zico"} or "time" not in out:
        raise ConfigError(f"--vote-weights keys are time, ntk, zico (time required), got {sorted(out)}")
    return out


#: ``check_source(folder) -> kind``: checks a fine-tuning source folder without building anything and
#: names its family (``"dit"``, ``"text-to-image"``, ``"classifier"``); raises :class:`ConfigError`.
SourceCheck = Callable[..., str]

FINETUNE_METHODS: tuple[str, ...] = (
    "full",
    "bitfit",
    "difffit",
    "lora",
    "prog",
    "autoprog-one",
    "autoprog-zero",
)
#: Methods with several stages (the others train one configuration throughout).
PROGRESSIVE_FINETUNE_METHODS: tuple[str, ...] = ("prog", "autoprog-one", "autoprog-zero")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (paper Sec. 4, 5.1.2).

    ``model`` names the source: a diffusers DiT, a text-to-image pipeline or an ``autoprog
    pretrain`` run (a timm classifier); :mod:`autoprog.tasks` supplies what depends on it. ``lr``
    ``None`` takes the family's default (the paper's: 1e-4 for DiT). Defaults transfer the
    project's own DiT source (pre-trained on Fashion-MNIST by ``autoprog source``) to MNIST-5k in
    pixel space. ``sid`` defaults to on for the progressive methods (it is
    meaningless for single-stage ones). The search settings follow the authors' code: NTK on
    ``ntk_samples`` samples, ZiCo on ``zico_batches`` batches, time of ``time_repeats`` steps (or,
    ``search_runtime="flops"``, the step's FLOPs: deterministic, so runs are reproducible);
    ranked voting weights ``time=1, ntk=0.5, zico=0.5`` (Eq. 19 as the code weighs it).
    """

    model: str = "dit-fmnist"
    data: str = "mnist-5k"
    method: str = "autoprog-zero"
    steps: int = 800
    out: str = "runs/finetune"
    data_dir: str | None = None
    seed: int = 0
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.0
    stages: int = 4
    ratio: float = 0.25
    levels: int = 4
    sid: bool | None = None
    cfg_dropout: float = 0.1
    sid_dropout: float = 0.1
    ema_decay: float = 0.999
    lora_rank: int = 8
    ntk_samples: int = 8
    zico_batches: int = 2
    time_repeats: int = 3
    search_runtime: str = "measured"
    vote_weights: str | None = None
    search_fraction: float = 0.25
    search_rule: str = "horizon"
    search_reach: bool | None = None
    search_ntk_tensors: str | None = None
    fid_samples: int = 300
    fid_reference: int = 1000
    sample_steps: int = 25
    guidance: float = 1.5
    mixed_precision: str | None = None
    resume: bool = False
    checkpoint_every: int = 0
    on_nonfinite: str = "rollback"
    nonfinite_lr_factor: float = 0.5
    max_rollbacks: int = 3
    device: str | None = None
    threads: int | None = None
    progress: bool | None = None
    tensorboard: str | None = None
    # Text-to-image sources only (autoprog.tasks.text_to_image; paper Sec. 5.3.2-5.3.3). DreamBooth
    # mode is on when ``instance_prompt`` is set ("a sks dog"); ``class_noun`` defaults to the data's
    # single class name; CLIP-T / DINO are computed when their model folders are given.
    instance_prompt: str | None = None
    class_noun: str | None = None
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    class_images: int = 100
    train_text_encoder: bool = False
    clip_model: str | None = None
    dino_model: str | None = None
    # Classifier sources only (autoprog.tasks.classifier): the weights of ``model="timm:NAME"``
    # (``--weights``), and the fine-tuning resolution (``--img-size``; default: the source's).
    weights_file: str | None = None
    img_size: int | None = None

    @property
    def use_sid(self) -> bool:
        if self.method not in PROGRESSIVE_FINETUNE_METHODS:
            return False
        return True if self.sid is None else self.sid

    def weights(self) -> dict[str, float]:
        """AutoProg-Zero's ballot weights: ``vote_weights`` parsed (:func:`parse_vote_weights`), else
        the search rule's."""
        return dict(self.search().vote_weights)

    def search(self):  # -> autoprog.search.rules.SearchRule
        """The search rule of the run (:mod:`autoprog.search.rules`): ``search_rule`` with
        ``search_reach``, ``search_ntk_tensors`` and ``vote_weights`` overriding it when set (fine-tuning's AutoProg-One keeps
        its own sampling, score source and ``search_fraction``)."""
        return _search_rule(self)

    def validate(self, check_source: SourceCheck | None = None) -> None:
        """Raise :class:`ConfigError` (one line: the option, the value, what is valid) on the first bad field.

        Args:
            check_source: ``check_source(folder, weights_file=..., img_size=...) -> kind``: the
                family's own checks of a source (nothing is built) and its family (``"dit"``, ``"text-to-image"``,
                ``"classifier"``). The command line passes :func:`autoprog.tasks.check_source`, so a
                bad folder is refused before any work. Without it, a folder source is only checked
                to exist here; its family and the options that depend on it
                (:meth:`check_source_kind`) are checked where the task is created
                (:func:`autoprog.tasks.create_finetune_task`), with the same messages.
        """
        from autoprog.data.datasets import check_dataset_name
        from autoprog.train.source import SOURCE_RECIPES, TIMM_PREFIX

        _check_field_types(self)
        _check_reliability(self)
        if self.method not in FINETUNE_METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(FINETUNE_METHODS)}")
        if self.img_size is not None:
            _at_least("img_size", self.img_size, 1)
        kind: str | None = None
        if self.model in SOURCE_RECIPES:
            kind = SOURCE_RECIPES[self.model].get("kind", "dit")
            if self.weights_file is not None or self.img_size is not None:
                flag = "--weights" if self.weights_file is not None else "--img-size"
                raise ConfigError(f"{flag} is for classifier sources (timm ViTs), not the built-in source {self.model}")
        else:
            if not _exists(self.model) and not str(self.model).startswith(TIMM_PREFIX):
                raise ConfigError(
                    f"--model {self.model!r} is neither a folder nor a built-in source ({', '.join(SOURCE_RECIPES)})"
                )
            if check_source is not None:
                kind = check_source(self.model, weights_file=self.weights_file, img_size=self.img_size)
        check_dataset_name(self.data)
        _at_least("steps", self.steps, 1)
        _in_interval("ratio", self.ratio, 0.0, 1.0, low_open=True)
        _at_least("stages", self.stages, 1)
        _at_least("levels", self.levels, 1)
        if self.method in PROGRESSIVE_FINETUNE_METHODS and self.stages > self.steps:
            raise ConfigError(f"{self.stages} stages need at least {self.stages} steps, got {self.steps}")
        if self.method in ("autoprog-one", "autoprog-zero") and self.stages < 2:
            raise ConfigError(f"{self.method} needs at least 2 stages (the last one trains the full model)")
        _at_least("batch_size", self.batch_size, 1)
        if self.lr is not None:
            _positive("lr", self.lr)
        _in_interval("weight_decay", self.weight_decay, 0.0, math.inf)
        _in_interval("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _in_interval("cfg_dropout", self.cfg_dropout, 0.0, 1.0, high_open=True)
        _in_interval("sid_dropout", self.sid_dropout, 0.0, 1.0, high_open=True)
        _at_least("lora_rank", self.lora_rank, 1)
        _at_least("ntk_samples", self.ntk_samples, 2)
        _at_least("zico_batches", self.zico_batches, 2)
        _at_least("time_repeats", self.time_repeats, 1)
        if self.search_runtime not in ("measured", "flops"):
            raise ConfigError(f"--search-runtime must be measured or flops, got {self.search_runtime!r}")
        _in_interval("search_fraction", self.search_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if self.fid_samples != 0:
            if self.fid_samples < 2:
                raise ConfigError(
                    f"--fid-samples must be 0 (skip FID) or >= 2, got {_show(self.fid_samples)}"
                )
            _at_least("fid_reference", self.fid_reference, 2, note=" (FID statistics need 2 images)")
        _at_least("sample_steps", self.sample_steps, 1)
        _in_interval("guidance", self.guidance, 0.0, math.inf)
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ConfigError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        _check_seed(self.seed)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        _check_device(self.device)
        if self.tensorboard:
            from autoprog.tensorboard import require_tensorboard

            require_tensorboard()
        self.weights()
        self._check_text_to_image()
        if kind is not None:
            self.check_source_kind(kind)

    def _check_text_to_image(self) -> None:
        """The text-to-image options: well-formed, DreamBooth's only with ``--instance-prompt``."""
        from autoprog.eval.clip_score import check_score_model

        for name in ("instance_prompt", "class_noun"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{_flag(name)} must not be empty")
        if self.instance_prompt is None:
            for name in ("class_noun", "prior_preservation"):
                if getattr(self, name) not in (None, False):
                    raise ConfigError(f"{_flag(name)} is a DreamBooth option: give --instance-prompt too")
        _in_interval("prior_loss_weight", self.prior_loss_weight, 0.0, math.inf)
        _at_least("class_images", self.class_images, 1)
        if self.clip_model is not None:
            check_score_model(self.clip_model, "clip")
        if self.dino_model is not None:
            check_score_model(self.dino_model, "dino")

    def check_source_kind(self, kind: str) -> None:
        """Refuse options the source's family does not have: the text-to-image options (DreamBooth,
        the text encoder, CLIP-T / DINO) with a source of another ``kind`` (``"dit"``, ``"classifier"``)."""
        used = [
            name
            for name in (
                "instance_prompt",
                "class_noun",
                "prior_preservation",
                "train_text_encoder",
                "clip_model",
                "dino_model",
            )
            if getattr(self, name) not in (None, False)
        ]
        if used and kind != "text-to-image":
            raise ConfigError(
                f"{_flag(used[0])} is for text-to-image sources (a pipeline with unet/ + text_encoder/), "
                f"not the {kind} source {self.model!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# Checks shared by both configurations and the CLI. Messages name the command-line option.


def check_out_dir(out: str, overwrite: bool = False) -> None:
    """Refuse an output folder that already holds a finished run (``summary.json``), unless ``overwrite``.

    The CLI calls it before any work starts (``--overwrite`` lifts it), so that a repeated command
    cannot silently replace a finished run's results. :func:`~autoprog.train.pretrain.pretrain` and
    :func:`~autoprog.train.finetune.finetune` themselves do not call it: library code that writes
    into the same folder on purpose keeps working.

    Raises:
        ConfigError: ``out`` holds ``summary.json`` (and not ``overwrite``), or is not a usable folder.
    """
    path = Path(out)
    try:
        not_a_folder = path.exists() and not path.is_dir()
        finished = (path / "summary.json").is_file()
    except (OSError, ValueError) as e:  # e.g. a NUL byte, or a name too long for the file system
        raise ConfigError(f"--out {out!r} is not a usable folder ({e})") from None
    if not_a_folder:
        raise ConfigError(f"--out {out} exists and is not a folder")
    if finished and not overwrite:
        raise ConfigError(
            f"--out {out} already holds a finished run ({path / 'summary.json'}); "
            "pass --overwrite to replace it, or choose another --out"
        )


#: Options that may differ between a run and its resumption (``out``: the folder may have moved;
#: ``threads``: allowed, though a different count can change the last bits of the numbers).
RESUME_FREE_FIELDS = frozenset(
    {
        "out",
        "resume",
        "checkpoint_every",
        "progress",
        "threads",
        "on_nonfinite",
        "nonfinite_lr_factor",
        "max_rollbacks",
        "tensorboard",
        "clip_model",  # finetune: evaluation-only model folders
        "dino_model",
    }
)


#: Options added after checkpoints existed whose absence means a value other than today's default:
#: a checkpoint written before search rules searched by the paper's rule, with the authors' weights.
ADDED_OPTIONS_BEFORE: dict[str, Any] = {"search_rule": "paper"}


def _effective(config: dict) -> dict:
    """``config`` with the values that stand for another one made explicit: ``vote_weights`` unset
    means the search rule's weights (so an old checkpoint's explicit default still matches)."""
    out = {**ADDED_OPTIONS_BEFORE, **config}
    if "vote_weights" in out and out["vote_weights"] is None:
        from autoprog.search.rules import SEARCH_RULES

        rule = SEARCH_RULES.get(out["search_rule"])
        if rule is not None:
            out["vote_weights"] = ",".join(f"{k}={v:g}" for k, v in rule.vote_weights.items())
    elif out.get("vote_weights") is not None:
        out["vote_weights"] = ",".join(f"{k}={v:g}" for k, v in parse_vote_weights(out["vote_weights"]).items())
    return out


def check_same_config(saved: dict, current: dict, out: str | Path) -> None:
    """Refuse to resume the run in ``out`` under another configuration than the one it was started with.

    Options in :data:`RESUME_FREE_FIELDS` may differ; an option the saved configuration lacks (added
    to autoprog after the checkpoint was written) is taken as unchanged, unless
    :data:`ADDED_OPTIONS_BEFORE` says what its absence meant.

    Raises:
        ConfigError: naming the first differing option as on the command line, with both values
            (``(default)`` for an option left at its default).
    """
    saved, current = _effective(saved), _effective(current)
    for key, value in current.items():
        if key not in RESUME_FREE_FIELDS and saved.get(key, value) != value:
            raise ConfigError(
                f"--resume: the run in {out} used {_flag(key)} {_as_set(saved.get(key))}, not {_as_set(value)}"
            )


def check_schedule_file(path: str, epochs: int) -> None:
    """Check that ``path`` holds a growth schedule (a ``summary.json`` or a bare list) over ``epochs`` epochs.

    Whether its resolutions and depths fit the model is checked once the model is known
    (:func:`~autoprog.train.pretrain.load_schedule_file`).
    """
    from autoprog.growth.schedule import GrowthSchedule

    if not _exists(path, file=True):
        raise ConfigError(f"schedule file {path} does not exist")
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"schedule file {path} is not JSON: {e}") from None
    items = obj.get("schedule") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise ConfigError(
            f'schedule file {path} holds no schedule: expected a summary.json with a "schedule" list, '
            "or a bare list of stages"
        )
    try:
        schedule = GrowthSchedule.from_list(items)
    except ConfigError as e:
        raise ConfigError(f"schedule file {path}: {e}") from None
    if schedule.epochs != epochs:
        raise ConfigError(f"schedule file covers {schedule.epochs} epochs but --epochs is {epochs}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _as_set(value: Any) -> str:
    """A configuration value as a resume error shows it (``None`` is an option left at its default)."""
    return "(default)" if value is None else _show(value)


def _show(value: Any, limit: int = 60) -> str:
    text = str(value) if isinstance(value, numbers.Number) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "True or False",
    "dict": "a dict",
}


def _check_reliability(cfg: Any) -> None:
    """The checkpointing and non-finite-loss options shared by both configs."""
    _at_least("checkpoint_every", cfg.checkpoint_every, 0)
    if cfg.on_nonfinite not in ("stop", "rollback"):
        raise ConfigError(f"--on-nonfinite must be stop or rollback, got {cfg.on_nonfinite!r}")
    _in_interval("nonfinite_lr_factor", cfg.nonfinite_lr_factor, 0.0, 1.0, low_open=True)
    _at_least("max_rollbacks", cfg.max_rollbacks, 0)


def _check_field_types(cfg: Any) -> None:
    """Every field holds a value of its annotated type (ints are not bools; floats may be ints).

    Values that come from the CLI always do; this catches library callers and JSON-loaded configs,
    so that the range checks below never meet a string or ``None`` and raise a ``TypeError``.
    """
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        kinds = str(f.type).replace(" ", "").split("|")  # annotations are strings here
        if value is None and "None" in kinds:
            continue
        is_bool = isinstance(value, bool)
        ok = (
            ("bool" in kinds and is_bool)
            or ("int" in kinds and isinstance(value, numbers.Integral) and not is_bool)
            or ("float" in kinds and isinstance(value, numbers.Real) and not is_bool)
            or ("str" in kinds and isinstance(value, str))
            or ("dict" in kinds and isinstance(value, dict))
        )
        if not ok:
            want = " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
            raise ConfigError(f"{_flag(f.name)} must be {want}, got {_show(value)}")


def _at_least(name: str, value: int, low: int, note: str = "") -> None:
    """``value >= low`` (an int field: the type check has run)."""
    if value < low:
        raise ConfigError(f"{_flag(name)} must be >= {low}, got {_show(value)}{note}")


def _finite(value: float) -> bool:
    """``math.isfinite``, False (not an ``OverflowError``) for an int too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positive(name: str, value: float) -> None:
    if not (_finite(value) and value > 0):
        raise ConfigError(f"{_flag(name)} must be a finite number > 0, got {_show(value)}")


def _in_interval(
    name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """``low <= value <= high`` (strict at an open end), and not NaN; ``high = inf`` means "no upper bound"."""
    above = value > low if low_open else value >= low
    below = value < high if high_open or math.isinf(high) else value <= high
    if above and below and _finite(value):
        return
    if math.isinf(high):
        raise ConfigError(
            f"{_flag(name)} must be a finite number {'>' if low_open else '>='} {low:g}, got {_show(value)}"
        )
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ConfigError(f"{_flag(name)} must be in {interval}, got {_show(value)}")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be in 0..2**63-1, got {_show(seed)}")


def _check_randaug(text: str) -> None:
    """Parse a timm RandAugment string now rather than when the first batch is augmented."""
    if not text.startswith("rand"):
        raise ConfigError(
            f"--randaug must be a timm RandAugment string like rand-m9-mstd0.5-inc1, got {text!r}"
        )
    from timm.data.auto_augment import rand_augment_transform

    try:
        rand_augment_transform(text, {"img_mean": 128, "magnitude_max": 9.99})
    except Exception as e:  # a parse failure of any kind is a bad string: report it as one
        raise ConfigError(f"bad RandAugment string {text!r}: {type(e).__name__}: {e}") from None


def _check_device(device: str | None) -> None:
    """A device torch can parse and this machine has (CUDA or MPS must be available if asked for)."""
    if device is None:
        return
    import torch

    try:
        d = torch.device(device)
    except Exception:  # torch raises RuntimeError (and others) for an unparsable string
        raise ConfigError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available here (use --device cpu)")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here (use --device cpu)")


def _exists(path: str, file: bool = False) -> bool:
    """``Path(path).exists()`` (or ``is_file()``) that is False, not an error, for an impossible path."""
    if not path.strip():  # Path("") is the current folder: never what an option meant
        return False
    try:
        p = Path(path)
        return p.is_file() if file else p.exists()
    except (OSError, ValueError):  # e.g. a NUL byte or a name too long for the file system
        return False
