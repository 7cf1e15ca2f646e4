#!/usr/bin/env python3
"""Times two builds of padic-burst side by side: the same arguments, the two
binaries alternated ROUNDS times (A, B, A, B, ...), each run the whole
process, its output removed after each run. Prints the median and the best of
each and the ratio of medians (B against A, below 1.0: B is faster). What
docs/performance.md's before/after figures of a change are measured with.

    scripts/ab-binaries.py A_BINARY B_BINARY [--rounds N] -- ARGS...

In ARGS, `{out}` stands for a fresh output path in $TMPDIR (or /dev/shm when
it exists), removed after each run, for example:

    cp target/release/padic-burst /tmp/pb-old   # before the change
    cargo build --release                       # after it
    scripts/ab-binaries.py /tmp/pb-old target/release/padic-burst -- \\
        --quiet compress target/test-weights/minilm-bf16.safetensors -o {out}
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=15)
    argv = sys.argv[1:]
    if "--" not in argv:
        parser.error("give the arguments of each run after --")
    split = argv.index("--")
    opts = parser.parse_args(argv[:split])
    args = argv[split + 1 :]
    if not args:
        parser.error("no arguments after --")
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    times = {"A": [], "B": []}
    for _ in range(opts.rounds):
        for name, binary in (("A", opts.a), ("B", opts.b)):
            out = os.path.join(folder, f"ab-binaries-{os.getpid()}-{name}.out")
            run = [binary] + [a.replace("{out}", out) for a in args]
            start = time.perf_counter()
            done = subprocess.run(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{' '.join(run)}: exit {done.returncode}: {done.stderr.decode(errors='replace')}")
            times[name].append(elapsed * 1000)
            if os.path.lexists(out):
                if os.path.isdir(out):
                    subprocess.run(["rm", "-rf", out], check=True)
                else:
                    os.remove(out)
    for name, binary in (("A", opts.a), ("B", opts.b)):
        t = times[name]
        print(f"{name} {binary}: median {statistics.median(t):.1f} ms, best {min(t):.1f} ms ({len(t)} runs)")
    ratio = statistics.median(times["B"]) / statistics.median(times["A"])
    print(f"B/A, medians: {ratio:.3f}")


if __name__ == "__main__":
    main()
