#!/usr/bin/env bash
# Set up autoprog on a fresh machine: Fashion-MNIST from Debian, a virtualenv in .venv with the
# package (editable) and its test tools. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "install.sh: Fashion-MNIST missing; run: sudo apt-get install -y dataset-fashion-mnist" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The exact versions the tests run on (torch 2.14.1, torchvision 0.29.1, ...) are pinned in
# scripts/constraints.txt, not in pyproject.toml; they come from this machine's local package index (pip config).
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt \
  -e ".[test,diffusion,lightning,tensorboard]"
