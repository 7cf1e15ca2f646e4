#!/usr/bin/env bash
# Compares padic-burst with ZipNN 0.5.4 on the real test weights:
# compressed ratio, and decode throughput (decoded GB/s, in memory, into a
# freshly allocated buffer as ZipNN's decompress returns one) at 1 and 2
# threads, with the speed ratio of the two. padic-burst's throughput into a
# reused buffer (a streaming loader's case) is shown apart.
#
#   scripts/compare-peers.sh [WEIGHTS_DIR]
#
# DTYPES (default "bf16 f16 f32") picks the files.
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
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

printf '%-5s %-12s %8s %12s %12s %22s\n' dtype tool ratio "GB/s 1 thr" "GB/s 2 thr" "reused-buffer 1 / 2"
for dtype in ${DTYPES:-bf16 f16 f32}; do
  file="$weights/minilm-$dtype.safetensors"
  target/release/padic-burst --quiet compress "$file" -o "$work/$dtype.padic" 2>/dev/null
  ratio=$(target/release/padic-burst inspect --json "$work/$dtype.padic" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ratio"])')
  p1=0; p2=0; r1=0; r2=0; z1=0; z2=0; zratio=0
  for _ in $(seq "$rounds"); do
    for t in 1 2; do
      line=$(target/release/examples/throughput "$work/$dtype.padic" "$t" 5)
      fresh=$(echo "$line" | sed 's/.*fresh_gb_per_s=\([0-9.]*\).*/\1/')
      reused=$(echo "$line" | sed 's/.*reused_gb_per_s=//')
      read -r zratio zg < <("$venv/bin/python" scripts/peers/zipnn_bench.py "$file" "$dtype" "$t" 5 | "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print("%.4f %.3f" % (r["ratio"], r["bytes"] / min(r["decompress_s"]) / 1e9))')
      if [ "$t" = 1 ]; then p1=$(max "$p1" "$fresh"); r1=$(max "$r1" "$reused"); z1=$(max "$z1" "$zg"); else p2=$(max "$p2" "$fresh"); r2=$(max "$r2" "$reused"); z2=$(max "$z2" "$zg"); fi
    done
  done
  printf '%-5s %-12s %8s %12s %12s %22s\n' "$dtype" padic-burst "$ratio" "$p1" "$p2" "$r1 / $r2"
  printf '%-5s %-12s %8s %12s %12s\n' "$dtype" zipnn-0.5.4 "$zratio" "$z1" "$z2"
  printf '%-5s %-12s %8s %11.2fx %11.2fx\n' "$dtype" "speed ratio" "" "$(awk -v a="$p1" -v b="$z1" 'BEGIN{print a/b}')" "$(awk -v a="$p2" -v b="$z2" 'BEGIN{print a/b}')"
done
