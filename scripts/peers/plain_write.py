#!/usr/bin/env python3
"""The page-cache limit of a decode to a file: FILE's bytes, read into memory
first (not timed), written to OUT with one plain write, as `cp` or any
writer of those bytes would; with --fsync, flushed to disk too. Prints the
best seconds of REPEAT runs (open, write, close, and the fsync when asked).

    plain_write.py FILE OUT REPEAT [--fsync]
"""
import os
import sys
import time


def main():
    path, out, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    durable = "--fsync" in sys.argv[4:]
    with open(path, "rb") as f:
        data = f.read()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        with open(out, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        best = min(best, time.perf_counter() - t)
        os.remove(out)
    print("%.4f" % best)


if __name__ == "__main__":
    main()
