#!/usr/bin/env bash
# Tab. XI analog: weight recycling on/off in AutoProg-One, 1 seed, ~6 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --search-rule paper --name ablation-recycling --methods autoprog-one,autoprog-one:recycle=false --seeds 0 --train-subset 5000 --epochs 8 "$@"
