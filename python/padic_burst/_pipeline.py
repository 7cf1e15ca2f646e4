"""``Pipeline`` and ``safe_open``: the framework-neutral part of the API."""

import importlib
import json
import math
import operator
import os
import warnings

from . import _padic_burst

_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}

# The packed sub-byte dtypes and their width in bits: they travel as bytes.
_PACKED_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class DtypeError(_padic_burst.PadicError, TypeError):
    """A tensor whose dtype the framework has no type for (a ``PadicError``,
    and a ``TypeError`` as it was before)."""


def _digits(target_precision):
    """`target_precision` checked: None (every stored digit) or a whole
    number of digits, at least 1 (a negative one was an OverflowError)."""
    if target_precision is None:
        return None
    try:
        k = None if isinstance(target_precision, bool) else operator.index(target_precision)
    except TypeError:
        k = None
    if k is None or k < 1 or k > 0xFFFFFFFF:
        raise _padic_burst.PadicError(
            f"invalid argument: target_precision={target_precision!r}: expected None or a whole "
            f"number of digits, at least 1"
        )
    return k


def _framework(name):
    try:
        return _FRAMEWORKS[name]
    except KeyError:
        raise _padic_burst.PadicError(
            f"framework {name!r}: expected 'pt' (PyTorch) or 'np' (NumPy)"
        ) from None


def _gpu_index(device):
    """The N of "cuda:N" ("cuda" is 0), or None for the host. Takes what
    safetensors' ``load_file`` takes: a string, a ``torch.device``, an int N
    for "cuda:N", or None for the host."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    name = str(device) if type(device).__name__ == "device" else device
    if isinstance(name, str):
        kind, colon, index = name.partition(":")
        if not colon or index.isdigit():
            if kind == "cpu":
                return None
            if kind == "cuda":
                return int(index or 0)
    raise _padic_burst.PadicError(
        f'device {device!r}: expected "cpu", "cuda", "cuda:N", an int N (cuda:N), a torch.device or None (the host)'
    )


def _device_name(device):
    """The canonical name of a device `_gpu_index` takes: "cpu" or "cuda:N"."""
    gpu = _gpu_index(device)
    return "cpu" if gpu is None else f"cuda:{gpu}"


def _module(framework):
    if framework == "pt":
        from . import torch as module
    else:
        from . import numpy as module
    return module


class Pipeline:
    """The decode pipeline: a mode that can be forced at run time, an LRU cache
    of tensors (for ``safe_open``) and statistics. Safe to share between threads.

    ``config`` is ``None`` (the defaults), a dict of the TOML file's keys, or the
    path of a TOML file; it is layered and validated as the command line does it
    (defaults < file < ``SARAPHIS_*`` environment < arguments), and a bad value
    raises ``PadicError``.
    """

    def __init__(self, config=None, *, workers=None, gpu_device=None):
        config_json = config_path = None
        if isinstance(config, dict):
            # JSON, which carries the dict, has no NaN or infinity: name the key here.
            for key, value in config.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise _padic_burst.PadicError(
                        f"invalid argument: config: {key} = {value}: expected a finite number"
                    )
            config_json = json.dumps(config)
        elif isinstance(config, (str, os.PathLike)):
            config_path = os.fspath(config)
        elif config is not None:
            raise _padic_burst.PadicError(
                f"config: expected None, a dict or a TOML file path, got {type(config).__name__}"
            )
        for name, meant in _padic_burst.misspelt_variables():
            warnings.warn(
                f"{name} is set, but padic_burst reads no such variable; did you mean {meant}?",
                stacklevel=2,
            )
        self._inner = _padic_burst.Pipeline(config_json, config_path, workers, gpu_device)

    def force_mode(self, mode):
        """Sets the mode of the following loads: "auto", "gpu-only", "cpu-only" or "hybrid"."""
        self._inner.force_mode(str(getattr(mode, "value", mode)))

    @property
    def mode(self):
        """The current mode: "auto", "gpu-only", "cpu-only" or "hybrid"."""
        return self._inner.mode

    def statistics(self):
        """The statistics of the load in progress, else of the last load: a dict
        with the keys of the command line's ``--stats-json`` (one load, one run:
        the counts cover every shard of a directory), the cache's counts and the current mode; ``None``
        before the first load. Another thread may poll it while ``load_file``
        runs: the counters only grow during a load."""
        text = self._inner.statistics_json()
        return None if text is None else json.loads(text)

    def load_file(self, path, framework="pt", device="cpu", *, target_precision=None):
        """Every tensor of a ``.padic`` file or a packed directory, as a dict of
        ``torch.Tensor`` (``framework="pt"``) or ``numpy.ndarray`` (``"np"``)."""
        fw = _framework(framework)
        gpu = _gpu_index(device)
        if fw == "np" and gpu is not None:
            raise _padic_burst.PadicError(
                f"device {device!r}: NumPy arrays live in host memory; use framework='pt'"
            )
        if gpu is not None and self._inner.gpu_absent is not None:
            raise _padic_burst.PadicError(
                f"device {device!r}: no GPU to decode on: {self._inner.gpu_absent}"
            )
        module = _module(fw)
        device = _device_name(device)
        rows = self._inner.load(os.fspath(path), device, _digits(target_precision), fw == "pt")
        return {name: module._tensor(name, dtype, shape, holder, device) for name, dtype, shape, holder in rows}


class safe_open:
    """Opens a ``.padic`` file or a packed directory, as ``safetensors.safe_open``
    does a safetensors file: ``keys()``, ``offset_keys()``, ``metadata()``,
    ``get_tensor(name)``, which decodes only that tensor's chunks, through the
    pipeline's LRU cache, ``get_slice(name)``, and ``get_tensors(names)``, which
    decodes several (every tensor without ``names``) in one run.

    With ``device="cuda..."`` (PyTorch only) a tensor is decoded on the CPU and
    then moved to the device by PyTorch.
    """

    def __init__(self, path, framework="pt", device="cpu", *, pipeline=None, target_precision=None):
        self._framework = _framework(framework)
        if self._framework == "np" and _gpu_index(device) is not None:
            raise _padic_burst.PadicError(f"device {device!r}: NumPy arrays live in host memory")
        self._device = _device_name(device)
        self._target = _digits(target_precision)
        self._pipeline = pipeline if pipeline is not None else Pipeline()
        self._opened = self._pipeline._inner.open(os.fspath(path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._opened = None
        return False

    def _handle(self):
        if self._opened is None:
            raise _padic_burst.PadicError("safe_open: the file is closed (used outside its `with` block)")
        return self._opened

    def keys(self):
        """Tensor names, sorted (as safetensors gives them)."""
        return sorted(self._handle().offset_keys())

    def offset_keys(self):
        """Tensor names in the order their bytes lie in the file (shard by
        shard, in index order, for a packed directory)."""
        return self._handle().offset_keys()

    def metadata(self):
        """The safetensors ``__metadata__`` dict, or ``None``."""
        return self._handle().metadata()

    def get_tensors(self, names=None):
        """The tensors ``names`` (a layer, say; every tensor, in
        ``offset_keys()`` order, when ``None``) as a dict, decoded together in
        one run with every worker: what a loop of ``get_tensor`` does in one
        step, faster. Not through the cache."""
        opened = self._handle()
        if names is None:
            names = opened.offset_keys()
        rows = opened.get_tensors(
            self._pipeline._inner, list(names), self._target, self._framework == "pt"
        )
        module = _module(self._framework)
        return {name: module._tensor(name, dtype, shape, holder, self._device) for name, dtype, shape, holder in rows}

    def get_slice(self, name):
        """A slice object, as safetensors' ``get_slice`` gives: ``get_shape()``
        and ``get_dtype()`` read the header, and indexing it returns a copy of
        the part asked for. An index that starts with an int or a forward
        slice (``[0:128]``, ``[5, :64]``, ``[::2]``: a tensor-parallel rank's
        rows) decodes only the chunks that hold those rows; any other
        (``[:, ::8]``) decodes the tensor through ``get_tensor``."""
        opened = self._handle()
        dtype, shape = opened.info(name)
        # The slice holds the open file itself: as safetensors' slices do, it
        # still reads after the `with` block has closed this object.
        return _Slice(self, opened, name, dtype, shape)

    def _get_rows(self, opened, name, first, last):
        """Rows ``first:last`` of tensor ``name`` of the open file `opened`:
        only their chunks decoded."""
        dtype, shape, holder = opened.get_rows(
            self._pipeline._inner, name, first, last, self._target, self._framework == "pt"
        )
        return _module(self._framework)._tensor(name, dtype, shape, holder, self._device)

    def get_tensor(self, name):
        """One tensor, decoded alone (or taken from the cache)."""
        return self._get_tensor(self._handle(), name)

    def _get_tensor(self, opened, name):
        """Tensor ``name`` of the open file `opened`."""
        dtype, shape, holder = opened.get_tensor(
            self._pipeline._inner, name, self._target, self._framework == "pt"
        )
        return _module(self._framework)._tensor(name, dtype, shape, holder, self._device)


def _save_file(framework, tensors, filename, metadata, options):
    """``save_file`` of ``padic_burst.torch`` and ``padic_burst.numpy``:
    safetensors' serializer of `framework`, then the bytes compressed."""
    try:
        serializer = importlib.import_module(f"safetensors.{framework}")
    except ImportError:
        raise _padic_burst.PadicError(
            "save_file serializes the tensors with the safetensors package: pip install safetensors"
        ) from None
    data = serializer.save(tensors, metadata)
    return _padic_burst.compress_bytes(data, os.fspath(filename), **options)


def _as_int(index, framework):
    """`index` as an int when it is one (a Python, NumPy or 0-d tensor
    integer) to `framework`, else None. Not a bool of any kind: a 0-d bool
    tensor or array indexes as a mask, a new axis of length 1 or 0; nor, in
    PyTorch, a uint8 one, which torch reads as a mask too."""
    if isinstance(index, bool) or getattr(index, "ndim", 0) != 0:
        return None
    masks = ("bool", "torch.bool") + (("uint8", "torch.uint8") if framework == "pt" else ())
    if str(getattr(index, "dtype", "")) in masks:
        return None
    try:
        return operator.index(index)
    except TypeError:
        return None


class _Slice:
    """What ``safe_open.get_slice`` returns."""

    def __init__(self, owner, opened, name, dtype, shape):
        self._owner = owner
        self._opened = opened
        self._name = name
        self._dtype = dtype
        self._shape = list(shape)

    def get_shape(self):
        """The tensor's shape, a list of ints."""
        return list(self._shape)

    def get_dtype(self):
        """The tensor's safetensors dtype name ("BF16", "F32", ...)."""
        return self._dtype

    def _rows(self, index):
        """For an index whose first entry is an int or a forward slice:
        (first row, end row, the index within those rows); else None."""
        parts = index if isinstance(index, tuple) else (index,)
        if not self._shape or not self._shape[0] or not parts:
            return None
        bits = _PACKED_BITS.get(self._dtype)
        if bits is not None and (math.prod(self._shape[1:]) * bits) % 8:
            return None  # a row is not whole bytes: the tensor's packed view decides
        head, rest, n = parts[0], parts[1:], self._shape[0]
        i = _as_int(head, self._owner._framework)
        if i is not None:
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                raise IndexError(f"index {head} is out of bounds for dimension 0 with size {n}")
            return i, i + 1, (0,) + rest
        if isinstance(head, slice):
            start, stop, step = head.indices(n)
            if step > 0:
                return start, max(start, stop), (slice(0, None, step),) + rest
        return None

    def __getitem__(self, index):
        rows = self._rows(index)
        if rows is None:
            part = self._owner._get_tensor(self._opened, self._name)[index]
        else:
            first, last, within = rows
            part = self._owner._get_rows(self._opened, self._name, first, last)[within]
        if hasattr(part, "clone"):
            return part.clone()
        # An index down to one value gives NumPy a scalar; safetensors gives a
        # 0-d array, as this does.
        return importlib.import_module("numpy").array(part, order="C")
