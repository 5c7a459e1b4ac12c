#!/usr/bin/env bash
# Issue 9: autoprog's per-step overhead against a plain PyTorch loop, 3 alternating trials, ~8 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
.venv/bin/python benchmarks/overhead.py --trials 3 --epochs 2 --train-subset 5000 "$@"
