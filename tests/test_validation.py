r"""Bad input to ``autoprog``: one line on stderr, exit code 2, no traceback (``--debug`` shows it).

Every row of the table is run in-process by ``test_bad_input_gives_one_line_and_no_traceback``,
which asserts exit code 2, exactly one line on stderr, no traceback, and that the message is the
one shown here, so the table cannot go stale: after changing a message, regenerate it with
``.venv/bin/python tests/test_validation.py`` and paste it here and into ``docs/errors.md``
(``test_table_covers_every_row_and_docs_match`` checks the copy).

``TMP`` is a scratch folder made by :func:`make_scratch`: ``TMP/data`` holds a tiny dataset in
Fashion-MNIST's format, ``TMP/finished`` a ``summary.json``, ``TMP/missing`` does not exist, and
the other ``TMP`` paths are what their names say. ``pretrain`` rows run after
``--data-dir TMP/data --out TMP/out`` and small sizes (``TINY``); ``finetune`` rows after
``--out TMP/out``; the row's own options come last and win. Every row prints
``autoprog: error: <message>`` and exits with code 2.

The property-based tests at the end draw whole configurations (ints and floats including
negatives, zero, huge values, NaN and infinities; names from the valid lists and random text;
wrong types) and assert that ``validate()`` either passes or raises an ``AutoprogError`` with a
one-line message, never any other exception; likewise for arbitrary JSON in a schedule file.

| # | check | arguments | message (after `autoprog: error: `) |
|---|---|---|---|
| 1 | model name | `autoprog pretrain --model vit_nope` | unknown timm model 'vit_nope'; any timm ViT/DeiT name works (list them with: python -c "import timm; print(timm.list_models('vit_*'))") |
| 2 | model name | `autoprog pretrain --model resnet_x` | unknown ResNet 'resnet_x'; choose from resnet18, resnet34, resnet50, resnet101 |
| 3 | model name | `autoprog pretrain --model convnext_tiny` | unknown model 'convnext_tiny': use a timm Vision Transformer name such as vit_tiny_patch16_224, vit_small_patch16_224 or deit_tiny_patch16_224, or a torchvision ResNet (resnet18, resnet34, resnet50, resnet101) |
| 4 | model name | `autoprog finetune --model TMP/nothing` | --model 'TMP/nothing' is neither a folder nor a built-in source (dit-fmnist, dit-tiny, t2i-fmnist, t2i-tiny) |
| 5 | model name | `autoprog source nope` | unknown source 'nope'; choose from dit-fmnist, dit-tiny, t2i-fmnist, t2i-tiny |
| 6 | data name | `autoprog pretrain --data nope` | unknown dataset 'nope': choose one of fashion-mnist, mnist-idx, mnist-5k, cifar10, imagefolder:PATH |
| 7 | data name | `autoprog pretrain --data imagefolder:` | imagefolder needs a path: imagefolder:PATH, PATH holding train/ and val/ |
| 8 | data name | `autoprog finetune --data nope` | unknown dataset 'nope': choose one of fashion-mnist, mnist-idx, mnist-5k, cifar10, imagefolder:PATH |
| 9 | method name | `autoprog pretrain --method magic` | argument --method: invalid choice: 'magic' (choose from 'full', 'prog', 'autoprog-one', 'autoprog-zero', 'progstack', 'full-equal-time', 'progressive-resizing', 'efficienttrain') (see: autoprog pretrain --help) |
| 10 | method name | `autoprog finetune --method magic` | argument --method: invalid choice: 'magic' (choose from 'full', 'bitfit', 'difffit', 'lora', 'prog', 'autoprog-one', 'autoprog-zero') (see: autoprog finetune --help) |
| 11 | operator name | `autoprog pretrain --operator magic` | argument --operator: invalid choice: 'magic' (choose from 'identity', 'interpolation', 'mogrow', 'randinit', 'stacking') (see: autoprog pretrain --help) |
| 12 | ratio | `autoprog pretrain --ratio 1.5` | --ratio must be in (0, 1], got 1.5 |
| 13 | ratio | `autoprog pretrain --ratio 0` | --ratio must be in (0, 1], got 0.0 |
| 14 | ratio | `autoprog pretrain --ratio nan` | --ratio must be in (0, 1], got nan |
| 15 | ratio | `autoprog finetune --ratio -0.25` | --ratio must be in (0, 1], got -0.25 |
| 16 | stages vs epochs/steps | `autoprog pretrain --method prog --stages 5 --epochs 4` | 5 stages need at least 5 epochs, got 4 |
| 17 | stages vs epochs/steps | `autoprog pretrain --method autoprog-one --stages 1` | autoprog-one needs at least 2 stages (the last one trains the full model) |
| 18 | stages vs epochs/steps | `autoprog finetune --method prog --stages 4 --steps 3` | 4 stages need at least 4 steps, got 3 |
| 19 | stages vs epochs/steps | `autoprog finetune --method autoprog-zero --stages 1` | autoprog-zero needs at least 2 stages (the last one trains the full model) |
| 20 | resolution vs patch size | `autoprog pretrain --img-size 30` | --img-size 30 is not a multiple of the patch size 4 |
| 21 | resolution vs patch size | `autoprog pretrain --patch-size 5 --img-size 28` | --img-size 28 is not a multiple of the patch size 5 |
| 22 | resolution vs patch size | `autoprog pretrain --model resnet18 --img-size 30` | resolution 30 is not a multiple of 4 |
| 23 | model cannot grow / unfreeze | `autoprog pretrain --model vit_small_patch16_dinov3 --patch-size 4` | model 'vit_small_patch16_dinov3' is not a timm VisionTransformer with a `blocks` Sequential: autoprog cannot grow its depth |
| 24 | model cannot grow / unfreeze | `autoprog pretrain --model vit_relpos_small_patch16_224 --patch-size 4` | timm model 'vit_relpos_small_patch16_224' does not take the options autoprog needs to grow it (VisionTransformerRelPos.__init__() got an unexpected keyword argument 'dynamic_img_size'); use a plain timm VisionTransformer such as vit_tiny_patch16_224 or deit_small_patch16_224 |
| 25 | model cannot grow / unfreeze | `autoprog finetune --model TMP/unet` | TMP/unet holds a UNet2DModel, not a diffusers DiT (DiTTransformer2DModel / Transformer2DModel): autoprog unfreezes a DiT's transformer_blocks and needs its class embedder |
| 26 | model cannot grow / unfreeze | `autoprog finetune --model TMP/unconditional-dit` | TMP/unconditional-dit is an unconditional DiT (num_embeds_ada_norm is null): autoprog fine-tunes class-conditional DiTs (it needs the class embedder for classifier-free guidance) |
| 27 | model cannot grow / unfreeze | `autoprog finetune --model TMP/no-weights` | TMP/no-weights has a config.json but no weights (diffusion_pytorch_model.safetensors or .bin) |
| 28 | model cannot grow / unfreeze | `autoprog finetune --model TMP/empty-folder` | --model 'TMP/empty-folder' is not a fine-tuning source: expected a diffusers DiT folder (config.json + diffusion_pytorch_model.safetensors), a DiTPipeline folder (model_index.json, transformer/, vae/, scheduler/), a text-to-image pipeline (unet/ + text_encoder/), a timm folder (config.json with architecture + model.safetensors), an `autoprog pretrain` run (summary.json + model.pt) or timm:NAME --weights FILE; make the default source with `autoprog source` |
| 29 | model folder | `autoprog finetune --model TMP/mismatched-dit` | TMP/mismatched-dit: config.json and the weights disagree: 43 tensor(s) of the model its config describes are not in the weights (e.g. pos_embed.proj.bias) |
| 30 | dataset path | `autoprog pretrain --data-dir TMP/missing` | Fashion-MNIST not found in TMP/missing (no train-images-idx3-ubyte[.gz]): install it with `apt-get install -y dataset-fashion-mnist` or pass --data-dir DIR holding the idx files |
| 31 | dataset path | `autoprog pretrain --data mnist-idx --data-dir TMP/missing` | MNIST not found in TMP/missing (no train-images-idx3-ubyte[.gz]): pass --data-dir DIR holding MNIST's idx files (train-images-idx3-ubyte[.gz] train-labels-idx1-ubyte[.gz] t10k-images-idx3-ubyte[.gz] t10k-labels-idx1-ubyte[.gz]) |
| 32 | dataset path | `autoprog pretrain --data cifar10 --data-dir TMP/missing` | CIFAR-10 not found in TMP/missing (no cifar-10-batches-py): pass --data-dir DIR holding cifar-10-batches-py (the extracted python version of CIFAR-10) |
| 33 | dataset path | `autoprog pretrain --data imagefolder:TMP/missing` | image folder dataset: TMP/missing/train not found (expected TMP/missing/train/<class>/<image> and TMP/missing/val/<class>/<image>) |
| 34 | finished run in --out | `autoprog pretrain --out TMP/finished` | --out TMP/finished already holds a finished run (TMP/finished/summary.json); pass --overwrite to replace it, or choose another --out |
| 35 | finished run in --out | `autoprog finetune --out TMP/finished` | --out TMP/finished already holds a finished run (TMP/finished/summary.json); pass --overwrite to replace it, or choose another --out |
| 36 | finished run in --out | `autoprog pretrain --out TMP/a-file` | --out TMP/a-file exists and is not a folder |
| 37 | output folder | `autoprog pretrain --out TMP/a-file/run` | --out TMP/a-file/run cannot be created or written (Not a directory); choose a folder you can write to |
| 38 | schedule file | `autoprog pretrain --schedule TMP/missing.json` | schedule file TMP/missing.json does not exist |
| 39 | schedule file | `autoprog pretrain --schedule TMP/not-json.json` | schedule file TMP/not-json.json is not JSON: Expecting property name enclosed in double quotes: line 1 column 3 (char 2) |
| 40 | schedule file | `autoprog pretrain --schedule TMP/binary.json` | schedule file TMP/binary.json is not JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte |
| 41 | schedule file | `autoprog pretrain --schedule TMP/no-schedule.json` | schedule file TMP/no-schedule.json holds no schedule: expected a summary.json with a "schedule" list, or a bare list of stages |
| 42 | schedule file | `autoprog pretrain --schedule TMP/bad-stage.json` | schedule file TMP/bad-stage.json: not a growth schedule (each stage needs stage, start_epoch, end_epoch, resolution, depth): 'start_epoch' |
| 43 | schedule file | `autoprog pretrain --schedule TMP/gap.json` | schedule file TMP/gap.json: not a growth schedule (each stage needs stage, start_epoch, end_epoch, resolution, depth): stage 1 covers epochs [3, 4): not contiguous |
| 44 | schedule file | `autoprog pretrain --schedule TMP/infinite.json` | schedule file TMP/infinite.json: not a growth schedule (each stage needs stage, start_epoch, end_epoch, resolution, depth): cannot convert float infinity to integer |
| 45 | schedule file | `autoprog pretrain --schedule TMP/six-epochs.json` | schedule file covers 6 epochs but --epochs is 4 |
| 46 | schedule file | `autoprog pretrain --schedule TMP/too-deep.json` | schedule stage 0 (resolution 28, depth 9) does not fit the model (resolution 28 in steps of 4, depth 4) |
| 47 | numbers (pretrain) | `autoprog pretrain --epochs 0` | --epochs must be >= 1, got 0 |
| 48 | numbers (pretrain) | `autoprog pretrain --stages 0` | --stages must be >= 1, got 0 |
| 49 | numbers (pretrain) | `autoprog pretrain --batch-size 0` | --batch-size must be >= 1, got 0 |
| 50 | numbers (pretrain) | `autoprog pretrain --batch-size -8` | --batch-size must be >= 1, got -8 |
| 51 | numbers (pretrain) | `autoprog pretrain --batch-size 100000` | the training set (128 images) is smaller than one batch (100000) |
| 52 | numbers (pretrain) | `autoprog pretrain --lr 0` | --lr must be a finite number > 0, got 0.0 |
| 53 | numbers (pretrain) | `autoprog pretrain --lr -0.001` | --lr must be a finite number > 0, got -0.001 |
| 54 | numbers (pretrain) | `autoprog pretrain --lr nan` | --lr must be a finite number > 0, got nan |
| 55 | numbers (pretrain) | `autoprog pretrain --lr inf` | --lr must be a finite number > 0, got inf |
| 56 | numbers (pretrain) | `autoprog pretrain --min-lr -1` | --min-lr must be a finite number >= 0, got -1.0 |
| 57 | numbers (pretrain) | `autoprog pretrain --weight-decay -0.1` | --weight-decay must be a finite number >= 0, got -0.1 |
| 58 | numbers (pretrain) | `autoprog pretrain --warmup-epochs -1` | --warmup-epochs must be a finite number >= 0, got -1.0 |
| 59 | numbers (pretrain) | `autoprog pretrain --label-smoothing 1` | --label-smoothing must be in [0, 1), got 1.0 |
| 60 | numbers (pretrain) | `autoprog pretrain --drop-path 1.5` | --drop-path must be in [0, 1), got 1.5 |
| 61 | numbers (pretrain) | `autoprog pretrain --ema-decay 1` | --ema-decay must be in [0, 1), got 1.0 |
| 62 | numbers (pretrain) | `autoprog pretrain --mixup -1` | --mixup must be a finite number >= 0, got -1.0 |
| 63 | numbers (pretrain) | `autoprog pretrain --cutmix nan` | --cutmix must be a finite number >= 0, got nan |
| 64 | numbers (pretrain) | `autoprog pretrain --reprob 2` | --reprob must be in [0, 1], got 2.0 |
| 65 | numbers (pretrain) | `autoprog pretrain --val-size -1` | --val-size must be >= 0, got -1 |
| 66 | numbers (pretrain) | `autoprog pretrain --train-subset 0` | --train-subset must be >= 1, got 0 |
| 67 | numbers (pretrain) | `autoprog pretrain --test-subset 0` | --test-subset must be >= 1, got 0 |
| 68 | numbers (pretrain) | `autoprog pretrain --depth 0` | --depth must be >= 1, got 0 |
| 69 | numbers (pretrain) | `autoprog pretrain --patch-size 0` | --patch-size must be >= 1, got 0 |
| 70 | numbers (pretrain) | `autoprog pretrain --img-size 0` | --img-size must be >= 1, got 0 |
| 71 | numbers (pretrain) | `autoprog pretrain --threads 0` | --threads must be >= 1, got 0 |
| 72 | numbers (pretrain) | `autoprog pretrain --seed -1` | --seed must be in 0..2**63-1, got -1 |
| 73 | numbers (pretrain) | `autoprog pretrain --search-epochs 0` | --search-epochs must be >= 1, got 0 |
| 74 | other options (pretrain) | `autoprog pretrain --optimizer-state keep` | argument --optimizer-state: invalid choice: 'keep' (choose from 'carry', 'reset') (see: autoprog pretrain --help) |
| 75 | other options (pretrain) | `autoprog pretrain --randaug foo` | --randaug must be a timm RandAugment string like rand-m9-mstd0.5-inc1, got 'foo' |
| 76 | other options (pretrain) | `autoprog pretrain --device gpu` | --device 'gpu' is not a torch device (e.g. cpu, cuda, cuda:1) |
| 77 | peers | `autoprog pretrain --method full-equal-time` | --method full-equal-time needs exactly one of --equal-time-epochs N (the epochs to train) and --equal-time-ratio R (a time ratio: trains round(R x --epochs) epochs) |
| 78 | peers | `autoprog pretrain --method full-equal-time --equal-time-ratio 0` | --equal-time-ratio must be a finite number > 0, got 0.0 |
| 79 | peers | `autoprog pretrain --method prog --equal-time-epochs 4` | --equal-time-epochs is an option of --method full-equal-time, not prog |
| 80 | peers | `autoprog pretrain --method prog --input-transform crop` | --input-transform crop is for progressive-resizing and efficienttrain (a random window per batch); --method prog resizes its data once per stage: use bilinear, nearest or lowfreq |
| 81 | peers | `autoprog pretrain --method autoprog-zero --input-transform lowfreq` | --input-transform lowfreq is not available for autoprog-zero (its zero-shot probe is resized bilinearly inside the controller); use it with prog or autoprog-one |
| 82 | peers | `autoprog pretrain --method progressive-resizing --initial-scale 0` | --initial-scale must be in (0, 1], got 0.0 |
| 83 | peers | `autoprog pretrain --method progressive-resizing --delay-fraction 0.9` | --delay-fraction + --finetune-fraction must be <= 1, got 0.9 + 0.2 |
| 84 | peers | `autoprog pretrain --method progressive-resizing --size-increment 6` | --size-increment 6 is not a multiple of the model's resolution step 4 (its patch size): the model cannot take those sizes |
| 85 | peers | `autoprog pretrain --method efficienttrain --adaptive-reg` | --adaptive-reg cannot be combined with --method efficienttrain: both set RandAugment's magnitude |
| 86 | peers | `autoprog bench pretrain --methods prog,full-equal-time:match=prog` | variant 'full-equal-time:match=prog' matches the time of 'prog' against full's: list 'full' before it in --methods (it must have run on the same seed first) |
| 87 | numbers (finetune) | `autoprog finetune --steps 0` | --steps must be >= 1, got 0 |
| 88 | numbers (finetune) | `autoprog finetune --batch-size 0` | --batch-size must be >= 1, got 0 |
| 89 | numbers (finetune) | `autoprog finetune --lr 0` | --lr must be a finite number > 0, got 0.0 |
| 90 | numbers (finetune) | `autoprog finetune --weight-decay -1` | --weight-decay must be a finite number >= 0, got -1.0 |
| 91 | numbers (finetune) | `autoprog finetune --levels 0` | --levels must be >= 1, got 0 |
| 92 | numbers (finetune) | `autoprog finetune --lora-rank 0` | --lora-rank must be >= 1, got 0 |
| 93 | numbers (finetune) | `autoprog finetune --ntk-samples 1` | --ntk-samples must be >= 2, got 1 |
| 94 | numbers (finetune) | `autoprog finetune --zico-batches 1` | --zico-batches must be >= 2, got 1 |
| 95 | numbers (finetune) | `autoprog finetune --time-repeats 0` | --time-repeats must be >= 1, got 0 |
| 96 | numbers (finetune) | `autoprog finetune --search-fraction 1` | --search-fraction must be in (0, 1), got 1.0 |
| 97 | numbers (finetune) | `autoprog finetune --fid-samples -1` | --fid-samples must be 0 (skip FID) or >= 2, got -1 |
| 98 | numbers (finetune) | `autoprog finetune --fid-samples 1` | --fid-samples must be 0 (skip FID) or >= 2, got 1 |
| 99 | numbers (finetune) | `autoprog finetune --fid-reference 1` | --fid-reference must be >= 2, got 1 (FID statistics need 2 images) |
| 100 | numbers (finetune) | `autoprog finetune --sample-steps 0` | --sample-steps must be >= 1, got 0 |
| 101 | numbers (finetune) | `autoprog finetune --guidance nan` | --guidance must be a finite number >= 0, got nan |
| 102 | numbers (finetune) | `autoprog finetune --cfg-dropout 1` | --cfg-dropout must be in [0, 1), got 1.0 |
| 103 | numbers (finetune) | `autoprog finetune --ema-decay -0.5` | --ema-decay must be in [0, 1), got -0.5 |
| 104 | numbers (finetune) | `autoprog finetune --seed -1` | --seed must be in 0..2**63-1, got -1 |
| 105 | numbers (finetune) | `autoprog finetune --vote-weights time=nan` | --vote-weights: 'time=nan' is not a finite number |
| 106 | numbers (finetune) | `autoprog finetune --vote-weights foo=1` | --vote-weights keys are time, ntk, zico (time required), got ['foo'] |
| 107 | command line | `autoprog` | the following arguments are required: command (see: autoprog --help) |
| 108 | command line | `autoprog pretrain` | the following arguments are required: --out (see: autoprog pretrain --help) |
| 109 | command line | `autoprog pretrain --out TMP/out --epochs abc` | argument --epochs: invalid int value: 'abc' (see: autoprog pretrain --help) |
| 110 | command line | `autoprog pretrain --out TMP/out --nope` | unrecognized arguments: --nope (see: autoprog --help) |
| 111 | source layout | `autoprog finetune --model TMP/latent-dit` | TMP/latent-dit is a latent DiT's transformer (4-channel latents, no VAE to make them): pass the pipeline folder, a DiTPipeline folder: model_index.json, transformer/, vae/ (AutoencoderKL), scheduler/, as facebook/DiT-XL-2-256 |
| 112 | source layout | `autoprog finetune --model TMP/dit-pipeline-no-vae` | TMP/dit-pipeline-no-vae/model_index.json lists vae but TMP/dit-pipeline-no-vae/vae is missing (a DiTPipeline folder: model_index.json, transformer/, vae/ (AutoencoderKL), scheduler/, as facebook/DiT-XL-2-256) |
| 113 | source layout | `autoprog finetune --model TMP/dit-pipeline-bad-vae` | TMP/dit-pipeline-bad-vae/vae holds a VQModel, not an AutoencoderKL |
| 114 | source layout | `autoprog finetune --model TMP/timm-no-weights` | --model 'TMP/timm-no-weights': config.json but no model.safetensors or pytorch_model.bin (a timm folder: config.json with architecture (+ num_classes, pretrained_cfg) and model.safetensors or pytorch_model.bin, as timm's save_for_hf / push_to_hf_hub write it) |
| 115 | source layout | `autoprog finetune --model TMP/timm-resnet` | --model 'TMP/timm-resnet': timm 'resnet50' is not a Vision Transformer; autoprog fine-tunes timm ViT/DeiT classifiers (vit_*, deit_*, deit3_*: blocks + position embedding) |
| 116 | source layout | `autoprog finetune --model TMP/weights.safetensors` | --model 'TMP/weights.safetensors' is a file: weights alone do not say which network they are; pass --model timm:NAME --weights TMP/weights.safetensors (NAME: its timm ViT architecture) or the folder holding them |
| 117 | source layout | `autoprog finetune --model timm:vit_tiny_patch16_224` | --model timm:vit_tiny_patch16_224 needs the weights: add --weights FILE (a state dict: .safetensors, .bin or .pth) |
| 118 | source layout | `autoprog finetune --model timm:convnext_tiny --weights TMP/weights.safetensors` | --model timm:convnext_tiny: timm 'convnext_tiny' is not a Vision Transformer; autoprog fine-tunes timm ViT/DeiT classifiers (vit_*, deit_*, deit3_*: blocks + position embedding) |
| 119 | source layout | `autoprog finetune --weights TMP/weights.safetensors` | --weights is for classifier sources (timm ViTs), not the built-in source dit-fmnist |
| 120 | source layout | `autoprog finetune --img-size 32` | --img-size is for classifier sources (timm ViTs), not the built-in source dit-fmnist |
| 121 | model width | `autoprog pretrain --model resnet18 --embed-dim 64` | --embed-dim / --num-heads set a ViT's width; resnet18 does not take them |
| 122 | model width | `autoprog pretrain --embed-dim 100 --num-heads 3` | --embed-dim 100 is not divisible by --num-heads 3 |
| 123 | model width | `autoprog pretrain --embed-dim 128` | timm model 'vit_tiny_patch16_224': width 128 is not divisible by the name's heads; give --embed-dim a multiple of --num-heads |
| 124 | model width | `autoprog pretrain --num-heads 0` | --num-heads must be >= 1, got 0 |
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprog.cli import main
from autoprog.data import DATASETS
from autoprog.errors import AutoprogError, ConfigError
from autoprog.growth.operators import OPERATORS
from autoprog.train.config import (
    FINETUNE_METHODS,
    PRETRAIN_METHODS,
    FinetuneConfig,
    PretrainConfig,
    check_out_dir,
    check_same_config,
    check_schedule_file,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

#: Small settings every ``pretrain`` row starts from (a row's own options come after, and win).
TINY = ["--depth", "4", "--epochs", "4", "--batch-size", "32", "--train-subset", "128", "--val-size", "32",
        "--test-subset", "100", "--progress", "off"]  # fmt: skip
BASE = {
    "pretrain": ["pretrain", "--data-dir", "TMP/data", "--out", "TMP/out", *TINY],
    "finetune": ["finetune", "--out", "TMP/out"],
    "raw": [],
}

_STAGE = {"stage": 0, "start_epoch": 0, "end_epoch": 4, "resolution": 28, "depth": 4}

#: (what is checked, base command, the row's own arguments). ``TMP`` is a scratch folder (see make_scratch).
ROWS: list[tuple[str, str, list[str]]] = [
    ("model name", "pretrain", ["--model", "vit_nope"]),
    ("model name", "pretrain", ["--model", "resnet_x"]),
    ("model name", "pretrain", ["--model", "convnext_tiny"]),
    ("model name", "finetune", ["--model", "TMP/nothing"]),
    ("model name", "raw", ["source", "nope"]),
    ("data name", "pretrain", ["--data", "nope"]),
    ("data name", "pretrain", ["--data", "imagefolder:"]),
    ("data name", "finetune", ["--data", "nope"]),
    ("method name", "pretrain", ["--method", "magic"]),
    ("method name", "finetune", ["--method", "magic"]),
    ("operator name", "pretrain", ["--operator", "magic"]),
    ("ratio", "pretrain", ["--ratio", "1.5"]),
    ("ratio", "pretrain", ["--ratio", "0"]),
    ("ratio", "pretrain", ["--ratio", "nan"]),
    ("ratio", "finetune", ["--ratio", "-0.25"]),
    ("stages vs epochs/steps", "pretrain", ["--method", "prog", "--stages", "5", "--epochs", "4"]),
    ("stages vs epochs/steps", "pretrain", ["--method", "autoprog-one", "--stages", "1"]),
    ("stages vs epochs/steps", "finetune", ["--method", "prog", "--stages", "4", "--steps", "3"]),
    ("stages vs epochs/steps", "finetune", ["--method", "autoprog-zero", "--stages", "1"]),
    ("resolution vs patch size", "pretrain", ["--img-size", "30"]),
    ("resolution vs patch size", "pretrain", ["--patch-size", "5", "--img-size", "28"]),
    ("resolution vs patch size", "pretrain", ["--model", "resnet18", "--img-size", "30"]),
    (
        "model cannot grow / unfreeze",
        "pretrain",
        ["--model", "vit_small_patch16_dinov3", "--patch-size", "4"],
    ),
    (
        "model cannot grow / unfreeze",
        "pretrain",
        ["--model", "vit_relpos_small_patch16_224", "--patch-size", "4"],
    ),
    ("model cannot grow / unfreeze", "finetune", ["--model", "TMP/unet"]),
    ("model cannot grow / unfreeze", "finetune", ["--model", "TMP/unconditional-dit"]),
    ("model cannot grow / unfreeze", "finetune", ["--model", "TMP/no-weights"]),
    ("model cannot grow / unfreeze", "finetune", ["--model", "TMP/empty-folder"]),
    ("model folder", "finetune", ["--model", "TMP/mismatched-dit"]),
    ("dataset path", "pretrain", ["--data-dir", "TMP/missing"]),
    ("dataset path", "pretrain", ["--data", "mnist-idx", "--data-dir", "TMP/missing"]),
    ("dataset path", "pretrain", ["--data", "cifar10", "--data-dir", "TMP/missing"]),
    ("dataset path", "pretrain", ["--data", "imagefolder:TMP/missing"]),
    ("finished run in --out", "pretrain", ["--out", "TMP/finished"]),
    ("finished run in --out", "finetune", ["--out", "TMP/finished"]),
    ("finished run in --out", "pretrain", ["--out", "TMP/a-file"]),
    ("output folder", "pretrain", ["--out", "TMP/a-file/run"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/missing.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/not-json.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/binary.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/no-schedule.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/bad-stage.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/gap.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/infinite.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/six-epochs.json"]),
    ("schedule file", "pretrain", ["--schedule", "TMP/too-deep.json"]),
    ("numbers (pretrain)", "pretrain", ["--epochs", "0"]),
    ("numbers (pretrain)", "pretrain", ["--stages", "0"]),
    ("numbers (pretrain)", "pretrain", ["--batch-size", "0"]),
    ("numbers (pretrain)", "pretrain", ["--batch-size", "-8"]),
    ("numbers (pretrain)", "pretrain", ["--batch-size", "100000"]),
    ("numbers (pretrain)", "pretrain", ["--lr", "0"]),
    ("numbers (pretrain)", "pretrain", ["--lr", "-0.001"]),
    ("numbers (pretrain)", "pretrain", ["--lr", "nan"]),
    ("numbers (pretrain)", "pretrain", ["--lr", "inf"]),
    ("numbers (pretrain)", "pretrain", ["--min-lr", "-1"]),
    ("numbers (pretrain)", "pretrain", ["--weight-decay", "-0.1"]),
    ("numbers (pretrain)", "pretrain", ["--warmup-epochs", "-1"]),
    ("numbers (pretrain)", "pretrain", ["--label-smoothing", "1"]),
    ("numbers (pretrain)", "pretrain", ["--drop-path", "1.5"]),
    ("numbers (pretrain)", "pretrain", ["--ema-decay", "1"]),
    ("numbers (pretrain)", "pretrain", ["--mixup", "-1"]),
    ("numbers (pretrain)", "pretrain", ["--cutmix", "nan"]),
    ("numbers (pretrain)", "pretrain", ["--reprob", "2"]),
    ("numbers (pretrain)", "pretrain", ["--val-size", "-1"]),
    ("numbers (pretrain)", "pretrain", ["--train-subset", "0"]),
    ("numbers (pretrain)", "pretrain", ["--test-subset", "0"]),
    ("numbers (pretrain)", "pretrain", ["--depth", "0"]),
    ("numbers (pretrain)", "pretrain", ["--patch-size", "0"]),
    ("numbers (pretrain)", "pretrain", ["--img-size", "0"]),
    ("numbers (pretrain)", "pretrain", ["--threads", "0"]),
    ("numbers (pretrain)", "pretrain", ["--seed", "-1"]),
    ("numbers (pretrain)", "pretrain", ["--search-epochs", "0"]),
    ("other options (pretrain)", "pretrain", ["--optimizer-state", "keep"]),
    ("other options (pretrain)", "pretrain", ["--randaug", "foo"]),
    ("other options (pretrain)", "pretrain", ["--device", "gpu"]),
    ("peers", "pretrain", ["--method", "full-equal-time"]),
    ("peers", "pretrain", ["--method", "full-equal-time", "--equal-time-ratio", "0"]),
    ("peers", "pretrain", ["--method", "prog", "--equal-time-epochs", "4"]),
    ("peers", "pretrain", ["--method", "prog", "--input-transform", "crop"]),
    ("peers", "pretrain", ["--method", "autoprog-zero", "--input-transform", "lowfreq"]),
    ("peers", "pretrain", ["--method", "progressive-resizing", "--initial-scale", "0"]),
    ("peers", "pretrain", ["--method", "progressive-resizing", "--delay-fraction", "0.9"]),
    ("peers", "pretrain", ["--method", "progressive-resizing", "--size-increment", "6"]),
    ("peers", "pretrain", ["--method", "efficienttrain", "--adaptive-reg"]),
    ("peers", "raw", ["bench", "pretrain", "--methods", "prog,full-equal-time:match=prog"]),
    ("numbers (finetune)", "finetune", ["--steps", "0"]),
    ("numbers (finetune)", "finetune", ["--batch-size", "0"]),
    ("numbers (finetune)", "finetune", ["--lr", "0"]),
    ("numbers (finetune)", "finetune", ["--weight-decay", "-1"]),
    ("numbers (finetune)", "finetune", ["--levels", "0"]),
    ("numbers (finetune)", "finetune", ["--lora-rank", "0"]),
    ("numbers (finetune)", "finetune", ["--ntk-samples", "1"]),
    ("numbers (finetune)", "finetune", ["--zico-batches", "1"]),
    ("numbers (finetune)", "finetune", ["--time-repeats", "0"]),
    ("numbers (finetune)", "finetune", ["--search-fraction", "1"]),
    ("numbers (finetune)", "finetune", ["--fid-samples", "-1"]),
    ("numbers (finetune)", "finetune", ["--fid-samples", "1"]),
    ("numbers (finetune)", "finetune", ["--fid-reference", "1"]),
    ("numbers (finetune)", "finetune", ["--sample-steps", "0"]),
    ("numbers (finetune)", "finetune", ["--guidance", "nan"]),
    ("numbers (finetune)", "finetune", ["--cfg-dropout", "1"]),
    ("numbers (finetune)", "finetune", ["--ema-decay", "-0.5"]),
    ("numbers (finetune)", "finetune", ["--seed", "-1"]),
    ("numbers (finetune)", "finetune", ["--vote-weights", "time=nan"]),
    ("numbers (finetune)", "finetune", ["--vote-weights", "foo=1"]),
    ("command line", "raw", []),
    ("command line", "raw", ["pretrain"]),
    ("command line", "raw", ["pretrain", "--out", "TMP/out", "--epochs", "abc"]),
    ("command line", "raw", ["pretrain", "--out", "TMP/out", "--nope"]),
    ("source layout", "finetune", ["--model", "TMP/latent-dit"]),
    ("source layout", "finetune", ["--model", "TMP/dit-pipeline-no-vae"]),
    ("source layout", "finetune", ["--model", "TMP/dit-pipeline-bad-vae"]),
    ("source layout", "finetune", ["--model", "TMP/timm-no-weights"]),
    ("source layout", "finetune", ["--model", "TMP/timm-resnet"]),
    ("source layout", "finetune", ["--model", "TMP/weights.safetensors"]),
    ("source layout", "finetune", ["--model", "timm:vit_tiny_patch16_224"]),
    ("source layout", "finetune", ["--model", "timm:convnext_tiny", "--weights", "TMP/weights.safetensors"]),
    ("source layout", "finetune", ["--weights", "TMP/weights.safetensors"]),
    ("source layout", "finetune", ["--img-size", "32"]),
    ("model width", "pretrain", ["--model", "resnet18", "--embed-dim", "64"]),
    ("model width", "pretrain", ["--embed-dim", "100", "--num-heads", "3"]),
    ("model width", "pretrain", ["--embed-dim", "128"]),
    ("model width", "pretrain", ["--num-heads", "0"]),
]


def make_scratch(root: Path) -> Path:
    """The files the rows point at, under ``root`` (``TMP`` in the table)."""
    make_cell_dataset(root / "data")
    (root / "finished").mkdir(parents=True)
    (root / "finished" / "summary.json").write_text("{}")
    (root / "a-file").write_text("not a folder")
    (root / "not-json.json").write_text("{ nope")
    (root / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (root / "no-schedule.json").write_text(json.dumps({"top1": 50.0}))
    (root / "bad-stage.json").write_text(json.dumps([{"stage": 0, "resolution": 28}]))
    gap = [_STAGE | {"end_epoch": 2}, _STAGE | {"stage": 1, "start_epoch": 3}]
    (root / "gap.json").write_text(json.dumps(gap))
    (root / "infinite.json").write_text(json.dumps([_STAGE | {"end_epoch": math.inf}]))
    (root / "six-epochs.json").write_text(json.dumps([_STAGE | {"end_epoch": 6}]))
    (root / "too-deep.json").write_text(json.dumps({"schedule": [_STAGE | {"depth": 9}]}))
    for name, config in [
        ("unet", {"_class_name": "UNet2DModel", "sample_size": 28}),
        ("unconditional-dit", {"_class_name": "DiTTransformer2DModel", "num_embeds_ada_norm": None}),
        ("no-weights", {"_class_name": "DiTTransformer2DModel", "num_embeds_ada_norm": 10}),
    ]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    (root / "empty-folder").mkdir()
    # a DiT folder whose config describes tensors its weights file does not hold
    from safetensors.torch import save_file

    dit = {"_class_name": "DiTTransformer2DModel", "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 1,
           "out_channels": 1, "num_layers": 2, "sample_size": 8, "patch_size": 4, "num_embeds_ada_norm": 10,
           "norm_num_groups": 1}  # fmt: skip
    (root / "mismatched-dit").mkdir()
    (root / "mismatched-dit" / "config.json").write_text(json.dumps(dit))
    save_file({"pos_embed.proj.weight": torch.zeros(16, 1, 4, 4)}, root / "mismatched-dit" / "diffusion_pytorch_model.safetensors")
    # Latent DiT pipelines and timm folders (config files only: the checks build nothing).
    latent = {"_class_name": "DiTTransformer2DModel", "num_embeds_ada_norm": 10, "in_channels": 4}
    index = {"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"]}  # fmt: skip
    for name, transformer_dir in [("latent-dit", "."), ("dit-pipeline-no-vae", "transformer"),
                                  ("dit-pipeline-bad-vae", "transformer")]:  # fmt: skip
        (root / name / transformer_dir).mkdir(parents=True, exist_ok=True)
        (root / name / transformer_dir / "config.json").write_text(json.dumps(latent))
        (root / name / transformer_dir / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    for name in ("dit-pipeline-no-vae", "dit-pipeline-bad-vae"):
        (root / name / "model_index.json").write_text(json.dumps(index))
        (root / name / "scheduler").mkdir()
    (root / "dit-pipeline-bad-vae" / "vae").mkdir()
    (root / "dit-pipeline-bad-vae" / "vae" / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    for name, architecture in [("timm-no-weights", "vit_tiny_patch16_224"), ("timm-resnet", "resnet50")]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"architecture": architecture, "num_classes": 10}))
    (root / "weights.safetensors").write_bytes(b"")
    return root


def argv_of(kind: str, args: list[str], root: Path) -> list[str]:
    return [a.replace("TMP", str(root)) for a in BASE[kind] + args]


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """``main(argv)``'s exit code (argparse's ``SystemExit`` included) and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def message_of(stderr: str, root: Path) -> str:
    return stderr.strip().removeprefix("autoprog: error: ").replace(str(root), "TMP")


def table(root: Path) -> str:
    """The markdown table of every row, made by running it (``python tests/test_validation.py``)."""
    lines = ["| # | check | arguments | message (after `autoprog: error: `) |", "|---|---|---|---|"]
    for i, (check, kind, args) in enumerate(ROWS, 1):
        _, err = run_in_process(argv_of(kind, args, root))
        shown = " ".join(["autoprog", *([kind] if kind != "raw" else []), *args])
        lines.append(f"| {i} | {check} | `{shown}` | {message_of(err, root).replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def documented_rows(text: str) -> dict[int, tuple[str, str]]:
    rows = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\| (\d+) \| [^|]+ \| `([^`]*)` \| (.*) \|", line)
        if m:
            rows[int(m.group(1))] = (m.group(2), m.group(3).replace("\\|", "|"))
    return rows


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return make_scratch(tmp_path_factory.mktemp("validation"))


@pytest.mark.parametrize("row", range(1, len(ROWS) + 1))
def test_bad_input_gives_one_line_and_no_traceback(row, scratch, capsys):
    check, kind, args = ROWS[row - 1]
    argv = argv_of(kind, args, scratch)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors exit from parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("autoprog: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    documented = documented_rows(__doc__)[row]
    assert documented[1] == message_of(err, scratch), "the module docstring's table is stale: regenerate it"


def test_table_covers_every_row_and_docs_match():
    rows = documented_rows(__doc__)
    assert sorted(rows) == list(range(1, len(ROWS) + 1))
    for i, (_check, kind, args) in enumerate(ROWS, 1):
        assert rows[i][0] == " ".join(["autoprog", *([kind] if kind != "raw" else []), *args])
    table_lines = [line for line in __doc__.splitlines() if line.startswith("|")]
    assert "\n".join(table_lines) in DOCS.read_text(), "docs/errors.md does not hold the same table"


def test_debug_shows_the_traceback(scratch):
    argv = argv_of("pretrain", ["--lr", "nan"], scratch)
    with pytest.raises(ConfigError, match="--lr must be a finite number"):
        main(argv + ["--debug"])
    with pytest.raises(ConfigError, match="--lr must be a finite number"):
        main(["--debug", *argv])


def test_real_process_prints_no_traceback(scratch):
    """The real command, for an error raised deep inside a run (after data and model are loaded)."""
    argv = argv_of("pretrain", ["--schedule", "TMP/too-deep.json"], scratch)
    out = subprocess.run(
        [sys.executable, "-m", "autoprog.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("autoprog: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and "does not fit the model" in out.stderr


def test_finished_run_is_refused_before_any_work(scratch, monkeypatch):
    import autoprog.train.finetune as finetune_module
    import autoprog.train.pretrain as pretrain_module

    calls = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda cfg: calls.append(("pretrain", cfg.out)))
    monkeypatch.setattr(finetune_module, "finetune", lambda cfg: calls.append(("finetune", cfg.out)))
    finished = scratch / "finished"
    before = sorted(p.name for p in finished.iterdir())
    for kind in ("pretrain", "finetune"):
        assert run_in_process(argv_of(kind, ["--out", str(finished)], scratch))[0] == 2
    assert calls == [] and sorted(p.name for p in finished.iterdir()) == before
    for kind in ("pretrain", "finetune"):
        assert run_in_process(argv_of(kind, ["--out", str(finished), "--overwrite"], scratch))[0] == 0
    assert calls == [("pretrain", str(finished)), ("finetune", str(finished))]


def test_check_out_dir_accepts_new_and_unfinished_folders(tmp_path):
    check_out_dir(str(tmp_path / "new"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "log.jsonl").write_text("")
    check_out_dir(str(tmp_path / "half"))
    (tmp_path / "half" / "summary.json").write_text("{}")
    check_out_dir(str(tmp_path / "half"), overwrite=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        check_out_dir(str(tmp_path / "half"))


def test_resume_refuses_another_configuration_naming_the_option():
    saved = {"lr": None, "epochs": 8, "out": "a"}
    check_same_config(saved, {"lr": None, "epochs": 8, "out": "b", "added_later": 1}, "b")  # free / new fields
    with pytest.raises(ConfigError, match=r"^--resume: the run in b used --lr \(default\), not 0\.01$"):
        check_same_config(saved, {"lr": 0.01, "epochs": 8, "out": "b"}, "b")
    with pytest.raises(ConfigError, match=r"used --epochs 8, not 16$"):
        check_same_config(saved, {"lr": None, "epochs": 16, "out": "b"}, "b")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(scratch):
    code, err = run_in_process(argv_of("pretrain", ["--device", "cuda"], scratch))
    assert code == 2 and "no CUDA GPU is available" in err and err.count("\n") == 1


def test_library_users_get_the_same_errors():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        PretrainConfig(data="nope").validate()
    with pytest.raises(ConfigError, match="--epochs must be an integer, got '8'"):
        PretrainConfig(epochs="8").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--steps must be an integer, got True"):
        FinetuneConfig(steps=True).validate()
    PretrainConfig().validate()
    FinetuneConfig().validate()


# ----------------------------------------------------------------------------------------------------
# Failures from inside a run that a user causes (issue 21): one line, exit 2, nothing left behind.

#: (exception raised inside the run, the message the user sees)
RAISED = [
    (PermissionError(13, "Permission denied", "/data/train/cat/1.png"), "/data/train/cat/1.png: Permission denied"),
    (OSError(28, "No space left on device", "TMP/out/log.jsonl"), "TMP/out/log.jsonl: No space left on device"),
    (IsADirectoryError(21, "Is a directory", "/data/a.png"), "/data/a.png: Is a directory"),
    (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 8 GiB"),
        "out of memory with --model resnet50 --method prog --batch-size 128 --img-size 224 (tried to allocate "
        "2.00 GiB on the GPU); lower --batch-size or --img-size, or use --mixed-precision bf16 on a GPU",
    ),
    (
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                     "you tried to allocate 25769803776 bytes. Error code 12 (Cannot allocate memory)"),
        "out of memory with --model resnet50 --method prog --batch-size 128 --img-size 224 (tried to allocate "
        "24.00 GiB); lower --batch-size or --img-size, or use --mixed-precision bf16 on a GPU",
    ),  # fmt: skip
    (
        ValueError("Expected more than 1 value per channel when training, got input size torch.Size([1, 512, 1, 1])"),
        "a BatchNorm layer got one value per channel in training (--model resnet50 --method prog --batch-size 128 "
        "--img-size 224): a batch of one on a 1x1 feature map (a ResNet's last stage at a small input); use "
        "--batch-size 2 or more, or a larger --img-size",
    ),
    (MemoryError(), "out of memory with --model resnet50 --method prog --batch-size 128 --img-size 224 "
                    "(MemoryError); lower --batch-size or --img-size, or use --mixed-precision bf16 on a GPU"),  # fmt: skip
]


def _raising(error: BaseException):
    def run(cfg):
        Path(cfg.out, "checkpoints").mkdir(parents=True)  # folders, but no file yet
        raise error

    return run


@pytest.mark.parametrize(("error", "message"), RAISED)
def test_user_caused_failures_inside_a_run_are_one_line(scratch, monkeypatch, error, message):
    import autoprog.train.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", _raising(error))
    out = scratch / "new" / "run"
    args = ["--out", str(out), "--model", "resnet50", "--method", "prog", "--batch-size", "128", "--img-size", "224"]
    code, err = run_in_process(argv_of("pretrain", args, scratch))
    assert code == 2 and err.count("\n") == 1, err
    assert message_of(err, scratch) == message
    assert not (scratch / "new").exists()  # the folders this run made (empty) are gone


def test_a_bug_keeps_its_traceback_and_debug_shows_user_errors(scratch, monkeypatch):
    import autoprog.train.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", _raising(KeyError("a bug")))
    with pytest.raises(KeyError):
        main(argv_of("pretrain", ["--out", "TMP/bug"], scratch))
    assert not (scratch / "bug").exists()
    monkeypatch.setattr(pretrain_module, "pretrain", _raising(PermissionError(13, "Permission denied", "/x")))
    with pytest.raises(PermissionError):
        main(argv_of("pretrain", ["--out", "TMP/bug", "--debug"], scratch))


def test_a_failed_start_leaves_nothing_but_what_existed(scratch):
    """A run that fails before writing anything removes the folders it made; never one that existed."""
    existing = scratch / "existing-out"
    existing.mkdir()
    for out in (scratch / "made" / "by" / "the-run", existing):
        code, err = run_in_process(argv_of("pretrain", ["--out", str(out), "--data-dir", "TMP/missing"], scratch))
        assert code == 2 and "Fashion-MNIST not found" in err
    assert not (scratch / "made").exists() and existing.is_dir()


def test_an_out_that_cannot_be_made_is_one_line(scratch):
    code, err = run_in_process(argv_of("pretrain", ["--out", "/proc/autoprog-run"], scratch))  # as in the issue
    assert code == 2 and err.count("\n") == 1 and "--out /proc/autoprog-run cannot be created or written" in err


def test_a_dit_folder_whose_config_and_weights_disagree(tmp_path):
    """Issue 21: such a folder reached "NotImplementedError: Cannot copy out of meta tensor"."""
    from autoprog.adapters.diffusers_dit import create_dit, load_dit

    create_dit(depth=2, hidden=32, heads=2, patch_size=4, sample_size=8).save_pretrained(tmp_path / "dit")
    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    for change, message in [
        ({"num_layers": 3}, r"19 tensor\(s\) of the model its config describes are not in the weights \(e\.g\. transformer_blocks\.2\."),
        ({"num_layers": 1}, r"19 tensor\(s\) in the weights have no place in that model \(e\.g\. transformer_blocks\.1\."),
        ({"attention_head_dim": 32}, r"pos_embed\.proj\.bias expected shape torch\.Size\(\[64\]\), but got torch\.Size\(\[32\]\)$"),
    ]:  # fmt: skip
        (tmp_path / "dit" / "config.json").write_text(json.dumps(config | change))
        with pytest.raises(ConfigError, match=f"^{tmp_path / 'dit'}: config.json and the weights disagree: {message}"):
            load_dit(tmp_path / "dit")
    (tmp_path / "dit" / "config.json").write_text(json.dumps(config))
    assert len(load_dit(tmp_path / "dit").transformer_blocks) == 2


# ----------------------------------------------------------------------------------------------------
# Property-based: over the configuration space, validate() passes or raises AutoprogError, nothing else.

HUGE = [2**31, 2**63, 10**30, 10**400]
INTS = st.one_of(st.integers(-3, 12), st.integers(), st.sampled_from([0, -1, *HUGE, -(10**30)]))
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-0.5, 1.5),
    st.sampled_from([0.0, -0.0, 1.0, 1e-3, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
    st.integers(-2, 3),
    st.sampled_from([10**400]),
)
TEXT = st.text(max_size=24)


def _names(valid) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(list(valid)), TEXT)


NAMES = {
    "model": _names(
        ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "resnet18", "resnet50", "vit_", "resnet"]
    ),
    "data": _names([d for d in DATASETS if ":" not in d] + ["imagefolder:/nonexistent", "imagefolder:"]),
    "operator": _names(sorted(OPERATORS)),
    "optimizer_state": _names(["carry", "reset"]),
    "randaug": st.one_of(st.none(), _names(["rand-m9-mstd0.5-inc1", "rand-m5", "rand", "rand-x9"])),
    "device": st.one_of(st.none(), _names(["cpu", "cuda", "cuda:1", "meta", "mps", ""])),
    "vote_weights": _names(["time=1,ntk=0.5,zico=0.5", "time=1", "time=nan", "time=1e999", "ntk=1", "time"]),
    "schedule_file": st.one_of(st.none(), TEXT),
}


def _strategy(cls, name: str, annotation: str) -> st.SearchStrategy:
    if name == "method":
        return _names(PRETRAIN_METHODS if cls is PretrainConfig else FINETUNE_METHODS)
    if cls is FinetuneConfig and name == "model":
        return _names(["dit-fmnist", "dit-tiny", "", ".", "/nonexistent"])
    if name in NAMES:
        return NAMES[name]
    kinds = annotation.replace(" ", "").split("|")
    options = {"int": INTS, "float": FLOATS, "bool": st.booleans(), "str": TEXT, "dict": st.just({})}
    base = st.one_of(*[options[k] for k in kinds if k in options])
    return st.one_of(st.none(), base) if "None" in kinds else base


def _configs(cls) -> st.SearchStrategy:
    return st.builds(cls, **{f.name: _strategy(cls, f.name, str(f.type)) for f in fields(cls)})


def _validate_or_autoprog_error(cfg) -> None:
    try:
        cfg.validate()
    except AutoprogError as e:
        assert "\n" not in str(e) and str(e)
    # any other exception fails the test


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(_configs(PretrainConfig))
def test_pretrain_validate_never_raises_anything_else(cfg):
    _validate_or_autoprog_error(cfg)


@FAST
@given(_configs(FinetuneConfig))
def test_finetune_validate_never_raises_anything_else(cfg):
    _validate_or_autoprog_error(cfg)


WRONG = st.one_of(
    st.text(max_size=5), st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2)
)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_wrong_types_are_config_errors(data):
    cls = data.draw(st.sampled_from([PretrainConfig, FinetuneConfig]))
    field = data.draw(st.sampled_from([f.name for f in fields(cls) if f.name != "extra"]))
    cfg = cls(**{field: data.draw(WRONG)})
    _validate_or_autoprog_error(cfg)


@settings(max_examples=50, deadline=None)
@given(
    epochs=st.integers(1, 30),
    stage_frac=st.floats(0.0, 1.0),
    ratio=st.floats(0.01, 1.0),
    method=st.sampled_from(PRETRAIN_METHODS),
    lr=st.floats(1e-6, 1.0),
    batch_size=st.integers(1, 512),
    model=st.sampled_from(["vit_tiny_patch16_224", "deit_tiny_patch16_224", "resnet18"]),
)
def test_sensible_pretrain_configs_pass(epochs, stage_frac, ratio, method, lr, batch_size, model):
    stages = (
        max(2, round(stage_frac * epochs))
        if method in ("autoprog-one", "autoprog-zero")
        else max(1, round(stage_frac * epochs))
    )
    if stages > epochs:  # a searched method with one epoch: no valid stage count
        return
    equal_time = {"equal_time_ratio": 0.5} if method == "full-equal-time" else {}  # it needs its epochs
    PretrainConfig(
        model=model, method=method, epochs=epochs, stages=stages, ratio=ratio, lr=lr, batch_size=batch_size,
        **equal_time,
    ).validate()  # fmt: skip


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
STAGE = st.fixed_dictionaries({k: st.one_of(st.integers(-1, 10), JSON) for k in _STAGE})


@settings(max_examples=80, deadline=None)
@given(content=st.one_of(JSON, st.lists(STAGE, max_size=3), st.fixed_dictionaries({"schedule": st.lists(STAGE, max_size=3)})),
       epochs=st.integers(1, 10))  # fmt: skip
def test_schedule_files_pass_or_give_config_errors(content, epochs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schedule.json"
        path.write_text(json.dumps(content))
        try:
            check_schedule_file(str(path), epochs)
        except ConfigError as e:
            assert "\n" not in str(e)


USER_ERRORS = st.one_of(
    st.builds(lambda n, e, m, f: OSError(e, m, f) if n else OSError(m), st.booleans(), st.integers(1, 130), TEXT,
              st.one_of(TEXT, st.none())),  # fmt: skip
    st.builds(lambda m: PermissionError(13, m, "/some/file"), TEXT),
    st.builds(torch.OutOfMemoryError, TEXT),
    st.builds(lambda m: RuntimeError(f"DefaultCPUAllocator: can't allocate memory: {m}"), TEXT),
    st.just(MemoryError()),
    st.builds(AutoprogError, TEXT),
)


@settings(max_examples=60, deadline=None)
@given(error=USER_ERRORS, name=st.text(st.characters(blacklist_characters="/"), min_size=1, max_size=30),
       nested=st.booleans(), command=st.sampled_from(["pretrain", "finetune"]))  # fmt: skip
def test_any_user_caused_failure_is_one_line_and_leaves_no_folder(error, name, nested, command):
    """Whatever the message (newlines, empty, odd bytes) and whatever --out (any name, NUL bytes,
    too long), a failure a user causes is one line and exit code 2, and the run leaves no folder."""
    from unittest import mock

    import autoprog.train.finetune as finetune_module
    import autoprog.train.pretrain as pretrain_module

    if name in (".", ".."):
        return
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / name / "run" if nested else Path(folder) / name
        module = pretrain_module if command == "pretrain" else finetune_module
        with mock.patch.object(module, command, _raising(error)):
            code, err = run_in_process([command, "--out", str(out)])
        assert code == 2 and err.startswith("autoprog: error: ") and err.count("\n") == 1, err
        assert list(Path(folder).iterdir()) == []


if __name__ == "__main__":  # print the table of the module docstring (and docs/errors.md)
    with tempfile.TemporaryDirectory() as folder:
        print(table(make_scratch(Path(folder))))


def test_finetune_validation_checks_a_source_folder_with_the_checker_it_is_given(tmp_path):
    """train.config knows no task: the caller gives the source check (the CLI: autoprog.tasks.check_source)."""
    calls = []

    def check(path: str, *, weights_file: str | None, img_size: int | None) -> str:
        calls.append((path, weights_file, img_size))
        return "dit"

    FinetuneConfig(model=str(tmp_path)).validate()  # exists; its family is the task's to check
    FinetuneConfig(model=str(tmp_path)).validate(check)
    FinetuneConfig(model=str(tmp_path), weights_file="w.pt", img_size=32).validate(check)
    assert calls == [(str(tmp_path), None, None), (str(tmp_path), "w.pt", 32)]
    with pytest.raises(ConfigError, match="--instance-prompt is for text-to-image sources"):
        FinetuneConfig(model=str(tmp_path), instance_prompt="a sks dog").validate(check)
    with pytest.raises(ConfigError, match="not the classifier source"):
        FinetuneConfig(model=str(tmp_path), train_text_encoder=True).check_source_kind("classifier")
