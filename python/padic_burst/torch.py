"""PyTorch: ``load_file`` returns ``dict[str, torch.Tensor]``.

Host tensors wrap the decoded memory without a copy (DLPack). With
``device="cuda"`` / ``"cuda:N"`` the tensors are decoded on the GPU into device
memory (a build with the ``cuda`` feature, on a machine with a GPU); a tensor
the AUTO rules or an out-of-memory send to the CPU is decoded there and then
uploaded, and counted in ``Pipeline.statistics()["fallbacks"]``.
"""

import torch

from ._pipeline import Pipeline, _gpu_index, _save_file

# 8-bit floats travel as bytes (not every PyTorch takes them through DLPack).
_VIEWS = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _tensor(name, dtype, holder, device="cpu"):
    t = torch.from_dlpack(holder)
    if dtype in _VIEWS:
        t = t.view(getattr(torch, _VIEWS[dtype]))
    if device != "cpu" and t.device != torch.device(device):
        t = t.to(device)
    return t


def load_file(path, device="cpu", *, mode="auto", target_precision=None, workers=None, config=None):
    """Every tensor of a ``.padic`` file or a packed directory.

    ``mode``: "auto" (also ``None``), "gpu-only", "cpu-only" or "hybrid"; ``target_precision``:
    decode only the leading digits of each fraction; ``workers``: decode
    threads (default: the config's ``num_cpu_workers``); ``config``: a dict or a
    TOML path, as for :class:`padic_burst.Pipeline`.
    """
    p = Pipeline(config, workers=workers, gpu_device=_gpu_index(device))
    p.force_mode("auto" if mode is None else mode)
    return p.load_file(path, "pt", device, target_precision=target_precision)


def save_file(tensors, filename, metadata=None, *, prime=2, precision=None, lossy=False, chunk_kib=1024):
    """Compresses ``tensors`` (a dict of ``torch.Tensor``) into the container
    ``filename``, as ``safetensors.torch.save_file`` writes a safetensors file
    (it serializes them, so the ``safetensors`` package must be installed).
    The options are those of :func:`padic_burst.compress_file`; returns its summary."""
    options = dict(prime=prime, precision=precision, lossy=lossy, chunk_kib=chunk_kib)
    return _save_file("torch", tensors, filename, metadata, options)

