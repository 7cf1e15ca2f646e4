"""padic_burst.torch: the same bits as safetensors.torch, where PyTorch is
importable (a CPU build is not on PyPI's default index, so CI skips these)."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CPU builds are not on PyPI's default index)")

import padic_burst  # noqa: E402
import padic_burst.torch  # noqa: E402
from conftest import DTYPES, raw_tensors  # noqa: E402


def as_bytes(t):
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


@pytest.mark.parametrize("dtype", DTYPES)
def test_real_weights_bit_for_bit(packed, dtype):
    import safetensors.torch

    src, dst, _ = packed(dtype)
    got = padic_burst.torch.load_file(dst, device=torch.device("cpu"))
    want = safetensors.torch.load_file(src)
    assert set(got) == set(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        assert as_bytes(got[name]) == as_bytes(w), name


def test_safe_open_and_sharded(sharded):
    _, packed_dir, _, tensors = sharded
    got = padic_burst.torch.load_file(packed_dir)
    layer = [k for k in tensors if k.startswith("encoder.layer.4.")]
    with padic_burst.safe_open(packed_dir, framework="pt") as f:
        one = f.get_tensor("pooler.dense.weight")
        several = f.get_tensors(layer)
    for name, want in tensors.items():
        assert as_bytes(got[name]) == want.tobytes(), name
    assert as_bytes(one) == tensors["pooler.dense.weight"].tobytes()
    with padic_burst.safe_open(packed_dir, framework="pt") as f:
        rows = f.get_slice("pooler.dense.weight")[10:20]
    assert isinstance(rows, torch.Tensor) and rows.shape == (10, 384)
    assert as_bytes(rows) == tensors["pooler.dense.weight"][10:20].tobytes()
    assert list(several) == layer
    for name in layer:
        assert isinstance(several[name], torch.Tensor) and as_bytes(several[name]) == tensors[name].tobytes(), name


def test_cuda(packed):
    src, dst, _ = packed("bf16")
    p = padic_burst.Pipeline()
    if p._inner.gpu_absent is not None or not torch.cuda.is_available():
        with pytest.raises(padic_burst.PadicError, match="no GPU"):
            padic_burst.torch.load_file(dst, device="cuda")
        return
    got = padic_burst.torch.load_file(dst, device="cuda")
    raw = raw_tensors(src)
    for name, t in got.items():
        assert t.device.type == "cuda"
        assert as_bytes(t.cpu()) == raw[name][2], name


def test_save_file(packed, tmp_path):
    import safetensors.torch

    src, _, _ = packed("bf16")
    tensors = safetensors.torch.load_file(src)
    dst = tmp_path / "saved.padic"
    padic_burst.torch.save_file(tensors, dst)
    got = padic_burst.torch.load_file(dst)
    assert set(got) == set(tensors)
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype and as_bytes(got[name]) == as_bytes(want), name


def test_a_0d_bool_or_uint8_tensor_indexes_a_slice_as_torch_does(tmp_path):
    import safetensors.torch
    from safetensors import safe_open as reference

    src, dst = tmp_path / "r.safetensors", tmp_path / "r.padic"
    safetensors.torch.save_file({"x": torch.arange(60.0).reshape(5, 4, 3)}, src)
    padic_burst.compress_file(src, dst)
    with reference(src, framework="pt") as a, padic_burst.safe_open(dst, framework="pt") as b:
        # torch reads a 0-d uint8 tensor as a mask too (deprecated, still so).
        for index in (torch.tensor(True), torch.tensor(False), torch.tensor(1, dtype=torch.uint8)):
            want, got = a.get_slice("x")[index], b.get_slice("x")[index]
            # A new axis of length 1 or 0, not row 1 or row 0.
            assert got.shape == want.shape == torch.arange(60.0).reshape(5, 4, 3)[index].shape, index
            assert torch.equal(got, want)
