#!/usr/bin/env bash
# Installs NVRTC (the CUDA run-time compiler, PyPI wheel nvidia-cuda-nvrtc,
# CUDA 13) into a cache folder, so that the `cuda` feature's kernels can be
# compiled by the tests on a machine with no GPU and no CUDA toolkit.
#
#   scripts/fetch-nvrtc.sh [CACHE_DIR]      (default: target/nvrtc)
#
# Prints the folder holding libnvrtc.so.13 (put it on LD_LIBRARY_PATH).
# Idempotent: a second run reuses what is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/target/nvrtc}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
find_lib() { { find "$cache/venv" -name 'libnvrtc.so.1[0-9]*' -not -name '*builtins*' 2>/dev/null || true; } | head -1; }
lib=$(find_lib)
if [ -z "$lib" ]; then
  py=${PYTHON:-python3}
  [ -x "$cache/venv/bin/python" ] || "$py" -m venv "$cache/venv" >&2
  "$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check 'nvidia-cuda-nvrtc>=13,<14' >&2
  lib=$(find_lib)
fi
[ -n "$lib" ] || { echo "fetch-nvrtc: libnvrtc not found after installing nvidia-cuda-nvrtc" >&2; exit 1; }
dirname "$lib"
