#!/usr/bin/env python3
"""How the size of each write moves the cost of filling the page cache: FILE's
bytes, read into memory first (not timed), written to DIR in pieces of several
sizes, one `pwrite` per piece in order, then in pieces of 281,000 bytes (a
typical decoded part) given to `pwritev` in groups. Prints the best of
REPEAT runs of each, in ms. This is what `decompress`'s writer groups parts
for (docs/performance.md, "runs of writes").

    scripts/write-pieces.py FILE DIR [REPEAT]
"""
import os
import sys
import time


def timed(out, write):
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t = time.perf_counter()
        write(fd)
        os.close(fd)
        return time.perf_counter() - t
    finally:
        os.remove(out)


def main():
    path, folder = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    data = memoryview(open(path, "rb").read())
    out = os.path.join(folder, ".write-pieces-%d" % os.getpid())

    def pieces(size):
        def write(fd):
            for at in range(0, len(data), size):
                os.pwrite(fd, data[at:at + size], at)
        return write

    def grouped(group, part=281_000):
        def write(fd):
            for at in range(0, len(data), part * group):
                bufs = [data[a:a + part] for a in range(at, min(at + part * group, len(data)), part)]
                os.pwritev(fd, bufs, at)
        return write

    print("%s to %s, best of %d, ms" % (os.path.basename(path), folder, repeat))
    for size in [len(data), 4 << 20, 2 << 20, 281_000, 256 << 10, 64 << 10]:
        best = min(timed(out, pieces(size)) for _ in range(repeat))
        print("piece %10d bytes: %7.1f" % (size, 1e3 * best))
    for group in [1, 2, 4, 8, 16]:
        best = min(timed(out, grouped(group)) for _ in range(repeat))
        print("pwritev of %2d parts of 281000 bytes: %7.1f" % (group, 1e3 * best))


if __name__ == "__main__":
    main()
