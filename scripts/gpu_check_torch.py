#!/usr/bin/env python3
"""padic_burst.torch on a GPU, for scripts/gpu-check.sh run.

    gpu_check_torch.py DIR [DEVICE]

DIR holds demo-{bf16,f16,f32}.padic (`padic-burst demo --dir DIR`); DEVICE
defaults to "cuda". For each dtype: `load_file(..., device=DEVICE)` gives
tensors on the device, bit for bit those of a CPU load (which the test suite
holds to safetensors), and its statistics count GPU decodes; then the same
with the card nearly full (a torch allocation leaving 3% free), where AUTO
must send chunks to the CPU and still give every bit back; then the time of
a load on the device against one on the CPU (median of 5, GB/s of decoded
bytes). Prints one line a check and exits 1 if any failed. With DEVICE
"cpu" it checks the script itself (no GPU counts are asked for).
"""
import statistics
import sys
import time

import torch

import padic_burst
import padic_burst.torch

INT_OF = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def bits(t):
    """The tensor's bit patterns, on the CPU (NaN payloads compare too)."""
    t = t.detach().cpu()
    return t.view(INT_OF[t.dtype]) if t.dtype in INT_OF else t


def same(got, want, device):
    """Every tensor on `device` and bit for bit `want`'s."""
    kind = torch.device(device).type
    return got.keys() == want.keys() and all(
        got[k].device.type == kind and torch.equal(bits(got[k]), bits(want[k])) for k in want
    )


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load(path, device):
    """A load on a fresh pipeline: the tensors and its statistics."""
    pipe = padic_burst.Pipeline()
    got = pipe.load_file(path, framework="pt", device=device)
    sync(device)
    return got, pipe.statistics()


def seconds(path, device):
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        got = padic_burst.torch.load_file(path, device=device)
        sync(device)
        times.append(time.perf_counter() - t0)
        del got
    return statistics.median(times)


def main():
    folder = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    on_gpu = torch.device(device).type == "cuda"
    print(f"padic_burst CUDA_BUILD={padic_burst._padic_burst.CUDA_BUILD}, torch {torch.__version__}")
    if on_gpu and not torch.cuda.is_available():
        print("python checks: FAILED: torch sees no GPU (torch.cuda.is_available() is False)")
        return 1
    if on_gpu:
        print(f"torch sees: {torch.cuda.get_device_name(torch.device(device))}")
    failed = 0
    for dtype in ("bf16", "f16", "f32"):
        path = f"{folder}/demo-{dtype}.padic"
        want = padic_burst.torch.load_file(path)
        size = sum(t.numel() * t.element_size() for t in want.values())

        got, st = load(path, device)
        ok = same(got, want, device) and (not on_gpu or st["gpu_decompressions"] > 0)
        failed += not ok
        print(
            f"python {dtype} load_file(device={device!r}): bit-exact {'yes' if same(got, want, device) else 'NO'}, "
            f"{st['gpu_decompressions']} gpu / {st['cpu_decompressions']} cpu / "
            f"{st['hybrid_decompressions']} hybrid decodes{'' if ok else '  FAILED'}"
        )
        del got

        if on_gpu:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            filler = torch.empty(int(free * 0.97), dtype=torch.uint8, device=device)
            try:
                got, st = load(path, device)
                ok = same(got, want, device) and st["cpu_decompressions"] > 0
                print(
                    f"python {dtype} full card (3% free): bit-exact {'yes' if same(got, want, device) else 'NO'}, "
                    f"{st['gpu_decompressions']} gpu / {st['cpu_decompressions']} cpu decodes, "
                    f"{st['memory_pressure_events']} pressure events{'' if ok else '  FAILED'}"
                )
                del got
            except padic_burst.PadicError as e:
                ok = False
                print(f"python {dtype} full card (3% free): FAILED: {e}")
            finally:
                del filler
                torch.cuda.empty_cache()
            failed += not ok

        dev_s, cpu_s = seconds(path, device), seconds(path, "cpu")
        print(
            f"| python load_file {dtype}, {size / 1e6:.1f} MB | {device} {size / dev_s / 1e9:.2f} GB/s "
            f"| cpu {size / cpu_s / 1e9:.2f} GB/s |"
        )
    print(f"python checks: {'every one passed' if not failed else f'{failed} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
