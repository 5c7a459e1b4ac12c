"""End-to-end runs of the ``autoprog`` command on a tiny Fashion-MNIST-format dataset (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script, make_cell_dataset

from autoprog.cli import main

TINY = ["--depth", "4", "--epochs", "4", "--batch-size", "32", "--train-subset", "128", "--val-size", "32",
        "--test-subset", "100", "--progress", "off"]  # fmt: skip


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("fmnist"))


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.mark.cuda  # on a GPU machine: the default device, peak memory from the CUDA allocator
def test_prog_run_grows_and_saves_flops(fmnist_dir, tmp_path):
    out = tmp_path / "prog"
    assert run_cli("pretrain", "--method", "prog", "--data-dir", fmnist_dir, "--out", out, *TINY) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("method", "model", "data", "epochs", "top1", "wall_clock_s", "train_flops", "full_flops", "schedule"):
        assert key in s
    assert s["method"] == "prog" and s["epochs"] == 4
    sched = s["schedule"]
    assert [st["stage"] for st in sched] == [0, 1, 2, 3]
    assert [st["start_epoch"] for st in sched] == [0, 1, 2, 3] and sched[-1]["end_epoch"] == 4
    res, depth = [st["resolution"] for st in sched], [st["depth"] for st in sched]
    assert res == sorted(res) and res[0] < res[-1] == 28 and all(r % 4 == 0 for r in res)
    assert depth == [2, 3, 3, 4]
    assert s["train_flops"] / s["full_flops"] < 0.7
    assert 0.0 <= s["top1"] <= 100.0
    # log.jsonl: one record per step, per epoch and per stage
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "step" for r in records) == s["steps"] == 4 * (128 // 32)
    assert sum(r["event"] == "stage" for r in records) == 4
    # stage-boundary checkpoints load without unpickling, and hold the grown model
    ckpt = torch.load(out / "checkpoints" / "stage3.pt", weights_only=True)
    assert ckpt["stage"] == 3 and ckpt["epoch"] == 4
    assert sum(k.endswith("attn.qkv.weight") for k in ckpt["model"]) == 4
    assert len(list((out / "checkpoints").glob("stage*.pt"))) == 4
    # peak memory per stage (RSS on the CPU)
    assert all(isinstance(st["peak_mem_bytes"], int) and st["peak_mem_bytes"] > 0 for st in s["stages"])


def test_full_run_learns_and_counts_full_flops(fmnist_dir, tmp_path):
    out = tmp_path / "full"
    args = ["pretrain", "--method", "full", "--data-dir", fmnist_dir, "--out", out, *TINY]
    args[args.index("--epochs") + 1] = "6"
    args[args.index("--train-subset") + 1] = "256"
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["train_flops"] == s["full_flops"]
    assert s["schedule"] == [{"stage": 0, "start_epoch": 0, "end_epoch": 6, "resolution": 28, "depth": 4}]
    assert s["top1"] > 40.0  # the cell task is easy: well above chance (10 %) after 48 tiny steps


def test_schedule_replay(fmnist_dir, tmp_path):
    first = tmp_path / "a"
    assert run_cli("pretrain", "--method", "prog", "--data-dir", fmnist_dir, "--out", first, *TINY) == 0
    again = tmp_path / "b"
    code = run_cli("pretrain", "--method", "full", "--schedule", first / "summary.json",
                   "--data-dir", fmnist_dir, "--out", again, *TINY)  # fmt: skip
    assert code == 0
    a = json.loads((first / "summary.json").read_text())
    b = json.loads((again / "summary.json").read_text())
    assert a["schedule"] == b["schedule"] and a["train_flops"] == b["train_flops"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "magic"], "invalid choice"),
        (["--operator", "magic"], "invalid choice"),
    ],
)
def test_argparse_rejects_bad_choices(fmnist_dir, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("pretrain", "--data-dir", fmnist_dir, "--out", tmp_path / "x", *args)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--ratio", "1.5"], "ratio must be in (0, 1]"),
        (["--ratio", "0"], "ratio must be in (0, 1]"),
        (["--method", "prog", "--stages", "5", "--epochs", "4"], "5 stages need at least 5 epochs"),
        (["--model", "vit_nope"], "unknown timm model"),
        (["--model", "resnet_x"], "unknown ResNet"),
        (["--model", "convnext_x"], "unknown model"),
        (["--data", "nope"], "unknown dataset"),
        (["--patch-size", "5", "--img-size", "28"], "multiple of the patch size"),  # alone: the size is rounded
        (["--epochs", "0"], "--epochs must be >= 1"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(fmnist_dir, tmp_path, args, message, capsys):
    code = run_cli("pretrain", "--data-dir", fmnist_dir, "--out", tmp_path / "x", *TINY, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("autoprog: error:") and "\n" not in err
    assert message.lower() in err.lower()


def test_missing_dataset_names_the_install_command(tmp_path, capsys):
    code = run_cli("pretrain", "--data-dir", tmp_path / "nope", "--out", tmp_path / "x", *TINY)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "apt-get install -y dataset-fashion-mnist" in err


def test_schedule_file_that_does_not_fit(fmnist_dir, tmp_path, capsys):
    bad = tmp_path / "sched.json"
    bad.write_text(json.dumps({"schedule": [{"stage": 0, "start_epoch": 0, "end_epoch": 4, "resolution": 28, "depth": 9}]}))
    code = run_cli("pretrain", "--schedule", bad, "--data-dir", fmnist_dir, "--out", tmp_path / "x", *TINY)
    assert code == 2 and "does not fit the model" in capsys.readouterr().err


def test_bench_quick_writes_results(fmnist_dir, tmp_path, capsys):
    results = tmp_path / "results"
    code = run_cli("bench", "pretrain", "--quick", "--methods", "full,prog", "--data-dir", fmnist_dir,
                   "--depth", "2", "--results-dir", results, "--runs-dir", tmp_path / "runs", "--progress", "off")  # fmt: skip
    assert code == 0
    obj = json.loads((results / "pretrain-quick.json").read_text())
    assert [r["method"] for r in obj["runs"]] == ["full", "prog"]
    assert all("summary" not in r and "top1" in r for r in obj["runs"])
    agg = {row["method"]: row for row in obj["aggregate"]}
    prog, full = obj["runs"][1], obj["runs"][0]
    assert agg["prog"]["flops_ratio"] == pytest.approx(prog["train_flops"] / prog["full_flops"])
    assert agg["prog"]["wall_clock_ratio"] == pytest.approx(prog["wall_clock_s"] / full["wall_clock_s"])
    assert (results / "pretrain-quick.md").read_text().count("| prog |") == 1
    assert (results / "pretrain-quick.png").read_bytes()[:4] == b"\x89PNG"
    assert "| full |" in capsys.readouterr().out


def test_bench_resume_reuses_finished_runs_continues_cut_ones_and_refuses_another_config(fmnist_dir, tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["bench", "pretrain", "--quick", "--methods", "full,prog", "--data-dir", fmnist_dir, "--depth", "2",
            "--epochs", "2", "--stages", "2", "--results-dir", results, "--runs-dir", runs, "--progress", "off"]  # fmt: skip
    assert run_cli(*argv) == 0
    first = json.loads((results / "pretrain-quick.json").read_text())
    prog_dir = runs / "pretrain-quick" / "prog-seed0"
    assert (prog_dir / "checkpoints" / "last.pt").is_file()
    (prog_dir / "summary.json").unlink()  # as if the invocation had been killed inside prog's run
    more = [a if a != "full,prog" else "full,prog,full:lr=0.002" for a in argv]  # never run: fresh
    assert run_cli(*more, "--resume") == 0
    out = capsys.readouterr().out
    assert "full, seed 0 (reused)" in out and "prog, seed 0 (continued)" in out and "full:lr=0.002, seed 0\n" in out
    again = json.loads((results / "pretrain-quick.json").read_text())
    assert again["resumed"] == ["full seed 0: reused", "prog seed 0: continued"] and "resumed" not in first
    assert "- resumed (`--resume`): full seed 0: reused; prog seed 0: continued." in (
        results / "pretrain-quick.md").read_text()  # fmt: skip
    full0, full1 = first["runs"][0], again["runs"][0]
    assert full1["wall_clock_s"] == full0["wall_clock_s"] and full1["top1"] == full0["top1"]  # not run again
    events = [json.loads(line)["event"] for line in (prog_dir / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and again["runs"][1]["top1"] == first["runs"][1]["top1"]  # continued exactly
    assert run_cli(*argv, "--resume", "--lr", "0.01") == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "full-seed0" in err and "\n" not in err.strip()
    # A fresh checkout has no run folders: benchmarks/restore_runs.py puts a committed result's runs back
    # (under another bench name here), and --resume reuses them instead of training again.
    restore = load_script(Path(__file__).parents[1] / "benchmarks" / "restore_runs.py", "restore_runs")
    written = restore.restore(results / "pretrain-quick.json", "copied", runs, ["full"], [0])
    assert written == [runs / "copied" / "full-seed0" / "summary.json"]
    assert restore.restore(results / "pretrain-quick.json", "copied", runs, ["full"], [0]) == []  # never overwrites
    copied = [a if a != "full,prog" else "full" for a in argv] + ["--name", "copied", "--resume"]
    assert run_cli(*copied) == 0 and "full, seed 0 (reused)" in capsys.readouterr().out
    assert json.loads((results / "copied.json").read_text())["runs"][0]["top1"] == first["runs"][0]["top1"]


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "autoprog.cli", "pretrain", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--operator" in out.stdout and "mogrow" in out.stdout


def _subparsers(parser, prefix=""):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_help_shows_every_default_and_groups_every_option():
    """Issue 21: --help was one flat group of 55 options, ~30 without their default."""
    from autoprog.cli import GROUPS, _HelpFormatter, build_parser

    for name, parser in _subparsers(build_parser()):
        formatter = _HelpFormatter(name)
        for action in parser._actions:
            if not action.option_strings or action.help == "==SUPPRESS==" or action.dest == "help":
                continue
            shown = formatter._get_help_string(action) if action.help else ""
            assert action.required or "(default" in shown, f"autoprog {name} {action.option_strings[0]}: {shown!r}"
        if name in ("pretrain", "finetune", "bench pretrain", "bench finetune"):
            ungrouped = [a.option_strings[0] for a in parser._optionals._group_actions if a.dest != "help"]
            assert ungrouped == [], f"autoprog {name}: options outside the groups {GROUPS}"
            titles = [g.title for g in parser._action_groups if g._group_actions]
            assert [t for t in titles if t in GROUPS] == [t for t in GROUPS if t in titles]  # in GROUPS' order
    help_text = dict(_subparsers(build_parser()))["pretrain"].format_help()
    assert all(f"\n{title}:\n" in help_text for title in GROUPS)


def test_finetune_says_what_it_fine_tunes():
    from autoprog.cli import build_parser

    parser = build_parser()
    listed = parser.format_help()
    finetune = dict(_subparsers(parser))["finetune"].format_help()
    for text in (listed, finetune):
        assert "diffusion model, a text-to-image model or a classifier" in " ".join(text.split())


def test_every_pretrain_config_option_is_on_the_command_line():
    from autoprog.cli import _PRETRAIN_FIELDS, build_parser

    pretrain = dict(_subparsers(build_parser()))["pretrain"]
    assert _PRETRAIN_FIELDS <= {a.dest for a in pretrain._actions}


def test_autoprog_one_searches_each_stage_and_recycles(fmnist_dir, tmp_path):
    out = tmp_path / "ap1"
    args = ["pretrain", "--method", "autoprog-one", "--search-rule", "paper", "--data-dir", fmnist_dir, "--out", out, *TINY,
            "--search-samples", "64"]  # fmt: skip
    args[args.index("--epochs") + 1] = "8"
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [x["stage"] for x in s["search"]] == [0, 1, 2]
    for search in s["search"]:
        cands = search["candidates"]
        chosen = search["chosen"]
        assert {"resolution": chosen["resolution"], "depth": chosen["depth"]} in [
            {"resolution": c["resolution"], "depth": c["depth"]} for c in cands
        ]
        if len(cands) > 1:
            assert all(c["loss"] > 0 and c["runtime_s"] > 0 and c["score"] > 0 for c in cands)
            best = min(cands, key=lambda c: (c["score"], c["runtime_s"]))
            assert (best["resolution"], best["depth"]) == (chosen["resolution"], chosen["depth"])
            assert search["search_epochs"] == 1
    # the searched schedule grows, ends with the full model, and matches the choices
    sched = s["schedule"]
    assert sched[-1]["resolution"] == 28 and sched[-1]["depth"] == 4
    assert [(st["resolution"], st["depth"]) for st in sched[:3]] == [
        (x["chosen"]["resolution"], x["chosen"]["depth"]) for x in s["search"]
    ]
    assert all(a["depth"] <= b["depth"] for a, b in zip(sched, sched[1:], strict=False))
    # weight recycling: supernet epochs are training epochs, the budget is unchanged
    assert s["steps"] == 8 * (128 // 32)
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "step" for r in steps) == s["steps"]
    assert 0 < s["train_flops"] < s["full_flops"]

    # retrain from the searched schedule (Tab. XXII): the same stages, no search
    again = tmp_path / "retrain"
    args2 = ["pretrain", "--method", "prog", "--schedule", out / "summary.json", "--data-dir", fmnist_dir, "--out", again, *TINY]
    args2[args2.index("--epochs") + 1] = "8"
    assert run_cli(*args2) == 0
    r = json.loads((again / "summary.json").read_text())
    assert r["schedule"] == s["schedule"] and r["search"] == []


def test_autoprog_one_horizon_rule_reaches_the_full_resolution_within_the_budget(fmnist_dir, tmp_path):
    """The default rule (issue 16): a step-budget supernet over one resolution, scored on validation
    images at full resolution; the resolution grows one grid step per stage; the budget is unchanged."""
    out = tmp_path / "horizon"
    args = ["pretrain", "--method", "autoprog-one", "--data-dir", fmnist_dir, "--out", out, *TINY, "--search-samples", "64"]
    args[args.index("--epochs") + 1] = "8"
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["search_rule"]["name"] == "horizon" and s["val_top1"] is not None
    grid = sorted({st["resolution"] for st in s["schedule"]})
    sizes = [grid.index(st["resolution"]) for st in s["schedule"]]
    assert sizes[-1] == len(grid) - 1 and all(b - a <= 1 for a, b in zip(sizes, sizes[1:], strict=False))
    for search in s["search"]:
        assert len({c["resolution"] for c in search["candidates"]}) == 1  # the exam cannot tell them apart
        assert search["balancing_factor"] >= 0.1 or len(search["candidates"]) == 1
    assert s["steps"] == 8 * (128 // 32)
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "step" for r in steps) == s["steps"]
    # --no-recycle: the supernet runs whole extra epochs (a fraction of a stage needs recycling)
    again = tmp_path / "horizon-norecycle"
    args2 = [*args[: args.index("--out")], "--out", again, *args[args.index("--out") + 2 :], "--no-recycle"]
    assert run_cli(*args2) == 0


def test_autoprog_one_without_recycling_adds_supernet_epochs(fmnist_dir, tmp_path):
    out = tmp_path / "norecycle"
    args = ["pretrain", "--method", "autoprog-one", "--search-rule", "paper", "--no-recycle", "--data-dir", fmnist_dir,
            "--out", out, *TINY, "--search-samples", "64"]  # fmt: skip
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    n_step_records = sum(r["event"] == "step" for r in records)
    searched = sum(x["search_epochs"] for x in s["search"])
    assert s["steps"] == 4 * 4  # the budget's own steps
    assert n_step_records == s["steps"] + searched * 4  # plus the extra supernet steps
    # the extra supernet steps still follow the LR schedule from where the stage stands
    extra = [r for r in records if r["event"] == "step" and not r["in_budget"]]
    first_stage = [r["lr"] for r in extra if r["stage"] == 0]
    assert len(first_stage) == 4 and first_stage == sorted(first_stage) and first_stage[0] < first_stage[-1]


def test_progstack_uses_stacking_1_2_5(fmnist_dir, tmp_path):
    out = tmp_path / "ps"
    args = ["pretrain", "--method", "progstack", "--data-dir", fmnist_dir, "--out", out, *TINY]
    args[args.index("--epochs") + 1] = "8"
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["operator"] == "stacking"
    assert [(st["start_epoch"], st["end_epoch"], st["depth"]) for st in s["schedule"]] == [(0, 1, 1), (1, 3, 2), (3, 8, 4)]


def test_prog_on_a_resnet(fmnist_dir, tmp_path):
    out = tmp_path / "resnet"
    args = ["pretrain", "--model", "resnet18", "--method", "prog", "--data-dir", fmnist_dir, "--out", out, *TINY]
    args[args.index("--depth") + 1] = "4"
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [st["depth"] for st in s["schedule"]] == [2, 3, 3, 4]
    assert s["train_flops"] < s["full_flops"]


def _rgb_folder(root: Path, size: int = 64, per_class: int = 12) -> Path:
    """``train/`` and ``val/`` of 3 classes of ``size`` px RGB images (a user's own image folder)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("val", 4)):
        for c in range(3):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(size, size, 3, generator=gen) * 80 + 80 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize(("name", "depths", "params"), [("resnet18", [2, 3, 3, 4], 11_178_051),
                                                       ("resnet50", [6, 8, 10, 12], 23_514_179)])  # fmt: skip
def test_prog_resnet_on_rgb_images_ends_at_the_torchvision_model(tmp_path, name, depths, params):
    """Issue 21: ``resnet50 --img-size 64 --method prog`` on 64 px RGB images crashed in the FLOP count,
    and its grown model had [3, 3, 7, 3] blocks and 24,351,299 parameters; torchvision's has 23,514,179."""
    import torchvision

    data = _rgb_folder(tmp_path / "images")
    out = tmp_path / "run"
    args = ["pretrain", "--model", name, "--method", "prog", "--data", f"imagefolder:{data}", "--img-size",
            "64", "--epochs", "4", "--batch-size", "8", "--val-size", "0", "--progress", "off", "--out", out]  # fmt: skip
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [st["depth"] for st in s["schedule"]] == depths
    reference = getattr(torchvision.models, name)(num_classes=3)
    reference.load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)
    assert s["params"] == sum(p.numel() for p in reference.parameters()) == params


def test_resume_refuses_a_resnet_grown_in_the_old_layout(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "resnet"
    args = ["pretrain", "--model", "resnet18", "--method", "prog", "--data-dir", fmnist_dir, "--out", out, *TINY]
    assert run_cli(*args) == 0
    (out / "summary.json").unlink()
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["controller"]["structure"]["layout"] = [0, 0, 2, 2]  # copies kept in their source's stage
    torch.save(state, last)
    capsys.readouterr()
    assert run_cli(*args, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[1, 1, 3, 3] blocks per stage" in err and "start the run afresh" in err


def test_adaptive_regularisation_is_applied_per_stage(fmnist_dir, tmp_path):
    out = tmp_path / "areg"
    args = ["pretrain", "--method", "prog", "--adaptive-reg", "--drop-path", "0.3", "--reprob", "0.25",
            "--randaug", "rand-m9-mstd0.5-inc1", "--data-dir", fmnist_dir, "--out", out, *TINY]  # fmt: skip
    assert run_cli(*args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    regs = [r for r in records if r["event"] == "regularization"]
    assert [r["stage"] for r in regs] == [0, 1, 2, 3]
    assert [r["drop_path"] for r in regs] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert regs[0]["randaug"] == "rand-m5-mstd0.5-inc1" and regs[-1]["randaug"] == "rand-m9-mstd0.5-inc1"


@pytest.mark.slow
@pytest.mark.cuda
def test_compiled_channels_last_resnet_compiles_once_per_model_change(fmnist_dir, tmp_path, monkeypatch):
    """GPU path options on the CPU: ``--compile`` wraps the training forward once per model change
    (growth), not per step; ``--channels-last`` trains a CNN in that memory format."""
    compiled = []
    original = torch.compile

    def spy(module, **kwargs):
        compiled.append(kwargs.get("backend"))
        return original(module, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    out = tmp_path / "compiled"
    args = ["pretrain", "--model", "resnet18", "--method", "prog", "--compile", "aot_eager", "--channels-last",
            "--data-dir", fmnist_dir, "--out", out, *TINY]  # fmt: skip
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    depths = [st["depth"] for st in s["schedule"]]
    assert depths == [2, 3, 3, 4]
    assert compiled == ["aot_eager"] * len(set(depths))  # one per model (growth), 16 steps in all


@pytest.mark.slow
@pytest.mark.cuda
def test_fp16_with_a_gradient_scaler_resumes_with_its_state(fmnist_dir, tmp_path):
    out = tmp_path / "fp16"
    args = ["pretrain", "--method", "prog", "--mixed-precision", "fp16", "--data-dir", fmnist_dir, "--out", out, *TINY]
    assert run_cli(*args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 16 and [st["depth"] for st in s["schedule"]] == [2, 3, 3, 4]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
