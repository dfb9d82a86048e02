#!/usr/bin/env bash
# Create .venv (if missing) and install torch 2.13.0 and biounet into it.
#
#   bash scripts/setup.sh demo    biounet alone: what `biounet demo`, train, predict and evaluate need
#   bash scripts/setup.sh         (or `test`) biounet with its test extra: napari and Qt, bioimage.io, Dask,
#                                 ONNX Runtime, python-elf, the docs builder; what `.venv/bin/python -m pytest` needs
#
# Environment:
#   PYTHON=python3.12          the interpreter that makes the venv (default: python3; 3.10 or newer)
#   BIOUNET_TORCH=cpu|cuda     which torch build (default: cuda where nvidia-smi sees a GPU, else cpu). On Linux,
#                              PyPI's torch is the CUDA build (several GB); the CPU build comes from PyTorch's CPU
#                              wheel index, or, where that index is out of reach, from pip's own configured sources.
#   BIOUNET_SETUP_DRY_RUN=1    print the commands that would change anything instead of running them
#   BIOUNET_VENV=DIR           the virtual environment's folder (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-test}"
case "$MODE" in
  demo) TARGET="." ;;
  test) TARGET=".[test]" ;;
  *) echo "usage: bash scripts/setup.sh [demo|test]  (got '$MODE')" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
VENV="${BIOUNET_VENV:-.venv}"
TORCH_VERSION="2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
BUILD="${BIOUNET_TORCH:-auto}"
case "$BUILD" in
  cpu|cuda) ;;
  auto) if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then BUILD=cuda; else BUILD=cpu; fi ;;
  *) echo "setup: BIOUNET_TORCH must be cpu or cuda, got '$BUILD'" >&2; exit 2 ;;
esac

run() {  # run a command, or only print it with BIOUNET_SETUP_DRY_RUN=1
  if [ -n "${BIOUNET_SETUP_DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: '$PYTHON' not found: install Python 3.10 or newer, or name it with PYTHON=..." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    echo "setup: '$PYTHON -m venv' is not available: on Debian or Ubuntu run 'sudo apt install python3-venv' (the package of your Python version, e.g. python3.11-venv), then run this script again" >&2
    exit 1
  fi
  run "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

has_torch() {  # torch $TORCH_VERSION (any build) is in the venv already
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" >/dev/null 2>&1
}

cpu_index_reachable() {
  "$PYTHON" -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=10)" >/dev/null 2>&1
}

# torch first and pinned: a plain torch (or one that biounet's own requirement pulls in) would be PyPI's CUDA build.
if has_torch; then
  echo "setup: torch $TORCH_VERSION is installed already"
elif [ "$BUILD" = cpu ] && [ "$(uname -s)" = Linux ]; then
  if cpu_index_reachable; then
    echo "setup: torch $TORCH_VERSION, CPU build, from PyTorch's CPU wheel index"
    run "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
  else
    echo "setup: PyTorch's CPU wheel index is out of reach; torch==$TORCH_VERSION from pip's configured sources"
    run "${PIP[@]}" "torch==$TORCH_VERSION"
  fi
else  # macOS and Windows: PyPI's torch is the CPU (and Apple GPU) build; Linux with BIOUNET_TORCH=cuda: the CUDA one
  echo "setup: torch $TORCH_VERSION ($BUILD) from the package index"
  run "${PIP[@]}" "torch==$TORCH_VERSION"
fi
echo "setup: biounet ($MODE): pip install -e '$TARGET'"
run "${PIP[@]}" -e "$TARGET"

# The napari widget tests open the real viewer on a virtual X display (Debian's xvfb) where one can be installed
# (as root with apt-get: CI, containers); elsewhere they run on napari's ViewerModel, the same layers without a canvas.
if [ "$MODE" = test ] && [ -z "${BIOUNET_SETUP_DRY_RUN:-}" ] && ! command -v Xvfb >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if { apt-get install -y -qq xvfb || { apt-get update -qq && apt-get install -y -qq xvfb; }; } >/dev/null 2>&1; then
    echo "installed Debian's xvfb (a virtual X display for the napari viewer tests)"
  else
    echo "could not install xvfb: the napari tests will use napari's ViewerModel instead of the real viewer"
  fi
fi
if [ -z "${BIOUNET_SETUP_DRY_RUN:-}" ]; then
  "$VENV/bin/python" -c "import biounet, torch; print(f'biounet {biounet.__version__} ready (torch {torch.__version__})')"
fi
