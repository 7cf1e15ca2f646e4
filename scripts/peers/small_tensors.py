#!/usr/bin/env python3
"""Writes a model of many small tensors from real weights: the values of
SRC's large tensors, in order, cut into 490 tensors of 6,000 to 14,000 values
(a third of them 2-D), as in model families of many thin layers. The case
where a format's per-tensor and per-chunk costs decide its ratio.

    small_tensors.py SRC.safetensors DST.safetensors
"""
import sys

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, for bf16 files)
import numpy as np
from safetensors.numpy import load_file, save_file


def main():
    src, dst = sys.argv[1], sys.argv[2]
    weights = load_file(src)
    flat = np.concatenate([v.reshape(-1) for _, v in sorted(weights.items()) if v.size > 100_000])
    rng = np.random.default_rng(7)
    out, pos = {}, 0
    for i in range(490):
        size = int(rng.integers(6000, 14000))
        shape = (size,) if i % 3 else (size // 64, 64)
        size = int(np.prod(shape))
        out[f"layers.{i // 7}.part{i % 7}.weight"] = np.ascontiguousarray(flat[pos : pos + size]).reshape(shape)
        pos += size
    save_file(out, dst)


if __name__ == "__main__":
    main()
