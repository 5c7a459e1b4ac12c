#!/usr/bin/env bash
# Issue 17: AutoProg against its peers. full, equal-time full (matched to Prog's wall-clock), Prog, AutoProg-One,
# AutoProg-Zero, progressive resizing (Composer) and EfficientTrain++ side by side, with `autoprog bench pretrain`, on
#   (a) the data-rich benchmark: the whole Fashion-MNIST training split minus the validation images, 10k test, >= 2 seeds;
#   (b) Fashion-MNIST 5k at 32 epochs, 2 seeds (the setting of pretrain-fmnist-5k-32ep).
# Writes benchmarks/results/peers-{fmnist-full,fmnist-5k-32ep}.{json,md,png} and their -pareto.{png,md}
# (top-1 against time / full, every method, the Pareto front: benchmarks/pareto.py).
# Run from anywhere, on a quiet machine (nothing else running). Extra arguments go to both invocations;
# PEERS_PARTS=data-rich (or small) runs one of them.
# Smoke test of this script (tiny data, 2 epochs, results under /tmp): PEERS_SMOKE=1 benchmarks/tables/peers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
PYTHON="${PYTHON:-.venv/bin/python}"

# -- (a) the data-rich benchmark (settings chosen in issue 17; docs/benchmarks.md "Data-rich regime" says why) -----
# A narrow ViT: vit_tiny_patch16_224's layout at width 64, 2 heads, depth 6, patch 4 (about 0.3 M parameters): on 2
# CPU cores one epoch of 59,000 images takes ~100 s, so 5 epochs of all ten variants of one seed (about six full
# runs' worth of time) fit in ~50 minutes. Wider models (96: ~170 s/epoch, 192: ~430 s) leave too few epochs for a
# four-stage schedule.
DR_MODEL="${DR_MODEL:-vit_tiny_patch16_224}"
DR_WIDTH="${DR_WIDTH:---embed-dim 64 --num-heads 2}"
DR_DEPTH="${DR_DEPTH:-6}"
DR_EPOCHS="${DR_EPOCHS:-5}"
# Regularisation in the spirit of the paper's DeiT recipe, light for a 5-epoch budget and the same for every method:
# random erasing and label smoothing 0.1 (the default), both batch operations. Not RandAugment: it runs per image in
# the training process (no spare core for a loader worker here) and costs ~30 s an epoch whatever the model's size,
# which made the small stages data-bound (measured: Prog's 24 px / depth 5 epoch took 98 s against full's 110 s).
# DR_REG="--randaug rand-m6-mstd0.5-inc1 --reprob 0.1" gives EfficientTrain++ its magnitude ramp at that price.
DR_REG="${DR_REG:---reprob 0.1}"
# The regime check's fixed sub-networks: the full method on a smaller input and depth, the same epochs.
DR_FIXED="${DR_FIXED:-full:img_size=16:depth=3,full:img_size=16:depth=6,full:img_size=20:depth=6}"
DR_SEEDS="${DR_SEEDS:-0,1}"
PARTS="${PEERS_PARTS:-data-rich,small}"  # which of (a) data-rich, (b) small to run
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

if [[ ",$PARTS," == *,data-rich,* ]]; then
    # shellcheck disable=SC2086  # DR_WIDTH and DR_REG are lists of options
    "$AUTOPROG" bench pretrain --name peers-fmnist-full --methods "$METHODS,$DR_FIXED" --seeds "$DR_SEEDS" \
        --model "$DR_MODEL" $DR_WIDTH --depth "$DR_DEPTH" --patch-size 4 --train-subset "$DR_TRAIN" \
        --val-size "$VAL_SIZE" --epochs "$DR_EPOCHS" $DR_REG --results-dir "$RESULTS_DIR" --runs-dir "$RUNS_DIR" \
        "${SMOKE[@]}" "$@"
    "$PYTHON" benchmarks/pareto.py "$RESULTS_DIR/peers-fmnist-full.json"
    "$PYTHON" benchmarks/regime.py "$RESULTS_DIR/peers-fmnist-full.json"
fi
if [[ ",$PARTS," == *,small,* ]]; then
    "$AUTOPROG" bench pretrain --name peers-fmnist-5k-32ep --methods "$METHODS" --seeds "$SMALL_SEEDS" \
        --train-subset 5000 --epochs 32 --results-dir "$RESULTS_DIR" --runs-dir "$RUNS_DIR" "${SMOKE[@]}" "$@"
    "$PYTHON" benchmarks/pareto.py "$RESULTS_DIR/peers-fmnist-5k-32ep.json"
fi
