"""Progressive fine-tuning of a diffusers DiT (issue 4): unfreezing levels, frozen parameters,
Unique Stage Identifiers, the methods and the ``finetune`` CLI, on a tiny source made in seconds."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.adapters.diffusers_dit import DiTDenoiser, add_difffit_scales, add_lora, create_dit
from autoprog.cli import main
from autoprog.errors import ConfigError
from autoprog.optim import build_optimizer
from autoprog.tasks.dit import make_condition
from autoprog.train.config import FINETUNE_METHODS, FinetuneConfig
from autoprog.unfreeze import (
    UnfreezeConfig,
    UnfreezeSchedule,
    UnfreezeSpace,
    level_blocks,
    prog_unfreeze_schedule,
    set_trainable,
    step_boundaries,
    zero_shot_candidates,
)


def tiny_denoiser(depth: int = 12, sid: int | None = None) -> DiTDenoiser:
    return DiTDenoiser(create_dit(hidden=16, heads=2, depth=depth, patch_size=4), sid)


# -- unfreezing levels -------------------------------------------------------------------------


def test_levels_are_interleaved():
    assert level_blocks(12, 1) == [0, 4, 8]
    assert level_blocks(12, 2) == [0, 1, 4, 5, 8, 9]
    assert level_blocks(12, 4) == list(range(12))
    with pytest.raises(ConfigError):
        level_blocks(12, 5)


def test_set_trainable_matches_exact_module_paths():
    """Level 2 of 12 blocks learns blocks 0,1,4,5,8,9 and never 10/11 (the substring bug)."""
    den = tiny_denoiser(depth=12)
    set_trainable(den, den.block_paths(), level_blocks(12, 2), always=den.always_learnable)
    for name, p in den.named_parameters():
        if name.startswith("transformer.transformer_blocks."):
            idx = int(name.split(".")[2])
            if ".norm1.emb." in name:
                assert p.requires_grad, name  # per-block embedders always learn
            else:
                assert p.requires_grad == (idx in {0, 1, 4, 5, 8, 9}), name
        else:
            assert p.requires_grad, name  # patch embedding, final layer
    assert any(".transformer_blocks.10." in n and not p.requires_grad for n, p in den.named_parameters())


def test_frozen_parameters_never_change_and_have_no_optimizer_state():
    den = tiny_denoiser(depth=4)
    set_trainable(den, den.block_paths(), level_blocks(4, 1), always=den.always_learnable)
    frozen = {n: p.detach().clone() for n, p in den.named_parameters() if not p.requires_grad}
    assert frozen
    opt = build_optimizer(den, 1e-2, 0.0)
    x, t, y = torch.randn(4, 1, 16, 16), torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,))
    for _ in range(3):
        opt.zero_grad()
        den(x, t, y).pow(2).mean().backward()
        for n, p in den.named_parameters():
            if n in frozen:
                assert p.grad is None, n
        opt.step()
    named = dict(den.named_parameters())
    for n, v in frozen.items():
        assert torch.equal(named[n], v), n
        assert named[n] not in opt.state
    assert all(p.requires_grad for p in opt.state)


# -- spaces and schedules ---------------------------------------------------------------------


def test_unfreeze_space_and_candidates():
    space = UnfreezeSpace(28, 4, ratio=0.25, num_stages=4, num_levels=4)
    assert space.resolutions == [8, 16, 20, 28]
    assert space.full == UnfreezeConfig(28, 4)
    assert zero_shot_candidates(space, 0, None) == [
        UnfreezeConfig(8, 1), UnfreezeConfig(8, 2), UnfreezeConfig(16, 1), UnfreezeConfig(16, 2),
    ]  # fmt: skip
    assert set(zero_shot_candidates(space, 2, UnfreezeConfig(16, 3))) == {
        UnfreezeConfig(16, 3), UnfreezeConfig(16, 4), UnfreezeConfig(20, 3), UnfreezeConfig(20, 4),
    }  # fmt: skip
    assert zero_shot_candidates(space, 3, UnfreezeConfig(28, 4)) == [UnfreezeConfig(28, 4)]
    sched = prog_unfreeze_schedule(space, 100)
    assert [(s.resolution, s.level) for s in sched] == [(8, 1), (16, 2), (20, 3), (28, 4)]
    assert UnfreezeSchedule.from_list(sched.to_list()).to_list() == sched.to_list()


@pytest.mark.parametrize(
    "steps,stages,expected",
    [(10, 4, [0, 2, 5, 7, 10]), (7, 3, [0, 2, 4, 7]), (13, 4, [0, 3, 6, 9, 13]), (12, 4, [0, 3, 6, 9, 12])],
)
def test_step_boundaries_truncate_when_the_steps_do_not_divide(steps, stages, expected):
    """``linspace(0, N, S + 1)`` truncated, as the docstring says (and as the epochs of pre-training)."""
    assert step_boundaries(steps, stages) == expected
    space = UnfreezeSpace(28, 4, ratio=0.25, num_stages=stages, num_levels=4)
    assert [s.start_step for s in prog_unfreeze_schedule(space, steps)] == expected[:-1]


# -- Unique Stage Identifier --------------------------------------------------------------------


def test_stage_identifier_switches_the_condition():
    den = tiny_denoiser(depth=2, sid=4)
    with torch.no_grad():
        den.stage_embedding.weight.normal_()  # the default init is small; make differences visible
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([1, 2])
    outs = [den(x, t, y, torch.full((2,), s)) for s in range(5)]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not torch.allclose(outs[a], outs[b])
    # only the rows of the stage ids used get a gradient
    den.zero_grad()
    den(x, t, y, torch.tensor([2, 4])).pow(2).mean().backward()
    g = den.stage_embedding.weight.grad
    assert g[2].abs().sum() > 0 and g[4].abs().sum() > 0
    assert g[[0, 1, 3]].abs().sum() == 0
    # parameter names stay diffusers' own (save_pretrained / from_pretrained round trip)
    assert "transformer.transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight" in dict(
        den.named_parameters()
    )


def test_condition_uses_the_stage_id_and_drops_independently():
    g = torch.Generator().manual_seed(0)
    c = make_condition(torch.arange(1000) % 10, 2, 10, 4, 0.1, 0.1, g)
    assert set(c.stage_ids.tolist()) == {2, 4}
    dropped_label, dropped_stage = c.labels == 10, c.stage_ids == 4
    assert 50 < dropped_label.sum() < 150 and 50 < dropped_stage.sum() < 150
    assert not torch.equal(dropped_label, dropped_stage)
    assert make_condition(torch.arange(10), None, 10, 0, 0.0, 0.0, g).stage_ids is None


def test_save_and_load_round_trip(tmp_path):
    den = tiny_denoiser(depth=2, sid=3)
    den.save(tmp_path / "m")
    back = DiTDenoiser.load(tmp_path / "m")
    x, t, y, s = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([0, 3])
    torch.testing.assert_close(back(x, t, y, s), den(x, t, y, s))


@pytest.mark.parametrize("extra", ["difffit", "lora"])
def test_a_pixel_dit_saves_its_difffit_scales_and_lora_updates_folded_in(tmp_path, extra):
    den = tiny_denoiser(depth=2, sid=3)
    names = add_difffit_scales(den) if extra == "difffit" else add_lora(den, rank=2)
    with torch.no_grad():  # away from the identity, or the test could not fail
        for n, p in den.named_parameters():
            if n in names:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if extra == "difffit" else 0.0))
    den.save(tmp_path / "m")
    back = DiTDenoiser.load(tmp_path / "m")
    assert not any("difffit" in n or "lora" in n for n, _ in back.named_parameters())
    x, t, y, s = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([0, 3])
    with torch.no_grad():
        torch.testing.assert_close(back(x, t, y, s), den(x, t, y, s))


def test_baselines_learn_their_parameter_sets():
    den = tiny_denoiser(depth=2)
    names = add_difffit_scales(den)
    assert len(names) == 4 and all(
        torch.equal(dict(den.named_parameters())[n], torch.ones(16)) for n in names
    )
    den2 = tiny_denoiser(depth=2)
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4])
    before = den2(x, t, y)
    lora = add_lora(den2, rank=2)
    assert lora and all("lora_" in n for n in lora)
    torch.testing.assert_close(den2(x, t, y), before)  # LoRA starts as the identity update


# -- the command --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=200, n_test=50)


def _run(tmp_path, cells, method: str, *extra: str) -> dict:
    out = tmp_path / method
    rc = main([
        "finetune", "--model", "dit-tiny", "--data", "fashion-mnist", "--data-dir", str(cells), "--method", method,
        "--steps", "12", "--batch-size", "8", "--fid-samples", "0", "--time-repeats", "1", "--out", str(out),
        "--progress", "off", *extra,
    ])  # fmt: skip
    assert rc == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_finetune_autoprog_zero_summary_contract(tmp_path, cells):
    s = _run(tmp_path, cells, "autoprog-zero")
    for key in ("method", "fid", "wall_clock_s", "train_flops", "schedule", "search"):
        assert key in s
    assert s["method"] == "autoprog-zero" and s["sid"] is True
    assert all(isinstance(st["peak_mem_bytes"], int) and st["peak_mem_bytes"] > 0 for st in s["stages"])
    assert [st["stage"] for st in s["schedule"]] == [0, 1, 2, 3]
    assert s["schedule"][-1]["resolution"] == 28 and s["schedule"][-1]["level"] == 4
    assert all({"resolution", "level", "trainable_params"} <= set(st) for st in s["schedule"])
    assert len(s["search"]) == 3
    for rec in s["search"]:
        for c in rec["candidates"]:
            assert {"ntk", "zico", "time", "ranks", "total"} <= set(c)
            w = rec["weights"]  # the search rule's (horizon: equal weights; paper: 1 / 0.5 / 0.5)
            assert c["total"] == pytest.approx(sum(w[k] * c["ranks"][k] for k in ("time", "ntk", "zico")))
        chosen = min(rec["candidates"], key=lambda c: (c["total"], c["time"]))
        assert (chosen["resolution"], chosen["level"]) == (
            rec["chosen"]["resolution"],
            rec["chosen"]["level"],
        )
    assert 0 < s["flops_ratio"] < 1
    assert s["search_rule"]["name"] == "horizon" and s["search"][0]["weights"] == {"time": 1.0, "ntk": 1.0, "zico": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "bitfit", "difffit", "lora", "prog", "autoprog-one"])
def test_finetune_methods_run(tmp_path, cells, method):
    s = _run(tmp_path, cells, method)
    assert s["method"] == method
    if method in ("full", "bitfit", "difffit", "lora"):
        assert len(s["schedule"]) == 1 and s["sid"] is False
    if method in ("bitfit", "difffit", "lora"):
        assert s["schedule"][0]["trainable_params"] < s["params"] // 2
        assert s["flops_ratio"] < 1.0  # no weight gradients for frozen matrices
    if method == "full":
        assert s["flops_ratio"] == pytest.approx(1.0)
    if method == "autoprog-one":
        assert all("loss" in c and "score" in c for rec in s["search"] for c in rec["candidates"])


@pytest.mark.slow
def test_finetune_no_sid_flag(tmp_path, cells):
    s = _run(tmp_path, cells, "prog", "--no-sid")
    assert s["sid"] is False and s["config"]["sid"] is False


def test_finetune_config_validation():
    with pytest.raises(ConfigError, match="unknown method"):
        FinetuneConfig(method="nope").validate()
    with pytest.raises(ConfigError, match="vote-weights"):
        FinetuneConfig(vote_weights="time=1,foo=2").validate()
    with pytest.raises(ConfigError, match="stages"):
        FinetuneConfig(method="prog", steps=2, stages=4).validate()
    assert set(FINETUNE_METHODS) == {
        "full",
        "bitfit",
        "difffit",
        "lora",
        "prog",
        "autoprog-one",
        "autoprog-zero",
    }


def test_finetune_missing_model_is_one_line_error(tmp_path, capsys):
    rc = main(
        ["finetune", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--steps", "4"]
    )
    assert rc == 2
    assert "neither a folder nor a built-in source" in capsys.readouterr().err


@pytest.mark.slow
def test_each_stage_trains_at_its_own_resolution(tmp_path, cells, monkeypatch):
    """A stage change mid-epoch re-reads the epoch at the new resolution (it used to keep the old
    one until the epoch ended, so later stages trained on the first stage's small images)."""
    from autoprog.train.diffusion import GaussianDiffusion

    seen: list[int] = []
    original = GaussianDiffusion.loss

    def spy(self, model, x0, *args, **kwargs):
        seen.append(x0.shape[-1])
        return original(self, model, x0, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "loss", spy)
    s = _run(tmp_path, cells, "prog")
    planned = [st["resolution"] for st in s["schedule"] for _ in range(st["end_step"] - st["start_step"])]
    assert seen == planned and len(set(planned)) == 4


@pytest.mark.slow
def test_search_runtime_flops_makes_the_search_reproducible(tmp_path, cells):
    """With FLOPs as the runtime term nothing depends on the clock: two runs decide and train alike."""
    runs = [_run(tmp_path / str(i), cells, "autoprog-zero", "--search-runtime", "flops") for i in range(2)]

    def decisions(s: dict) -> list:
        return [
            [{k: v for k, v in c.items() if k != "scoring_time_s"} for c in rec["candidates"]]
            for rec in s["search"]
        ]

    assert decisions(runs[0]) == decisions(runs[1])
    assert runs[0]["schedule"] == runs[1]["schedule"]
    assert [st["mean_loss"] for st in runs[0]["stages"]] == [st["mean_loss"] for st in runs[1]["stages"]]


@pytest.mark.slow
def test_time_only_vote_with_flops_picks_the_cheapest_candidate(tmp_path, cells):
    s = _run(
        tmp_path, cells, "autoprog-zero", "--search-runtime", "flops", "--vote-weights", "time=1,ntk=0,zico=0",
        "--search-rule", "paper",  # every stage has 4 candidates to vote on (horizon's later stages have one)
    )
    for rec in s["search"]:
        cheapest = min(rec["candidates"], key=lambda c: c["time"])
        assert rec["chosen"] == {"resolution": cheapest["resolution"], "level": cheapest["level"]}
        assert len({c["time"] for c in rec["candidates"]}) > 1  # the test can fail: the FLOPs differ


def test_difffit_copy_uses_its_own_scales():
    """The EMA model is a deep copy: its DiffFit hooks must read the copy's scales, not the original's."""
    import copy

    den = tiny_denoiser(depth=2)
    add_difffit_scales(den)
    ema = copy.deepcopy(den)
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4])
    with torch.no_grad():
        torch.testing.assert_close(ema(x, t, y), den(x, t, y))
        for name, p in den.named_parameters():
            if "difffit_gamma" in name:
                p.mul_(3.0)  # only the original changes
        assert not torch.allclose(ema(x, t, y), den(x, t, y))
        for name, p in ema.named_parameters():
            if "difffit_gamma" in name:
                p.mul_(3.0)
        torch.testing.assert_close(ema(x, t, y), den(x, t, y))
