#!/usr/bin/env bash
# README command 1: set up, then run the paper's comparison on the embedded default (Fashion-MNIST, Conv-2,
# 10 clients): FedAvg, PruneFL and seven baselines (~30 minutes on a 2-core machine), one seed, two
# runs at a time on one thread each, ending with the comparison table. Extra arguments go to `prunefl compare`
# (e.g. --seeds 0,1,2, or --methods to choose others; `prunefl methods` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/prunefl compare --config configs/fmnist-conv2.toml \
    --methods fedavg,prunefl,snip,synflow,iterative,online,feddst,reinit,random-reinit \
    --seeds 0 --jobs 2 --set threads=1 "$@"
