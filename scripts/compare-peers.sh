#!/usr/bin/env bash
# Compares padic-burst with ZipNN 0.5.4 on the real test weights, in one run:
# compressed ratio, and decode throughput (decoded GB/s, best of 5, in memory)
# at 1 and 2 threads.
#
#   scripts/compare-peers.sh [WEIGHTS_DIR]
#
# Installs ZipNN from PyPI into .venv-peers (override with PEERS_VENV) and the
# weights with scripts/fetch-test-weights.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
weights=$(scripts/fetch-test-weights.sh "${1:-${PADIC_TEST_WEIGHTS:-$root/target/test-weights}}")
venv=${PEERS_VENV:-$root/.venv-peers}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import zipnn" 2>/dev/null || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check zipnn==0.5.4
cargo build --release --quiet --bin padic-burst --example throughput
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%-5s %-12s %8s %14s %14s\n' dtype tool ratio "GB/s 1 thr" "GB/s 2 thr"
for dtype in bf16 f16 f32; do
  file="$weights/minilm-$dtype.safetensors"
  target/release/padic-burst --quiet compress "$file" -o "$work/$dtype.padic" 2>/dev/null
  ratio=$(target/release/padic-burst inspect --json "$work/$dtype.padic" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ratio"])')
  g1=$(target/release/examples/throughput "$work/$dtype.padic" 1 5 | sed 's/.*gb_per_s=//')
  g2=$(target/release/examples/throughput "$work/$dtype.padic" 2 5 | sed 's/.*gb_per_s=//')
  printf '%-5s %-12s %8s %14s %14s\n' "$dtype" padic-burst "$ratio" "$g1" "$g2"
  "$venv/bin/python" - "$file" "$dtype" <<'PY'
import sys, time
from zipnn import ZipNN
path, dtype = sys.argv[1], sys.argv[2]
name = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]
data = open(path, "rb").read()
row = []
ratio = None
for threads in (1, 2):
    # 0.5.4 reorders the bytes of its input in place: give it a copy it may spoil.
    packed = ZipNN(input_format="byte", bytearray_dtype=name, threads=threads).compress(bytearray(data))
    # A fresh instance decodes: 0.5.4's compressor leaves state that breaks its own decompress.
    z = ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)
    ratio = len(packed) / len(data)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        out = z.decompress(packed)
        best = min(best, time.perf_counter() - t)
    assert bytes(out) == data, "ZipNN round trip differs"
    row.append(len(data) / best / 1e9)
print("%-5s %-12s %8.4f %14.3f %14.3f" % (dtype, "zipnn-0.5.4", ratio, row[0], row[1]))
PY
done
