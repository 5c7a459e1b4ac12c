#!/usr/bin/env bash
# Fills benchmarks/gpu/carry/ (git-ignored) with what the GPU machine lacks, to name in the device run's `carry`:
#   fashion-mnist/  the four idx files (~30 MB), from FMNIST_DIR (default: the Debian package's folder);
#   wheels/         diffusers and mlxtend (the machine has neither; ~7.7 MB), pip-downloaded for Python 3.12;
#   sources/        the cached dit-fmnist source, if this machine has made it (else run.sh makes it there).
# Run once, in the checkout that launches the run. Prints the carry folder's size (the tree must stay <= 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=benchmarks/gpu/carry
PYTHON="${PYTHON:-.venv/bin/python}"
FMNIST_DIR="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
mkdir -p "$CARRY/fashion-mnist" "$CARRY/wheels"
cp "$FMNIST_DIR"/{train,t10k}-{images-idx3,labels-idx1}-ubyte* "$CARRY/fashion-mnist/"
# diffusers: the version the tests ran on (scripts/constraints.txt), mlxtend: the venv's; --no-deps: the machine has their
# dependencies (diffusers needs huggingface-hub>=1.32 and safetensors>=0.8: it has 1.33 and 0.8.0).
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY/wheels" "diffusers==${DIFFUSERS_VERSION:-0.42.1}" "mlxtend==${MLXTEND_VERSION:-0.25.0}"
SOURCES="${AUTOPROG_CACHE:-$HOME/.cache/autoprog}/sources"
if compgen -G "$SOURCES/dit-fmnist-v*" >/dev/null; then
    mkdir -p "$CARRY/sources" && cp -r "$SOURCES"/dit-fmnist-v* "$CARRY/sources/"
fi
du -sh "$CARRY"
