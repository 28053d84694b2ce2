#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with prunefl and its pinned dependencies, and the
# Fashion-MNIST files from Debian's dataset-fashion-mnist package when they are missing and we may install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.prunefl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing prunefl and its dependencies into .venv" >&2
    # torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build; never a CUDA build.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,flower,simulation]" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    .venv/bin/python -c "import prunefl, torch" || { echo "bootstrap: installation failed" >&2; exit 1; }
    touch "$stamp"
fi

FMNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Fashion-MNIST (Debian package dataset-fashion-mnist)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2 \
            || echo "bootstrap: could not install dataset-fashion-mnist; tests that need it are skipped" >&2
    else
        echo "bootstrap: Fashion-MNIST is missing from $FMNIST_DIR. Install it with" >&2
        echo "    sudo apt-get install dataset-fashion-mnist" >&2
        echo "or download the four IDX files (train-images-idx3-ubyte.gz, ...) and pass --set data.data_dir=DIR." >&2
    fi
fi
