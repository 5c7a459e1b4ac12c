#!/usr/bin/env bash
# Tab. XII analog: the Unique Stage Identifier on/off, with the same manual (Prog) and the same searched (AutoProg-Zero, FLOPs runtime) schedules, 1 seed, ~30 min with FID.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
"$AUTOPROG" bench finetune --search-rule paper --name finetune-sid --methods prog,prog:sid=false,autoprog-zero:search_runtime=flops,autoprog-zero:search_runtime=flops:sid=false "$@"
