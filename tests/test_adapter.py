from __future__ import annotations

import pytest
import torch

from autoprog.adapters import create_adapter, resample_pos_embed
from autoprog.adapters.base import AdapterFamily, adapter_family, check_model_name, register_adapter
from autoprog.errors import ConfigError
from autoprog.flops import FlopTable, count_train_flops
from autoprog.growth import SubnetConfig


def test_pos_embed_resample_keeps_class_token_and_grid():
    pe = torch.randn(1, 1 + 7 * 7, 32)
    out = resample_pos_embed(pe, (4, 4), (7, 7), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 16, 32)
    assert torch.equal(out[:, 0], pe[:, 0])
    same = resample_pos_embed(pe, (7, 7), (7, 7))
    torch.testing.assert_close(same, pe)
    rect = resample_pos_embed(pe, (3, 5), (7, 7))
    assert rect.shape == (1, 1 + 15, 32)


def test_pos_embed_resample_of_a_smooth_field_is_faithful():
    # a linear ramp over the grid stays (nearly) a ramp after resampling
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing="ij")
    field = torch.stack([xs, ys], -1).reshape(1, 64, 2)
    pe = torch.cat([torch.zeros(1, 1, 2), field], 1)
    out = resample_pos_embed(pe, (4, 4), (8, 8))[:, 1:].reshape(4, 4, 2)
    assert torch.all(out[:, 1:, 0] > out[:, :-1, 0])  # x increases along columns
    assert torch.all(out[1:, :, 1] > out[:-1, :, 1])  # y increases along rows


@pytest.mark.parametrize("old,new", [((3, 5), (6, 10)), ((5, 3), (10, 6)), ((6, 10), (3, 5)), ((3, 5), (4, 4))])
def test_pos_embed_resample_keeps_rows_and_columns_of_a_non_square_grid(old, new):
    """Tokens are row-major over an (H, W) grid: resampling must not swap height and width. Each
    embedding is 100 * row + column, so after resampling every row must hold the same column
    profile (and every column the same row profile), rows must step by ~100 and columns by ~1."""
    (h, w), (h2, w2) = old, new
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    field = (100.0 * rows + cols).reshape(1, h * w, 1)
    pe = torch.cat([torch.full((1, 1, 1), -1.0), field], 1)
    out = resample_pos_embed(pe, (h2, w2), (h, w), num_prefix_tokens=1)
    assert out.shape == (1, 1 + h2 * w2, 1) and out[0, 0, 0] == -1.0
    grid = out[0, 1:, 0].reshape(h2, w2)
    row_profile, col_profile = grid[:, 0] - grid[0, 0], grid[0, :] - grid[0, 0]
    torch.testing.assert_close(grid - grid[0, 0], row_profile[:, None] + col_profile[None, :], atol=1e-3, rtol=0)
    if h2 > 1:
        assert torch.all(row_profile[1:] > row_profile[:-1])  # down the rows: the 100s grow
        assert 50 * (h - 1) < row_profile[-1] < 150 * (h - 1)
    if w2 > 1:
        assert torch.all(col_profile[1:] > col_profile[:-1])  # along a row: the units grow
        assert 0.5 * (w - 1) < col_profile[-1] < 1.5 * (w - 1)


def test_adapter_runs_every_configuration(tiny_adapter):
    assert tiny_adapter.full == SubnetConfig(28, 6)
    for depth in (3, 6):
        model = tiny_adapter.create_model(depth)
        assert len(tiny_adapter.get_blocks(model)) == depth
        for res in (16, 28):
            x = tiny_adapter.prepare_input(torch.rand(2, 1, 28, 28), res)
            assert x.shape[-1] == res
            assert model(x).shape == (2, 10)
            tokens = model.forward_features(x)
            assert tokens.shape[1] == 1 + (res // 4) ** 2


def test_model_uses_interpolated_pos_embed(tiny_adapter):
    model = tiny_adapter.create_model(2).eval()
    x = torch.rand(1, 1, 16, 16)
    tok = model.patch_embed(x)  # (1, 4, 4, D) with dynamic size
    tok = tok.reshape(1, -1, tok.shape[-1])
    expected = resample_pos_embed(model.pos_embed, (4, 4), (7, 7))
    manual = torch.cat([model.cls_token, tok], 1) + expected
    got = model._pos_embed(model.patch_embed(x))
    torch.testing.assert_close(got, manual)


def test_resolution_not_multiple_of_patch(tiny_adapter):
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        tiny_adapter.prepare_input(torch.rand(1, 1, 28, 28), 18)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown"):
        create_adapter("resnet_magic", img_size=28, in_chans=1, num_classes=10)
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_adapter("vit_does_not_exist", img_size=28, in_chans=1, num_classes=10)


def test_flops_counted_and_cached(tiny_adapter):
    table = FlopTable(tiny_adapter.create_model, in_chans=1)
    small, full = table(SubnetConfig(16, 3)), table(SubnetConfig(28, 6))
    assert 0 < small < full
    assert table(SubnetConfig(16, 3)) == small and len(table.as_dict()) == 2
    # per-sample counts scale with the batch (the cache counts one sample)
    model = tiny_adapter.create_model(3)
    assert count_train_flops(model, torch.zeros(4, 1, 16, 16)) == 4 * small
    # depth is (roughly) linear: twice the blocks, a bit under twice the FLOPs (stem and head are shared)
    d6_16 = table(SubnetConfig(16, 6))
    assert 1.7 * small < d6_16 < 2.0 * small


def test_adapters_come_from_the_registry(tiny_adapter):
    """Families are registered by their modules; create_adapter passes a family only its options."""
    assert adapter_family("vit_tiny_patch16_224").name == "timm ViT/DeiT"
    assert adapter_family("resnet18").options == frozenset({"depth"})
    assert adapter_family("convnext_tiny") is None
    with pytest.raises(ConfigError, match="^unknown model 'convnext_tiny': use a timm Vision Transformer"):
        check_model_name("convnext_tiny")
    made = []
    register_adapter(AdapterFamily(
        name="test family", matches=lambda m: m.startswith("testnet"), check=lambda m: None,
        create=lambda m, **kw: made.append((m, kw)) or tiny_adapter, options=frozenset({"depth"}), hint="a testnet",
    ))  # fmt: skip
    try:
        assert create_adapter("testnet1", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=3) is tiny_adapter
        assert made == [("testnet1", {"img_size": 28, "in_chans": 1, "num_classes": 10, "depth": 3})]
        with pytest.raises(ConfigError, match=r"\(resnet18, resnet34, resnet50, resnet101\), or a testnet$"):
            check_model_name("convnext_tiny")
    finally:
        from autoprog.adapters import base

        del base._FAMILIES["test family"]


def _train_mode_flops(model, x) -> int:
    """The count as before issue 21: the whole model in training mode (BatchNorm included)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return int(counter.get_total_flops())


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_flops_of_a_resnet_at_any_input_size(name):
    """Issue 21: resnet50 at 64 px crashed in the FLOP count (BatchNorm, batch of one, 1x1 map)."""
    adapter = create_adapter(name, img_size=64, in_chans=3, num_classes=10)
    table = FlopTable(adapter.create_model, in_chans=3)
    small = table(SubnetConfig(32, adapter.full.depth // 2))
    assert 0 < small < table(adapter.full)
    # where a training-mode count worked (a batch of 2), the per-sample count is the same
    model = adapter.create_model(adapter.full.depth // 2)
    assert _train_mode_flops(model, torch.zeros(2, 3, 32, 32)) == 2 * small


def test_flop_count_leaves_the_model_as_it_was():
    adapter = create_adapter("resnet18", img_size=28, in_chans=1, num_classes=10)
    model = adapter.create_model()
    model.layer2.eval()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    count_train_flops(model, torch.randn(1, 1, 28, 28))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())  # running statistics
    assert model.training and not model.layer2.training and model.layer3.training
    assert all(p.grad is None for p in model.parameters())


def test_prog_growth_of_a_vit_ends_at_the_timm_model():
    """The last stage of a Prog schedule is the named model: its weights load into timm's strictly."""
    import timm

    from autoprog.adapters.base import count_params
    from autoprog.growth import GrowthSpace, create_operator, prog_schedule

    adapter = create_adapter("vit_tiny_patch16_224", img_size=32, in_chans=3, num_classes=7)
    schedule = prog_schedule(GrowthSpace(32, adapter.full.depth, 16, ratio=0.5, num_stages=4), epochs=4)
    model = adapter.create_model(schedule[0].depth)
    for stage in schedule:
        create_operator("interpolation").grow(model, adapter, stage.depth)
    reference = timm.create_model("vit_tiny_patch16_224", img_size=32, in_chans=3, num_classes=7)
    reference.load_state_dict(model.state_dict(), strict=True)
    assert len(model.blocks) == 12 and count_params(model) == count_params(reference)
