#!/usr/bin/env bash
# Transfer of a pre-trained ViT (Fashion-MNIST) to MNIST-5k by fine-tuning: full vs BitFit vs Prog vs AutoProg-Zero (Tab. IV setting, issue 5), 1 seed, ~10 min.
# Run from anywhere; writes benchmarks/results/<name>.{json,md,png}. Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOPROG="${AUTOPROG:-.venv/bin/autoprog}"
SOURCE="${SOURCE:-runs/vit-fmnist-source}"
if [ ! -f "$SOURCE/model.pt" ]; then
  "$AUTOPROG" pretrain --method full --train-subset 5000 --epochs 8 --out "$SOURCE" --progress off
fi
"$AUTOPROG" bench finetune --search-rule paper --name transfer-vit-mnist5k --model "$SOURCE" --data mnist-5k --methods full,bitfit,prog,autoprog-zero "$@"
