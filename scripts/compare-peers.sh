#!/usr/bin/env bash
# Compares padic-burst with ZipNN 0.5.4 on the real test weights, ZipNN run
# as its users run it (one instance, reused, its default method):
#
#  1. in memory: decoded GB/s into a freshly allocated buffer (as ZipNN's
#     decompress returns one), at 1 and 2 threads, and padic-burst into a
#     reused buffer apart (a streaming loader's case);
#  2. end to end: the whole `padic-burst decompress X.padic -o OUT` process
#     against ZipNN in process (`decompress`, then write the bytes to OUT);
#  3. compression: the whole `padic-burst compress X -o OUT --workers T`
#     process against `ZipNN.compress` in process, on each dtype; then, on
#     MiniLM bf16, 490 small tensors cut from it
#     (`scripts/peers/small_tensors.py`) and a generated COMPRESS_MB MB bf16
#     model (default 256, `examples/synthetic_model`, the generator of
#     `bench --synthetic`),
#     ROUNDS alternated runs of each at 1 and 2 threads, reported as median
#     and best GB/s and the ratios of medians and of bests;
#  4. end to end on that generated model, at 1 and 2 threads, and two
#     workers against one;
#  5. to a disk folder (DISK_DIR, default target/): `decompress` against a
#     plain write of the same bytes from memory into the same folder (the
#     page-cache limit), without and with fsync (`--fsync`).
#
#   scripts/compare-peers.sh [WEIGHTS_DIR]
#
# DTYPES (default "bf16 f16 f32") picks the files (DTYPES="" runs only parts
# 3 to 5); OUT_DIR (default /dev/shm,
# tmpfs) is where end-to-end outputs go. Shared machines are noisy: the tools
# run in alternation, ROUNDS times (default 3); each keeps its best, and the
# ratios are padic-burst / ZipNN speed (above 1: padic-burst is faster).
# Installs ZipNN from PyPI into .venv-peers (override with PEERS_VENV) and the
# weights with scripts/fetch-test-weights.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
weights=$(scripts/fetch-test-weights.sh "${1:-${PADIC_TEST_WEIGHTS:-$root/target/test-weights}}")
venv=${PEERS_VENV:-$root/.venv-peers}
rounds=${ROUNDS:-3}
out_dir=${OUT_DIR:-/dev/shm}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import zipnn, safetensors, numpy, ml_dtypes" 2>/dev/null ||
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check zipnn==0.5.4 safetensors numpy ml_dtypes
cargo build --release --quiet --bin padic-burst --example throughput --example synthetic_model
bin=target/release/padic-burst
work=$(mktemp -d)
out="$out_dir/padic-compare-$$.safetensors"
packed="$out_dir/padic-compare-$$.padic"
trap 'rm -rf "$work" "$out" "$packed"' EXIT
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
# GB/s of one whole command over BYTES bytes.
timed() {
  local bytes=$1; shift
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
  awk -v b="$bytes" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.3f", b / (c - a) / 1e9 }'
}
zipnn() { "$venv/bin/python" scripts/peers/zipnn_bench.py "$@"; }
field() { "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); k=sys.argv[1]; print("%.4f" % r["ratio"] if k == "ratio" else "%.3f" % (r["bytes"] / min(r[k]) / 1e9))' "$1"; }

printf '%-5s %-22s %8s %12s %12s\n' dtype "figure" ratio "1 thread" "2 threads"
for dtype in ${DTYPES-bf16 f16 f32}; do
  file="$weights/minilm-$dtype.safetensors"
  bytes=$(stat -c %s "$file")
  $bin --quiet compress "$file" -o "$work/$dtype.padic" 2>/dev/null
  pratio=$($bin inspect --json "$work/$dtype.padic" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ratio"])')
  zratio=0
  declare -A best=()
  for _ in $(seq "$rounds"); do
    for t in 1 2; do
      line=$(target/release/examples/throughput "$work/$dtype.padic" "$t" 5)
      best[mem_p$t]=$(max "${best[mem_p$t]:-0}" "$(echo "$line" | sed 's/.*fresh_gb_per_s=\([0-9.]*\).*/\1/')")
      best[reuse_p$t]=$(max "${best[reuse_p$t]:-0}" "$(echo "$line" | sed 's/.*reused_gb_per_s=//')")
      z=$(zipnn "$file" "$dtype" "$t" 5 "$out")
      zratio=$(echo "$z" | field ratio)
      best[mem_z$t]=$(max "${best[mem_z$t]:-0}" "$(echo "$z" | field decompress_s)")
      best[e2e_z$t]=$(max "${best[e2e_z$t]:-0}" "$(echo "$z" | field decompress_write_s)")
      best[cmp_z$t]=$(max "${best[cmp_z$t]:-0}" "$(echo "$z" | field compress_s)")
      for _ in 1 2 3; do
        best[e2e_p$t]=$(max "${best[e2e_p$t]:-0}" "$(timed "$bytes" $bin --quiet decompress "$work/$dtype.padic" -o "$out" --workers "$t")")
        rm -f "$out"
      done
      # As many runs as ZipNN's call above makes (5), each to a new file
      # (freeing the last run's output is not compression work).
      for _ in 1 2 3 4 5; do
        rm -f "$packed"
        best[cmp_p$t]=$(max "${best[cmp_p$t]:-0}" "$(timed "$bytes" $bin --quiet compress "$file" -o "$packed" --workers "$t")")
      done
    done
  done
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "padic-burst in memory" "$pratio" "${best[mem_p1]}" "${best[mem_p2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "zipnn-0.5.4 in memory" "$zratio" "${best[mem_z1]}" "${best[mem_z2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "  speed ratio" "" "$(ratio "${best[mem_p1]}" "${best[mem_z1]}")" "$(ratio "${best[mem_p2]}" "${best[mem_z2]}")"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "padic-burst reused buf" "" "${best[reuse_p1]}" "${best[reuse_p2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "padic-burst to $out_dir" "" "${best[e2e_p1]}" "${best[e2e_p2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "zipnn to $out_dir" "" "${best[e2e_z1]}" "${best[e2e_z2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "  speed ratio" "" "$(ratio "${best[e2e_p1]}" "${best[e2e_z1]}")" "$(ratio "${best[e2e_p2]}" "${best[e2e_z2]}")"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "padic-burst compress" "" "${best[cmp_p1]}" "${best[cmp_p2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "zipnn compress" "" "${best[cmp_z1]}" "${best[cmp_z2]}"
  printf '%-5s %-22s %8s %12s %12s\n' "$dtype" "  speed ratio" "" "$(ratio "${best[cmp_p1]}" "${best[cmp_z1]}")" "$(ratio "${best[cmp_p2]}" "${best[cmp_z2]}")"
  unset best
done

# Part 3: compression, medians and bests of alternated runs.
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
mb=${COMPRESS_MB:-256}
model="$work/synthetic-${mb}mb-bf16.safetensors"
target/release/examples/synthetic_model "$model" "$mb" bf16
# 490 small tensors cut from MiniLM bf16 (scripts/peers/small_tensors.py):
# where runs of small tensors share chunks.
small="$work/small-tensors-bf16.safetensors"
"$venv/bin/python" scripts/peers/small_tensors.py "$weights/minilm-bf16.safetensors" "$small"
echo
echo "compression, bf16, $rounds alternated runs each: GB/s of original bytes; ratio = padic-burst / ZipNN"
printf '%-34s %3s %10s %10s %8s %10s %10s %8s %8s %8s\n' file threads "p median" "z median" ratio "p best" "z best" ratio "p size" "z size"
for file in "$weights/minilm-bf16.safetensors" "$small" "$model"; do
  bytes=$(stat -c %s "$file")
  $bin --quiet compress "$file" -o "$packed" 2>/dev/null
  psize=$(awk -v a="$(stat -c %s "$packed")" -v b="$bytes" 'BEGIN { printf "%.4f", a / b }')
  for t in 1 2; do
    ps=""; zs=""
    for _ in $(seq "$rounds"); do
      z=$(zipnn "$file" bf16 "$t" 1)
      zs="$zs $(echo "$z" | field compress_s)"
      zsize=$(echo "$z" | field ratio)
      rm -f "$packed"
      ps="$ps $(timed "$bytes" $bin --quiet compress "$file" -o "$packed" --workers "$t")"
    done
    pm=$(echo $ps | tr ' ' '\n' | median); zm=$(echo $zs | tr ' ' '\n' | median)
    pb=$(echo $ps | tr ' ' '\n' | sort -g | tail -1); zb=$(echo $zs | tr ' ' '\n' | sort -g | tail -1)
    printf '%-34s %3s %10s %10s %8s %10s %10s %8s %8s %8s\n' "$(basename "$file")" "$t" "$pm" "$zm" "$(ratio "$pm" "$zm")" "$pb" "$zb" "$(ratio "$pb" "$zb")" "$psize" "$zsize"
  done
done

# Part 4: the whole `decompress` of the generated model against ZipNN
# (`decompress`, then write the bytes to OUT_DIR), alternated, best of each.
echo
echo "end to end to $out_dir, $(basename "$model"): seconds, best of $rounds alternated rounds; ratio = padic-burst / ZipNN speed"
bytes=$(stat -c %s "$model")
$bin --quiet compress "$model" -o "$work/model.padic" 2>/dev/null
printf '%-8s %12s %12s %8s\n' threads padic-burst zipnn ratio
declare -A secs=()
for t in 1 2; do
  for _ in $(seq "$rounds"); do
    z=$(zipnn "$model" bf16 "$t" 2 "$out")
    secs[z$t]=$(echo "$z" | "$venv/bin/python" -c 'import json,sys; print("%.4f" % min(json.load(sys.stdin)["decompress_write_s"]))' | awk -v a="${secs[z$t]:-99}" '{ print ($1 < a ? $1 : a) }')
    for _ in 1 2 3; do
      p=$(awk -v b="$bytes" -v g="$(timed "$bytes" $bin --quiet decompress "$work/model.padic" -o "$out" --workers "$t")" 'BEGIN { printf "%.4f", b / g / 1e9 }')
      rm -f "$out"
      secs[p$t]=$(awk -v a="${secs[p$t]:-99}" -v b="$p" 'BEGIN { print (b < a ? b : a) }')
    done
  done
  printf '%-8s %12s %12s %8s\n' "$t" "${secs[p$t]}" "${secs[z$t]}" "$(ratio "${secs[z$t]}" "${secs[p$t]}")"
done
printf 'two workers against one: %s\n' "$(ratio "${secs[p1]}" "${secs[p2]}")"

# Part 5: decoding to a disk folder (DISK_DIR, default target/) against the
# page-cache limit there: a plain write of the same bytes from memory into
# the same folder (scripts/peers/plain_write.py), with and without fsync.
disk_dir=${DISK_DIR:-$root/target}
disk_out="$disk_dir/padic-compare-$$.safetensors"
trap 'rm -rf "$work" "$out" "$packed" "$disk_out"' EXIT
echo
echo "to $disk_dir ($(df --output=fstype "$disk_dir" | tail -1)), $(basename "$model"), 2 workers: seconds, best of $rounds alternated rounds"
printf '%-22s %12s %12s %8s\n' "" decompress "plain write" ratio
for sync in "" --fsync; do
  pw=99; pd=99
  for _ in $(seq "$rounds"); do
    w=$("$venv/bin/python" scripts/peers/plain_write.py "$model" "$disk_out" 1 $sync)
    pw=$(awk -v a="$pw" -v b="$w" 'BEGIN { print (b < a ? b : a) }')
    t0=$(date +%s.%N); $bin --quiet decompress "$work/model.padic" -o "$disk_out" $sync >/dev/null 2>&1; t1=$(date +%s.%N)
    rm -f "$disk_out"
    pd=$(awk -v a="$pd" -v s="$t0" -v e="$t1" 'BEGIN { d = e - s; printf "%.4f", (d < a ? d : a) }')
  done
  printf '%-22s %12s %12s %8s\n' "${sync:-without fsync}" "$pd" "$pw" "$(awk -v a="$pd" -v b="$pw" 'BEGIN { printf "%.2fx", a / b }')"
done
