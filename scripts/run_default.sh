#!/usr/bin/env bash
# README command 1: set up, then run the embedded default experiment (Fashion-MNIST, Conv-2, 10 clients).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/prunefl run --config configs/fmnist-conv2.toml "$@"
