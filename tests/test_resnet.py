from __future__ import annotations

import copy

import pytest
import torch

from autoprog.adapters import TorchvisionResNetAdapter, create_adapter
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth import ReZeroBlock, create_operator, depth_sources
from autoprog.growth.elastic import ElasticSupernet


@pytest.fixture
def resnet() -> TorchvisionResNetAdapter:
    return TorchvisionResNetAdapter("resnet18", img_size=28, in_chans=1, num_classes=10)


def _stage_sizes(model) -> list[int]:
    return [len(getattr(model, f"layer{i}")) for i in range(1, 5)]


def test_depth_is_growable_blocks_spread_over_stages(resnet):
    assert resnet.full.depth == 4 and resnet.full.resolution == 28
    assert _stage_sizes(resnet.create_model()) == [2, 2, 2, 2]
    assert _stage_sizes(resnet.create_model(2)) == [1, 1, 2, 2]  # later stages first
    assert sum(resnet.stage_depths(3)) == 3
    model = resnet.create_model(2)
    assert len(resnet.get_blocks(model)) == 2
    for res in (16, 28):
        assert model(resnet.prepare_input(torch.rand(2, 1, 28, 28), res)).shape == (2, 10)


def test_interpolation_growth_copies_within_the_stage(resnet):
    model = resnet.create_model(2)
    before = [b.conv1.weight.detach().clone() for b in resnet.get_blocks(model)]
    create_operator("interpolation").grow(model, resnet, 4)
    assert _stage_sizes(model) == [1, 1, 3, 3]
    after = [b.conv1.weight for b in resnet.get_blocks(model)]
    for w, s in zip(after, depth_sources("interpolation", 2, 4), strict=True):
        assert torch.equal(w, before[s])


def test_identity_growth_preserves_a_resnets_function(resnet):
    model = resnet.create_model(2)
    model.eval()
    x = torch.randn(2, 1, 20, 20)
    y0 = model(x)
    create_operator("identity").grow(model, resnet, 4)
    assert sum(isinstance(b, ReZeroBlock) for b in resnet.get_blocks(model)) == 2
    assert (model.eval()(x) - y0).abs().max().item() < 1e-5


def test_randinit_adds_fresh_blocks_to_the_first_stage(resnet):
    model = resnet.create_model(2)
    create_operator("randinit").grow(model, resnet, 3)
    assert _stage_sizes(model) == [2, 1, 2, 2]


def test_resnet_supernet_is_weight_nesting(resnet):
    base = resnet.create_model(2).eval()
    x = torch.randn(2, 1, 20, 20)
    net = copy.deepcopy(base)
    ema = ModelEma(net)
    supernet = ElasticSupernet.grow(resnet, net, 4, create_operator("interpolation"), momentum=ema.module)
    ema.rebuild(net)  # the momentum network has the same elastic structure, paired by name
    for d in (2, 3, 4):
        ref = copy.deepcopy(base)
        create_operator("interpolation").grow(ref, resnet, d)
        supernet.set_depth(d)
        torch.testing.assert_close(net.eval()(x), ref.eval()(x), rtol=0, atol=1e-5)
    name_map = supernet.materialise(3)
    assert _stage_sizes(net) == [1, 1, 2, 3]
    assert all(v is not None for v in name_map.values())
    ema.rebuild(net)


def test_factory_and_errors():
    assert isinstance(create_adapter("resnet50", img_size=32, in_chans=3, num_classes=10), TorchvisionResNetAdapter)
    with pytest.raises(ConfigError, match="unknown ResNet"):
        create_adapter("resnet7", img_size=32, in_chans=3, num_classes=10)
