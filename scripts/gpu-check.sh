#!/usr/bin/env bash
# The GPU check, in two steps, for a GPU machine that has CUDA but no Rust:
#
#   scripts/gpu-check.sh build   # here: builds the `cuda` test binary of
#                                # tests/gpu.rs, examples/gpu_throughput and
#                                # padic-burst, stripped, and the Python
#                                # wheel (with `cuda`), into target/gpu-check/
#   scripts/gpu-check.sh run     # there (target/gpu-check carried along):
#                                # runs them; the full log and a summary go
#                                # to $OUT (default target/gpu-check/out)
#
# The run checks bit-exactness against the CPU engine (every bf16/f16
# pattern, random f32 patterns with the specials, primes 2, 3 and 257;
# GPU_ONLY and HYBRID), a full card (GPU_ONLY must fail clearly, AUTO must
# finish bit-exact on the CPU), NVML readings that move when memory is
# allocated, and throughput (the kernels alone over batches of every chunk,
# a batch end to end from pinned memory, and the graph end to end against
# the CPU), the kernels under compute-sanitizer's memcheck where it is
# installed, and, where Python has torch, `padic_burst.torch.load_file` with
# device="cuda" (scripts/gpu_check_torch.py: bit-exact, GPU decodes counted,
# a nearly full card bursting to the CPU, GB/s against a CPU load). It prints a short table last. Copy the table, the card and the
# date into docs/gpu-results.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=target/gpu-check
case "${1:-}" in
build)
  rm -rf "$dir" && mkdir -p "$dir/bin"
  exe=$(cargo test --release --features cuda --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
  cargo build --release --features cuda --bin padic-burst --example gpu_throughput
  cp "$exe" "$dir/bin/gpu-tests"
  cp target/release/padic-burst target/release/examples/gpu_throughput "$dir/bin/"
  strip "$dir"/bin/*
  # The Python package, built with `cuda` (maturin's default features here).
  python3 -m pip wheel --quiet --no-deps -w "$dir/wheel" ./python
  du -sh "$dir"
  ;;
run)
  out=${OUT:-$dir/out}
  mkdir -p "$out"
  log="$out/gpu-check.log"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  # The block runs in a pipeline (a subshell): failures are kept in a file.
  failed="$out/failed"
  rm -f "$failed"
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # The binaries were built elsewhere: say so first if this C library
    # cannot load them (they need GLIBC 2.34 or later).
    echo "libc: $(ldd --version 2>&1 | head -1)"
    for b in "$dir"/bin/*; do
      if ldd "$b" | grep -q "not found"; then
        echo "cannot load $b:"; ldd "$b" | grep "not found"; echo x >> "$failed"
      fi
    done
    echo "== tests/gpu.rs"
    PADIC_REQUIRE_GPU=1 "$dir/bin/gpu-tests" --test-threads 1 --nocapture || echo x >> "$failed"
    # The kernels under compute-sanitizer's memcheck (out-of-bounds and
    # misaligned accesses, launch errors), capped at two minutes.
    if command -v compute-sanitizer >/dev/null; then
      echo "== compute-sanitizer memcheck: gpu_decodes_bit_exact_with_the_cpu"
      set +e
      PADIC_REQUIRE_GPU=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$dir/bin/gpu-tests" --exact on_a_gpu::gpu_decodes_bit_exact_with_the_cpu --test-threads 1
      rc=$?
      set -e
      case $rc in
        0) echo "memcheck: clean" ;;
        124) echo "memcheck: stopped at two minutes, nothing reported before" ;;
        *) echo "memcheck: FAILED (status $rc)"; echo x >> "$failed" ;;
      esac
    fi
    echo "== examples/gpu_throughput"
    "$dir/bin/gpu_throughput" 1024 20 64,256,1024 || echo x >> "$failed"
    echo "== padic-burst decompress --mode auto --record-pressure"
    demo=$(mktemp -d)
    "$dir/bin/padic-burst" demo --params 20000000 --dir "$demo" >/dev/null
    "$dir/bin/padic-burst" decompress "$demo/demo-bf16.padic" -o "$demo/out.safetensors" \
      --record-pressure "$out/pressure.csv" --stats-json "$out/stats.json" || echo x >> "$failed"
    cmp "$demo/demo-bf16.safetensors" "$demo/out.safetensors" && echo "auto decode byte-identical: yes" || { echo "auto decode byte-identical: NO"; echo x >> "$failed"; }
    rm -rf "$demo"
    echo "== python: padic_burst.torch with device=\"cuda\""
    if python3 -c "import torch" 2>/dev/null && ls "$dir"/wheel/*.whl >/dev/null 2>&1; then
      py="$dir/py"
      rm -rf "$py"
      if python3 -m pip install --quiet --no-deps --no-index --target "$py" "$dir"/wheel/*.whl; then
        demo=$(mktemp -d)
        "$dir/bin/padic-burst" demo --params 20000000 --dir "$demo" --quiet >/dev/null
        PYTHONPATH="$py" python3 scripts/gpu_check_torch.py "$demo" cuda || echo x >> "$failed"
        rm -rf "$demo"
      else
        echo "python: the wheel did not install"; echo x >> "$failed"
      fi
    else
      echo "python: SKIPPED (no torch in python3, or no wheel in $dir/wheel)"
    fi
  } 2>&1 | tee "$log"
  echo
  echo "== summary ($log)"
  grep -E "^date:|^libc:|cannot load|NVIDIA|H100|H200|test result|bit-exact|full card|NVML:|memcheck:|^\| |identical|SKIPPED|^python" "$log" || true
  if [ -s "$failed" ]; then
    echo "gpu-check: $(wc -l < "$failed") step(s) failed (see $log)"
    exit 1
  fi
  echo "gpu-check: every step passed"
  ;;
*)
  echo "usage: scripts/gpu-check.sh build|run" >&2
  exit 2
  ;;
esac
