"""Pipeline.statistics() polled from another thread while a load runs."""

import threading

import padic_burst
from test_api import STATS_KEYS

# Counters that only grow while a load goes.
COUNTERS = [
    "total_decompressions", "routed_gpu", "routed_cpu", "routed_hybrid", "cpu_decompressions",
    "mode_switches", "memory_pressure_events", "bytes_in", "bytes_out", "wall_time_s",
]


def test_statistics_polled_during_a_load_grow_and_keep_the_keys(tmp_path):
    # MiniLM f32 in small chunks (about 1400), decoded by one worker taking one
    # chunk at a time: a load long enough to be polled many times mid-run.
    from conftest import real_weights

    src = real_weights("f32")
    dst = tmp_path / "minilm-small-chunks.padic"
    padic_burst.compress_file(src, dst, chunk_kib=64)
    p = padic_burst.Pipeline({"num_cpu_workers": 1, "cpu_batch_size": 1, "prefetch_factor": 1})
    assert p.statistics() is None
    loaded = {}
    errors = []

    def load():
        try:
            loaded.update(p.load_file(dst, framework="np"))
        except Exception as e:  # reported by the main thread
            errors.append(e)

    polls = []
    t = threading.Thread(target=load)
    t.start()
    while t.is_alive():
        s = p.statistics()
        if s is not None:
            polls.append(s)
    t.join()
    assert not errors, errors
    final = p.statistics()
    polls.append(final)
    chunks = final["total_decompressions"]
    assert final["bytes_out"] == sum(a.nbytes for a in loaded.values())
    for s in polls:
        assert set(s) == STATS_KEYS
    for before, after in zip(polls, polls[1:]):
        for key in COUNTERS:
            assert before[key] <= after[key], (key, before[key], after[key])
    mid_run = [s for s in polls if 0 < s["total_decompressions"] < chunks]
    assert mid_run, f"no poll saw the load mid-run ({len(polls)} polls)"
