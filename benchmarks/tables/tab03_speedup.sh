#!/usr/bin/env bash
# Tab. III analog: speed-up at equal accuracy (full, Prog, AutoProg-One), 3 seeds, ~35 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --search-rule paper --name pretrain-fmnist-5k-8ep --methods full,prog,autoprog-one --seeds 0,1,2 --train-subset 5000 --epochs 8 "$@"
