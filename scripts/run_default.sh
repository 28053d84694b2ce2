#!/usr/bin/env bash
# README command 1: set up, then run the embedded default experiment: PruneFL next to FedAvg with the same
# settings (Fashion-MNIST, Conv-2, 10 clients), printing both summaries. Extra arguments go to `prunefl compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/prunefl compare --config configs/fmnist-conv2.toml --methods prunefl,fedavg "$@"
