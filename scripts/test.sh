#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (slow end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
# The native CSR kernels must build here (gcc is part of the machine): a silent fallback would leave them untested.
export PRUNEFL_REQUIRE_NATIVE=${PRUNEFL_REQUIRE_NATIVE:-1}
echo "type check: mypy src/prunefl" >&2
.venv/bin/python -m mypy src/prunefl
exec .venv/bin/python -m pytest -q --durations=20 "$@"  # the 20 slowest tests, to keep the suite fast
