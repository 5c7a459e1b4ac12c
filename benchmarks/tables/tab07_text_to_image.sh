#!/usr/bin/env bash
# Tab. VII / XIII analog: text-to-image fine-tuning of the project's Stable-Diffusion stand-in (UNet + CLIP text encoder, Fashion-MNIST captions) to MNIST-5k captions: full vs Prog vs AutoProg-One vs AutoProg-Zero with and without caption SID, 1 seed, ~25 min incl. making the source.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" source t2i-fmnist
"$AUTOPROG" bench finetune --search-rule paper --name t2i-mnist5k --model t2i-fmnist --data mnist-5k --lr 1e-4 --steps 300 --fid-samples 200 --methods full,prog,autoprog-one,autoprog-zero,autoprog-zero:sid=false "$@"
