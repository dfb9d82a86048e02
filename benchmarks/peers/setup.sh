#!/usr/bin/env bash
# Make the virtual environment of one peer for benchmarks/peers.py: benchmarks/peers/.venvs/PEER (git-ignored),
# never the project's .venv. Offline apart from the package index: no weights or data are downloaded, here or
# when the peer runs.
#
#   bash benchmarks/peers/setup.sh stardist|cellpose [--force]
#
# stardist: StarDist 0.9.2 on TensorFlow for CPU (tensorflow-cpu 2.21.0, Keras 3). tensorboard is needed too:
#           StarDist2D.train adds a TensorBoard callback and fails with TBNotInstalledError without it.
# cellpose: Cellpose 3.1.1.3, the last release that trains a model from scratch without downloading weights
#           (4.x fetches its SAM model), on torch 2.13.0. It pins numpy<2.1, hence its own environment. torch
#           2.13.0 resolves to the CPU build where the index offers one (this machine's); elsewhere pass PyTorch's
#           CPU wheel index in PEERS_PIP_ARGS (e.g. PEERS_PIP_ARGS="--extra-index-url URL") or get the CUDA build.
# Both: imagecodecs (LZW TIFFs such as DIC-HeLa's frames) and pillow (PNG) for the images the run scripts read.
#
# Environment: PYTHON (interpreter for the venv, default python3), PEERS_PIP_ARGS (more pip install flags).
# On success (the packages import) writes .venvs/PEER/ready with the installed versions (pip freeze);
# benchmarks/peers.py checks it.
set -euo pipefail

usage() { echo "usage: bash benchmarks/peers/setup.sh stardist|cellpose [--force]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
peer=$1
force=${2:-}
[[ -z $force || $force == --force ]] || usage
case $peer in
  stardist) packages=(stardist==0.9.2 tensorflow-cpu==2.21.0 tensorboard imagecodecs pillow)
            check="import stardist.models, tensorflow, tensorboard, imagecodecs, PIL" ;;
  cellpose) packages=(cellpose==3.1.1.3 torch==2.13.0 imagecodecs pillow)
            check="import cellpose.models, cellpose.train, imagecodecs, PIL" ;;
  *) echo "setup.sh: unknown peer '$peer' (expected stardist or cellpose)" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$here/.venvs/$peer
if [[ -f $venv/ready && $force != --force ]]; then
  echo "setup.sh: $venv is ready (--force to make it again)" >&2
  exit 0
fi
rm -rf "$venv"
start=$SECONDS
"${PYTHON:-python3}" -m venv "$venv"
# shellcheck disable=SC2086  # PEERS_PIP_ARGS holds several flags on purpose
"$venv/bin/python" -m pip install --quiet ${PEERS_PIP_ARGS:-} "${packages[@]}"
"$venv/bin/python" -c "$check"  # fails here, not in the first timed run, where the install is broken
"$venv/bin/python" -m pip freeze > "$venv/ready.tmp"
mv "$venv/ready.tmp" "$venv/ready"
echo "setup.sh: $peer environment made in $((SECONDS - start)) s: $venv" >&2
