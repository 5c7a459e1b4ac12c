"""AutoProg-Zero as the growth-schedule chooser of pre-training (paper Sec. 5.2.3, Tab. V).

The controller scores every candidate of a stage's growth space zero-shot (NTK condition number,
ZiCo, runtime term; ranked voting, Eq. 16-19) and grows into the winner; ``autoprog pretrain
--method autoprog-zero`` records each search in ``summary.json``.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import load_script, make_cell_dataset

import autoprog.search.zero_shot_growth as zero_shot_growth_module
from autoprog.adapters import TimmViTAdapter
from autoprog.bench import parse_variant, split_variants
from autoprog.cli import main
from autoprog.controller import GrowthController, ZeroShotProbe, create_plan
from autoprog.errors import ConfigError
from autoprog.growth.schedule import GrowthSpace, SubnetConfig
from autoprog.search.one_shot import stage_candidates
from autoprog.train.config import PretrainConfig

SPACE = GrowthSpace(16, 4, 4, ratio=0.5, num_stages=3)  # resolutions 8/12/16 (patch 4), depths 2/3/4
TWO_STAGES = GrowthSpace(16, 4, 4, ratio=0.5, num_stages=2)  # stage 0: {8, 16} px x {2, 4} blocks
TIME_ONLY = {"time": 1.0, "ntk": 0.0, "zico": 0.0}


@pytest.fixture
def small_adapter() -> TimmViTAdapter:
    """timm's test ViT (width 64) at 16x16 grey, patch 4, depth 4: many zero-shot scorings in seconds."""
    return TimmViTAdapter("test_vit", img_size=16, in_chans=1, num_classes=10, patch_size=4, depth=4)


def _cost(c: SubnetConfig) -> float:
    """A deterministic runtime term (FLOPs-like: tokens x blocks)."""
    return float((c.resolution // 4) ** 2 * c.depth)


def _controller(adapter, space=SPACE, *, weights=None, operator: str = "interpolation") -> GrowthController:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)
    ]
    probe = ZeroShotProbe(batches, ntk_samples=3, **({"weights": weights} if weights else {}))
    plan = create_plan("autoprog-zero", space, space.num_stages)
    return GrowthController(
        adapter, plan, steps_per_epoch=1, operator=operator, probe=probe, runtime_fn=_cost
    )


def _train_step(ctl: GrowthController) -> None:
    c = ctl.next_config()
    x = torch.full((4, 1, c.resolution, c.resolution), 0.5)
    loss = F.cross_entropy(ctl.model(x), torch.arange(4))
    ctl.optimizer.zero_grad()
    loss.backward()
    ctl.optimizer.step()
    ctl.end_step()


def _run(ctl: GrowthController) -> list:
    """One step per epoch to the end; returns every epoch's spec."""
    specs = []
    while (spec := ctl.begin_epoch()) is not None:
        specs.append(spec)
        _train_step(ctl)
        ctl.end_epoch()
    return specs


def _timeless(d):
    if isinstance(d, dict):
        return {k: _timeless(v) for k, v in d.items() if not k.endswith("_time_s")}
    if isinstance(d, list):
        return [_timeless(x) for x in d]
    return d


# ---------------------------------------------------------------------------------------- controller


def test_each_search_scores_exactly_the_stage_candidates_and_trains_the_scored_network(
    small_adapter, monkeypatch
):
    """Every stage but the last is chosen by ranked voting (Eq. 19) among exactly its candidates, and
    the network a candidate was scored as is the one the stage trains (RandInit: random new blocks)."""
    scored: dict[int, dict[str, torch.Tensor]] = {}
    real = zero_shot_growth_module.zero_shot_search

    def spy(model, candidates, configure, **kwargs):
        result = real(model, candidates, configure, **kwargs)
        scored.clear()
        for c in candidates:  # build each candidate again, as the search did, and keep its weights
            configure(c)
            scored[c.depth] = copy.deepcopy(model.net.state_dict())
        return result

    monkeypatch.setattr(zero_shot_growth_module, "zero_shot_search", spy)
    ctl = _controller(small_adapter, weights=TIME_ONLY, operator="randinit")  # so that stage 1 grows
    specs = []
    while (spec := ctl.begin_epoch()) is not None:
        specs.append(spec)
        if any(e.kind == "search" for e in spec.events):
            trained = ctl.model.state_dict()
            same = scored[ctl.current.depth]
            assert same.keys() == trained.keys() and all(torch.equal(same[n], trained[n]) for n in trained)
        _train_step(ctl)
        ctl.end_epoch()
    assert not any(s.supernet for s in specs) and all(s.in_budget for s in specs)  # no search epochs
    searched = [s for s in specs if any(e.kind == "search" for e in s.events)]
    assert [s.stage for s in searched] == [0, 1] and all(s.first_of_stage for s in searched)
    previous = None
    for k, record in enumerate(ctl.searches):
        rows = record["candidates"]
        assert [SubnetConfig(r["resolution"], r["depth"]) for r in rows] == stage_candidates(
            SPACE, k, previous
        )
        assert record["search"] == "zero-shot" and record["search_epochs"] == 0
        assert record["weights"] == TIME_ONLY
        for r in rows:
            assert (
                r["ntk"] >= 1.0
                and r["zico"] > 0
                and r["time"] == _cost(SubnetConfig(r["resolution"], r["depth"]))
            )
            assert set(r["ranks"]) == {"time", "ntk", "zico"}
            assert r["total"] == sum(w * r["ranks"][b] for b, w in record["weights"].items())
        best = min(rows, key=lambda r: (r["total"], r["time"]))
        chosen = SubnetConfig(**record["chosen"])
        assert (best["resolution"], best["depth"]) == (chosen.resolution, chosen.depth)
        assert ctl.schedule[k].config == chosen
        previous = chosen
    assert ctl.schedule[1].config.depth > ctl.schedule[0].config.depth  # grown, with new random blocks
    assert ctl.schedule[-1].config == SPACE.full and len(ctl.searches) == 2


def test_a_time_only_vote_picks_the_cheapest_and_a_zico_only_vote_the_highest_zico(small_adapter):
    cheap = _controller(small_adapter, TWO_STAGES, weights=TIME_ONLY)
    cheap.begin_epoch()
    assert len(cheap.searches[0]["candidates"]) == 4
    assert cheap.current == SubnetConfig(8, 2)  # the fewest tokens and blocks
    zico = _controller(small_adapter, TWO_STAGES, weights={"time": 0.0, "ntk": 0.0, "zico": 1.0})
    zico.begin_epoch()
    rows = zico.searches[0]["candidates"]
    top = max(rows, key=lambda r: r["zico"])
    assert zico.searches[0]["chosen"] == {"resolution": top["resolution"], "depth": top["depth"]}
    assert zico.current != SubnetConfig(8, 2)  # the vote decides: not the cheapest here


def _reloaded(ctl: GrowthController) -> GrowthController:
    """A new controller restored from ``ctl``'s checkpoint (plain tensors and values only)."""
    buffer = io.BytesIO()
    torch.save(ctl.state_dict(), buffer)
    buffer.seek(0)
    other = _controller(ctl.adapter, TWO_STAGES)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    return other


def test_checkpoints_before_and_after_a_decision_resume_exactly(small_adapter):
    """Before the search (a stage boundary) the restored run decides the same; after it, the
    checkpoint holds the decision (no search again); both end with the original's weights."""
    a = _controller(small_adapter, TWO_STAGES)
    before = _reloaded(a)
    a.begin_epoch()
    before.begin_epoch()
    assert before.current == a.current and _timeless(before.searches) == _timeless(a.searches)
    after = _reloaded(a)
    assert after.current == a.current and _timeless(after.searches) == _timeless(a.searches)
    spec = after.begin_epoch()
    assert spec is not None and not spec.events and not spec.first_of_stage
    _train_step(after)
    after.end_epoch()
    for ctl in (a, before):
        _train_step(ctl)
        ctl.end_epoch()
    for ctl in (a, before, after):
        _run(ctl)
    for other in (before, after):
        assert other.schedule.to_list() == a.schedule.to_list()
        for (n, p), (m, q) in zip(a.model.named_parameters(), other.model.named_parameters(), strict=True):
            assert n == m and torch.equal(p, q)


def test_a_zero_shot_plan_needs_a_probe(small_adapter):
    with pytest.raises(ConfigError, match="probe"):
        GrowthController(small_adapter, create_plan("autoprog-zero", SPACE, 3), steps_per_epoch=1)
    with pytest.raises(ConfigError, match="2 probe batches"):
        ZeroShotProbe([(torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long))])


# ---------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vote_weights": "time=nan"}, "--vote-weights: 'time=nan' is not a finite number"),
        ({"vote_weights": "ntk=1"}, "--vote-weights keys are time, ntk, zico (time required), got ['ntk']"),
        ({"vote_weights": "time=1,zico"}, "--vote-weights: bad entry 'zico' (want key=number)"),
        ({"ntk_samples": 1}, "--ntk-samples must be"),
        ({"zico_batches": 1}, "--zico-batches must be"),
        ({"method": "autoprog-zero", "stages": 1}, "autoprog-zero needs at least 2 stages"),
    ],
)
def test_bad_zero_shot_settings_are_one_line_config_errors(fields, message):
    with pytest.raises(ConfigError) as e:
        PretrainConfig(**fields).validate()
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_vote_weights_on_the_command_line(tmp_path, capsys):
    rc = main(
        [
            "pretrain",
            "--method",
            "autoprog-zero",
            "--vote-weights",
            "time=1,speed=2",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--vote-weights keys are time, ntk, zico" in err


def test_bench_variants_keep_commas_inside_vote_weights():
    text = "full,autoprog-zero:vote_weights=time=1,ntk=0,zico=0:ntk_samples=4,prog"
    variants = split_variants(text)
    assert variants == ["full", "autoprog-zero:vote_weights=time=1,ntk=0,zico=0:ntk_samples=4", "prog"]
    _, method, options = parse_variant(variants[1])
    assert method == "autoprog-zero" and options == {"vote_weights": "time=1,ntk=0,zico=0", "ntk_samples": 4}
    assert split_variants("full, prg") == ["full", "prg"]  # a typo stays a (bad) method of its own


# ---------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=200, n_test=40)


@pytest.mark.slow
def test_pretrain_autoprog_zero_writes_its_searches_and_grows(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "zero"
    argv = ["pretrain", "--method", "autoprog-zero", "--data-dir", str(data_dir), "--out", str(out), "--depth", "4",
            "--epochs", "3", "--stages", "3", "--batch-size", "16", "--train-subset", "64", "--val-size", "16",
            "--test-subset", "40", "--progress", "off", "--threads", "1", "--search-runtime", "flops",
            "--vote-weights", "time=1,ntk=0,zico=0", "--ntk-samples", "4", "--search-ntk-tensors", "weights"]  # fmt: skip
    seen = []
    search = zero_shot_growth_module.zero_shot_search
    monkeypatch.setattr(zero_shot_growth_module, "zero_shot_search",
                        lambda *a, **k: seen.append(k["ntk_tensors"]) or search(*a, **k))  # fmt: skip
    assert main(argv) == 0
    assert seen == ["weights", "weights"]  # the option reaches the vote of every search
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "autoprog-zero" and s["config"]["vote_weights"] == "time=1,ntk=0,zico=0"
    assert s["search_rule"]["ntk_tensors"] == "weights"
    assert [x["stage"] for x in s["search"]] == [0, 1]
    for record in s["search"]:
        assert record["search"] == "zero-shot" and record["weights"] == TIME_ONLY
        rows = record["candidates"]
        assert all({"ntk", "zico", "time", "ranks", "total"} <= set(r) for r in rows)
        cheapest = min(rows, key=lambda r: r["time"])  # time only, on FLOPs: the cheapest
        assert record["chosen"] == {"resolution": cheapest["resolution"], "depth": cheapest["depth"]}
    sched = s["schedule"]
    assert [(st["resolution"], st["depth"]) for st in sched[:2]] == [
        (x["chosen"]["resolution"], x["chosen"]["depth"]) for x in s["search"]
    ]
    assert (sched[-1]["resolution"], sched[-1]["depth"]) == (28, 4)
    assert s["steps"] == 3 * (64 // 16)  # no search epochs: the budget's steps only
    assert s["wall_clock_s"] >= s["search_time_s"] > 0  # the searches count as training time
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if r["event"] == "search"] == [0, 1]
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.count("| resolution | depth | log NTK κ | ZiCo | runtime | rank sum | chosen |") == 2


def test_the_stage0_vote_script_reproduces_a_runs_first_decision_without_training(data_dir, tmp_path):
    """benchmarks/zero_shot_stage0.py sets a run up as pretrain does: the same initial weights and probe,
    hence the same NTK, ZiCo and choice as the run's own stage-0 search (issue 16's vote comparisons)."""
    common = ["--data-dir", str(data_dir), "--depth", "4", "--epochs", "3", "--stages", "3", "--batch-size", "16",
              "--train-subset", "64", "--val-size", "16", "--test-subset", "40", "--threads", "1",
              "--search-runtime", "flops", "--ntk-samples", "4"]  # fmt: skip
    out = tmp_path / "zero"
    assert main(["pretrain", "--method", "autoprog-zero", "--out", str(out), "--progress", "off", *common]) == 0
    run_record = json.loads((out / "summary.json").read_text())["search"][0]
    script = load_script(Path(__file__).parents[1] / "benchmarks" / "zero_shot_stage0.py", "zero_shot_stage0")
    variants = "autoprog-zero,autoprog-zero:vote_weights=time=1,ntk=0,zico=0"
    result = script.main(["--name", "stage0", "--variants", variants, "--results-dir", str(tmp_path / "res"), "--",
                          *common])  # fmt: skip
    default, time_only = (row["record"] for row in result["rows"])
    assert default["chosen"] == run_record["chosen"]
    for ours, theirs in zip(default["candidates"], run_record["candidates"], strict=True):
        assert (ours["resolution"], ours["depth"]) == (theirs["resolution"], theirs["depth"])
        assert ours["ntk"] == theirs["ntk"] and ours["zico"] == theirs["zico"] and ours["ranks"] == theirs["ranks"]
    cheapest = min(time_only["candidates"], key=lambda r: r["time"])
    assert time_only["chosen"] == {"resolution": cheapest["resolution"], "depth": cheapest["depth"]}
    assert time_only["weights"] == TIME_ONLY
    md = (tmp_path / "res" / "stage0.md").read_text()
    assert md.count("| autoprog-zero") == 2 and (tmp_path / "res" / "stage0.png").is_file()
