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
