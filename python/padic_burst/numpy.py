"""NumPy: ``load_file`` returns ``dict[str, numpy.ndarray]``.

Arrays wrap the decoded memory without a copy (DLPack); they are writable with
NumPy 2.1 or later (DLPack 1.0), read-only with older NumPy. NumPy has no bfloat16
or 8-bit floats: those come through the ``ml_dtypes`` package when it is
installed, and are an error naming the dtype and the package when it is not.
The packed sub-byte floats (F4, F6_E2M3, F6_E3M2) have no NumPy type (nor
one in ``ml_dtypes``, whose 4- and 6-bit floats take a byte each): loading them
raises ``PadicError``, as ``safetensors.numpy`` refuses them.
"""

import numpy as np

from ._pipeline import _PACKED_BITS, DtypeError, Pipeline, _save_file

_NATIVE = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "C64": np.complex64,
}
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


def _dtype(name, dtype):
    if dtype in _NATIVE:
        return np.dtype(_NATIVE[dtype])
    if dtype in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise DtypeError(
                f"tensor {name!r} is {dtype}, which NumPy has no type for: "
                f"install the ml_dtypes package (pip install ml_dtypes) to load it"
            ) from None
        kind = getattr(ml_dtypes, _ML_DTYPES[dtype], None)
        if kind is None:
            version = getattr(ml_dtypes, "__version__", "?")
            raise DtypeError(
                f"tensor {name!r} is {dtype}, which NumPy has no type for, and ml_dtypes "
                f"{version} has no {_ML_DTYPES[dtype]}: upgrade it (pip install -U ml_dtypes)"
            )
        return np.dtype(kind)
    if dtype in _PACKED_BITS:
        raise DtypeError(
            f"tensor {name!r} is {dtype} ({_PACKED_BITS[dtype]}-bit floats, packed), which NumPy has "
            f"no type for (safetensors.numpy refuses it too)"
            + ("; padic_burst.torch loads it as torch.float4_e2m1fn_x2" if dtype == "F4" else "")
        )
    raise DtypeError(f"tensor {name!r} is {dtype}, which NumPy has no type for")


def _tensor(name, dtype, shape, holder, device="cpu"):
    # The holder exports unsigned integers of the dtype's width: view them.
    kind = _dtype(name, dtype)
    return np.from_dlpack(holder).view(kind)


def load_file(path, device="cpu", *, mode="auto", target_precision=None, workers=None, config=None):
    """Every tensor of a ``.padic`` file or a packed directory.

    ``mode``: "auto" (also ``None``), "gpu-only", "cpu-only" or "hybrid"; ``target_precision``:
    decode only the leading digits of each fraction; ``workers``: decode
    threads (default: the config's ``num_cpu_workers``); ``config``: a dict or a
    TOML path, as for :class:`padic_burst.Pipeline`.
    """
    p = Pipeline(config, workers=workers)
    p.force_mode("auto" if mode is None else mode)
    return p.load_file(path, "np", device, target_precision=target_precision)


def save_file(tensors, filename, metadata=None, *, prime=2, precision=None, lossy=False, chunk_kib=1024):
    """Compresses ``tensors`` (a dict of ``numpy.ndarray``) into the container
    ``filename``, as ``safetensors.numpy.save_file`` writes a safetensors file
    (it serializes them, so the ``safetensors`` package must be installed).
    The options are those of :func:`padic_burst.compress_file`; returns its summary."""
    options = dict(prime=prime, precision=precision, lossy=lossy, chunk_kib=chunk_kib)
    # safetensors.numpy 0.8 writes a non-contiguous array's memory as it lies
    # (a transpose comes back untransposed): each is made contiguous first.
    if isinstance(tensors, dict):
        # (A copy in C order only where needed: ascontiguousarray would make a
        # 0-d array 1-d.)
        tensors = {
            k: v.copy(order="C") if isinstance(v, np.ndarray) and not v.flags.c_contiguous else v
            for k, v in tensors.items()
        }
    return _save_file("numpy", tensors, filename, metadata, options)

