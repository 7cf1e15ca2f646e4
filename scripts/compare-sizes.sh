#!/usr/bin/env bash
# Compressed sizes, padic-burst against ZipNN 0.5.4 (one instance, its default
# method, the whole file), on the real MiniLM weights in f32, bf16 and f16, and
# on a model of 490 small tensors cut from the same real values
# (scripts/peers/small_tensors.py). Sizes do not depend on the machine's load.
#
#   scripts/compare-sizes.sh [WEIGHTS_DIR]
#
# Installs ZipNN (and safetensors, NumPy, ml_dtypes) into .venv-peers
# (override with PEERS_VENV) and the weights with scripts/fetch-test-weights.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
weights=$(scripts/fetch-test-weights.sh "${1:-${PADIC_TEST_WEIGHTS:-$root/target/test-weights}}")
venv=${PEERS_VENV:-$root/.venv-peers}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import zipnn, safetensors, numpy, ml_dtypes" 2>/dev/null ||
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check zipnn==0.5.4 safetensors numpy ml_dtypes
cargo build --release --quiet --bin padic-burst
bin=target/release/padic-burst
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-28s %12s %12s %12s %10s\n' file original padic-burst zipnn "ours/zipnn"
for dtype in f32 bf16 f16; do
  name=$(case $dtype in f32) echo float32 ;; bf16) echo bfloat16 ;; f16) echo float16 ;; esac)
  src="$weights/minilm-$dtype.safetensors"
  "$venv/bin/python" scripts/peers/small_tensors.py "$src" "$work/small-$dtype.safetensors"
  for f in "$src" "$work/small-$dtype.safetensors"; do
    $bin --quiet compress "$f" -o "$work/x.padic" 2>/dev/null
    ours=$(stat -c %s "$work/x.padic")
    theirs=$("$venv/bin/python" scripts/peers/zipnn_size.py "$f" "$name" 2>/dev/null)
    printf '%-28s %12d %12d %12d %10s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$ours" "$theirs" \
      "$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.4f", a / b }')"
  done
done
