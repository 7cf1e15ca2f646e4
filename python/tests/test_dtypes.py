"""The unusual dtypes (packed 4- and 6-bit floats, the 8-bit floats E4M3, E5M2
E8M0, E4M3FNUZ and E5M2FNUZ) against the safetensors package's own loaders: the same dtype,
shape and bytes where safetensors loads a tensor, a ``PadicError`` naming the
tensor and its dtype where it refuses one. The one difference by design:
``padic_burst.numpy`` loads the 8-bit floats as their ``ml_dtypes`` types,
where ``safetensors.numpy`` has none."""

import importlib
import json
import struct

import numpy as np
import pytest

import padic_burst
import padic_burst.numpy

# (dtype, shape, bytes): every shape a valid safetensors header takes.
CASES = [
    ("F4", [32], 16),
    ("F4", [4, 8], 16),
    ("F4", [2, 2, 4], 8),
    ("F4", [3, 2], 3),
    ("F4", [0, 8], 0),
    ("F4", [2, 3], 3),  # PyTorch's float4_e2m1fn_x2 needs an even last dimension
    ("F6_E2M3", [16], 12),
    ("F6_E3M2", [4, 4], 12),
    ("F6_E2M3", [4, 2], 6),  # a row is 12 bits: not whole bytes
    ("F8_E8M0", [16], 16),
    ("F8_E8M0", [0], 0),
    ("F8_E4M3", [4, 4], 16),
    ("F8_E5M2", [16], 16),
    ("F8_E4M3FNUZ", [4, 4], 16),  # the Rust safetensors crate knows them from 0.8
    ("F8_E5M2FNUZ", [16], 16),
    # The rest, for the whole table.
    ("BF16", [4, 2], 16),
    ("F16", [8], 16),
    ("F32", [2, 2], 16),
    ("F64", [2], 16),
    ("I64", [2], 16),
    ("I32", [4], 16),
    ("I16", [8], 16),
    ("I8", [16], 16),
    ("U64", [2], 16),
    ("U32", [4], 16),
    ("U16", [8], 16),
    ("U8", [16], 16),
    ("BOOL", [16], 16),
    ("C64", [2], 16),  # the Rust safetensors crate knows it from 0.7
]
ML_DTYPES = {
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}
FRAMEWORKS = ["np", "pt"]


def case_id(case):
    dtype, shape, _ = case
    return f"{dtype}-{'x'.join(map(str, shape))}"


def write_raw(path, tensors):
    """A safetensors file with a hand-written header (safetensors' Python API
    cannot make most of these dtypes): name -> (dtype, shape, bytes)."""
    header, body = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return path


def pattern(n, seed=0, dtype=None):
    data = bytes((i * 37 + seed) % 256 for i in range(n))
    return bytes(b & 1 for b in data) if dtype == "BOOL" else data


def compressed(tmp_path, tensors):
    src = write_raw(tmp_path / "src.safetensors", tensors)
    dst = tmp_path / "src.padic"
    padic_burst.compress_file(src, dst, chunk_kib=1)
    return src, dst


def framework(fw):
    """(safetensors' loader module, ours, bytes of a loaded tensor)."""
    if fw == "pt":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        import safetensors.torch

        ours = importlib.import_module("padic_burst.torch")

        def as_bytes(t):
            return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""

        return safetensors.torch, ours, as_bytes
    import safetensors.numpy

    pytest.importorskip("ml_dtypes")  # registers bfloat16 with NumPy for safetensors
    return safetensors.numpy, padic_burst.numpy, lambda a: a.tobytes()


def reference(module, src):
    """safetensors' tensor 'w', or None where safetensors refuses it."""
    try:
        return module.load_file(src)["w"]
    except Exception:
        return None


def expected(fw, dtype, shape, data, want):
    """What padic_burst gives: safetensors' tensor, or for NumPy's 8-bit floats
    the ml_dtypes array; None for a refusal."""
    if want is not None or fw != "np" or dtype not in ML_DTYPES:
        return want
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.frombuffer(data, dtype=getattr(ml_dtypes, ML_DTYPES[dtype])).reshape(shape)


def same(got, want, as_bytes):
    assert got.dtype == want.dtype
    assert tuple(got.shape) == tuple(want.shape)
    assert as_bytes(got) == as_bytes(want)


def refused(excinfo, dtype):
    message = str(excinfo.value)
    assert "'w'" in message and dtype in message, message
    assert "Some(" not in message and "None" not in message, message


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_loads_what_safetensors_loads(tmp_path, case, fw):
    dtype, shape, n = case
    data = pattern(n, dtype=dtype)
    src, dst = compressed(tmp_path, {"w": (dtype, shape, data)})
    theirs, ours, as_bytes = framework(fw)
    want = expected(fw, dtype, shape, data, reference(theirs, src))
    loads = [
        lambda: ours.load_file(dst)["w"],
        lambda: padic_burst.safe_open(dst, framework=fw).get_tensor("w"),
        lambda: padic_burst.safe_open(dst, framework=fw).get_tensors()["w"],
        lambda: padic_burst.Pipeline().load_file(dst, fw)["w"],
    ]
    for load in loads:
        if want is None:
            with pytest.raises(padic_burst.PadicError) as excinfo:
                load()
            refused(excinfo, dtype)
        else:
            same(load(), want, as_bytes)


# (dtype, shape, index): rows, a row, columns, a strided part.
SLICES = [
    ("F4", [32], slice(2, 6)),
    ("F4", [4, 8], slice(1, 3)),
    ("F4", [4, 8], 2),
    ("F4", [4, 8], (slice(None), slice(1, 3))),
    ("F4", [3, 2], slice(None, None, 2)),
    ("F6_E2M3", [16], slice(0, 4)),
    ("F6_E3M2", [4, 4], slice(1, 2)),
    ("F8_E8M0", [16], slice(3, 9)),
    ("F8_E8M0", [4, 4], (slice(1, 3), slice(None, None, 2))),
    ("F8_E4M3", [4, 4], 1),
    ("F8_E5M2", [16], slice(None, None, 3)),
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype,shape,index", SLICES, ids=lambda v: str(v).replace(" ", ""))
def test_get_slice(tmp_path, dtype, shape, index, fw):
    """The header's dtype and shape, as safetensors gives them, and the part
    of the tensor as loaded: safetensors' own slice where it gives one (its
    get_slice fails on F4 in PyTorch), else ``get_tensor(name)[index]``."""
    from safetensors import safe_open

    n = int(np.prod(shape)) * {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}.get(dtype, 8) // 8
    data = pattern(n, seed=5)
    src, dst = compressed(tmp_path, {"w": (dtype, shape, data)})
    theirs, _, as_bytes = framework(fw)
    whole = expected(fw, dtype, shape, data, reference(theirs, src))
    with safe_open(src, framework=fw) as f:
        s = f.get_slice("w")
        header = (s.get_dtype(), s.get_shape())
        try:
            want = s[index]
        except Exception:
            want = None if whole is None else whole[index]
    with padic_burst.safe_open(dst, framework=fw) as f:
        s = f.get_slice("w")
        assert (s.get_dtype(), s.get_shape()) == header == (dtype, shape)
        if whole is None:
            with pytest.raises(padic_burst.PadicError) as excinfo:
                s[index]
            refused(excinfo, dtype)
        else:
            same(s[index], want, as_bytes)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mx_block_file_is_views_of_one_buffer(tmp_path, fw):
    """An MXFP4-style file (F4 values, E8M0 scales, E4M3 and BF16 beside
    them): each tensor as safetensors gives it alone, and a view (no copy) of
    the one decoded buffer at its offset in the data region."""
    tensors = {
        "blocks": ("F4", [64, 32], pattern(1024, 1)),
        "scales": ("F8_E8M0", [64, 1], pattern(64, 2)),
        "fp8": ("F8_E4M3", [8, 16], pattern(128, 3)),
        "bias": ("BF16", [64], pattern(128, 4)),
    }
    _, dst = compressed(tmp_path, tensors)
    theirs, ours, as_bytes = framework(fw)
    if fw == "pt":
        got = ours.load_file(dst)
    else:
        with pytest.raises(padic_burst.PadicError, match="'blocks' is F4"):
            ours.load_file(dst)
        with padic_burst.safe_open(dst, framework="np") as f:
            got = f.get_tensors(["scales", "fp8", "bias"])
    offset, offsets = 0, {}
    for name, (dtype, shape, data) in tensors.items():
        offsets[name] = offset
        offset += len(data)
        if name in got:
            alone = write_raw(tmp_path / f"{name}.safetensors", {"w": (dtype, shape, data)})
            same(got[name], expected(fw, dtype, shape, data, reference(theirs, alone)), as_bytes)
    if fw == "pt":
        base = got["blocks"].data_ptr()
        for name in tensors:
            assert got[name].data_ptr() - base == offsets[name], name
    else:
        for name in got:
            assert not got[name].flags.owndata, name
