#!/usr/bin/env bash
# Issue 3: the Tab. III comparison at 4x the budget (32 epochs, where full is near its plateau), seed 0, ~45 min;
# full and Prog again with seed 1 (~30 min); then the budget trend over the 8-, 16- and 32-epoch results (benchmarks/budget_trend.py, nothing trained).
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
PYTHON="${PYTHON:-.venv/bin/python}"
"$AUTOPROG" bench pretrain --search-rule paper --name pretrain-fmnist-5k-32ep --methods full,prog,autoprog-one --seeds 0 --train-subset 5000 --epochs 32 "$@"
"$AUTOPROG" bench pretrain --search-rule paper --name pretrain-fmnist-5k-32ep-seed1 --methods full,prog --seeds 1 --train-subset 5000 --epochs 32 "$@"
"$PYTHON" benchmarks/budget_trend.py
