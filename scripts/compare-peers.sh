#!/usr/bin/env bash
# Compares padic-burst with ZipNN 0.5.4 on the real test weights, in one run:
# compressed ratio, and decode throughput (decoded GB/s, best of 10, in memory,
# into a freshly allocated buffer as ZipNN's decompress returns one) at 1 and
# 2 threads, and the ratio of the two tools' throughputs. padic-burst's
# throughput into a reused buffer (a streaming loader's case) is shown apart.
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

printf '%-5s %-12s %8s %14s %14s %22s\n' dtype tool ratio "GB/s 1 thr" "GB/s 2 thr" "reused-buffer 1 / 2"
for dtype in bf16 f16 f32; do
  file="$weights/minilm-$dtype.safetensors"
  target/release/padic-burst --quiet compress "$file" -o "$work/$dtype.padic" 2>/dev/null
  ratio=$(target/release/padic-burst inspect --json "$work/$dtype.padic" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ratio"])')
  t1=$(target/release/examples/throughput "$work/$dtype.padic" 1 10)
  t2=$(target/release/examples/throughput "$work/$dtype.padic" 2 10)
  g1=$(echo "$t1" | sed 's/.*fresh_gb_per_s=\([0-9.]*\).*/\1/')
  g2=$(echo "$t2" | sed 's/.*fresh_gb_per_s=\([0-9.]*\).*/\1/')
  r1=$(echo "$t1" | sed 's/.*reused_gb_per_s=//')
  r2=$(echo "$t2" | sed 's/.*reused_gb_per_s=//')
  printf '%-5s %-12s %8s %14s %14s %22s\n' "$dtype" padic-burst "$ratio" "$g1" "$g2" "$r1 / $r2"
  echo "$g1 $g2" > "$work/ours"
  "$venv/bin/python" - "$file" "$dtype" "$work/ours" <<'PY'
import sys, time
from zipnn import ZipNN
path, dtype, ours = sys.argv[1], sys.argv[2], sys.argv[3]
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
    for _ in range(10):
        t = time.perf_counter()
        out = z.decompress(packed)
        best = min(best, time.perf_counter() - t)
    assert bytes(out) == data, "ZipNN round trip differs"
    row.append(len(data) / best / 1e9)
print("%-5s %-12s %8.4f %14.3f %14.3f" % (dtype, "zipnn-0.5.4", ratio, row[0], row[1]))
g1, g2 = (float(x) for x in open(ours).read().split())
print("%-5s %-12s %8s %13.2fx %13.2fx" % (dtype, "speed ratio", "", g1 / row[0], g2 / row[1]))
PY
done
