"""Configuration of a pre-training run: a plain dataclass the CLI fills and ``summary.json`` records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from autoprog.errors import ConfigError

PRETRAIN_METHODS: tuple[str, ...] = ("full", "prog", "autoprog-one", "progstack")
Method = Literal["full", "prog", "autoprog-one", "progstack"]


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run (defaults: a small ViT for 28x28 grey images).

    The default model is timm's ``vit_tiny_patch16_224`` (width 192, 3 heads) re-shaped for small
    images: patch 4, depth 6, the input size and channels of the data. ``ratio``/``stages``/
    ``operator`` only matter for progressive methods.
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
    device: str | None = None
    threads: int | None = None
    progress: bool | None = None
    eval_ema: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in PRETRAIN_METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(PRETRAIN_METHODS)}")
        if self.optimizer_state not in ("carry", "reset"):
            raise ConfigError(f"--optimizer-state must be carry or reset, got {self.optimizer_state!r}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"--ratio must be in (0, 1], got {self.ratio}")
        if self.stages < 1:
            raise ConfigError(f"--stages must be >= 1, got {self.stages}")
        if self.method != "full" and self.stages > self.epochs:
            raise ConfigError(f"{self.stages} stages need at least {self.stages} epochs, got {self.epochs}")
        if self.search_epochs < 1 or self.search_samples < 1 or self.search_snapshots < 1:
            raise ConfigError("--search-epochs, --search-samples and --search-snapshots must be >= 1")
        if self.method == "autoprog-one" and self.stages < 2:
            raise ConfigError("autoprog-one needs at least 2 stages (the last one trains the full model)")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.test_subset is not None and self.test_subset < 1:
            raise ConfigError(f"--test-subset must be >= 1, got {self.test_subset}")
        if self.train_subset is not None and self.train_subset < 1:
            raise ConfigError(f"--train-subset must be >= 1, got {self.train_subset}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Everything that defines a diffusion fine-tuning run (paper Sec. 4, 5.1.2).

    Defaults transfer the project's own DiT source (pre-trained on Fashion-MNIST by ``autoprog
    source``) to MNIST-5k in pixel space. ``sid`` defaults to on for the progressive methods (it is
    meaningless for single-stage ones). The search settings follow the authors' code: NTK on
    ``ntk_samples`` samples, ZiCo on ``zico_batches`` batches, time of ``time_repeats`` steps;
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
    lr: float = 1e-4
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
    vote_weights: str = "time=1,ntk=0.5,zico=0.5"
    search_fraction: float = 0.25
    fid_samples: int = 300
    fid_reference: int = 1000
    sample_steps: int = 25
    guidance: float = 1.5
    device: str | None = None
    threads: int | None = None
    progress: bool | None = None

    @property
    def use_sid(self) -> bool:
        if self.method not in PROGRESSIVE_FINETUNE_METHODS:
            return False
        return True if self.sid is None else self.sid

    def weights(self) -> dict[str, float]:
        """``vote_weights`` parsed: ``"time=1,ntk=0.5,zico=0.5"`` -> dict."""
        out: dict[str, float] = {}
        for part in self.vote_weights.split(","):
            key, _, value = part.partition("=")
            try:
                out[key.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--vote-weights: bad entry {part!r} (want key=number)") from None
        if set(out) - {"time", "ntk", "zico"} or "time" not in out:
            raise ConfigError(f"--vote-weights keys are time, ntk, zico (time required), got {sorted(out)}")
        return out

    def validate(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(FINETUNE_METHODS)}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"--ratio must be in (0, 1], got {self.ratio}")
        if self.stages < 1 or self.levels < 1:
            raise ConfigError("--stages and --levels must be >= 1")
        if self.method in PROGRESSIVE_FINETUNE_METHODS and self.stages > self.steps:
            raise ConfigError(f"{self.stages} stages need at least {self.stages} steps, got {self.steps}")
        if self.method in ("autoprog-one", "autoprog-zero") and self.stages < 2:
            raise ConfigError(f"{self.method} needs at least 2 stages (the last one trains the full model)")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("--batch-size must be >= 1 and --lr > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.cfg_dropout < 1.0 or not 0.0 <= self.sid_dropout < 1.0:
            raise ConfigError("--cfg-dropout and --sid-dropout must be in [0, 1)")
        if self.ntk_samples < 2 or self.zico_batches < 2 or self.time_repeats < 1:
            raise ConfigError("--ntk-samples and --zico-batches must be >= 2, --time-repeats >= 1")
        if not 0.0 < self.search_fraction < 1.0:
            raise ConfigError(f"--search-fraction must be in (0, 1), got {self.search_fraction}")
        if self.fid_samples < 0:
            raise ConfigError("--fid-samples must be >= 0 (0 = skip FID)")
        self.weights()

    def to_dict(self) -> dict:
        return asdict(self)
