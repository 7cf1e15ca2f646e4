"""PyTorch: ``load_file`` returns ``dict[str, torch.Tensor]``.

Host tensors wrap the decoded memory without a copy (DLPack). With
``device="cuda"`` / ``"cuda:N"`` the tensors are decoded on the GPU into device
memory (a build with the ``cuda`` feature, on a machine with a GPU); a tensor
the AUTO rules or an out-of-memory send to the CPU is decoded there and then
uploaded, and counted in ``Pipeline.statistics()["fallbacks"]``.
"""

import torch

from ._pipeline import _PACKED_BITS, DtypeError, Pipeline, _gpu_index, _save_file

# The dtypes that travel as bytes and are viewed as their torch dtype, as
# safetensors.torch gives them: the 8-bit floats (not every PyTorch takes them
# through DLPack) and F4, packed two values a byte (float4_e2m1fn_x2: the last
# dimension counts bytes, half the header's).
_VIEWS = {
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
}


def _torch_dtype(name, dtype, shape):
    """The torch dtype to view the bytes of tensor `name` as, or None to take
    them as they come; DtypeError where safetensors.torch refuses the tensor."""
    if dtype in _VIEWS:
        kind = getattr(torch, _VIEWS[dtype], None)
        if kind is None:
            raise DtypeError(
                f"tensor {name!r} is {dtype}, which this PyTorch ({torch.__version__}) has no "
                f"dtype for (safetensors.torch loads it as torch.{_VIEWS[dtype]}, of a newer PyTorch)"
            )
        if dtype == "F4" and (not shape or shape[-1] % 2):
            raise DtypeError(
                f"tensor {name!r} is F4 of shape {list(shape)}: torch.float4_e2m1fn_x2 packs two "
                f"values a byte, so the last dimension must be even (safetensors.torch refuses it too)"
            )
        return kind
    if dtype in _PACKED_BITS:
        raise DtypeError(
            f"tensor {name!r} is {dtype} ({_PACKED_BITS[dtype]}-bit floats, packed), which PyTorch "
            f"has no dtype for (safetensors.torch refuses it too)"
        )
    return None


def _tensor(name, dtype, shape, holder, device="cpu"):
    kind = _torch_dtype(name, dtype, shape)
    t = torch.from_dlpack(holder)
    if device != "cpu" and t.device != torch.device(device):
        t = t.to(device)  # the bytes, before the view: any PyTorch copies those
    return t if kind is None else t.view(kind)


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

