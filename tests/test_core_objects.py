"""The core's small objects, each alone: the generic supernet search (sampling, score sources, the
Eq. 6 decision), step timing, the growing network and the model's recorded structure (issue 18:
one search implementation for every searched path, a layered core)."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from autoprog.adapters import TorchvisionResNetAdapter
from autoprog.adapters.base import DescribesBlocks
from autoprog.growth.growing import GrowingModel, ema_warmup_decay
from autoprog.growth.operators import ReZeroBlock, create_operator
from autoprog.growth.schedule import SubnetConfig
from autoprog.growth.structure import block_structure, model_from_structure
from autoprog.optim import build_optimizer, state_by_name
from autoprog.search.one_shot import CandidateResult, choose, power_law_score
from autoprog.search.step_times import StepTimes
from autoprog.search.supernet import RandomSampler, RoundSampler, SupernetSearch, score_and_choose
from autoprog.train.regularization import set_drop_path
from autoprog.unfreeze import UnfreezeConfig

A, B, C = UnfreezeConfig(8, 1), UnfreezeConfig(8, 2), UnfreezeConfig(16, 1)

# -- the supernet search ------------------------------------------------------------------------


def test_rounds_train_every_candidate_once_per_round_in_a_shuffled_order():
    sampler = RoundSampler(3, seed=11)
    draws = [sampler(i) for i in range(12)]
    rounds = [draws[i : i + 3] for i in range(0, 12, 3)]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order is shuffled per round
    assert [RoundSampler(3, seed=11)(i) for i in range(12)] == draws  # a function of the step alone


def test_random_sampling_continues_from_its_checkpointed_state():
    a = RandomSampler(5, seed=3)
    first = [a(i) for i in range(4)]
    state = a.state_dict()
    rest = [a(i) for i in range(4, 10)]
    b = RandomSampler(5, seed=99)
    b.load_state_dict(state)
    assert [b(i) for i in range(4, 10)] == rest and first != rest[:4]


def test_a_training_loss_search_scores_the_mean_loss_by_eq6():
    search = SupernetSearch([A, B, C], sampling="rounds", seed=0, score_source="training-loss")
    loss = {A: 2.0, B: 1.0, C: 1.5}
    for _ in range(6):
        c = search.next_candidate()
        search.record_step(loss=loss[c] + 0.1 * search.steps)
    assert [len(search.losses[c]) for c in (A, B, C)] == [2, 2, 2]
    times = [1.0, 2.0, 4.0]
    decision = search.decide(times)
    means = [search.mean_loss(c) for c in (A, B, C)]
    assert decision.losses == means and decision.runtimes == times
    assert decision.scores == pytest.approx(power_law_score(means, times))
    assert decision.index == min(range(3), key=lambda i: (decision.scores[i], times[i]))
    with pytest.raises(ValueError, match="training-loss"):
        search.add_snapshot([1.0, 1.0, 1.0])


def test_a_snapshot_search_takes_no_training_losses_and_averages_its_snapshots():
    search = SupernetSearch([A, B], sampling="random", seed=0, score_source="snapshots")
    search.next_candidate()
    with pytest.raises(ValueError, match="snapshots"):
        search.record_step(loss=1.0)
    search.record_step(seconds=0.5)
    search.add_snapshot([2.0, 1.0])
    search.add_snapshot([4.0, 3.0])
    assert search.mean_loss(A) == 3.0 and search.mean_loss(B) == 2.0
    assert search.median_time(search.last) == 0.5 and search.steps == 1


def test_unscored_candidates_never_win_and_ties_go_to_the_faster():
    d = score_and_choose([A, B, C], [1.0, math.inf, 1.0], [2.0, 1.0, 2.0])
    assert d.scores[1] is None and d.index == 0  # B has no loss; A and C tie: the earlier
    d = score_and_choose([A, B], [1.0, 1.0], [3.0, 2.0], rule=lambda losses, times: [1.0, 1.0])
    assert d.index == 1  # a tie in score: the faster
    d = score_and_choose([A, B], [math.inf, math.inf], [3.0, 2.0])
    assert d.index == 1 and d.scores == [None, None]  # nothing scored: the fastest


def test_the_generic_decision_equals_choose_on_growth_candidates():
    configs = [SubnetConfig(16, 2), SubnetConfig(16, 4), SubnetConfig(28, 4)]
    losses, times = [2.0, 1.6, 1.5], [1.0, 2.0, 4.0]
    results = [CandidateResult(c.resolution, c.depth, loss, t) for c, loss, t in zip(configs, losses, times, strict=True)]
    assert score_and_choose(configs, losses, times).chosen == choose(results).config


def test_search_state_round_trips():
    a = SupernetSearch([A, B, C], sampling="random", seed=5, score_source="snapshots")
    for _ in range(3):
        a.next_candidate()
        a.record_step(seconds=0.1)
    a.add_snapshot([1.0, 2.0, 3.0])
    b = SupernetSearch([A, B, C], sampling="random", seed=0, score_source="snapshots")
    b.load_state_dict(a.state_dict())
    assert [a.next_candidate() for _ in range(5)] == [b.next_candidate() for _ in range(5)]
    assert a.losses == b.losses and a.steps == b.steps


# -- step times ---------------------------------------------------------------------------------


def test_step_times_time_only_new_candidates_and_use_the_runtime_term_when_given():
    net = nn.Linear(4, 2)
    configured, built = [], []

    def step_for(c):
        built.append(c)
        return lambda: net(torch.ones(1, 4)).sum().backward()

    cache: dict = {}
    times = StepTimes(net, configured.append, step_for, repeats=1, warmup=0, cache=cache)
    first = times.measure([A, B])
    assert built == [A, B] and set(cache) == {A, B} and all(t > 0 for t in first)
    assert times.measure([B, C])[0] == first[1] and built == [A, B, C]  # B from the cache
    assert all(p.grad is None for p in net.parameters())
    flops = StepTimes(net, configured.append, runtime=lambda c: c.resolution * c.level)
    configured.clear()
    assert flops.measure([A, C]) == [8.0, 16.0] and configured == [A, C]  # configured first


# -- the growing network and its structure --------------------------------------------------------


def _growing(adapter, depth: int, operator: str = "interpolation") -> GrowingModel:
    torch.manual_seed(0)
    return GrowingModel(adapter, adapter.create_model(depth), operator=create_operator(operator),
                        optimizer_factory=lambda m: build_optimizer(m, 1e-3, 0.05), ema_decay=0.99)  # fmt: skip


def _train(net: GrowingModel, steps: int = 2) -> None:
    for i in range(steps):
        loss = net.model(torch.rand(2, 1, 28, 28)).pow(2).mean()
        net.optimizer.zero_grad()
        loss.backward()
        net.optimizer.step()
        net.update_ema(i)


def test_growth_carries_optimizer_moments_by_name_and_repairs_the_ema(tiny_adapter):
    net = _growing(tiny_adapter, 2)
    _train(net)
    before = {n: st["exp_avg"].clone() for n, st in state_by_name(net.optimizer).items()}
    assert net.grow(4) and net.version == 1 and net.depth == 4
    assert not net.grow(4) and net.version == 1  # the same depth: nothing changes
    after = state_by_name(net.optimizer)
    # Interpolation 2 -> 4 copies every block next to its source: blocks.1 copies blocks.0
    assert torch.equal(after["blocks.1.mlp.fc1.weight"]["exp_avg"], before["blocks.0.mlp.fc1.weight"])
    assert dict(net.ema.module.named_parameters()).keys() == dict(net.model.named_parameters()).keys()
    _train(net, 1)  # the rebuilt optimizer and EMA pairing work
    assert ema_warmup_decay(0.99, 0) == 0.0 and ema_warmup_decay(0.99, 10**6) == 0.99


def test_state_round_trip_rebuilds_rezero_wrappers_and_drop_path(tiny_adapter):
    net = _growing(tiny_adapter, 2, operator="identity")
    net.grow(3)
    set_drop_path(tiny_adapter.get_blocks(net.model), 0.2)
    _train(net)
    assert isinstance(tiny_adapter, DescribesBlocks)
    structure = block_structure(tiny_adapter, net.model)
    assert [b["rezero"] for b in structure["blocks"]] == [0, 0, 1]
    assert structure["blocks"][-1]["drop_path"] == pytest.approx([0.2, 0.2])
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = _growing(tiny_adapter, 2, operator="identity")
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert block_structure(tiny_adapter, other.model) == structure and other.version == net.version + 1
    net.model.eval(), other.model.eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(other.model(x), net.model(x), rtol=0, atol=0)


def test_a_model_without_block_state_needs_no_adapter_methods(tiny_adapter):
    class Plain:  # an adapter without block_state / restore_block_state (and no drop-path)
        def __getattr__(self, name):
            if name in ("block_state", "restore_block_state"):
                raise AttributeError(name)
            return getattr(tiny_adapter, name)

    plain = Plain()
    assert not isinstance(plain, DescribesBlocks)
    model = tiny_adapter.create_model(3)
    structure = block_structure(plain, model)
    assert structure["blocks"] == [{"rezero": 0}] * 3
    assert len(tiny_adapter.get_blocks(model_from_structure(plain, structure))) == 3


def test_a_resnet_checkpoint_of_the_old_format_still_rebuilds():
    adapter = TorchvisionResNetAdapter("resnet18", img_size=32, in_chans=1, num_classes=10, depth=4)
    layout = adapter.stage_depths(3)  # a grown sub-network of 3 growable blocks
    model = adapter.create_model_from_layout(layout)
    blocks = adapter.get_blocks(model)
    adapter.set_blocks(model, [blocks[0], ReZeroBlock(blocks[1]), *blocks[2:]])
    new = block_structure(adapter, model)
    assert new["layout"] == layout and new["blocks"][1] == {"rezero": 1}
    old = copy.deepcopy(new)  # before issue 18 every block recorded an (empty) drop-path list
    for b in old["blocks"]:
        b["drop_path"] = []
    rebuilt = model_from_structure(adapter, old)
    assert block_structure(adapter, rebuilt) == new
    assert not rebuilt.load_state_dict(model.state_dict()).missing_keys


# -- a pre-training stage's two searches, without the controller ----------------------------------


@pytest.fixture
def small_vit():
    from autoprog.adapters import TimmViTAdapter

    return TimmViTAdapter("test_vit", img_size=16, in_chans=1, num_classes=10, patch_size=4, depth=4)


def _small_growing(adapter) -> GrowingModel:
    torch.manual_seed(0)
    return GrowingModel(adapter, adapter.create_model(4), operator=create_operator("interpolation"),
                        optimizer_factory=lambda m: build_optimizer(m, 1e-3, 0.05), ema_decay=0.9)  # fmt: skip


def test_a_one_shot_growth_search_trains_a_supernet_and_keeps_the_chosen_subnetwork(small_vit):
    from autoprog.search.one_shot_growth import OneShotGrowthSearch

    net = _small_growing(small_vit)
    candidates = [SubnetConfig(8, 2), SubnetConfig(16, 2), SubnetConfig(16, 4)]
    search = OneShotGrowthSearch(
        net, 0, 0, candidates, 1, steps_per_epoch=4, snapshots=2, seed=0,
        score_fn=lambda m, c: float(m(torch.ones(2, 1, c.resolution, c.resolution)).abs().mean()),
        runtime_fn=lambda c: c.resolution * c.depth,
    )  # fmt: skip
    search.build_supernet(None, recycle=True)
    assert net.version == 1 and search.widest == SubnetConfig(16, 4) and search.skips_blocks
    for step in range(4):
        c = search.next_config()
        loss = net.model(torch.rand(2, 1, c.resolution, c.resolution)).pow(2).mean()
        net.optimizer.zero_grad()
        loss.backward()
        net.optimizer.step()
        net.update_ema(step)
        search.end_step(0.01)
    assert search.end_epoch() and search.snapshot_steps == {2, 4}
    assert all(len(search.search.losses[c]) == 2 for c in candidates)  # two snapshots each
    chosen, record = search.conclude(None, recycle=True)
    assert chosen in candidates and net.depth == chosen.depth
    assert [(r["resolution"], r["depth"]) for r in record["candidates"]] == [(c.resolution, c.depth) for c in candidates]
    assert record["chosen"] == {"resolution": chosen.resolution, "depth": chosen.depth}


def test_a_zero_shot_growth_search_leaves_the_network_and_the_random_state_alone(small_vit):
    from autoprog.search.zero_shot_growth import ZeroShotGrowthSearch, ZeroShotProbe

    net = GrowingModel(small_vit, small_vit.create_model(2), operator=create_operator("randinit"),
                       optimizer_factory=lambda m: build_optimizer(m, 1e-3, 0.05), ema_decay=None)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    probe = ZeroShotProbe([(torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g))
                           for _ in range(2)], ntk_samples=3, weights={"time": 1.0, "ntk": 0.0, "zico": 0.0})  # fmt: skip
    weights = {n: p.detach().clone() for n, p in net.model.named_parameters()}
    rng = torch.get_rng_state()
    candidates = [SubnetConfig(16, 4), SubnetConfig(8, 3)]
    chosen, rows, used = ZeroShotGrowthSearch(net, probe, runtime_fn=lambda c: c.resolution * c.depth).choose(candidates)
    assert chosen == SubnetConfig(8, 3) and used == probe.weights  # a time-only vote: the cheapest
    assert [r["depth"] for r in rows] == [4, 3] and all(r["ntk"] >= 1.0 and r["zico"] > 0 for r in rows)
    assert torch.equal(torch.get_rng_state(), rng) and net.depth == 2 and net.version == 0
    assert all(torch.equal(p, weights[n]) for n, p in net.model.named_parameters())
