#!/usr/bin/env bash
# Issue 17: AutoProg against its peers. full, equal-time full (matched to Prog's wall-clock), Prog, AutoProg-One,
# AutoProg-Zero, progressive resizing (Composer) and EfficientTrain++ side by side, with `autoprog bench pretrain`, on
#   (a) the data-rich benchmark: the whole Fashion-MNIST training split minus the validation images, 10k test, >= 2 seeds;
#   (b) Fashion-MNIST 5k at 32 epochs, 2 seeds (the setting of pretrain-fmnist-5k-32ep).
# Writes benchmarks/results/peers-{fmnist-full,fmnist-5k-32ep}.{json,md,png} and their -pareto.{png,md}
# (top-1 against time / full, every method, the Pareto front: benchmarks/pareto.py).
# Run from anywhere, on a quiet machine (nothing else running). Extra arguments go to both invocations.
# Smoke test of this script (tiny data, 2 epochs, results under /tmp): PEERS_SMOKE=1 benchmarks/tables/peers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
PYTHON="${PYTHON:-.venv/bin/python}"

# -- (a) the data-rich benchmark: PLACEHOLDERS, to be set by the lead (issue 17 chooses them) --------------------
# Model width: a timm ViT name (vit_tiny_patch16_224: width 192, 3 heads; vit_small_patch16_224: 384, 6 heads);
# patch 4 and depth 6 are the defaults for the default model only, so they are passed explicitly.
DR_MODEL="${DR_MODEL:-vit_tiny_patch16_224}"   # PLACEHOLDER
DR_DEPTH="${DR_DEPTH:-6}"                      # PLACEHOLDER
DR_EPOCHS="${DR_EPOCHS:-16}"                   # PLACEHOLDER: a budget where full is near its plateau
# Regularisation, the same for every method (EfficientTrain ramps --randaug's magnitude from 0 to its own; without
# --randaug it ramps only the band). E.g. "--randaug rand-m9-mstd0.5-inc1 --drop-path 0.1 --reprob 0.25".
DR_REG="${DR_REG:-}"                           # PLACEHOLDER: none
DR_SEEDS="${DR_SEEDS:-0,1}"
VAL_SIZE="${VAL_SIZE:-1000}"
DR_TRAIN=$((60000 - VAL_SIZE))                 # the whole training split minus the validation images

# -- (b) Fashion-MNIST 5k, 32 epochs, 2 seeds (the default recipe: no augmentation) ---------------------------------
SMALL_SEEDS="${SMALL_SEEDS:-0,1}"

# The methods, in this order: full-equal-time:match=prog needs full's and Prog's times of the same seed first.
METHODS="${METHODS:-full,prog,full-equal-time:match=prog,autoprog-one,autoprog-zero,progressive-resizing,efficienttrain}"
RESULTS_DIR="${RESULTS_DIR:-benchmarks/results}"
RUNS_DIR="${RUNS_DIR:-runs/bench}"
SMOKE=()
if [[ "${PEERS_SMOKE:-0}" == 1 ]]; then  # everything tiny, both seeds kept; results go to /tmp, not the repo
    SMOKE=(--train-subset 256 --val-size 64 --test-subset 200 --epochs 2 --batch-size 64 --depth 4 --search-samples 64
           --stages 2 --ntk-samples 4 --progress off)
    RESULTS_DIR="${RESULTS_DIR_SMOKE:-/tmp/autoprog-peers-smoke/results}"
    RUNS_DIR="/tmp/autoprog-peers-smoke/runs"
fi

# shellcheck disable=SC2086  # DR_REG is a list of options
"$AUTOPROG" bench pretrain --name peers-fmnist-full --methods "$METHODS" --seeds "$DR_SEEDS" \
    --model "$DR_MODEL" --depth "$DR_DEPTH" --patch-size 4 --train-subset "$DR_TRAIN" --val-size "$VAL_SIZE" \
    --epochs "$DR_EPOCHS" $DR_REG --results-dir "$RESULTS_DIR" --runs-dir "$RUNS_DIR" "${SMOKE[@]}" "$@"
"$PYTHON" benchmarks/pareto.py "$RESULTS_DIR/peers-fmnist-full.json"

"$AUTOPROG" bench pretrain --name peers-fmnist-5k-32ep --methods "$METHODS" --seeds "$SMALL_SEEDS" \
    --train-subset 5000 --epochs 32 --results-dir "$RESULTS_DIR" --runs-dir "$RUNS_DIR" "${SMOKE[@]}" "$@"
"$PYTHON" benchmarks/pareto.py "$RESULTS_DIR/peers-fmnist-5k-32ep.json"
