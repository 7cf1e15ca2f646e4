"""padic_burst.numpy against the safetensors package's own NumPy loader."""

import sys

import numpy as np
import pytest

import padic_burst
import padic_burst.numpy
from conftest import DTYPES, raw_tensors


def reference(path):
    import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy for safetensors)
    import safetensors.numpy

    return safetensors.numpy.load_file(path)


def same_bits(got, want):
    """Equal dtype, shape and bytes (NaN payloads included: bytes, not values)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_real_weights_bit_for_bit(packed, dtype):
    src, dst, summary = packed(dtype)
    assert summary["compressed_bytes"] < summary["original_bytes"]
    got = padic_burst.numpy.load_file(dst)
    want = reference(src)
    assert list(got) == list(raw_tensors(src))  # file order
    assert set(got) == set(want)
    for name in want:
        same_bits(got[name], want[name])


def test_edge_values_and_nan_payloads(edge_file):
    src, dst = edge_file
    got = padic_burst.numpy.load_file(dst)
    raw = raw_tensors(src)
    for name, (dtype, shape, data) in raw.items():
        assert got[name].shape == shape
        assert got[name].tobytes() == data, name
    assert np.isnan(got["f32"]).sum() == 5 * 300
    assert str(got["bf16"].dtype) == "bfloat16"


def test_tensors_are_views_of_one_decoded_buffer(packed):
    """No copy per tensor: each array points into one buffer at its offset in
    the safetensors data region, and owns no data of its own."""
    src, dst, _ = packed("f32")
    got = padic_burst.numpy.load_file(dst)
    raw = raw_tensors(src)
    import json
    import struct

    header = json.loads(src.read_bytes()[8 : 8 + struct.unpack("<Q", src.read_bytes()[:8])[0]])
    names = [n for n in raw if raw[n][2]]
    base = got[names[0]].__array_interface__["data"][0] - header[names[0]]["data_offsets"][0]
    for n in names:
        assert not got[n].flags.owndata
        assert got[n].__array_interface__["data"][0] - base == header[n]["data_offsets"][0], n


def test_bf16_without_ml_dtypes_names_dtype_and_package(packed, monkeypatch):
    _, dst, _ = packed("bf16")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(TypeError, match=r"BF16.*ml_dtypes") as excinfo:
        padic_burst.numpy.load_file(dst)
    assert isinstance(excinfo.value, padic_burst.PadicError)


def test_target_precision_reads_fewer_digits(packed):
    _, dst, _ = packed("f32")
    full = padic_burst.numpy.load_file(dst)
    name = "embeddings.word_embeddings.weight"
    coarse = padic_burst.numpy.load_file(dst, target_precision=8)[name]
    assert coarse.tobytes() != full[name].tobytes()
    np.testing.assert_allclose(coarse, full[name], rtol=2**-7, atol=0)


def test_sharded_directory(sharded):
    model, packed_dir, summary, tensors = sharded
    assert summary["shards"] == 3
    assert sorted(p.name for p in packed_dir.iterdir()) == [
        "config.json",
        "model-00001-of-00003.padic",
        "model-00002-of-00003.padic",
        "model-00003-of-00003.padic",
        "model.safetensors.index.json",
        "tokenizer_config.json",
    ]
    for name in ["config.json", "tokenizer_config.json", "model.safetensors.index.json"]:
        assert (packed_dir / name).read_bytes() == (model / name).read_bytes()
    for path in [packed_dir, packed_dir / "model.safetensors.index.json"]:
        got = padic_burst.numpy.load_file(path)
        assert set(got) == set(tensors)
        for name, want in tensors.items():
            same_bits(got[name], want)


def test_sharded_directory_output_must_be_empty(sharded, tmp_path):
    model = sharded[0]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(padic_burst.PadicError, match="not an empty directory"):
        padic_burst.compress_file(model, tmp_path / "taken")


def test_missing_shard_is_named(sharded, tmp_path):
    import shutil

    packed_dir = tmp_path / "packed"
    shutil.copytree(sharded[1], packed_dir)
    (packed_dir / "model-00002-of-00003.padic").unlink()
    with pytest.raises(padic_burst.PadicError, match="model-00002-of-00003"):
        padic_burst.numpy.load_file(packed_dir)
