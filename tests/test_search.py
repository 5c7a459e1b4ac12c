from __future__ import annotations

import copy
import math

import pytest
import torch

from autoprog.ema import ModelEma
from autoprog.growth import GrowthSpace, SubnetConfig, create_operator
from autoprog.growth.elastic import ElasticBlocks, ElasticSupernet
from autoprog.search.one_shot import (
    CandidateResult,
    choose,
    measure_step_times,
    power_law_balancing_factor,
    power_law_score,
    stage_candidates,
)


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("operator", ["interpolation", "mogrow"])
def test_supernet_subnetworks_equal_interpolation_growth(tiny_adapter, operator):
    """Weight-nesting (Def. 3.1): the depth-d sub-network == the network growth to d would produce."""
    base = tiny_adapter.create_model(3)
    _perturb(base)
    base_ema = ModelEma(base, decay=0.5)
    _perturb(base)  # online and momentum differ, so MoGrow's source matters
    x = torch.randn(4, 1, 20, 20)
    supernet_model, supernet_ema = copy.deepcopy(base), copy.deepcopy(base_ema.module)
    supernet = ElasticSupernet.grow(tiny_adapter, supernet_model, 6, create_operator(operator), momentum=supernet_ema)
    for d in range(3, 7):
        reference, ref_ema = copy.deepcopy(base), copy.deepcopy(base_ema.module)
        create_operator(operator).grow(reference, tiny_adapter, d, momentum=ref_ema)
        supernet.set_depth(d)
        container = tiny_adapter.get_block_container(supernet_model)
        active = [container[p] for p in container.active]
        ref_blocks = tiny_adapter.get_blocks(reference)
        assert len(active) == d
        for a, b in zip(active, ref_blocks, strict=True):
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        supernet_model.eval(), reference.eval()
        torch.testing.assert_close(supernet_model(x), reference(x), rtol=0, atol=1e-6)


def test_subnetworks_are_nested(tiny_adapter):
    model = tiny_adapter.create_model(6)
    ElasticSupernet.from_scratch(tiny_adapter, model, 3)
    blocks: ElasticBlocks = tiny_adapter.get_block_container(model)
    sets = [set(blocks.positions(d)) for d in range(3, 7)]
    assert all(a < b for a, b in zip(sets, sets[1:], strict=False))
    assert sets[-1] == set(range(6))


def test_materialise_keeps_the_chosen_subnetwork_and_maps_names(tiny_adapter):
    model = tiny_adapter.create_model(2)
    ema = ModelEma(model)
    supernet = ElasticSupernet.grow(tiny_adapter, model, 4, create_operator("interpolation"), momentum=ema.module)
    container = tiny_adapter.get_block_container(model)
    keep = container.positions(3)
    expected = [container[p].attn.qkv.weight for p in keep]
    name_map = supernet.materialise(3)
    assert len(model.blocks) == 3 and not isinstance(model.blocks, ElasticBlocks)
    assert [b.attn.qkv.weight for b in model.blocks] == expected  # the same tensors: recycled
    for j, p in enumerate(keep):
        assert name_map[f"blocks.{j}.attn.qkv.weight"] == f"blocks.{p}.attn.qkv.weight"
    ema.rebuild(model)  # the momentum network was materialised the same way


def test_stage_candidates_follow_appendix_b():
    space = GrowthSpace(28, 6, 4, 0.5, 4)  # res [16,20,24,28], depth [3,4,5,6]
    c0 = stage_candidates(space, 0, None)
    assert sorted({c.resolution for c in c0}) == [16, 24, 28] and sorted({c.depth for c in c0}) == [3, 5, 6]
    assert len(c0) == 9 and SubnetConfig(28, 6) in c0
    c1 = stage_candidates(space, 1, SubnetConfig(16, 3))
    assert sorted({c.resolution for c in c1}) == [16, 20] and sorted({c.depth for c in c1}) == [4, 5, 6]
    c2 = stage_candidates(space, 2, SubnetConfig(24, 5))
    assert sorted({c.resolution for c in c2}) == [24, 28] and sorted({c.depth for c in c2}) == [6]
    assert stage_candidates(space, 2, SubnetConfig(28, 6)) == [SubnetConfig(28, 6)]


def test_balancing_factor_recovers_a_power_law():
    times = [0.1, 0.2, 0.4, 0.8, 1.6]
    losses = [2.0 * t**-0.3 for t in times]
    assert power_law_balancing_factor(losses, times) == pytest.approx(0.3, abs=1e-9)
    # on the fitted trend every candidate scores the same
    scores = power_law_score(losses, times)
    assert max(scores) - min(scores) < 1e-9
    # loss rising with time (b > 0) gives w = 0: pure loss
    assert power_law_balancing_factor([1.0, 1.5, 2.0], [0.1, 0.2, 0.3]) == 0.0


def test_choose_prefers_who_beats_the_trend_and_ties_to_the_faster():
    times = [0.1, 0.2, 0.4, 0.8]
    losses = [2.0 * t**-0.3 for t in times]
    losses[2] *= 0.9  # beats the trend
    results = [CandidateResult(16 + 4 * i, 3, loss, t) for i, (loss, t) in enumerate(zip(losses, times, strict=True))]
    assert choose(results).resolution == 24
    assert all(not math.isnan(r.score) for r in results)
    tie = [CandidateResult(16, 3, 1.0, 0.5), CandidateResult(20, 3, 1.0, 0.2)]
    assert choose(tie, rule=lambda losses, times: [1.0, 1.0]).resolution == 20


def test_two_candidates_degenerate_to_the_faster():
    """With two candidates the fitted power law passes through both: Eq. 6 can never prefer the slower.

    If the slower one has the lower loss, the scores tie (ties -> faster); otherwise w = 0 and the
    faster one has the lower loss anyway. The authors' rule therefore only discriminates with >= 3.
    """
    for slow_loss in (0.5, 0.9, 1.1, 2.0):
        results = [CandidateResult(16, 6, 1.0, 0.2), CandidateResult(20, 6, slow_loss, 0.3)]
        scores = power_law_score([r.loss for r in results], [r.runtime_s for r in results])
        if slow_loss < 1.0:
            assert scores[0] == pytest.approx(scores[1], rel=1e-9)
        assert choose(results).resolution == 16


def test_step_times_are_measured_in_interleaved_rounds():
    """Every candidate is configured before each of its steps, and the rounds alternate (0 1 2 0 1 2 ...),
    so a drift (cold start, a neighbour process) falls on all candidates alike."""
    calls: list[tuple[str, int]] = []
    times = measure_step_times(
        3, lambda i: calls.append(("configure", i)), lambda i: calls.append(("step", i)), repeats=2, warmup=1
    )
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert calls == [(kind, i) for _ in range(3) for i in range(3) for kind in ("configure", "step")]
    assert measure_step_times(0, lambda i: None, lambda i: None) == []
