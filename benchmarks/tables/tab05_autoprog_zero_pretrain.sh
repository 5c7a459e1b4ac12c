#!/usr/bin/env bash
# Tab. V analog: AutoProg-Zero as the growth-schedule chooser of ViT pre-training (SID off), beside full, Prog and AutoProg-One, 1 seed, ~10 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench pretrain --search-rule paper --name pretrain-autoprog-zero --methods full,prog,autoprog-one,autoprog-zero --seeds 0 --train-subset 5000 --epochs 8 "$@"
