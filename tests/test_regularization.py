from __future__ import annotations

import pytest
import torch

from autoprog.adapters import TimmViTAdapter
from autoprog.train.regularization import adaptive_regularization, set_drop_path


def test_regularisation_rises_linearly_with_the_stage():
    # The authors' VOLO-D0 setting (Tab. XIV): RandAugment 4.5 -> 9, drop-path 0 -> 0.1, random-erase 0 -> 0.25
    regs = [adaptive_regularization(k, 4, "rand-m9-mstd0.5-inc1", 0.1, 0.25) for k in range(4)]
    assert [r.randaug for r in regs] == [
        "rand-m5-mstd0.5-inc1",
        "rand-m6-mstd0.5-inc1",
        "rand-m8-mstd0.5-inc1",
        "rand-m9-mstd0.5-inc1",
    ]
    assert [r.drop_path for r in regs] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    assert [r.reprob for r in regs] == pytest.approx([0.0, 0.25 / 3, 0.5 / 3, 0.25])


def test_regularisation_off_values_and_zero_magnitude():
    r = adaptive_regularization(0, 4, None, 0.0, 0.0)
    assert r.randaug is None and r.drop_path == 0.0 and r.reprob == 0.0
    assert adaptive_regularization(0, 4, "rand-m1", 0.0, 0.0, min_fraction=(0.0, 0.0, 0.0)).randaug is None


def test_set_drop_path_rises_with_depth():
    adapter = TimmViTAdapter("vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=4,
                             drop_path_rate=0.1)  # fmt: skip
    model = adapter.create_model()
    set_drop_path(adapter.get_blocks(model), 0.3)
    blocks = adapter.get_blocks(model)
    assert isinstance(blocks[0].drop_path1, torch.nn.Identity)  # rate 0: no-op module
    rates = [b.drop_path1.drop_prob for b in blocks[1:]] + [b.drop_path2.drop_prob for b in blocks[1:]]
    assert rates == pytest.approx([0.1, 0.2, 0.3] * 2)
    set_drop_path(blocks, 0.0)  # and back off
    assert all(isinstance(b.drop_path1, torch.nn.Identity) for b in blocks)
