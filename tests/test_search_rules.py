"""The search rules (issue 16, :mod:`autoprog.search.rules`): reachability, rounds, the floored
score, the vote's equal weights, step-budget supernets, and the paper rule as it was."""

from __future__ import annotations

import copy
import io
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cell_dataset
from torch import nn

from autoprog.cli import main
from autoprog.controller import GrowthController, create_plan
from autoprog.errors import ConfigError
from autoprog.growth.schedule import GrowthSpace, SubnetConfig
from autoprog.proxies import ntk_condition_number
from autoprog.search.one_shot import power_law_score, stage_candidates
from autoprog.search.rules import (
    SEARCH_RULES,
    controller_options,
    create_search_rule,
    floored_power_law_score,
    growth_candidates,
    resolution_floor,
    unfreeze_candidates,
)
from autoprog.search.voting import DEFAULT_WEIGHTS, ranked_vote
from autoprog.search.zero_shot import ntk_tensor_names, zero_shot_search
from autoprog.train.config import FinetuneConfig, PretrainConfig, check_same_config
from autoprog.unfreeze.schedule import UnfreezeSpace, zero_shot_candidates

HORIZON, PAPER = SEARCH_RULES["horizon"], SEARCH_RULES["paper"]


def _paths(candidates_of, stages: int):
    """Every sequence of choices a search could make, one candidate per searched stage."""
    paths = [[]]
    for k in range(stages - 1):  # the last stage is the full model
        paths = [p + [c] for p in paths for c in candidates_of(k, p[-1] if p else None)]
    return paths


@pytest.mark.parametrize("stages", [3, 4, 5])
def test_horizon_growth_always_reaches_the_full_resolution_one_step_per_stage(stages):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=stages)
    res = sorted(set(space.resolutions))  # the grid (a space of more stages than values repeats some)
    for path in _paths(lambda k, cur: growth_candidates(space, k, cur, HORIZON), stages):
        sizes = [res.index(c.resolution) for c in path] + [len(res) - 1]
        assert all(b - a <= 1 for a, b in itertools.pairwise(sizes)), path
    # the paper's rule can strand it: the smallest resolution up to the last stage, then a jump
    stranded = _paths(lambda k, cur: growth_candidates(space, k, cur, PAPER), stages)
    assert any(all(c.resolution == res[0] for c in p) for p in stranded)


def test_resolution_floor_is_the_linear_ramp_on_a_grid_of_as_many_values_as_stages():
    assert [resolution_floor([16, 20, 24, 28], k, 4) for k in range(4)] == [16, 20, 24, 28]
    assert [resolution_floor([16, 20, 24, 28], k, 3) for k in range(3)] == [20, 24, 28]
    assert [resolution_floor([8, 16, 24, 32, 40], k, 3) for k in range(3)] == [24, 32, 40]


def test_paper_rule_keeps_the_reference_candidates():
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=4)
    for k, cur in [(0, None), (1, SubnetConfig(16, 3)), (2, SubnetConfig(16, 6))]:
        assert growth_candidates(space, k, cur, PAPER) == stage_candidates(space, k, cur)
    uspace = UnfreezeSpace(32, 8, 0.25, 4, 4)
    assert unfreeze_candidates(uspace, 0, None, PAPER) == zero_shot_candidates(uspace, 0, None)


def test_horizon_unfreezing_reaches_the_full_model_on_both_axes():
    uspace = UnfreezeSpace(32, 8, 0.25, 4, 4)
    res, lev = uspace.resolutions, uspace.levels
    for path in _paths(lambda k, cur: unfreeze_candidates(uspace, k, cur, HORIZON), 4):
        r = [res.index(c.resolution) for c in path] + [len(res) - 1]
        lv = [lev.index(c.level) for c in path] + [len(lev) - 1]
        assert all(b - a <= 1 for a, b in itertools.pairwise(r)) and all(b - a <= 1 for a, b in itertools.pairwise(lv))


def test_equal_weights_let_a_larger_resolution_win_a_ballot_the_authors_weights_only_tie():
    # (8,1) (8,2) (16,1) (16,2): time grows with both axes; NTK and ZiCo both favour 16 px level 1
    ballots = [{"time": 1.0, "ntk": 30.0, "zico": 1.0}, {"time": 2.0, "ntk": 40.0, "zico": 0.5},
               {"time": 3.0, "ntk": 10.0, "zico": 3.0}, {"time": 4.0, "ntk": 20.0, "zico": 2.0}]  # fmt: skip
    assert ranked_vote(ballots, HORIZON.vote_weights).winner == 2
    assert ranked_vote(ballots, DEFAULT_WEIGHTS).winner == 0  # a tie (4 = 4), to the faster
    assert dict(PAPER.vote_weights) == dict(DEFAULT_WEIGHTS)


def test_floored_score_lets_time_count_when_the_fit_is_zero():
    losses, times = [1.00, 1.10, 0.99], [1.0, 2.0, 3.0]  # loss does not fall with time: the fitted w is 0
    fitted = power_law_score(losses, times)
    assert fitted == losses and min(range(3), key=fitted.__getitem__) == 2  # the slowest wins by 1 %
    floored = floored_power_law_score(0.1)(losses, times)
    assert min(range(3), key=floored.__getitem__) == 0  # 1.00 * 1 < 0.99 * 3**0.1
    assert floored_power_law_score(0.0) is power_law_score


def test_rule_overrides_and_refusals():
    assert create_search_rule("horizon") is HORIZON
    custom = create_search_rule("paper", reach=True)
    assert custom.name == "custom" and custom.reach and custom.exam == "train"
    with pytest.raises(ConfigError, match="--search-rule must be one of paper, horizon"):
        create_search_rule("best")
    with pytest.raises(ConfigError, match="--search-supernet-fraction must be in"):
        PretrainConfig(search_supernet_fraction=1.5).validate()
    with pytest.raises(ConfigError, match="--search-w-floor"):
        PretrainConfig(search_w_floor=-1.0).validate()
    assert PretrainConfig().search() is HORIZON and FinetuneConfig().search() is HORIZON
    assert PretrainConfig(search_rule="paper", vote_weights="time=1,ntk=1,zico=1").weights() == {
        "time": 1.0, "ntk": 1.0, "zico": 1.0}  # fmt: skip


def test_the_ntk_takes_every_learnable_tensor_or_the_weights_only_as_te_nas_does():
    names = ["blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "cls_token",
             "pos_embed", "head.weight_g", "head.bias"]  # fmt: skip
    assert ntk_tensor_names(names, "all") == names
    assert ntk_tensor_names(names, "weights") == ["blocks.0.attn.qkv.weight", "blocks.0.norm1.weight", "head.weight_g"]
    with pytest.raises(ValueError, match="all or weights"):
        ntk_tensor_names(names, "linear")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    batches = [(torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)]
    args = dict(configure=lambda c: None, forward=lambda m, inp: m(inp), ntk_inputs=(x,), zico_batches=batches,
                loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]), time_step=lambda c: 1.0)  # fmt: skip
    kappa = {t: zero_shot_search(model, ["c", "c"], **args, ntk_tensors=t)[1][0]["ntk"] for t in ("all", "weights")}
    weights = [n for n, _ in model.named_parameters() if not n.endswith("bias")]
    assert kappa["weights"] == pytest.approx(ntk_condition_number(model.eval(), (x,), args["forward"], param_names=weights))
    assert kappa["all"] == pytest.approx(ntk_condition_number(model, (x,), args["forward"]))
    assert kappa["weights"] != pytest.approx(kappa["all"])  # the biases do change the kernel
    for p in model.parameters():
        p.requires_grad_(p.ndim == 1 and p.shape[0] == 3)  # only the head's bias learns
    with pytest.raises(ValueError, match="no learnable tensor named"):
        zero_shot_search(model, ["bias only", "bias only"], **args, ntk_tensors="weights")

    # a single candidate (a stage the rule forces) is chosen without proxies or timing
    calls = []
    one = {**args, "time_step": lambda c: calls.append(c) or 1.0}
    for p in model.parameters():
        p.requires_grad_(True)
    index, rows, vote = zero_shot_search(model, ["forced"], **one)
    assert index == 0 and calls == [] and rows[0]["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert all(math.isnan(rows[0][k]) for k in ("ntk", "log_ntk", "zico", "time")) and rows[0]["ranks"]["time"] == 1
    assert zero_shot_search(model, ["a", "b"], **one)[1][0]["time"] == 1.0 and calls == ["a", "b"]

    # both named rules keep every tensor (what they always did); the option selects
    assert HORIZON.ntk_tensors == PAPER.ntk_tensors == "all"
    rule = PretrainConfig(search_ntk_tensors="weights").search()
    assert rule.name == "custom" and rule.ntk_tensors == "weights" and rule.exam == HORIZON.exam
    assert FinetuneConfig(search_rule="paper", search_ntk_tensors="weights").search().ntk_tensors == "weights"
    with pytest.raises(ConfigError, match="--search-ntk-tensors must be all or weights"):
        PretrainConfig(search_ntk_tensors="biases").validate()


def test_a_checkpoint_from_before_search_rules_resumes_only_under_the_paper_rule(tmp_path):
    old = PretrainConfig().to_dict()
    del old["search_rule"]
    old["vote_weights"] = "time=1,ntk=0.5,zico=0.5"
    check_same_config(old, PretrainConfig(search_rule="paper").to_dict(), tmp_path)
    with pytest.raises(ConfigError, match="--search-rule"):
        check_same_config(old, PretrainConfig().to_dict(), tmp_path)


def _controller(adapter, space, rule, steps_per_epoch=4, epochs=6):
    def score(net, config):
        return float(net(torch.ones(2, 1, config.resolution, config.resolution)).abs().mean())

    torch.manual_seed(0)
    return GrowthController(adapter, create_plan("autoprog-one", space, epochs), steps_per_epoch=steps_per_epoch,
                            score_fn=score, runtime_fn=lambda c: c.resolution * c.depth,
                            **controller_options(rule))  # fmt: skip


def _train(ctl: GrowthController, steps: int) -> list[SubnetConfig]:
    seen = []
    for _ in range(steps):
        c = ctl.next_config()
        loss = ctl.model(torch.full((2, 1, c.resolution, c.resolution), 0.5)).pow(2).mean()
        ctl.optimizer.zero_grad()
        loss.backward()
        ctl.optimizer.step()
        ctl.end_step(0.01)
        seen.append(c)
    return seen


def test_a_step_budget_supernet_trains_its_candidates_in_equal_rounds_and_ends_mid_epoch(tiny_adapter):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3)
    ctl = _controller(tiny_adapter, space, HORIZON, steps_per_epoch=20)  # stage 0: 2 epochs, 40 steps
    spec = ctl.begin_epoch()
    assert spec.supernet
    candidates = ctl._search.candidates
    assert {c.resolution for c in candidates} == {space.resolutions[0]}  # the validation exam: depth only
    budget = ctl._search.total_steps
    assert budget == max(2 * len(candidates), 5) < 20  # 1/8 of the stage, at least two rounds
    seen = _train(ctl, 20)  # the epoch: the search ends inside it, the chosen network trains after
    rounds = budget // len(candidates)
    for r in range(rounds):
        assert sorted(seen[r * len(candidates) : (r + 1) * len(candidates)]) == sorted(candidates)
    assert not ctl.searching and all(c == ctl.current for c in seen[budget:])
    events = ctl.end_epoch()
    assert events[0].kind == "search" and events[0].config == ctl.current


def test_a_step_budget_search_restored_after_it_concluded_mid_epoch_reports_it(tiny_adapter):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3)
    a = _controller(tiny_adapter, space, HORIZON, steps_per_epoch=8)
    a.begin_epoch()
    _train(a, a._search.total_steps + 1)  # concluded, the epoch not over
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = _controller(tiny_adapter, space, HORIZON, steps_per_epoch=8)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert _train(a, 2) == _train(b, 2)
    ea, eb = a.end_epoch(), b.end_epoch()
    assert [(e.kind, e.config) for e in ea] == [(e.kind, e.config) for e in eb] and ea[0].kind == "search"


def test_a_supernet_fraction_needs_weight_recycling(tiny_adapter):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3)
    with pytest.raises(ConfigError, match="needs weight recycling"):
        GrowthController(tiny_adapter, create_plan("autoprog-one", space, 6), steps_per_epoch=4, recycle=False,
                         score_fn=lambda net, c: 0.0, **controller_options(HORIZON))  # fmt: skip


TRIAL = create_search_rule("trial")


def _trial_controller(adapter, space, trial_fn, steps_per_epoch=10, epochs=6):
    torch.manual_seed(0)
    return GrowthController(adapter, create_plan("autoprog-one", space, epochs), steps_per_epoch=steps_per_epoch,
                            trial_fn=trial_fn, runtime_fn=lambda c: float(c.resolution * c.depth),
                            **controller_options(TRIAL))  # fmt: skip


def _digest(model: nn.Module) -> list[tuple[str, float]]:
    return [(n, float(p.detach().double().sum())) for n, p in model.named_parameters()]


def test_a_fixed_balancing_factor_lets_the_slower_of_two_win_which_the_fit_never_does():
    losses, times = [1.00, 0.90], [1.0, 1.5]
    assert min(range(2), key=power_law_score(losses, times).__getitem__) == 0  # the fit makes them tie
    fixed = floored_power_law_score(0.1, fit=False)
    assert min(range(2), key=fixed(losses, times).__getitem__) == 1  # 0.90 * 1.5**0.1 < 1.00
    assert fixed.w_fixed == 0.1 and TRIAL.exam == "trial" and not TRIAL.w_fit and TRIAL.reach


def test_a_trial_search_trains_each_candidate_alone_from_the_same_start_and_leaves_the_run_untouched(tiny_adapter):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3)
    trials: list[tuple[SubnetConfig, int, int, list]] = []
    losses = {3: 1.0, 4: 1.0, 5: 0.9, 6: 0.95}  # depth 5 is slower than 4, but better by enough

    def trial_fn(net, config, steps, step):
        assert net.depth == config.depth
        trials.append((config, steps, step, _digest(net.model)))
        for _ in range(steps):  # really train the copy: none of it may reach the run
            loss = net.model(torch.full((2, 1, config.resolution, config.resolution), 0.5)).pow(2).mean()
            net.optimizer.zero_grad()
            loss.backward()
            net.optimizer.step()
        return (losses[config.depth] if step else 1.0), 0.0  # stage 0: a tie, the fastest wins

    ctl = _trial_controller(tiny_adapter, space, trial_fn)  # stages of 2 epochs, 20 steps
    spec = ctl.begin_epoch()  # stage 0: from random weights, the smallest resolution's depths
    assert not spec.supernet and not ctl.searching and ctl.net.ema is None  # no supernet, no momentum copy
    record = next(e.detail for e in spec.events if e.kind == "search")
    assert record["search"] == "trial" and record["trial_steps"] == 4  # 5 % of 20 steps, at least 4
    assert {c["resolution"] for c in record["candidates"]} == {space.resolutions[0]}
    _train(ctl, 20)
    ctl.end_epoch(), ctl.end_epoch()
    before = ctl.current
    trials.clear()
    reference = copy.deepcopy(ctl.net)
    rng = torch.get_rng_state()
    spec = ctl.begin_epoch()  # stage 1: every candidate's copy trained from the same start
    assert torch.equal(torch.get_rng_state(), rng)
    record = next(e.detail for e in spec.events if e.kind == "search")
    configs = [t[0] for t in trials]
    assert configs == [SubnetConfig(c["resolution"], c["depth"]) for c in record["candidates"]]
    assert all(c.resolution >= space.resolutions[1] and c.depth > before.depth for c in configs)
    assert all(t[1] == 4 and t[2] == ctl.steps == 20 for t in trials)
    shared = [n for n, _ in trials[0][3] if not n.startswith("blocks.")]  # growth places blocks per depth
    assert shared
    for name in shared:  # the same start: what the candidates share was equal before each trial
        assert len({dict(t[3])[name] for t in trials}) == 1, name
    # Eq. 6 with w = 0.1 fixed: depth 5 beats the faster depth 4 by its 10 % lower loss
    assert ctl.current.depth == 5 and record["balancing_factor"] == 0.1
    torch.set_rng_state(rng)
    reference.grow(ctl.current.depth)  # the run is the stage-0 network grown into the winner, untrained
    assert _digest(ctl.model) == _digest(reference.model)


def test_a_trial_search_needs_its_trial_function(tiny_adapter):
    space = GrowthSpace(28, 6, 4, ratio=0.5, num_stages=3)
    with pytest.raises(ConfigError, match="needs trial_fn"):
        GrowthController(tiny_adapter, create_plan("autoprog-one", space, 6), steps_per_epoch=4,
                         **controller_options(TRIAL))  # fmt: skip
    with pytest.raises(ConfigError, match="--search-trial-fraction"):
        PretrainConfig(search_rule="trial", search_trial_fraction=0.0).validate()


def test_a_trial_run_that_chooses_progs_schedule_is_progs_run_exactly(tmp_path):
    """The trials draw nothing from the run and leave the network as they found it; the first stage
    starts from the smallest candidate made as Prog makes it. With time weighing so much (w = 5 on
    FLOPs) that the cheapest candidate always wins, AutoProg-One by trials trains Prog's run."""
    data = make_cell_dataset(tmp_path / "cells", n_train=200, n_test=40)
    tiny = ["--depth", "4", "--stages", "3", "--epochs", "3", "--batch-size", "32", "--train-subset", "96",
            "--val-size", "32", "--test-subset", "40", "--progress", "off", "--threads", "1",
            "--data-dir", str(data)]  # fmt: skip
    trial = ["--method", "autoprog-one", "--search-rule", "trial", "--search-w-floor", "5", "--search-runtime", "flops"]
    assert main(["pretrain", *tiny, "--method", "prog", "--out", str(tmp_path / "prog")]) == 0
    assert main(["pretrain", *tiny, *trial, "--out", str(tmp_path / "trial")]) == 0
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("prog", "trial"))
    assert a["schedule"] == b["schedule"] and [s["search"] for s in b["search"]] == ["trial"] * 2
    assert len(b["search"][0]["candidates"]) > 1  # stage 0 did try deeper candidates
    steps = [[(r["step"], r["loss"]) for r in map(json.loads, (tmp_path / n / "log.jsonl").read_text().splitlines())
              if r["event"] == "step"] for n in ("prog", "trial")]  # fmt: skip
    assert steps[0] == steps[1] and a["top1"] == b["top1"]
    wa, wb = (torch.load(tmp_path / n / "model.pt") for n in ("prog", "trial"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
