#!/usr/bin/env bash
# Issue 4: the Tab. VI comparison (DiT, Fashion-MNIST source -> MNIST-5k) at 4x the steps (3,200), 1 seed, ~40 min with FID.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench finetune --search-rule paper --methods full,prog,autoprog-one,autoprog-zero --steps 3200 --name finetune-mnist5k-3200 "$@"
