"""Fixtures: the real MiniLM weights ($PADIC_TEST_WEIGHTS) compressed once per
session, a sharded model directory made from them, and a small file of edge
values (NaN payloads, infinities, subnormals) in every float dtype."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import padic_burst

DTYPES = ["f32", "bf16", "f16"]


def weights_dir():
    return Path(os.environ.get("PADIC_TEST_WEIGHTS", Path(__file__).parents[2] / "target" / "test-weights"))


def real_weights(dtype):
    return _real(f"minilm-{dtype}.safetensors")


def real_model_dir():
    """The package's own all-MiniLM-L6-v2 folder (config, tokenizer, weights)."""
    return _real("minilm-model")


def _real(name):
    path = weights_dir() / name
    if not path.exists():
        if os.environ.get("PADIC_REQUIRE_REAL_WEIGHTS"):
            pytest.fail(f"{path} is missing and PADIC_REQUIRE_REAL_WEIGHTS is set (scripts/fetch-test-weights.sh)")
        pytest.skip(f"{path} is missing: run scripts/fetch-test-weights.sh")
    return path


def raw_tensors(path):
    """name -> (dtype, shape, bytes), read straight from the safetensors file."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n :]
    return {k: (v["dtype"], tuple(v["shape"]), body[v["data_offsets"][0] : v["data_offsets"][1]]) for k, v in header.items()}


@pytest.fixture(scope="session")
def packed(tmp_path_factory):
    """dtype -> (safetensors path, .padic path, compress summary)."""
    out = tmp_path_factory.mktemp("packed")
    cache = {}

    def get(dtype):
        if dtype not in cache:
            src = real_weights(dtype)
            dst = out / f"minilm-{dtype}.padic"
            cache[dtype] = (src, dst, padic_burst.compress_file(src, dst))
        return cache[dtype]

    return get


@pytest.fixture(scope="session")
def sharded(tmp_path_factory):
    """A Hugging Face style model directory: MiniLM f32 split into 3 shards,
    the index, config.json and a tokenizer file; and its packed twin."""
    import safetensors.numpy

    src = real_weights("f32")
    tensors = safetensors.numpy.load_file(src)
    names = list(tensors)
    root = tmp_path_factory.mktemp("sharded")
    model = root / "model"
    model.mkdir()
    weight_map = {}
    for i in range(3):
        shard = f"model-{i + 1:05d}-of-00003.safetensors"
        part = {k: tensors[k] for k in names[i::3]}
        safetensors.numpy.save_file(part, model / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    total = sum(t.nbytes for t in tensors.values())
    (model / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 384}\n')
    (model / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    packed_dir = root / "packed"
    summary = padic_burst.compress_file(model, packed_dir)
    return model, packed_dir, summary, tensors


def edge_values():
    """Bit patterns that must survive: NaN payloads (quiet, signalling,
    negative), infinities, signed zeros, subnormals, extremes."""
    f32 = np.array(
        [0x7FC00000, 0x7FC00001, 0x7FA5A5A5, 0xFFFFFFFF, 0x7F800001, 0xFF800000, 0x7F800000,
         0x80000000, 0x00000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x3F800000, 0xBF8CCCCD],
        dtype=np.uint32,
    )
    u16 = np.array(
        [0x7E00, 0x7E01, 0x7D55, 0xFFFF, 0x7C01, 0xFC00, 0x7C00, 0x8000, 0x0000, 0x0001, 0x83FF,
         0x7BFF, 0x3C00, 0x7FC1, 0xFF81, 0x7F80, 0xFF80, 0x0080, 0x3F80, 0xC2F7],
        dtype=np.uint16,
    )
    return {"f32": np.tile(f32, 300), "u16": np.tile(u16, 300)}


@pytest.fixture(scope="session")
def edge_file(tmp_path_factory):
    """A safetensors file of edge values in F32, BF16 and F16, and its container."""
    root = tmp_path_factory.mktemp("edge")
    v = edge_values()
    header = {}
    body = b""
    for name, dtype, arr in [("f32", "F32", v["f32"]), ("bf16", "BF16", v["u16"]), ("f16", "F16", v["u16"])]:
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": [len(arr) // 4, 4], "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    src = root / "edge.safetensors"
    src.write_bytes(struct.pack("<Q", len(text)) + text + body)
    dst = root / "edge.padic"
    padic_burst.compress_file(src, dst, chunk_kib=1)
    return src, dst
