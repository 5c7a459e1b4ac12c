#!/usr/bin/env bash
# Tab. X analog: MoGrow inside AutoProg-One, 1 seed, ~6 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --search-rule paper --name ablation-autoprog-one --methods autoprog-one,autoprog-one:operator=mogrow,autoprog-one:recycle=false --seeds 0 --train-subset 5000 --epochs 8 "$@"
