"""safe_open, Pipeline (config, modes, statistics), errors, threads, devices."""

import errno
import importlib.metadata
import threading

import numpy as np
import pytest

import padic_burst
import padic_burst.numpy
from conftest import raw_tensors

# The keys of `padic-burst decompress --stats-json` (src/stats.rs, Statistics).
STATS_KEYS = {
    "total_decompressions", "gpu_decompressions", "cpu_decompressions", "hybrid_decompressions",
    "mode_switches", "memory_pressure_events", "gpu_oom_reroutes", "gpu_memory_saved_mb",
    "average_gpu_time", "average_cpu_time", "current_mode", "current_engine", "gpu_memory_state", "gpu_device",
    "avg_cpu_utilization", "cache_hits", "cache_misses", "latency", "stages", "bytes_in",
    "bytes_out", "wall_time_s", "notes", "routed_gpu", "routed_cpu", "routed_hybrid",
}


def test_safe_open_decodes_one_tensor_through_the_cache(packed):
    src, dst, _ = packed("f16")
    raw = raw_tensors(src)
    p = padic_burst.Pipeline({"num_cpu_workers": 2})
    with padic_burst.safe_open(dst, framework="np", pipeline=p) as f:
        # As safetensors: keys() sorted, offset_keys() in the file's order.
        assert f.keys() == sorted(raw) and f.offset_keys() == list(raw)
        assert f.metadata() == {"format": "pt"}
        name = "encoder.layer.3.attention.self.query.weight"
        t = f.get_tensor(name)
        assert t.dtype == np.float16 and t.shape == raw[name][1]
        assert t.tobytes() == raw[name][2]
        s = p.statistics()
        # Only this tensor's chunks were decoded.
        assert s["bytes_out"] == len(raw[name][2])
        assert (s["cache_hits"], s["cache_misses"]) == (0, 1)
        again = f.get_tensor(name)
        assert again.tobytes() == raw[name][2]
        assert p.statistics()["cache_hits"] == 1
        # The caller's copy is its own: writing it leaves the cache intact.
        # (NumPy takes writable arrays through DLPack 1.0, from 2.1 on.)
        if again.flags.writeable:
            again[...] = 0
        else:
            assert np.lib.NumpyVersion(np.__version__) < "2.1.0"
        assert f.get_tensor(name).tobytes() == raw[name][2]
        with pytest.raises(padic_burst.PadicError, match="no tensor named 'nope'"):
            f.get_tensor("nope")
    with pytest.raises(padic_burst.PadicError, match="closed"):
        f.keys()


def test_safe_open_on_a_packed_directory(sharded):
    _, packed_dir, _, tensors = sharded
    with padic_burst.safe_open(packed_dir, framework="np") as f:
        assert set(f.keys()) == set(tensors)
        name = "encoder.layer.5.output.dense.weight"
        assert f.get_tensor(name).tobytes() == tensors[name].tobytes()


def test_a_packed_model_loads_the_shards_its_index_names(sharded, tmp_path):
    """A copy beside the shards that the index does not name (as
    `consolidated.safetensors` is in many repositories) is not read; it was,
    and its tensors replaced the indexed ones."""
    import shutil

    _, packed_dir, _, tensors = sharded
    copy = tmp_path / "packed"
    shutil.copytree(packed_dir, copy)
    first = "model-00001-of-00003.padic"
    stale = padic_burst.numpy.load_file(copy / first)
    name = next(iter(stale))
    # The stray copy holds other values under the same names.
    stale = {k: np.zeros_like(v) for k, v in stale.items()}
    padic_burst.numpy.save_file(stale, copy / "consolidated.padic")
    # An unrelated link that leads nowhere does not stop a load.
    (copy / "docs").mkdir()
    (copy / "docs" / "broken").symlink_to("/nonexistent")
    for path in [copy, copy / "model.safetensors.index.json"]:
        loaded = padic_burst.numpy.load_file(path)
        assert set(loaded) == set(tensors)
        assert loaded[name].tobytes() == tensors[name].tobytes()
        with padic_burst.safe_open(path, framework="np") as f:
            assert sorted(f.keys()) == sorted(tensors)
    # Without an index every shard is read, and a name in two is refused.
    (copy / "model.safetensors.index.json").unlink()
    with pytest.raises(padic_burst.PadicError, match=f"is in two shards, consolidated.padic and {first}"):
        padic_burst.numpy.load_file(copy)


def test_output_errors_are_oserrors_naming_the_output(sharded, tmp_path):
    model, _, _, _ = sharded
    src = next(model.glob("*.safetensors"))
    (tmp_path / "afile").write_text("x")
    for dst, kind, code in [
        (tmp_path / "nodir" / "y.padic", FileNotFoundError, errno.ENOENT),
        (tmp_path / "afile" / "y.padic", NotADirectoryError, errno.ENOTDIR),
    ]:
        with pytest.raises(kind) as e:
            padic_burst.compress_file(src, dst)
        assert (e.value.errno, e.value.filename) == (code, str(dst)), e.value
    # A directory's output is named as given, not by its hidden temporary name.
    dst = tmp_path / "afile" / "packed"
    with pytest.raises(NotADirectoryError) as e:
        padic_burst.compress_file(model, dst)
    assert (e.value.errno, e.value.filename) == (errno.ENOTDIR, str(dst)), e.value


def test_get_tensors_decodes_a_layer_in_one_run(sharded):
    _, packed_dir, _, tensors = sharded
    # The layer's tensors lie in all three shards.
    layer = [k for k in tensors if k.startswith("encoder.layer.2.")]
    p = padic_burst.Pipeline()
    with padic_burst.safe_open(packed_dir, framework="np", pipeline=p) as f:
        got = f.get_tensors(layer)
        assert list(got) == layer
        for k in layer:
            assert got[k].shape == tensors[k].shape and got[k].tobytes() == tensors[k].tobytes(), k
        # One run decoded them all (a run a tensor would leave the last one's
        # bytes in the statistics), without the cache.
        s = p.statistics()
        assert s["bytes_out"] >= sum(tensors[k].nbytes for k in layer)
        assert (s["cache_hits"], s["cache_misses"]) == (0, 0)
        assert f.get_tensors([]) == {}
        # No names: every tensor, in offset order, in one run.
        every = f.get_tensors()
        assert list(every) == f.offset_keys()
        assert all(every[k].tobytes() == tensors[k].tobytes() for k in tensors)
        with pytest.raises(padic_burst.PadicError, match="no tensor named 'nope'"):
            f.get_tensors([layer[0], "nope"])


def test_statistics_have_the_stats_json_keys(packed):
    _, dst, summary = packed("bf16")
    p = padic_burst.Pipeline({"num_cpu_workers": 2})
    assert p.statistics() is None
    p.force_mode("cpu-only")
    assert p.mode == "cpu-only"
    p.load_file(dst, framework="np")
    s = p.statistics()
    assert set(s) == STATS_KEYS
    assert s["total_decompressions"] == summary["chunks"]
    assert s["cpu_decompressions"] == summary["chunks"]
    assert s["gpu_decompressions"] == 0
    assert s["routed_cpu"] == summary["chunks"]
    assert s["current_mode"] == "cpu-only"
    assert s["bytes_out"] == sum(len(r[2]) for r in raw_tensors(packed("bf16")[0]).values())


def test_statistics_sum_over_shards(sharded):
    _, packed_dir, summary, tensors = sharded
    p = padic_burst.Pipeline()
    p.load_file(packed_dir, framework="np")
    s = p.statistics()
    assert s["total_decompressions"] == summary["chunks"]
    assert s["bytes_out"] == sum(t.nbytes for t in tensors.values())
    # The keys of a packed directory's --stats-json: each shard's share
    # (they add up to the run's) and the whole load's time.
    assert set(s) == STATS_KEYS | {"shards", "checkpoint_wall_time_s"}
    shards = s["shards"]
    assert [x["shard"] for x in shards] == [f"model-{i:05d}-of-00003.padic" for i in (1, 2, 3)]
    for key in ["total_decompressions", "bytes_in", "bytes_out"]:
        assert sum(x[key] for x in shards) == s[key], key
    assert s["checkpoint_wall_time_s"] >= s["wall_time_s"] > 0


def test_config_dict_and_toml_are_validated(packed, tmp_path):
    _, dst, _ = packed("f16")
    toml = tmp_path / "c.toml"
    toml.write_text("num_cpu_workers = 1\nenable_caching = false\n")
    assert padic_burst.numpy.load_file(dst, config=toml)["pooler.dense.bias"].shape == (384,)
    bad = tmp_path / "bad.toml"
    bad.write_text("memory_pressure_threshold = 2.0\n")
    for config, match in [
        ({"memory_pressure_threshold": 2.0}, "memory_pressure_threshold"),
        ({"no_such_key": 1}, "no_such_key"),
        ({"num_cpu_workers": "two"}, "num_cpu_workers|invalid type"),
        # NaN and infinity named by their key (it was "expected value at line 1 column 31").
        ({"memory_pressure_threshold": float("nan")}, "memory_pressure_threshold = nan"),
        ({"gpu_memory_threshold_mb": float("inf")}, "gpu_memory_threshold_mb = inf"),
        (bad, "memory_pressure_threshold"),
        (42, "config"),
    ]:
        with pytest.raises(padic_burst.PadicError, match=match):
            padic_burst.Pipeline(config)
    with pytest.raises(FileNotFoundError):
        padic_burst.Pipeline(tmp_path / "missing.toml")
    # mode=None is the default mode; a bad one is named.
    assert padic_burst.numpy.load_file(dst, mode=None).keys() == padic_burst.numpy.load_file(dst).keys()
    with pytest.raises(padic_burst.PadicError, match="unknown mode"):
        padic_burst.Pipeline().force_mode("warp-speed")
    with pytest.raises(padic_burst.PadicError, match="workers=0"):
        padic_burst.numpy.load_file(dst, workers=0)


def test_damaged_files_raise_padic_error(packed, tmp_path):
    assert issubclass(padic_burst.PadicError, ValueError)
    src, dst, _ = packed("bf16")
    data = bytearray(dst.read_bytes())
    flipped = tmp_path / "flipped.padic"
    data[len(data) // 2] ^= 0x40
    flipped.write_bytes(bytes(data))
    with pytest.raises(padic_burst.PadicError) as e:
        padic_burst.numpy.load_file(flipped)
    assert "flipped.padic" in str(e.value)
    assert "tensor '" in str(e.value) and "chunk" in str(e.value) and "offset" in str(e.value)
    truncated = tmp_path / "truncated.padic"
    truncated.write_bytes(dst.read_bytes()[: len(data) // 3])
    with pytest.raises(padic_burst.PadicError, match="truncated.padic"):
        padic_burst.numpy.load_file(truncated)
    other = tmp_path / "not.padic"
    other.write_bytes(b"hello, world" * 10)
    with pytest.raises(padic_burst.PadicError, match="not a padic-burst container") as e:
        padic_burst.safe_open(other, framework="np")
    assert "safetensors" not in str(e.value)
    with pytest.raises(padic_burst.PadicError, match="uncompressed safetensors file: compress it first"):
        padic_burst.numpy.load_file(src)
    with pytest.raises(FileNotFoundError) as e:
        padic_burst.numpy.load_file(tmp_path / "absent.padic")
    # As Python's own: errno, strerror and the file.
    assert e.value.errno == errno.ENOENT, e.value
    assert e.value.filename == str(tmp_path / "absent.padic"), e.value
    assert e.value.strerror and "os error" not in e.value.strerror, e.value
    with pytest.raises(padic_burst.PadicError, match="framework"):
        padic_burst.Pipeline().load_file(dst, framework="tf")


def test_loads_from_many_threads(packed):
    src, dst, _ = packed("bf16")
    raw = raw_tensors(src)
    shared = padic_burst.Pipeline({"num_cpu_workers": 1})
    results, errors = [], []

    def work(i):
        try:
            if i % 3 == 0:
                got = padic_burst.numpy.load_file(dst, workers=1)
            elif i % 3 == 1:
                got = shared.load_file(dst, framework="np")
            else:
                with padic_burst.safe_open(dst, framework="np", pipeline=shared) as f:
                    got = {n: f.get_tensor(n) for n in f.keys()[i::7]}
            results.append(got)
        except Exception as e:  # reported below, with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6
    for got in results:
        for name, arr in got.items():
            assert arr.tobytes() == raw[name][2], name


def test_cuda_without_a_gpu_is_a_clear_error(packed):
    _, dst, _ = packed("f16")
    p = padic_burst.Pipeline()
    if p._inner.gpu_absent is None:
        pytest.skip("this machine has a GPU: tests/test_torch.py checks device='cuda'")
    with pytest.raises(padic_burst.PadicError, match="no GPU"):
        p.load_file(dst, framework="pt", device="cuda")
    with pytest.raises(padic_burst.PadicError, match="host memory"):
        p.load_file(dst, framework="np", device="cuda")
    with pytest.raises(padic_burst.PadicError, match="cuda:N"):
        p.load_file(dst, framework="np", device="tpu")
    # GPU_ONLY on the host says so in the API's words, not the CLI's flag.
    with pytest.raises(padic_burst.PadicError, match="^invalid argument: mode gpu-only: no GPU"):
        padic_burst.numpy.load_file(dst, mode="gpu-only")


def test_devices_are_named_as_safetensors_takes_them(packed):
    src, dst, _ = packed("f16")
    raw = raw_tensors(src)
    got = padic_burst.numpy.load_file(dst, device="cpu:0")
    assert {k: v.tobytes() for k, v in got.items()} == {k: r[2] for k, r in raw.items()}
    # An int N is cuda:N, as in safetensors: not for host-only NumPy.
    with pytest.raises(padic_burst.PadicError, match="'cuda:1'|1: NumPy arrays live in host memory"):
        padic_burst.Pipeline().load_file(dst, framework="np", device=1)
    for bad in (True, -1, "cuda:x", "cpu:", "gpu"):
        with pytest.raises(padic_burst.PadicError, match="expected"):
            padic_burst.Pipeline().load_file(dst, framework="np", device=bad)
    # None is the host, as safetensors takes it; "pytorch" is "pt", as there.
    got = padic_burst.Pipeline().load_file(dst, framework="np", device=None)
    assert {k: v.tobytes() for k, v in got.items()} == {k: r[2] for k, r in raw.items()}
    with padic_burst.safe_open(dst, framework="np", device=None) as f:
        assert sorted(f.keys()) == sorted(raw)
    assert padic_burst._pipeline._framework("pytorch") == "pt"


def test_get_slice_gives_what_safetensors_gives(packed):
    from safetensors import safe_open as reference

    src, dst, _ = packed("f32")
    name = "embeddings.word_embeddings.weight"
    p = padic_burst.Pipeline()
    with reference(src, framework="np") as want, padic_burst.safe_open(dst, framework="np", pipeline=p) as f:
        s, w = f.get_slice(name), want.get_slice(name)
        assert s.get_shape() == w.get_shape() == [30522, 384]
        assert s.get_dtype() == w.get_dtype() == "F32"
        for index in [
            slice(0, 2),
            5,
            -1,
            np.int64(7),
            (slice(100, 200), slice(None, None, 8)),
            (7, slice(10, 20)),
            slice(30000, None),
            slice(None, None, 2),
            (slice(None), slice(1, 3)),
            Ellipsis,
        ]:
            got, expected = s[index], w[index]
            assert got.shape == expected.shape and got.tobytes() == expected.tobytes(), index
            # A copy of the part, not a view that keeps the whole tensor alive.
            assert got.base is None or got.base.nbytes == got.nbytes
            if isinstance(index, (int, np.integer)) or index == slice(0, 2):
                # Rows: only the chunk (1 MiB) that holds them was decoded.
                assert p.statistics()["bytes_out"] <= 1 << 20, index
        # An empty run of rows (safetensors 0.8 fails on it) decodes nothing.
        assert s[5:3].shape == (0, 384)
        with pytest.raises(IndexError):
            s[30522]
        exact = s[1000:1100]
    # Rows at reduced precision are those rows of the reduced tensor.
    with padic_burst.safe_open(dst, framework="np", target_precision=10) as f:
        low = f.get_slice(name)[1000:1100]
        assert low.tobytes() == f.get_tensor(name)[1000:1100].tobytes()
        assert low.tobytes() != exact.tobytes()
        with pytest.raises(padic_burst.PadicError, match="no tensor named 'nope'"):
            f.get_slice("nope")


def test_save_file_compresses_tensors_from_memory(packed, tmp_path):
    import safetensors.numpy

    src, _, _ = packed("f16")
    tensors = safetensors.numpy.load_file(src)
    dst = tmp_path / "saved.padic"
    summary = padic_burst.numpy.save_file(tensors, dst, metadata={"format": "np"})
    assert summary["tensors"] == len(tensors) and summary["compressed_bytes"] == dst.stat().st_size
    got = padic_burst.numpy.load_file(dst)
    assert set(got) == set(tensors)
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype and got[name].tobytes() == want.tobytes(), name
    with padic_burst.safe_open(dst, framework="np") as f:
        assert f.metadata() == {"format": "np"}
    with pytest.raises(padic_burst.PadicError, match="chunk-kib 0"):
        padic_burst.numpy.save_file(tensors, tmp_path / "bad.padic", chunk_kib=0)
    with pytest.raises(padic_burst.PadicError, match="is a directory"):
        padic_burst.numpy.save_file(tensors, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.padic"]
    # An empty tensor saves, loads and slices.
    small = tmp_path / "small.padic"
    padic_burst.numpy.save_file({"e": np.zeros((0, 4), np.float32), "x": np.arange(12.0, dtype=np.float32).reshape(3, 4)}, small)
    with padic_burst.safe_open(small, framework="np") as f:
        assert f.get_slice("e")[0:0].shape == (0, 4) and f.get_slice("x")[1:1].shape == (0, 4)
        assert f.get_slice("x")[2].tolist() == [8.0, 9.0, 10.0, 11.0]
    # Arrays that are not contiguous are saved as they read (safetensors.numpy
    # writes their memory as it lies: a transpose came back untransposed).
    a = np.arange(24.0, dtype=np.float32).reshape(4, 6)
    views = {"t": a.T, "f": np.asfortranarray(a), "s": a[:, ::2], "scalar": np.array(2.5, dtype=np.float32)}
    strided = tmp_path / "strided.padic"
    padic_burst.numpy.save_file(views, strided)
    got = padic_burst.numpy.load_file(strided)
    for name, want in views.items():
        assert got[name].shape == want.shape and (got[name] == want).all(), name


def test_a_bad_target_precision_is_a_padic_error(packed):
    _, dst, _ = packed("bf16")
    # -1 was an OverflowError from the binding.
    for bad in [-1, 0, 2.5, True, "3", 1 << 40]:
        with pytest.raises(padic_burst.PadicError, match="target_precision"):
            padic_burst.numpy.load_file(dst, target_precision=bad)
        with pytest.raises(padic_burst.PadicError, match="target_precision"):
            padic_burst.safe_open(dst, framework="np", target_precision=bad)
    assert padic_burst.numpy.load_file(dst, target_precision=np.int64(3)).keys()


def test_version_matches_the_installed_package():
    assert padic_burst.__version__ == importlib.metadata.version("padic-burst")
    assert padic_burst.__version__.count(".") == 2


def test_a_misspelt_configuration_variable_is_warned_of(packed, monkeypatch):
    src, dst, _ = packed("f16")
    monkeypatch.setenv("SARAPHIS_CPU_WORKER", "1")
    monkeypatch.setenv("SARAPHIS_HOME", "/elsewhere")
    with pytest.warns(UserWarning, match="SARAPHIS_CPU_WORKER is set") as caught:
        got = padic_burst.numpy.load_file(dst, config={"num_cpu_workers": 1})
    messages = [str(w.message) for w in caught]
    assert any("did you mean SARAPHIS_CPU_WORKERS?" in m for m in messages), messages
    # Another part of the Saraphis system's variable is not ours to judge.
    assert not any("SARAPHIS_HOME" in m for m in messages), messages
    assert set(got) == set(raw_tensors(src))


def test_a_slice_down_to_one_value_is_a_0d_array_and_reads_after_the_file_closes(tmp_path):
    import safetensors.numpy
    from safetensors import safe_open as reference

    src, dst = tmp_path / "r.safetensors", tmp_path / "r.padic"
    safetensors.numpy.save_file(
        {"x": np.arange(60.0, dtype=np.float32).reshape(5, 4, 3), "v": np.arange(10.0, dtype=np.float32)}, src
    )
    padic_burst.compress_file(src, dst)
    with reference(src, framework="np") as a, padic_burst.safe_open(dst, framework="np") as b:
        for name, index in [("v", 3), ("x", (0, 1, 2)), ("v", np.int64(-1))]:
            want, got = a.get_slice(name)[index], b.get_slice(name)[index]
            # safetensors gives a 0-d array, not a NumPy scalar.
            assert type(got) is type(want) is np.ndarray and got.shape == want.shape == (), (name, index)
            assert got.tobytes() == want.tobytes()
        kept, kept_want = b.get_slice("x"), a.get_slice("x")
    # As safetensors' slices do, one still reads after its `with` block.
    assert kept[1:3].tobytes() == kept_want[1:3].tobytes()
    assert kept[:, 1].tobytes() == kept_want[:, 1].tobytes()
    with pytest.raises(padic_burst.PadicError, match="closed"):
        b.get_tensor("x")
