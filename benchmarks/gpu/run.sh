#!/usr/bin/env bash
# The GPU evidence run (issue 19): CUDA tests, converged-scale pre-training, DiT fine-tuning, in under 8 minutes.
# One command, no arguments: bash benchmarks/gpu/run.sh   (--dry-run: the whole script on the CPU at toy size)
# Writes results.json, log.txt, cuda-tests.xml and dit-samples.npz under $OUT if set, else benchmarks/results/gpu/.
# Settings: GPU_* environment variables (benchmarks/gpu/driver.py, class Settings); PYTHON (default python3).
# What it needs that the GPU machine lacks travels in benchmarks/gpu/carry/ (benchmarks/gpu/prepare.sh makes it).
# See benchmarks/gpu/README.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); fi
OUT="${OUT:-$ROOT/benchmarks/results/gpu}"
WORK="${GPU_WORK:-${TMPDIR:-/tmp}/autoprog-gpu-$$}"
PYTHON="${PYTHON:-python3}"
LIMIT="${GPU_TIME_LIMIT_S:-$([[ ${#DRY[@]} -gt 0 ]] && echo 110 || echo 480)}"
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
export AUTOPROG_CACHE="${AUTOPROG_CACHE:-$WORK/cache}" MPLBACKEND=Agg
export GPU_TIME_LIMIT_S="$LIMIT"

# Packages the machine lacks (diffusers, mlxtend: benchmarks/gpu/prepare.sh downloads their wheels here).
if compgen -G "$ROOT/benchmarks/gpu/carry/wheels/*.whl" >/dev/null && ! "$PYTHON" -c "import diffusers, mlxtend" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        "$ROOT"/benchmarks/gpu/carry/wheels/*.whl >>"$OUT/log.txt" 2>&1 \
        && export PYTHONPATH="$PYTHONPATH:$WORK/site" || echo "installing the carried wheels failed (see log.txt)"
fi
# A DiT source made beforehand (prepare.sh copies one from the local cache) saves its minutes here.
if [[ -d "$ROOT/benchmarks/gpu/carry/sources" ]]; then
    mkdir -p "$AUTOPROG_CACHE/sources" && cp -r "$ROOT"/benchmarks/gpu/carry/sources/. "$AUTOPROG_CACHE/sources/"
fi

# The hard limit: SIGTERM at LIMIT seconds (the driver writes what it has and stops), SIGKILL 15 s later.
timeout --signal=TERM --kill-after=15 "$LIMIT" "$PYTHON" benchmarks/gpu/driver.py "${DRY[@]}" --out "$OUT" --work "$WORK"
rc=$?
[[ -n "${GPU_KEEP_WORK:-}" ]] || rm -rf "$WORK"
echo "benchmarks/gpu/run.sh: rc $rc; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $rc
