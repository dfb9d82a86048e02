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
# The napari widget tests open the real viewer on a virtual X display (Debian's xvfb) where one can be installed
# (as root with apt-get: CI, containers); elsewhere they run on napari's ViewerModel, the same layers without a canvas.
if ! command -v Xvfb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if { apt-get install -y -qq xvfb || { apt-get update -qq && apt-get install -y -qq xvfb; }; } >/dev/null 2>&1; then
    echo "installed Debian's xvfb (a virtual X display for the napari viewer tests)"
  else
    echo "could not install xvfb: the napari tests will use napari's ViewerModel instead of the real viewer"
  fi
fi
.venv/bin/python -c "import biounet, torch; print(f'biounet {biounet.__version__} ready (torch {torch.__version__})')"
