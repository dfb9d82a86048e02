#!/usr/bin/env bash
# Create .venv (if missing) and install biounet with its test extras and the CPU build of torch 2.13.0.
# Usage: bash scripts/setup.sh            (PYTHON=python3.12 bash scripts/setup.sh to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build where a CPU build is wanted.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -c "import biounet, torch; print(f'biounet {biounet.__version__} ready (torch {torch.__version__})')"
