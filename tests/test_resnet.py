from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from autoprog.adapters import TorchvisionResNetAdapter, create_adapter
from autoprog.adapters.base import count_params
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth import GrowthSpace, ReZeroBlock, create_operator, layout_sources, prog_schedule
from autoprog.growth.elastic import ElasticSupernet

#: torchvision's blocks per stage
TORCHVISION = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


@pytest.fixture
def resnet() -> TorchvisionResNetAdapter:
    return TorchvisionResNetAdapter("resnet18", img_size=28, in_chans=1, num_classes=10)


def _stage_sizes(model) -> list[int]:
    return [len(getattr(model, f"layer{i}")) for i in range(1, 5)]


def _rgb64(name: str) -> TorchvisionResNetAdapter:
    """The adapter of a 64 px RGB input, where the stem is torchvision's own."""
    return TorchvisionResNetAdapter(name, img_size=64, in_chans=3, num_classes=7)


def _is_torchvisions(model, name: str) -> None:
    """``model``'s weights load into ``torchvision.models.<name>`` strictly; same parameter count."""
    reference = getattr(torchvision.models, name)(num_classes=7)
    reference.load_state_dict(model.state_dict(), strict=True)
    assert count_params(model) == count_params(reference)


def test_depth_is_growable_blocks_spread_over_stages(resnet):
    assert resnet.full.depth == 4 and resnet.full.resolution == 28
    assert _stage_sizes(resnet.create_model()) == [2, 2, 2, 2]
    assert _stage_sizes(resnet.create_model(2)) == [1, 1, 2, 2]  # later stages first
    assert resnet.stage_depths(3) == [0, 1, 1, 1]
    model = resnet.create_model(2)
    assert len(resnet.get_blocks(model)) == 2
    for res in (16, 28):
        assert model(resnet.prepare_input(torch.rand(2, 1, 28, 28), res)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_stage_depths_are_nested_and_end_at_torchvisions_layout(name):
    adapter = TorchvisionResNetAdapter(name, img_size=32, in_chans=3, num_classes=10)
    full = [n - 1 for n in TORCHVISION[name]]
    assert adapter.full.depth == sum(full) and adapter.stage_depths(sum(full)) == full
    previous = [0, 0, 0, 0]
    for d in range(1, sum(full) + 4):  # beyond the named model's depth too (--depth larger)
        layout = adapter.stage_depths(d)
        assert sum(layout) == d
        assert [a - b for a, b in zip(layout, previous, strict=True)].count(1) == 1  # one block added
        assert all(a >= b for a, b in zip(layout, previous, strict=True))
        assert d > sum(full) or all(a <= f for a, f in zip(layout, full, strict=True))
        previous = layout


def test_stage_depths_examples_of_the_docstring():
    r50 = _rgb64("resnet50")
    assert [r50.stage_depths(d) for d in (6, 8, 10, 12)] == [[1, 1, 3, 1], [1, 2, 4, 1], [2, 2, 4, 2], [2, 3, 5, 2]]
    r101 = _rgb64("resnet101")
    assert [r101.stage_depths(d) for d in (15, 22, 29)] == [[1, 2, 11, 1], [1, 2, 17, 2], [2, 3, 22, 2]]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_prog_growth_ends_at_the_torchvision_model(name):
    """Issue 21: a progressively grown resnet50 had [3, 3, 7, 3] blocks and 24.4 M parameters."""
    adapter = _rgb64(name)
    schedule = prog_schedule(GrowthSpace(64, adapter.full.depth, 4, ratio=0.5, num_stages=4), epochs=4)
    model = adapter.create_model(schedule[0].depth)
    grow = create_operator("interpolation")
    for stage in schedule:
        grow.grow(model, adapter, stage.depth)
        assert adapter.block_layout(model) == adapter.stage_depths(stage.depth)
    assert _stage_sizes(model) == TORCHVISION[name]
    _is_torchvisions(model, name)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_supernets_materialise_to_the_torchvision_model(name):
    adapter = _rgb64(name)
    small = adapter.stage_depths(adapter.full.depth // 2)
    grown = adapter.create_model(sum(small))
    supernet = ElasticSupernet.grow(adapter, grown, adapter.full.depth, create_operator("mogrow"),
                                    momentum=copy.deepcopy(grown))  # fmt: skip
    supernet.materialise(adapter.full.depth)
    _is_torchvisions(grown, name)
    fresh = adapter.create_model()  # AutoProg-One's first supernet
    ElasticSupernet.from_scratch(adapter, fresh, sum(small)).materialise(adapter.full.depth)
    _is_torchvisions(fresh, name)


@pytest.mark.parametrize("operator", ["interpolation", "mogrow", "stacking", "randinit", "identity"])
def test_every_operator_grows_each_stage_towards_its_own_count(operator):
    adapter = TorchvisionResNetAdapter("resnet34", img_size=16, in_chans=1, num_classes=10)
    model = adapter.create_model(6)  # [1, 1, 3, 1]
    ema = ModelEma(model)
    blocks = adapter.get_blocks(model)
    before = [b.conv1.weight.detach().clone() for b in blocks]
    create_operator(operator).grow(model, adapter, 12, momentum=ema.module)
    assert _stage_sizes(model) == TORCHVISION["resnet34"] and _stage_sizes(ema.module) == TORCHVISION["resnet34"]
    kind = {"mogrow": "interpolation", "identity": "interpolation"}.get(operator, operator)
    sources = layout_sources(kind, [1, 1, 3, 1], [2, 3, 5, 2])
    for block, s in zip(adapter.get_blocks(model), sources, strict=True):
        inner = block.block if isinstance(block, ReZeroBlock) else block
        if s is not None:  # a copy of a block of the same stage
            torch.testing.assert_close(inner.conv1.weight, before[s], rtol=0, atol=0)
    ema.rebuild(model)
    if operator != "identity":
        reference = torchvision.models.resnet34(num_classes=10)
        reference.conv1, reference.maxpool = model.conv1, model.maxpool
        reference.load_state_dict(model.state_dict(), strict=True)


def test_copies_and_fresh_blocks_stay_in_their_stage(resnet):
    model = resnet.create_model(2)  # [0, 0, 1, 1] growable blocks
    kept = list(resnet.get_blocks(model))
    create_operator("interpolation").grow(model, resnet, 4)
    assert _stage_sizes(model) == [2, 2, 2, 2]
    assert model.layer3[1] is kept[0] and model.layer4[1] is kept[1]
    for stage in (model.layer1, model.layer2):  # no block to copy there: fresh ones computing the identity
        assert torch.count_nonzero(stage[1].bn2.weight) == 0


@pytest.mark.parametrize(
    ("operator", "name", "start", "end"),
    [("interpolation", "resnet18", 2, 4), ("stacking", "resnet18", 2, 4), ("identity", "resnet34", 4, 9)],
)
def test_growth_into_empty_stages_and_identity_growth_keep_the_function(operator, name, start, end):
    """resnet18 2 -> 4 adds only fresh blocks to stages that had none: they compute the identity."""
    adapter = TorchvisionResNetAdapter(name, img_size=28, in_chans=1, num_classes=10)
    model = adapter.create_model(start).eval()
    x = torch.randn(2, 1, 20, 20)
    y0 = model(x)
    create_operator(operator).grow(model, adapter, end)
    assert len(adapter.get_blocks(model)) == end
    assert (model.eval()(x) - y0).abs().max().item() < 1e-5


def test_identity_growth_wraps_only_copies():
    adapter = TorchvisionResNetAdapter("resnet34", img_size=28, in_chans=1, num_classes=10)
    model = adapter.create_model(4)  # [1, 1, 1, 1]
    create_operator("identity").grow(model, adapter, 6)  # [1, 1, 3, 1]: two copies in layer3
    assert sum(isinstance(b, ReZeroBlock) for b in adapter.get_blocks(model)) == 2
    assert sum(isinstance(b, ReZeroBlock) for b in model.layer3) == 2


def test_randinit_adds_fresh_random_blocks_to_the_growing_stage(resnet):
    model = resnet.create_model(2)
    create_operator("randinit").grow(model, resnet, 3)
    assert _stage_sizes(model) == [1, 2, 2, 2]
    assert torch.count_nonzero(model.layer2[1].bn2.weight) > 0  # random, not the identity


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
    assert _stage_sizes(net) == [1, 2, 2, 2]
    assert name_map["layer3.1.conv1.weight"] == "autoprog_blocks.2.conv1.weight"
    assert name_map["layer2.1.conv1.weight"] is not None  # a supernet block, fresh at the supernet's making
    ema.rebuild(net)


def test_resnet34_supernet_is_weight_nesting_per_stage():
    adapter = TorchvisionResNetAdapter("resnet34", img_size=16, in_chans=1, num_classes=10)
    base = adapter.create_model(5).eval()  # [1, 1, 2, 1]
    x = torch.randn(2, 1, 16, 16)
    net = copy.deepcopy(base)
    supernet = ElasticSupernet.grow(adapter, net, 10, create_operator("interpolation"))
    sets = []
    for d in range(5, 11):
        ref = copy.deepcopy(base)
        create_operator("interpolation").grow(ref, adapter, d)
        supernet.set_depth(d)
        sets.append(set(adapter.get_block_container(net).active))
        torch.testing.assert_close(net.eval()(x), ref.eval()(x), rtol=0, atol=1e-5)
    assert all(a < b for a, b in zip(sets, sets[1:], strict=False))  # nested


def test_old_layouts_are_refused_with_one_line(resnet):
    """A checkpoint of a ResNet grown by an older autoprog (copies in their source's stage)."""
    with pytest.raises(ConfigError, match=r"\[1, 1, 3, 3\] blocks per stage, which this autoprog never grows") as e:
        resnet.create_model_from_layout([0, 0, 2, 2])
    assert "\n" not in str(e.value) and "start the run afresh" in str(e.value)
    assert _stage_sizes(resnet.create_model_from_layout([0, 1, 1, 1])) == [1, 2, 2, 2]


def test_factory_and_errors():
    assert isinstance(create_adapter("resnet50", img_size=32, in_chans=3, num_classes=10), TorchvisionResNetAdapter)
    with pytest.raises(ConfigError, match="unknown ResNet"):
        create_adapter("resnet7", img_size=32, in_chans=3, num_classes=10)
