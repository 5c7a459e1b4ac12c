"""The peers (issue 17): equal-time full, Composer's progressive resizing, EfficientTrain++ and the
low-frequency crop, checked against their definitions (expected values worked out by hand from the
papers' / authors' schedules, never read off the code), then end to end through ``pretrain`` and
``bench pretrain``. Resuming them mid-run is in ``tests/test_resume.py``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cell_dataset

from autoprog.bench import _run_variants, check_matches, parse_pretrain_variant, resolve_match
from autoprog.cli import _pretrain_config, main
from autoprog.data.resize import low_frequency_crop, random_crop, resize_batch, step_generator
from autoprog.errors import ConfigError
from autoprog.flops import FlopTable
from autoprog.growth.input_schedule import (
    EfficientTrain,
    ProgressiveResizing,
    input_stages,
    pin_size,
    progressive_resizing_scale,
    randaug_magnitude,
    randaug_with_magnitude,
    segment_ends,
)
from autoprog.growth.schedule import SubnetConfig
from autoprog.train.config import PretrainConfig
from autoprog.train.loader import BatchSource
from autoprog.train.peers import batch_downsize, equal_time_epochs, trained_epochs

# ----------------------------------------------------------------------------------------------------
# The low-frequency crop on sums of cosines of known frequencies.


def cosines(n: int, comps: list[tuple[float, int, int, float]]) -> torch.Tensor:
    """``sum a cos(2 pi (u i + v j) / n + phase)`` on an ``n x n`` grid (float64)."""
    i = torch.arange(n, dtype=torch.float64).view(-1, 1)
    j = torch.arange(n, dtype=torch.float64).view(1, -1)
    out = torch.zeros(n, n, dtype=torch.float64)
    for a, u, v, phase in comps:
        out += a * torch.cos(2 * math.pi * (u * i + v * j) / n + phase)
    return out


INSIDE = [(1.0, 0, 0, 0.0), (0.8, 2, 3, 0.3), (0.7, -5, 1, 1.1), (0.6, 4, -5, -0.7), (0.3, 0, 5, 2.0)]
OUTSIDE = [(0.9, 7, 2, 0.2), (0.4, 1, 9, 0.5), (0.5, -8, -8, 1.0), (0.2, 13, 0, 0.0), (0.3, 6, 7, 0.4)]


@pytest.mark.parametrize("band", [12, 11])
def test_low_frequency_crop_keeps_exactly_the_band(band):
    """Every cosine with |u|, |v| < B/2 survives with its amplitude and phase (now sampled on the B x B
    grid: the same cycles per image); every one with |u| or |v| > B/2 vanishes."""
    x = cosines(28, INSIDE + OUTSIDE)[None, None]  # (1, 1, 28, 28)
    y = low_frequency_crop(x, band)
    assert y.shape == (1, 1, band, band)
    expected = cosines(band, INSIDE)  # all of INSIDE has |u|, |v| <= 5 < 11/2; all of OUTSIDE a side >= 7 > 6
    assert torch.allclose(y[0, 0], expected, atol=1e-10)


def test_low_frequency_crop_nyquist_component_keeps_half_its_amplitude():
    """At even B a cosine at exactly B/2 (the new Nyquist frequency) keeps half its amplitude: only its
    -B/2 bin is in the band (the authors' freq_crop does the same)."""
    x = cosines(28, [(1.0, 6, 0, 0.0), (1.0, 0, -6, 0.0)])
    y = low_frequency_crop(x, 12)
    assert torch.allclose(y, cosines(12, [(0.5, 6, 0, 0.0), (0.5, 0, 6, 0.0)]), atol=1e-10)


def test_low_frequency_crop_keeps_constants_commutes_with_normalisation_and_batches():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 28, 28, dtype=torch.float64) * 255
    assert torch.allclose(low_frequency_crop(torch.full((1, 1, 28, 28), 7.0), 16), torch.full((1, 1, 16, 16), 7.0))
    mean = torch.tensor([10.0, 20.0], dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor([2.0, 4.0], dtype=torch.float64).view(1, -1, 1, 1)
    assert torch.allclose(low_frequency_crop((x - mean) / std, 20), (low_frequency_crop(x, 20) - mean) / std)
    each = torch.stack([torch.stack([low_frequency_crop(x[n, c], 20) for c in range(2)]) for n in range(3)])
    assert torch.allclose(low_frequency_crop(x, 20), each)  # image by image, channel by channel
    assert low_frequency_crop(x, 28) is x
    u8 = (x[:, :1]).to(torch.uint8)
    assert low_frequency_crop(u8, 12).dtype == torch.float32
    with pytest.raises(ValueError):
        low_frequency_crop(x, 32)


def test_nearest_and_crop_pick_input_pixels():
    x = torch.arange(2 * 1 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    near = resize_batch(x, 16, "nearest")
    assert near.shape == (2, 1, 16, 16) and set(near.flatten().tolist()) <= set(x.flatten().tolist())
    # nearest: output pixel i takes input pixel floor(i * 28 / 16)
    rows = [math.floor(i * 28 / 16) for i in range(16)]
    assert torch.equal(near[0, 0], x[0, 0][rows][:, rows])
    crop = resize_batch(x, 16, "crop", step_generator(3, 5))
    top, left = int(crop[0, 0, 0, 0]) // 28, int(crop[0, 0, 0, 0]) % 28
    assert torch.equal(crop, x[..., top : top + 16, left : left + 16])  # one window for the batch
    assert torch.equal(crop, resize_batch(x, 16, "crop", step_generator(3, 5)))  # a pure function of (seed, step)
    corners = {int(random_crop(x, 26, step_generator(0, s))[0, 0, 0, 0]) for s in range(200)}
    assert {c // 28 for c in corners} == {c % 28 for c in corners} == {0, 1, 2}  # both borders reachable
    assert torch.equal(resize_batch(x, 16, "bilinear"),
                       F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True))  # fmt: skip
    assert resize_batch(x, 28, "crop") is x


# ----------------------------------------------------------------------------------------------------
# Composer's progressive resizing: scale(elapsed) and the pinned side, by hand.


def test_progressive_resizing_scale_follows_composer():
    # defaults: initial 0.5, delay 0.5, finetune 0.2 -> the ramp runs from 0.5 to 0.8 of training
    assert progressive_resizing_scale(0.0) == 0.5
    assert progressive_resizing_scale(0.49) == 0.5
    assert progressive_resizing_scale(0.5) == 0.5
    assert progressive_resizing_scale(0.65) == pytest.approx(0.75)  # halfway up the ramp
    assert progressive_resizing_scale(0.8) == pytest.approx(1.0)
    assert progressive_resizing_scale(0.95) == 1.0
    assert progressive_resizing_scale(0.3, initial_scale=0.25, delay_fraction=0.0, finetune_fraction=0.4) == pytest.approx(0.625)
    assert progressive_resizing_scale(0.7, delay_fraction=0.7, finetune_fraction=0.3) == 1.0  # no ramp: a jump


def test_pinned_sides_round_like_composer():
    assert pin_size(28, 0.5, 4) == 16  # 28 * 0.5 / 4 = 3.5 -> round half to even = 4 -> 16
    assert pin_size(20, 0.5, 4) == 8  # 2.5 -> 2 (half to even) -> 8
    assert pin_size(28, 0.75, 4) == 20  # 5.25 -> 5
    assert pin_size(28, 0.05, 4) == 4  # never below one increment
    assert pin_size(30, 1.0, 4) == 30  # never above the full side (Composer: scale >= 1 is a no-op)


def test_progressive_resizing_per_epoch_at_8_and_32_epochs():
    pr = ProgressiveResizing(28)
    # epoch e of 8: elapsed e/8; e < 4: 0.5 -> 16; e = 4: elapsed 0.5, ramp 0 -> 16;
    # e = 5: ramp (0.625-0.5)/0.3 = 0.417, scale 0.708, 28*0.708/4 = 4.96 -> 20; e = 6: ramp 0.833, scale 0.917,
    # 6.42 -> 24; e = 7: elapsed 0.875 >= 0.8 -> 28
    assert [pr.at_epoch(e, 8).resolution for e in range(8)] == [16, 16, 16, 16, 16, 20, 24, 28]
    # 32 epochs: 16 px until elapsed 18/32 = 0.5625 (scale 0.604, 4.23 -> 16); e = 19: 0.656 -> 4.59 -> 20;
    # e = 21: 0.76 -> 5.32 -> 20; e = 22: 0.8125 -> 5.69 -> 24; e = 24: 0.917 -> 6.42 -> 24;
    # e = 25: 0.969 -> 6.78 -> 28; from e = 26 (elapsed >= 0.8) 28
    expected = [16] * 19 + [20] * 3 + [24] * 3 + [28] * 7
    assert [pr.at_epoch(e, 32).resolution for e in range(32)] == expected
    assert pr.at_epoch(3, 8).randaug is None
    assert ProgressiveResizing(28, randaug="rand-m9").at_epoch(0, 8).randaug == "rand-m9"  # constant


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"initial_scale": 0.0}, "--initial-scale must be in"), ({"delay_fraction": 0.6, "finetune_fraction": 0.5}, "must be <= 1"),
     ({"finetune_fraction": -0.1}, "--finetune-fraction"), ({"size_increment": 0}, "--size-increment")],
)  # fmt: skip
def test_progressive_resizing_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ProgressiveResizing(28, **kwargs)
    with pytest.raises(ConfigError, match=message):
        PretrainConfig(method="progressive-resizing", **kwargs).validate()


# ----------------------------------------------------------------------------------------------------
# EfficientTrain++: 10 segments, bands 96, 96, 160 x 4, 192 x 2, 224 x 2 of 224, magnitudes 0..9.


def test_efficienttrain_segments_and_bands_at_10_epochs():
    et = EfficientTrain(28, 4, randaug="rand-m9-mstd0.5-inc1")
    # one epoch per segment; bands 96/224 * 28 = 12, 160/224 * 28 = 20, 192/224 * 28 = 24, 28
    assert [et.at_epoch(e, 10).resolution for e in range(10)] == [12, 12, 20, 20, 20, 20, 24, 24, 28, 28]
    assert [et.at_epoch(e, 10).randaug for e in range(3)] == [f"rand-m{m}-mstd0.5-inc1" for m in (0, 1, 2)]


def test_efficienttrain_at_8_and_32_epochs():
    # segment i ends at epoch int(E / 10 * (i + 1)): 8 epochs -> 0, 1, 2, 3, 4, 4, 5, 6, 7, 8: segments 0 and 5
    # get no epoch, epochs 0..7 train in segments 1, 2, 3, 4, 6, 7, 8, 9
    assert segment_ends(8, 10) == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]
    et = EfficientTrain(28, 4, randaug="rand-m9-mstd0.5-inc1")
    assert [et.at_epoch(e, 8).resolution for e in range(8)] == [12, 20, 20, 20, 24, 24, 28, 28]
    assert [randaug_magnitude(et.at_epoch(e, 8).randaug) for e in range(8)] == [1, 2, 3, 4, 6, 7, 8, 9]
    # 32 epochs: ends 3, 6, 9, 12, 16, 19, 22, 25, 28, 32
    assert segment_ends(32, 10) == [3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    assert [et.at_epoch(e, 32).resolution for e in range(32)] == [12] * 6 + [20] * 13 + [24] * 6 + [28] * 7
    mags = [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 4 + [5] * 3 + [6] * 3 + [7] * 3 + [8] * 3 + [9] * 4
    assert [randaug_magnitude(et.at_epoch(e, 32).randaug) for e in range(32)] == mags
    stages = input_stages(et, 32)
    assert [(s["start_epoch"], s["end_epoch"], s["resolution"]) for s in stages][:3] == [(0, 3, 12), (3, 6, 12), (6, 9, 20)]


def test_efficienttrain_other_schedules_and_magnitudes():
    # EfficientTrain v1 (ET_training.py): 5 segments, B = 160, 160, 160, 192, 224, m = 1, 3, 5, 7, 9
    v1 = EfficientTrain(28, 4, "v1", randaug="rand-m9-mstd0.5-inc1")
    assert [v1.at_epoch(e, 5).resolution for e in range(5)] == [20, 20, 20, 24, 28]
    assert [randaug_magnitude(v1.at_epoch(e, 5).randaug) for e in range(5)] == [1, 3, 5, 7, 9]
    generic = EfficientTrain(28, 4, "generic")
    assert [generic.at_epoch(e, 10).resolution for e in range(10)] == [12, 12, 20, 20, 20, 20, 28, 28, 28, 28]
    assert generic.at_epoch(0, 10).randaug is None  # no --randaug: only the band ramps
    # the run's magnitude is the last segment's: m6 -> round(6 * i / 9)
    six = EfficientTrain(28, 4, randaug="rand-m6-n2")
    assert [randaug_magnitude(six.at_epoch(e, 10).randaug) for e in range(10)] == [0, 1, 1, 2, 3, 3, 4, 5, 5, 6]
    # at 224 px and patch 16 the scaled bands are the authors' pixels
    assert [EfficientTrain(224, 16).at_epoch(e, 10).resolution for e in range(10)] == [96] * 2 + [160] * 4 + [192] * 2 + [224] * 2
    with pytest.raises(ConfigError, match="unknown EfficientTrain schedule"):
        EfficientTrain(28, 4, "nope")


def test_randaug_strings():
    assert randaug_magnitude("rand-m9-mstd0.5-inc1") == 9
    assert randaug_magnitude("rand-mstd0.5") == 10  # timm's default magnitude
    assert randaug_with_magnitude("rand-m9-mstd0.5-inc1", 3) == "rand-m3-mstd0.5-inc1"
    assert randaug_with_magnitude("rand-n2-mstd1", 4) == "rand-m4-n2-mstd1"


# ----------------------------------------------------------------------------------------------------
# Equal-time full: epochs, rounding, validation.


def test_equal_time_epochs_round_half_up_at_least_one():
    assert equal_time_epochs(32, 0.53) == 17  # 16.96
    assert equal_time_epochs(8, 0.5625) == 5  # 4.5: halves up
    assert equal_time_epochs(8, 0.55) == 4  # 4.4
    assert equal_time_epochs(8, 0.01) == 1  # never 0
    assert trained_epochs(PretrainConfig(method="full-equal-time", epochs=32, equal_time_epochs=9)) == 9
    assert trained_epochs(PretrainConfig(method="full-equal-time", epochs=32, equal_time_ratio=0.53)) == 17
    assert trained_epochs(PretrainConfig(method="prog", epochs=32)) == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "full-equal-time"}, "needs exactly one of"),
     ({"method": "full-equal-time", "equal_time_epochs": 3, "equal_time_ratio": 0.5}, "got both"),
     ({"method": "full-equal-time", "equal_time_ratio": 0.0}, "--equal-time-ratio must be"),
     ({"method": "prog", "equal_time_epochs": 3}, "is an option of --method full-equal-time"),
     ({"method": "prog", "input_transform": "crop"}, "--input-transform crop is for"),
     ({"method": "autoprog-zero", "input_transform": "lowfreq"}, "not available for autoprog-zero"),
     ({"method": "efficienttrain", "adaptive_reg": True}, "--adaptive-reg cannot be combined"),
     ({"method": "full", "input_transform": "sinc"}, "--input-transform must be one of")],
)  # fmt: skip
def test_peer_options_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PretrainConfig(**kwargs).validate()


# ----------------------------------------------------------------------------------------------------
# The input transform of the growth methods: their data sources serve low-frequency crops.


def test_lowfreq_sources_serve_low_frequency_crops(tmp_path):
    from autoprog.data import load_dataset

    data = load_dataset("fashion-mnist", "train", data_dir=str(make_cell_dataset(tmp_path / "d", 64, 10)))
    src = BatchSource(data, 16, shuffle=False, drop_last=True,
                      downsize=batch_downsize(PretrainConfig(method="prog", input_transform="lowfreq")))  # fmt: skip
    x, _ = next(iter(src.epoch(0, 16)))
    assert x.dtype == torch.float32
    assert torch.allclose(x, low_frequency_crop(data.images[:16].float(), 16), rtol=1e-5, atol=1e-3)
    full, _ = next(iter(src.epoch(0, 28)))
    assert torch.equal(full, data.images[:16])  # the full size is served as it is
    assert batch_downsize(PretrainConfig(method="prog")) is None  # the default: bilinear, as before
    assert batch_downsize(PretrainConfig(method="efficienttrain")) is None  # its batches are cropped in the loop


# ----------------------------------------------------------------------------------------------------
# End to end: pretrain and bench pretrain.

TINY = ["--depth", "4", "--epochs", "8", "--batch-size", "32", "--train-subset", "128", "--val-size", "32",
        "--test-subset", "60", "--progress", "off", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=300, n_test=60)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "extra", "sizes", "transform"),
    [("progressive-resizing", [], [16, 16, 16, 16, 16, 20, 24, 28], "nearest"),
     ("efficienttrain", [], [12, 20, 20, 20, 24, 24, 28, 28], "lowfreq")],
)  # fmt: skip
def test_input_schedule_runs_train_and_count_each_step_at_its_size(cells, tmp_path, method, extra, sizes, transform):
    out = tmp_path / method
    assert main(["pretrain", "--method", method, "--data-dir", str(cells), "--out", str(out), *TINY, *extra]) == 0
    s = json.loads((out / "summary.json").read_text())
    steps = [r for r in _records(out) if r["event"] == "step"]
    per_epoch = 128 // 32
    assert [r["resolution"] for r in steps] == [size for size in sizes for _ in range(per_epoch)]
    assert all(r["depth"] == 4 for r in steps)  # the full model throughout
    assert s["input_transform"] == transform and s["operator"] is None
    assert [(st["start_epoch"], st["resolution"]) for st in s["input_schedule"]][0] == (0, sizes[0])
    assert [(st["resolution"], st["depth"]) for st in s["schedule"]] == [(28, 4)]
    # FLOPs: every step at its actual input size (per-sample FLOPs of (size, depth 4) x batch)
    flops = FlopTable(_adapter().create_model, 1)
    expected = sum(flops(SubnetConfig(size, 4)) * 32 * per_epoch for size in sizes)
    assert s["train_flops"] == expected and s["full_flops"] == flops(SubnetConfig(28, 4)) * 32 * per_epoch * 8
    assert s["flops_ratio"] < 0.8


def _adapter():
    from autoprog.adapters.base import create_adapter

    return create_adapter("vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=4)


@pytest.mark.slow
def test_full_equal_time_trains_fewer_epochs_with_a_fully_decayed_schedule(cells, tmp_path):
    out = tmp_path / "eq"
    args = ["pretrain", "--method", "full-equal-time", "--equal-time-ratio", "0.3", "--data-dir", str(cells),
            "--out", str(out), *TINY]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["epochs"] == 2 and s["budget_epochs"] == 8  # round(8 x 0.3) = round(2.4) = 2
    assert s["flops_ratio"] == pytest.approx(2 / 8) and s["steps"] == 2 * 4
    lrs = [r["lr"] for r in _records(out) if r["event"] == "step"]
    cfg = PretrainConfig()
    # 8 steps, 1 warm-up epoch (4 steps): the last step's LR is the cosine's end, close to min_lr
    last = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * 3 / 4))
    assert lrs[-1] == pytest.approx(last) and lrs[-1] < 0.2 * cfg.lr


def _bench_args(**kw) -> argparse.Namespace:
    from autoprog.cli import build_parser

    args = build_parser().parse_args(["bench", "pretrain", "--methods", kw.pop("methods"), "--seeds", "0,1"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_bench_matches_the_time_of_the_same_seed():
    variants = [parse_pretrain_variant(v) for v in ("full", "prog", "full-equal-time:match=prog")]
    assert variants[2] == ("full-equal-time:match=prog", "full-equal-time", {"match": "prog"})
    check_matches(variants)
    times = {("full", 0): 100.0, ("prog", 0): 53.0, ("full", 1): 200.0, ("prog", 1): 110.0}
    seen = []

    def fake_run(cfg):  # no training: a summary with a wall-clock
        seen.append(cfg)
        label = {"full": "full", "prog": "prog"}.get(cfg.method, "eq")
        return {"seed": cfg.seed, "method": cfg.method, "wall_clock_s": times.get((label, cfg.seed), 1.0)}

    args = _bench_args(methods="full,prog,full-equal-time:match=prog", runs_dir="/tmp/unused")
    runs = _run_variants(args, variants, "t", {"epochs": 32}, _pretrain_config, fake_run, resolve=resolve_match)
    eq = [c for c in seen if c.method == "full-equal-time"]
    assert [c.equal_time_ratio for c in eq] == [pytest.approx(0.53), pytest.approx(0.55)]
    assert [trained_epochs(c) for c in eq] == [17, 18]  # round(32 x 0.53) = 17, round(32 x 0.55) = round(17.6) = 18
    assert runs[2]["equal_time_match"] == {"label": "prog", "time_ratio": pytest.approx(0.53)}
    assert runs[5]["label"] == "full-equal-time:match=prog" and runs[5]["seed"] == 1


@pytest.mark.parametrize(
    ("methods", "message"),
    [("prog,full-equal-time:match=prog", "list 'full' before it"), ("full,full-equal-time:match=prog,prog", "list 'prog' before it"),
     ("full,prog,prog:match=full", "match= is an option of full-equal-time"),
     ("full,prog,full-equal-time:match=prog:equal_time_epochs=3", "drop equal_time_epochs")],
)  # fmt: skip
def test_bench_refuses_bad_matches_before_running(methods, message):
    from autoprog.bench import split_variants

    with pytest.raises(ConfigError, match=message):
        check_matches([parse_pretrain_variant(v) for v in split_variants(methods)])
