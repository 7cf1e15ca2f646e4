#!/usr/bin/env bash
# The test command (README, .ci/run): fetches the real test weights, then runs
# every test, the doc tests and a build of the benches and examples.
set -euo pipefail
cd "$(dirname "$0")/.."
export PADIC_TEST_WEIGHTS=${PADIC_TEST_WEIGHTS:-$PWD/target/test-weights}
scripts/fetch-test-weights.sh "$PADIC_TEST_WEIGHTS" >/dev/null
export PADIC_REQUIRE_REAL_WEIGHTS=1
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
