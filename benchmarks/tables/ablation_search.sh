#!/usr/bin/env bash
# Issue 16: the search's remedies alone and combined (autoprog.search.rules), against full and Prog, on Fashion-MNIST 5k.
#   8 epochs, 3 seeds  -> benchmarks/results/ablation-search-8ep.{json,md,png}   (~12 min per seed for the core set)
#   32 epochs, 2 seeds -> benchmarks/results/ablation-search-32ep.{json,md,png} (~50 min per seed for the core set)
# ABLATION=core (default): full, prog, the paper's rule, horizon (the default) and horizon without its w floor, the
#   trial rule (no supernet: each candidate trained alone for a few steps), and AutoProg-Zero under paper and horizon; ABLATION=all adds each remedy alone on top of the paper's rule;
#   ABLATION=default: full, prog, both searches under the default rule and AutoProg-One under trial (a 32-epoch seed: ~60 min).
# BUDGETS="8 32" (default) picks the budgets. The default rule is chosen on the validation columns (val_top1);
# top-1 (test) only reports. (The scripts of the paper's tables pass --search-rule paper: as published.)
# Run from anywhere, on a quiet machine (nothing else running). Extra arguments go to every invocation. Smoke test (tiny, results under /tmp): ABLATION_SMOKE=1 benchmarks/tables/ablation_search.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
P=autoprog-one:search_rule=paper
CORE="full,prog,$P,autoprog-one,autoprog-one:search_w_floor=0,autoprog-one:search_rule=trial"
CORE="$CORE,autoprog-zero:search_rule=paper,autoprog-zero"
ALONE="$P:search_reach=true,$P:search_exam=validation,$P:search_sampling=rounds,$P:search_w_floor=0.1"
ALONE="$ALONE,$P:search_supernet_fraction=0.125,autoprog-zero:search_rule=paper:vote_weights=time=1,ntk=1,zico=1"
case "${ABLATION:-core}" in
    core) METHODS="$CORE" ;;
    default) METHODS="full,prog,autoprog-one,autoprog-one:search_rule=trial,autoprog-zero" ;;
    all) METHODS="$CORE,$ALONE" ;;
    *) echo "ABLATION must be core, all or default" >&2; exit 2 ;;
esac
RESULTS_DIR="${RESULTS_DIR:-benchmarks/results}"
RUNS_DIR="${RUNS_DIR:-runs/bench}"
SMOKE=()
if [[ "${ABLATION_SMOKE:-0}" == 1 ]]; then
    SMOKE=(--train-subset 256 --val-size 64 --test-subset 200 --batch-size 64 --depth 4 --search-samples 64 --stages 3
           --ntk-samples 4 --progress off)
    RESULTS_DIR=/tmp/autoprog-ablation-smoke/results RUNS_DIR=/tmp/autoprog-ablation-smoke/runs
fi
for epochs in ${BUDGETS:-8 32}; do
    seeds=0,1,2; [[ "$epochs" -ge 32 ]] && seeds=0,1
    [[ "${ABLATION_SMOKE:-0}" == 1 ]] && seeds=0 && epochs=3
    "$AUTOPROG" bench pretrain --name "ablation-search-${epochs}ep" --methods "$METHODS" --seeds "${SEEDS:-$seeds}" \
        --train-subset 5000 --epochs "$epochs" --results-dir "$RESULTS_DIR" --runs-dir "$RUNS_DIR" "${SMOKE[@]}" "$@"
    [[ "${ABLATION_SMOKE:-0}" == 1 ]] && break
done
