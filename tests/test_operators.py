from __future__ import annotations

import pytest
import torch

from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth import ReZeroBlock, create_operator, depth_sources


def eq22_sources(old: int, new: int) -> list[int]:
    """Appendix A Eq. 22 read literally: indices from the classifier, new j <- old floor(j * l / l')."""
    top = [(j * old) // new for j in range(new)]  # top-indexed sources
    return [old - 1 - t for t in reversed(top)]  # to bottom-up indices


def test_stacking_places_a_copy_of_the_stack_on_top():
    assert depth_sources("stacking", 3, 6) == [0, 1, 2, 0, 1, 2]
    assert depth_sources("stacking", 4, 6) == [0, 1, 2, 3, 0, 1]


def test_interpolation_doubles_each_layer_in_place():
    assert depth_sources("interpolation", 3, 6) == [0, 0, 1, 1, 2, 2]
    assert depth_sources("interpolation", 6, 12) == [i for i in range(6) for _ in range(2)]


@pytest.mark.parametrize("old,new", [(3, 4), (4, 5), (5, 6), (6, 8), (8, 10), (10, 12), (3, 6), (7, 14), (2, 3), (9, 11)])
def test_interpolation_matches_eq22_on_prog_growth_steps(old, new):
    assert depth_sources("interpolation", old, new) == eq22_sources(old, new)


@pytest.mark.parametrize("old", [1, 2, 3, 5, 6, 7])
def test_interpolation_is_nested_and_keeps_copies_beside_sources(old):
    prev: list[int] | None = None
    for new in range(old, 3 * old + 1):
        src = depth_sources("interpolation", old, new)
        assert len(src) == new
        assert src == sorted(src) and set(src) == set(range(old))  # order kept; every old block present
        if prev is not None:  # nested: growing one more adds exactly one copy
            assert all(src.count(i) >= prev.count(i) for i in range(old))
        prev = src


def test_randinit_keeps_old_blocks_next_to_classifier():
    assert depth_sources("randinit", 2, 4) == [None, None, 0, 1]


def test_growth_refuses_to_shrink():
    with pytest.raises(ConfigError):
        depth_sources("interpolation", 4, 3)


def _block_weights(adapter, model):
    return [b.attn.qkv.weight.detach().clone() if not isinstance(b, ReZeroBlock) else b.block.attn.qkv.weight.detach().clone() for b in adapter.get_blocks(model)]


@pytest.mark.parametrize("name,kind", [("stacking", "stacking"), ("interpolation", "interpolation")])
def test_operators_copy_the_weights_the_sources_say(tiny_adapter, name, kind):
    model = tiny_adapter.create_model(3)
    before = _block_weights(tiny_adapter, model)
    create_operator(name).grow(model, tiny_adapter, 6)
    after = _block_weights(tiny_adapter, model)
    assert len(after) == 6
    for w, s in zip(after, depth_sources(kind, 3, 6), strict=True):
        assert torch.equal(w, before[s])
    # the copies are independent parameters, not shared modules
    blocks = tiny_adapter.get_blocks(model)
    assert len({id(b.attn.qkv.weight) for b in blocks}) == 6


def test_randinit_new_blocks_are_fresh(tiny_adapter):
    model = tiny_adapter.create_model(2)
    before = _block_weights(tiny_adapter, model)
    create_operator("randinit").grow(model, tiny_adapter, 4)
    after = _block_weights(tiny_adapter, model)
    assert torch.equal(after[2], before[0]) and torch.equal(after[3], before[1])
    assert not any(torch.equal(after[i], b) for i in (0, 1) for b in before)


def test_identity_growth_preserves_the_function(tiny_adapter):
    model = tiny_adapter.create_model(3)
    # make the model non-trivial so a wrong growth would show
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    model.eval()
    x = torch.randn(8, 1, 20, 20)
    y0 = model(x)
    create_operator("identity").grow(model, tiny_adapter, 5)
    assert len(tiny_adapter.get_blocks(model)) == 5
    assert sum(isinstance(b, ReZeroBlock) for b in tiny_adapter.get_blocks(model)) == 2
    assert (model(x) - y0).abs().max().item() < 1e-5
    # and the residual scales are learnable
    alphas = [p for n, p in model.named_parameters() if n.endswith(".alpha")]
    assert len(alphas) == 2 and all(p.requires_grad for p in alphas)


def test_mogrow_loads_the_grown_momentum_copy(tiny_adapter):
    model = tiny_adapter.create_model(3)
    ema = ModelEma(model, decay=0.5)
    for p in model.parameters():  # let the online and momentum networks differ
        p.data.add_(torch.randn_like(p))
    ema.update(model)
    momentum_before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    create_operator("mogrow").grow(model, tiny_adapter, 4, momentum=ema.module)
    ema.rebuild(model)
    state, mom = model.state_dict(), ema.module.state_dict()
    assert state.keys() == mom.keys()
    assert all(torch.equal(state[k], mom[k]) for k in state)
    # grown by Interpolation from the momentum copy: new block i copies momentum block src[i]
    for i, s in enumerate(depth_sources("interpolation", 3, 4)):
        assert torch.equal(state[f"blocks.{i}.attn.qkv.weight"], momentum_before[f"blocks.{s}.attn.qkv.weight"])
    # and not from the online weights
    assert not torch.equal(state["blocks.0.attn.qkv.weight"], model.blocks[0].attn.qkv.weight + 1)


def test_mogrow_without_momentum_is_an_error(tiny_adapter):
    with pytest.raises(ConfigError, match="momentum"):
        create_operator("mogrow").grow(tiny_adapter.create_model(2), tiny_adapter, 3)


def test_unknown_operator():
    with pytest.raises(ConfigError, match="choose from"):
        create_operator("magic")


def test_ema_pairs_by_name_and_follows_growth(tiny_adapter):
    model = tiny_adapter.create_model(2)
    ema = ModelEma(model, decay=0.9)
    create_operator("interpolation").grow(model, tiny_adapter, 3, momentum=ema.module)
    ema.rebuild(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in ema.module.named_parameters()}
    ema.update(model)
    online = dict(model.named_parameters())
    for n, p in ema.module.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * online[n])


def test_ema_refuses_mismatched_models(tiny_adapter):
    ema = ModelEma(tiny_adapter.create_model(2))
    with pytest.raises(RuntimeError, match="differ by name"):
        ema.rebuild(tiny_adapter.create_model(3))
