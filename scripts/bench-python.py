#!/usr/bin/env python3
"""Loading MiniLM bf16 into NumPy (and PyTorch, when importable) three ways,
side by side in one run, the tools alternating round by round:

* padic_burst.numpy / padic_burst.torch ``load_file`` of the ``.padic`` container;
* ZipNN 0.5.4 as its users use it: one instance
  ``ZipNN(bytearray_dtype="bfloat16", threads=2)``, reused, ``decompress`` of
  the compressed data region, then ``numpy.frombuffer`` / ``torch.frombuffer``
  and a view per tensor (no copy);
* the same ZipNN instance reading its compressed file first (``read_bytes``,
  then ``decompress``): the whole load from a file, as ours is measured (ours
  maps the ``.padic`` file and reads it during the decode);
* safetensors ``load_file`` of the uncompressed file (no compression: the gap
  to it is what decompression costs);
* ``safe_open`` and ``get_tensor`` of every key, ours (the default pipeline,
  its cache on) and safetensors' on the uncompressed file: the other way
  safetensors users load a whole file, one graph run a tensor for us;
* the same with the cache off, against one graph run a key (what a cache-off
  ``get_tensor`` did before it kept the last run of small tensors: run with
  ``--weights`` on a model of many small tensors, ``scripts/peers/small_tensors.py``);
* ``get_slice`` of one tensor-parallel rank's rows (an eighth) of the largest
  tensor: ours (only the chunks that hold them), ours through ``get_tensor``
  and a copy of the rows (the whole tensor decoded), and safetensors'.

Prints the median of N runs per tool, and ratios. Needs ``pip install ./python
zipnn==0.5.4 safetensors ml_dtypes numpy``; ``--threads`` sets both ZipNN's
threads and padic-burst's workers.

    python scripts/bench-python.py [--weights target/test-weights/minilm-bf16.safetensors] [--runs 15] [--threads 2]
"""

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes  # bfloat16 for NumPy (and safetensors.numpy)
import numpy as np
import safetensors.numpy

import padic_burst
import padic_burst.numpy

try:
    import torch

    import padic_burst.torch
    import safetensors.torch
except ImportError:
    torch = None


def header_of(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return header, data[8 + n :]


NP = {"BF16": ml_dtypes.bfloat16, "F32": np.float32, "F16": np.float16, "I64": np.int64}


def zipnn_views(flat, header, dtypes):
    """One view per tensor of the decompressed data region (bytes), no copy."""
    return {
        name: flat[t["data_offsets"][0] : t["data_offsets"][1]].view(dtypes[t["dtype"]]).reshape(t["shape"])
        for name, t in header.items()
    }


def every_key(safe_open, path, **kwargs):
    """Every tensor through ``safe_open(...).get_tensor``, as NumPy arrays."""
    with safe_open(path, framework="np", **kwargs) as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def a_run_a_key(path):
    """Every tensor, one graph run each and no cache (``get_tensors([name])``):
    what ``get_tensor`` with the cache off cost before it kept the last run of
    small tensors."""
    with padic_burst.safe_open(path, framework="np", pipeline=padic_burst.Pipeline({"enable_caching": False})) as f:
        return {k: f.get_tensors([k])[k] for k in f.keys()}


def one_rank(safe_open, path, name, whole=False, ranks=8, rank=3):
    """Rows of tensor-parallel rank `rank` of `ranks` of tensor `name`:
    through ``get_slice``, or (`whole`) ``get_tensor`` and a copy of the rows."""
    with safe_open(path, framework="np") as f:
        s = f.get_slice(name)
        per = -(-s.get_shape()[0] // ranks)
        rows = slice(rank * per, (rank + 1) * per)
        return f.get_tensor(name)[rows].copy() if whole else s[rows]


def main():
    root = Path(__file__).resolve().parents[1]
    default = Path(os.environ.get("PADIC_TEST_WEIGHTS", root / "target" / "test-weights")) / "minilm-bf16.safetensors"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=default)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from zipnn import ZipNN

    header, data = header_of(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / "model.padic"
        padic_burst.compress_file(args.weights, packed)
        z = ZipNN(bytearray_dtype="bfloat16", threads=args.threads)
        zipped = z.compress(data)
        zfile = Path(tmp) / "model.znn"
        zfile.write_bytes(zipped)
        print(
            f"{args.weights.name}: {len(data)} data bytes; padic-burst {packed.stat().st_size} bytes, "
            f"ZipNN {len(zipped)} bytes; {args.threads} threads each; median of {args.runs} runs"
        )

        def zipnn(source, frombuffer, dtypes):
            """A ZipNN load: `source()` gives the compressed bytes (already in
            memory, or read from the file); decompress returns a bytearray,
            which `frombuffer` wraps without a copy."""
            return lambda: zipnn_views(frombuffer(z.decompress(source())), header, dtypes)

        largest = max(header, key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
        in_memory = lambda: zipped  # noqa: E731
        from_file = zfile.read_bytes
        tools = {
            "padic_burst.numpy.load_file": lambda: padic_burst.numpy.load_file(packed, workers=args.threads),
            "ZipNN decompress + numpy.frombuffer": zipnn(in_memory, lambda b: np.frombuffer(b, np.uint8), NP),
            "ZipNN read file + decompress + numpy.frombuffer": zipnn(
                from_file, lambda b: np.frombuffer(b, np.uint8), NP
            ),
            "safetensors.numpy.load_file (uncompressed)": lambda: safetensors.numpy.load_file(args.weights),
            "padic_burst.safe_open, every get_tensor (np)": lambda: every_key(padic_burst.safe_open, packed),
            "safetensors.safe_open, every get_tensor (np)": lambda: every_key(
                safetensors.safe_open, args.weights
            ),
            "padic_burst.safe_open, every get_tensor, cache off": lambda: every_key(
                padic_burst.safe_open, packed, pipeline=padic_burst.Pipeline({"enable_caching": False})
            ),
            "padic_burst.safe_open, a run a key, cache off": lambda: a_run_a_key(packed),
            "padic_burst get_slice, one rank's rows": lambda: one_rank(padic_burst.safe_open, packed, largest),
            "padic_burst get_tensor, then one rank's rows": lambda: one_rank(
                padic_burst.safe_open, packed, largest, whole=True
            ),
            "safetensors get_slice, one rank's rows": lambda: one_rank(safetensors.safe_open, args.weights, largest),
        }
        if torch is not None:
            torch.set_num_threads(args.threads)

            pt = {"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16, "I64": torch.int64}
            tensor = lambda b: torch.frombuffer(b, dtype=torch.uint8)  # noqa: E731
            tools.update(
                {
                    "padic_burst.torch.load_file": lambda: padic_burst.torch.load_file(packed, workers=args.threads),
                    "ZipNN decompress + torch.frombuffer": zipnn(in_memory, tensor, pt),
                    "ZipNN read file + decompress + torch.frombuffer": zipnn(from_file, tensor, pt),
                    "safetensors.torch.load_file (uncompressed)": lambda: safetensors.torch.load_file(args.weights),
                }
            )
        times = {name: [] for name in tools}
        for name, load in tools.items():  # one warm-up each
            load()
        for _ in range(args.runs):
            for name, load in tools.items():
                started = time.perf_counter()
                result = load()
                times[name].append(time.perf_counter() - started)
                del result
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__ if torch else 'absent'}")
    print(f"{'tool':<46} {'median ms':>10} {'GB/s':>7}")
    for name, m in med.items():
        print(f"{name:<46} {1e3 * m:>10.1f} {len(data) / m / 1e9:>7.2f}")
    for fw in ["numpy", "torch"]:
        ours = med.get(f"padic_burst.{fw}.load_file")
        if ours is None:
            continue
        zipnn = med[f"ZipNN decompress + {fw}.frombuffer"]
        zipnn_file = med[f"ZipNN read file + decompress + {fw}.frombuffer"]
        plain = med[f"safetensors.{fw}.load_file (uncompressed)"]
        print(f"{fw}: padic-burst is {zipnn / ours:.2f}x ZipNN's speed from bytes in memory, "
              f"{zipnn_file / ours:.2f}x ZipNN's reading its file, and takes {ours / plain:.2f}x "
              f"the time of safetensors on the uncompressed file")
    every = med["padic_burst.safe_open, every get_tensor (np)"]
    print(f"safe_open, every key: padic-burst takes {every / med['padic_burst.numpy.load_file']:.2f}x "
          f"the time of its load_file, and {every / med['safetensors.safe_open, every get_tensor (np)']:.2f}x "
          f"safetensors' safe_open on the uncompressed file")
    off, runs = med["padic_burst.safe_open, every get_tensor, cache off"], med["padic_burst.safe_open, a run a key, cache off"]
    print(f"safe_open, every key, cache off: {runs / off:.2f}x faster than a graph run a key")
    rank = med["padic_burst get_slice, one rank's rows"]
    whole = med["padic_burst get_tensor, then one rank's rows"]
    theirs = med["safetensors get_slice, one rank's rows"]
    print(f"get_slice of one rank's rows (1/8) of {largest}: {whole / rank:.2f}x faster than decoding "
          f"the whole tensor, {rank / theirs:.2f}x the time of safetensors' on the uncompressed file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
