"""Per-sample augmentation for the training split (timm's RandAugment on PIL images)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from autoprog.errors import ConfigError


class RandAugmentDataset(Dataset):
    """Wrap a dataset of ``(uint8 CHW tensor, label)`` with timm's RandAugment.

    Args:
        dataset: the dataset to augment (exposes ``info`` and ``targets``).
        config_str: timm RandAugment string, e.g. ``"rand-m9-mstd0.5-inc1"`` (DeiT's setting,
            Appendix B).
    """

    def __init__(self, dataset: Dataset, config_str: str) -> None:
        from timm.data.auto_augment import rand_augment_transform

        if not config_str.startswith("rand"):
            raise ConfigError(f"--randaug must be a timm RandAugment string like rand-m9-mstd0.5-inc1, got {config_str!r}")
        self.dataset = dataset
        self.info = dataset.info  # type: ignore[attr-defined]
        self.targets = dataset.targets  # type: ignore[attr-defined]
        fill = tuple(round(255 * m) for m in self.info.mean)
        try:
            # magnitude_max just under timm's 10: at exactly 10, PosterizeIncreasing asks Pillow for
            # 0 bits, which current Pillow refuses (hit by DeiT's own rand-m9-mstd0.5-inc1 ~2% of calls).
            hparams = {"img_mean": fill if len(fill) > 1 else fill[0], "magnitude_max": 9.99}
            self.transform = rand_augment_transform(config_str, hparams)
        except (ValueError, AssertionError, KeyError) as e:
            raise ConfigError(f"bad RandAugment string {config_str!r}: {e}") from None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[index]
        arr = x.permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        out = np.asarray(self.transform(img), dtype=np.uint8)
        t = torch.from_numpy(out.copy())
        return (t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)).contiguous(), y
