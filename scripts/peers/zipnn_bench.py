#!/usr/bin/env python3
"""ZipNN on one file, as its users run it, for `padic-burst bench` and
`scripts/compare-peers.sh`.

    zipnn_bench.py FILE DTYPE THREADS REPEAT [OUT]

DTYPE is bf16, f16 or f32 (the dtype ZipNN is told the bytes hold). One
ZipNN instance with its default method, `ZipNN(bytearray_dtype=..., threads=...)`,
is made once and reused for every compress and decompress call, as a user
keeps it. Prints one JSON object: zipnn's version, the compressed ratio, and
the seconds of each compress and decompress call (after one warm-up of each).
With OUT, each decompression is also written to OUT (then removed), and
`decompress_write_s` times decompress + write, the end-to-end figure to set
against `padic-burst decompress X.padic -o OUT`. Every decompression is
checked against the input; a mismatch exits with status 3.
"""
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main():
    path, dtype, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out_path = sys.argv[5] if len(sys.argv) > 5 else None
    from importlib import metadata

    from zipnn import ZipNN

    name = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]
    with open(path, "rb") as f:
        data = f.read()

    zpn = ZipNN(bytearray_dtype=name, threads=threads)

    compress_s = []
    packed = None
    for i in range(repeat + 1):
        # 0.5.4 reorders the bytes of its input in place: give it a copy it
        # may spoil (made outside the timed call).
        src = bytearray(data)
        t = time.perf_counter()
        packed = zpn.compress(src)
        if i > 0:
            compress_s.append(time.perf_counter() - t)
    decompress_s = []
    decompress_write_s = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        out = zpn.decompress(packed)
        elapsed = time.perf_counter() - t
        if out_path is not None:
            with open(out_path, "wb") as f:
                f.write(out)
            elapsed_write = time.perf_counter() - t
            os.remove(out_path)
        if bytes(out) != data:
            print("ZipNN round trip (one reused instance) differs from the input", file=sys.stderr)
            sys.exit(3)
        if i > 0:
            decompress_s.append(elapsed)
            if out_path is not None:
                decompress_write_s.append(elapsed_write)
    result = {
        "version": metadata.version("zipnn"),
        "bytes": len(data),
        "compressed_bytes": len(packed),
        "ratio": len(packed) / len(data),
        "compress_s": compress_s,
        "decompress_s": decompress_s,
    }
    if out_path is not None:
        result["decompress_write_s"] = decompress_write_s
    print(json.dumps(result))


if __name__ == "__main__":
    main()
