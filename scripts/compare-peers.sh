#!/usr/bin/env bash
# Compares padic-burst with ZipNN 0.5.4 on the real test weights:
# compressed ratio, and decode throughput (decoded GB/s, in memory, into a
# freshly allocated buffer as ZipNN's decompress returns one) at 1 and 2
# threads, with the speed ratio of the two. padic-burst's throughput into a
# reused buffer (a streaming loader's case) is shown apart.
#
#   scripts/compare-peers.sh [WEIGHTS_DIR]
#
# Shared machines are noisy: the tools run in alternation, ROUNDS times
# (default 3), and each keeps its best. Installs ZipNN from PyPI into
# .venv-peers (override with PEERS_VENV) and the weights with
# scripts/fetch-test-weights.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
weights=$(scripts/fetch-test-weights.sh "${1:-${PADIC_TEST_WEIGHTS:-$root/target/test-weights}}")
venv=${PEERS_VENV:-$root/.venv-peers}
rounds=${ROUNDS:-3}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import zipnn" 2>/dev/null || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check zipnn==0.5.4
cargo build --release --quiet --bin padic-burst --example throughput
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/zipnn_bench.py" <<'PY'
import sys, time, warnings
warnings.filterwarnings("ignore")
from zipnn import ZipNN
path, dtype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
name = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]
data = open(path, "rb").read()
# 0.5.4 reorders the bytes of its input in place: give it a copy it may spoil.
packed = ZipNN(input_format="byte", bytearray_dtype=name, threads=threads).compress(bytearray(data))
best = float("inf")
for _ in range(5):
    # A fresh instance per call: a 0.5.4 instance that has compressed or
    # decompressed once decodes the next input wrongly.
    z = ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)
    t = time.perf_counter()
    out = z.decompress(packed)
    best = min(best, time.perf_counter() - t)
assert bytes(out) == data, "ZipNN round trip differs"
print("%.4f %.3f" % (len(packed) / len(data), len(data) / best / 1e9))
PY
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

printf '%-5s %-12s %8s %12s %12s %22s\n' dtype tool ratio "GB/s 1 thr" "GB/s 2 thr" "reused-buffer 1 / 2"
for dtype in bf16 f16 f32; do
  file="$weights/minilm-$dtype.safetensors"
  target/release/padic-burst --quiet compress "$file" -o "$work/$dtype.padic" 2>/dev/null
  ratio=$(target/release/padic-burst inspect --json "$work/$dtype.padic" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ratio"])')
  p1=0; p2=0; r1=0; r2=0; z1=0; z2=0; zratio=0
  for _ in $(seq "$rounds"); do
    for t in 1 2; do
      line=$(target/release/examples/throughput "$work/$dtype.padic" "$t" 5)
      fresh=$(echo "$line" | sed 's/.*fresh_gb_per_s=\([0-9.]*\).*/\1/')
      reused=$(echo "$line" | sed 's/.*reused_gb_per_s=//')
      read -r zratio zg < <("$venv/bin/python" "$work/zipnn_bench.py" "$file" "$dtype" "$t" 2>/dev/null)
      if [ "$t" = 1 ]; then p1=$(max "$p1" "$fresh"); r1=$(max "$r1" "$reused"); z1=$(max "$z1" "$zg"); else p2=$(max "$p2" "$fresh"); r2=$(max "$r2" "$reused"); z2=$(max "$z2" "$zg"); fi
    done
  done
  printf '%-5s %-12s %8s %12s %12s %22s\n' "$dtype" padic-burst "$ratio" "$p1" "$p2" "$r1 / $r2"
  printf '%-5s %-12s %8s %12s %12s\n' "$dtype" zipnn-0.5.4 "$zratio" "$z1" "$z2"
  printf '%-5s %-12s %8s %11.2fx %11.2fx\n' "$dtype" "speed ratio" "" "$(awk -v a="$p1" -v b="$z1" 'BEGIN{print a/b}')" "$(awk -v a="$p2" -v b="$z2" 'BEGIN{print a/b}')"
done
