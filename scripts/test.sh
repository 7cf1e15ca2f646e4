#!/usr/bin/env bash
# The test command (README, .ci/run): fetches the real test weights and NVRTC
# (scripts/fetch-nvrtc.sh), then runs
# every test, the doc tests and a build of the benches and examples, with the
# `cuda` feature on (it builds and runs without CUDA: GPU checks skip, saying
# why), and checks that the default build (no `cuda`) compiles too. Then the
# Python package: `pip install ./python` into a virtual environment kept in
# target/python-venv (maturin builds in target/, so an unchanged crate is not
# rebuilt), and its pytest suite. PYTHON picks the interpreter [python3].
set -euo pipefail
cd "$(dirname "$0")/.."
export PADIC_TEST_WEIGHTS=${PADIC_TEST_WEIGHTS:-$PWD/target/test-weights}
scripts/fetch-test-weights.sh "$PADIC_TEST_WEIGHTS" >/dev/null
export PADIC_REQUIRE_REAL_WEIGHTS=1
# NVRTC from PyPI, so that the kernels' compile test runs here too (no GPU
# or CUDA toolkit needed).
nvrtc=$(scripts/fetch-nvrtc.sh)
export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PADIC_REQUIRE_NVRTC=1
cargo test --release --workspace --all-targets --features cuda
cargo test --release --workspace --doc --features cuda
cargo check --release --workspace --all-targets
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" numpy safetensors ml_dtypes pytest
"${pip[@]}" --force-reinstall --no-deps ./python
"$venv/bin/python" -m pytest -q -rs python/tests
