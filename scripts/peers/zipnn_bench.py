#!/usr/bin/env python3
"""ZipNN on one file, for `padic-burst bench` and `scripts/compare-peers.sh`.

    zipnn_bench.py FILE DTYPE THREADS REPEAT

DTYPE is bf16, f16 or f32 (the dtype ZipNN is told the bytes hold). Prints
one JSON object: zipnn's version, the compressed ratio, and the seconds of
each compress and decompress run (after one warm-up of each). Every
decompression is checked against the input; a mismatch exits non-zero.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main():
    path, dtype, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from importlib import metadata

    from zipnn import ZipNN

    name = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]
    with open(path, "rb") as f:
        data = f.read()

    def fresh():
        # A fresh instance per call: a 0.5.4 instance that has compressed or
        # decompressed once decodes the next input wrongly.
        return ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)

    compress_s = []
    packed = None
    for i in range(repeat + 1):
        # 0.5.4 reorders the bytes of its input in place: give it a copy it may spoil.
        src = bytearray(data)
        t = time.perf_counter()
        packed = fresh().compress(src)
        if i > 0:
            compress_s.append(time.perf_counter() - t)
    decompress_s = []
    for i in range(repeat + 1):
        z = fresh()
        t = time.perf_counter()
        out = z.decompress(packed)
        elapsed = time.perf_counter() - t
        if bytes(out) != data:
            print("ZipNN round trip differs from the input", file=sys.stderr)
            sys.exit(3)
        if i > 0:
            decompress_s.append(elapsed)
    print(
        json.dumps(
            {
                "version": metadata.version("zipnn"),
                "bytes": len(data),
                "compressed_bytes": len(packed),
                "ratio": len(packed) / len(data),
                "compress_s": compress_s,
                "decompress_s": decompress_s,
            }
        )
    )


if __name__ == "__main__":
    main()
