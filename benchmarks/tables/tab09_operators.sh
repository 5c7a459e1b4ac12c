#!/usr/bin/env bash
# Tab. IX analog: growth operators under Prog, 1 seed, ~10 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --name ablation-operators --methods prog:operator=randinit,prog:operator=stacking,prog:operator=interpolation,prog:operator=identity,prog:operator=mogrow --seeds 0 --train-subset 5000 --epochs 8 "$@"
