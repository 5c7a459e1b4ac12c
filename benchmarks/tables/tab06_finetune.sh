#!/usr/bin/env bash
# Tab. VI analog: fine-tuning a DiT (Fashion-MNIST source) to MNIST-5k, every method, 1 seed, ~60 min with FID.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench finetune --search-rule paper --methods full,bitfit,difffit,lora,prog,autoprog-one,autoprog-zero,autoprog-zero:sid=false --name finetune-mnist5k "$@"
