"""Streams a sharded model layer by layer: each layer's tensors are decoded
together (``get_tensors``: one run, only their chunks read), used, and dropped
before the next layer, so memory holds one layer at a time, whatever the
model's size.

    python examples/stream_layers.py PACKED_DIR            # a compressed model directory
    python examples/stream_layers.py MODEL_DIR --compress  # compress first, into a temporary folder

Uses PyTorch when it is importable, else NumPy.
"""

import argparse
import re
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import padic_burst

try:
    import torch  # noqa: F401

    FRAMEWORK = "pt"
except ImportError:
    FRAMEWORK = "np"


def layer_of(name):
    """The layer a tensor belongs to: "encoder.layer.3" for
    "encoder.layer.3.attention.self.query.weight", else its first part."""
    m = re.match(r"(.*?\.(?:layer|layers|h|blocks)\.\d+)\.", name)
    return m.group(1) if m else name.split(".")[0]


def nbytes(t):
    return t.numel() * t.element_size() if FRAMEWORK == "pt" else t.nbytes


def largest(t):
    """The largest magnitude of a tensor (0 for an empty one)."""
    if FRAMEWORK == "pt":
        return float(t.float().abs().max()) if t.numel() else 0.0
    return float(abs(t.astype("float32")).max()) if t.size else 0.0


def stream(packed):
    pipeline = padic_burst.Pipeline({"enable_caching": False})
    with padic_burst.safe_open(packed, framework=FRAMEWORK, pipeline=pipeline) as f:
        layers = OrderedDict()
        for name in f.offset_keys():
            layers.setdefault(layer_of(name), []).append(name)
        for layer, names in layers.items():
            started = time.perf_counter()
            tensors = f.get_tensors(names)
            size = sum(nbytes(t) for t in tensors.values())
            # The "work" on a layer: here, the largest magnitude in it.
            peak = max(largest(t) for t in tensors.values())
            ms = 1e3 * (time.perf_counter() - started)
            print(f"{layer:<24} {len(names):>3} tensors {size / 2**20:8.2f} MiB  max |w| {peak:9.4f}  {ms:7.1f} ms")
            del tensors
    return pipeline


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="a packed directory (or, with --compress, a model directory)")
    ap.add_argument("--compress", action="store_true", help="compress PATH into a temporary folder first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packed = args.path
        if args.compress:
            packed = Path(tmp) / "packed"
            s = padic_burst.compress_file(args.path, packed)
            print(f"compressed {s['shards']} shards: {s['original_bytes']} -> {s['compressed_bytes']} bytes")
        print(f"streaming {packed} into {'torch' if FRAMEWORK == 'pt' else 'numpy'}")
        stream(packed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
