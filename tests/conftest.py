from __future__ import annotations

import pytest
import torch

from autoprog.adapters import TimmViTAdapter


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def tiny_adapter() -> TimmViTAdapter:
    """A tiny ViT (width 192 is timm's tiny; depth 6, 28x28 grey, patch 4)."""
    return TimmViTAdapter("vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=6)
