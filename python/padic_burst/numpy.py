"""NumPy: ``load_file`` returns ``dict[str, numpy.ndarray]``.

Arrays wrap the decoded memory without a copy (DLPack); they are writable with
NumPy 2.1 or later (DLPack 1.0), read-only with older NumPy. NumPy has no bfloat16
or 8-bit floats: those come through the ``ml_dtypes`` package when it is
installed, and are an error naming the dtype and the package when it is not.
"""

import numpy as np

from ._pipeline import Pipeline, _save_file

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
}
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _dtype(name, dtype):
    if dtype in _NATIVE:
        return np.dtype(_NATIVE[dtype])
    if dtype in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(
                f"tensor {name!r} is {dtype}, which NumPy has no type for: "
                f"install the ml_dtypes package (pip install ml_dtypes) to load it"
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype]))
    raise TypeError(f"tensor {name!r}: dtype {dtype} has no NumPy type")


def _tensor(name, dtype, holder, device="cpu"):
    # The holder exports unsigned integers of the dtype's width: view them.
    return np.from_dlpack(holder).view(_dtype(name, dtype))


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
    return _save_file("numpy", tensors, filename, metadata, options)

