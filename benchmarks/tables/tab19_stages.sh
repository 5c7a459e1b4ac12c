#!/usr/bin/env bash
# Tab. XIX analog: number of stages in AutoProg-One (2, 3, 4, 8) against full training, 1 seed, ~12 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --search-rule paper --name ablation-stages --methods full,autoprog-one:stages=2,autoprog-one:stages=3,autoprog-one,autoprog-one:stages=8 --seeds 0 --train-subset 5000 --epochs 8 "$@"
