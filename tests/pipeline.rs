//! The dataflow pipeline: exactly-once merges with 1, 2 and 3 workers, HYBRID
//! splits, GPU out-of-memory handling, replayed routing, statistics. The GPU
//! here is a test-only stand-in that decodes with the CPU codec; the shipped
//! binary has no GPU engine and never pretends to.

mod common;

use common::{data_region, gaussian_model, tensor_bytes, tensor_index, FakeGpu};

use std::sync::Arc;

use padic_burst::config::{Config, ConfigLayer};
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_file, RunOptions};
use padic_burst::policy::Mode;
use padic_burst::pressure::{Sample, Trace};
use safetensors::Dtype;

/// A model with several multi-segment chunks (bf16 and f32) and a passthrough tensor.
fn model(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    // 512 KiB chunks: bf16 chunks of 2 segments, f32 chunks of 1.
    common::gaussian_model(
        dir,
        "m",
        21,
        &[
            ("a", Dtype::BF16, vec![700, 1000], 0.04),
            ("b", Dtype::F32, vec![300_000], 0.02),
            ("small", Dtype::F16, vec![1000], 0.1),
            ("ids", Dtype::I64, vec![300], 0.0),
        ],
        512,
    )
}

fn run(
    packed: &std::path::Path,
    out: &std::path::Path,
    opts: &RunOptions,
) -> padic_burst::Result<padic_burst::stats::Statistics> {
    let c = Arc::new(Container::open(packed).unwrap());
    decompress_file(c, out, opts)
}

fn opts(mode: Mode, workers: usize) -> RunOptions {
    let mut o = RunOptions::new(mode, Config::default());
    o.timely_args = vec!["-w".into(), workers.to_string()];
    o
}

#[test]
fn every_worker_count_merges_each_chunk_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let chunks: usize = Container::open(&packed)
        .unwrap()
        .header()
        .tensors
        .iter()
        .map(|t| t.chunks.len())
        .sum();
    for w in [1, 2, 3] {
        let out = dir.path().join(format!("w{w}.safetensors"));
        let log = dir.path().join(format!("w{w}.csv"));
        let mut o = opts(Mode::CpuOnly, w);
        o.placement_log = Some(log.clone());
        let s = run(&packed, &out, &o).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == original,
            "{w} workers: output differs"
        );
        assert_eq!(s.chunks.total_decompressions as usize, chunks);
        assert_eq!(s.chunks.cpu_decompressions as usize, chunks);
        assert_eq!(s.bytes_out as usize, common::data_region(&original).len());
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            lines.lines().count(),
            chunks + 1,
            "one part per chunk, once"
        );
    }
}

#[test]
fn hybrid_splits_chunks_between_the_engines_and_rebuilds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let gpu = Arc::new(FakeGpu::new(&[]));
    let mut o = opts(Mode::Hybrid, 2);
    o.gpu = Some(gpu.clone());
    let log = dir.path().join("h.csv");
    o.placement_log = Some(log.clone());
    let out = dir.path().join("h.safetensors");
    let s = run(&packed, &out, &o).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == original,
        "HYBRID output differs"
    );
    assert!(s.chunks.hybrid_decompressions > 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let gpu_parts = text.lines().filter(|l| l.contains(",gpu,")).count();
    let cpu_parts = text.lines().filter(|l| l.contains(",cpu,")).count();
    assert!(
        gpu_parts > 0 && cpu_parts > 0,
        "both engines took parts:\n{text}"
    );
    // Some chunk was split: the GPU decoded a range that is not the whole chunk.
    let seen = gpu.seen.lock().unwrap();
    let c = Container::open(&packed).unwrap();
    assert!(
        seen.iter().any(|&(t, ch, first, len)| first == 0
            && (len as u64)
                < c.header().tensors[t].chunks[ch].elements * c.header().tensors[t].unit()),
        "no chunk was split: {seen:?}"
    );
}

#[test]
fn auto_reroutes_a_gpu_out_of_memory_to_the_cpu_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    // Tensor order in the file: find 'a' and 'b'.
    let c = Container::open(&packed).unwrap();
    let ta = common::tensor_index(&c, "a");
    let tb = common::tensor_index(&c, "b");
    let gpu = Arc::new(FakeGpu::new(&[(ta, 0), (tb, 1)]));
    let mut o = opts(Mode::Auto, 2);
    o.gpu = Some(gpu.clone());
    let out = dir.path().join("a.safetensors");
    let s = run(&packed, &out, &o).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == original,
        "nothing lost, nothing zero-filled"
    );
    assert_eq!(s.gpu_oom_reroutes, 2);
    assert_eq!(s.memory_pressure_events, 2);
    let float_chunks = common::float_chunks(&c) as u64;
    assert_eq!(
        gpu.seen.lock().unwrap().len() as u64,
        float_chunks - 2,
        "the GPU decoded the others"
    );
}

#[test]
fn the_gpu_takes_a_batch_of_chunks_in_one_call_and_an_oom_reroutes_only_its_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let ta = common::tensor_index(&c, "a");
    let float_chunks = common::float_chunks(&c);
    // The defaults: one chunk a CPU batch, 64 a GPU batch.
    let gpu = Arc::new(FakeGpu::new(&[(ta, 1)]));
    let mut o = RunOptions::new(Mode::Auto, Config::default());
    o.timely_args = vec!["-w".into(), "1".into()];
    o.gpu = Some(gpu.clone());
    let out = dir.path().join("b.safetensors");
    let s = run(&packed, &out, &o).unwrap();
    assert!(std::fs::read(&out).unwrap() == original, "output differs");
    let batches = gpu.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        float_chunks,
        "every float chunk went to the GPU once, in batches {batches:?}"
    );
    assert!(
        batches.iter().any(|&n| n > 1),
        "chunks reached the GPU together: {batches:?}"
    );
    // The out-of-memory chunk alone went to the CPU; its batch-mates stayed.
    assert_eq!(s.gpu_oom_reroutes, 1);
    assert_eq!(s.memory_pressure_events, 1);
    assert_eq!(gpu.seen.lock().unwrap().len(), float_chunks - 1);
}

/// A live source whose reads fail while the run goes: the run's notes say
/// how many failed and the last reason (the policy routed on the latest good
/// reading meanwhile; the failures went unsaid).
#[test]
fn failed_live_readings_are_said_in_the_runs_notes() {
    use padic_burst::pressure::PressureSource;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    struct Flaky(AtomicU64, bool);
    impl PressureSource for Flaky {
        fn sample_at(&self, t_ms: u64) -> Option<Sample> {
            if self.1 {
                self.0.fetch_add(1, Relaxed);
            }
            Some(Sample {
                t_ms,
                used_mb: 100.0,
                total_mb: 1000.0,
            })
        }
        fn has_gpu(&self) -> bool {
            true
        }
        fn failed_reads(&self) -> (u64, Option<String>) {
            let n = self.0.load(Relaxed);
            (n, (n > 0).then(|| "GPU is lost".to_string()))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    for flaky in [true, false] {
        let mut o = opts(Mode::Auto, 2);
        o.gpu = Some(Arc::new(FakeGpu::new(&[])));
        o.pressure = Some(Arc::new(Flaky(AtomicU64::new(0), flaky)));
        let out = dir.path().join("f.safetensors");
        let s = run(&packed, &out, &o).unwrap();
        assert!(std::fs::read(&out).unwrap() == original);
        let said: Vec<&String> = s
            .notes
            .iter()
            .filter(|n| n.contains("readings of GPU memory failed during the run"))
            .collect();
        match flaky {
            true => assert!(
                said.len() == 1 && said[0].contains("(the last: GPU is lost)"),
                "{:?}",
                s.notes
            ),
            false => assert!(said.is_empty(), "{:?}", s.notes),
        }
    }
}

#[test]
fn gpu_only_fails_hard_on_out_of_memory_naming_the_chunk_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let tb = common::tensor_index(&c, "b");
    let mut o = opts(Mode::GpuOnly, 2);
    o.gpu = Some(Arc::new(FakeGpu::new(&[(tb, 1)])));
    let out = dir.path().join("g.safetensors");
    let err = run(&packed, &out, &o).unwrap_err().to_string();
    assert!(err.contains("tensor 'b', chunk 1"), "{err}");
    assert!(err.contains("asked for 524288 bytes, 1024 free"), "{err}");
    assert!(!out.exists(), "no output under the final name");
    // Without any GPU, GPU_ONLY is refused before it starts.
    let err = run(&packed, &out, &opts(Mode::GpuOnly, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no GPU"), "{err}");
}

/// Only an out-of-memory sends a GPU chunk to the CPU: any other GPU
/// failure stops AUTO and HYBRID as it stops GPU_ONLY, naming the chunk,
/// with no output under the final name (nothing silently retried).
#[test]
fn a_gpu_failure_that_is_not_out_of_memory_stops_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let ta = common::tensor_index(&c, "a");
    for mode in [Mode::Auto, Mode::Hybrid, Mode::GpuOnly] {
        let mut gpu = FakeGpu::new(&[]);
        gpu.fail_on.insert((ta, 1));
        let mut o = opts(mode, 2);
        o.gpu = Some(Arc::new(gpu));
        let out = dir.path().join("f.safetensors");
        let err = run(&packed, &out, &o).unwrap_err().to_string();
        assert!(
            err.contains("tensor 'a', chunk 1") && err.contains("an injected launch failure"),
            "{mode:?}: {err}"
        );
        assert!(!out.exists(), "{mode:?}: no output under the final name");
        common::assert_no_temp_files(dir.path());
    }
}

#[test]
fn replayed_routes_match_plan_and_repeat_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let trace = Trace::new(vec![
        Sample {
            t_ms: 0,
            used_mb: 100.0,
            total_mb: 1000.0,
        },
        Sample {
            t_ms: 20,
            used_mb: 960.0,
            total_mb: 1000.0,
        },
        Sample {
            t_ms: 60,
            used_mb: 300.0,
            total_mb: 1000.0,
        },
    ])
    .unwrap();
    let c = Container::open(&packed).unwrap();
    let (plan, summary) =
        padic_burst::plan::plan(&c, &trace, Mode::Auto, Config::default().policy(), 10);
    let mut logs = Vec::new();
    for (i, w) in [1usize, 3].iter().enumerate() {
        let gpu = Arc::new(FakeGpu {
            sleep_every: 2,
            ..FakeGpu::new(&[])
        });
        let mut o = opts(Mode::Auto, *w);
        o.gpu = Some(gpu);
        o.trace = Some(trace.clone());
        let log = dir.path().join(format!("r{i}.csv"));
        o.placement_log = Some(log.clone());
        let out = dir.path().join(format!("r{i}.safetensors"));
        let s = run(&packed, &out, &o).unwrap();
        assert!(std::fs::read(&out).unwrap() == original);
        assert_eq!(s.mode_switches, summary.mode_switches);
        assert_eq!(s.memory_pressure_events, summary.memory_pressure_events);
        logs.push(std::fs::read_to_string(&log).unwrap());
    }
    assert_eq!(
        logs[0], logs[1],
        "the same decisions and parts with 1 and 3 workers"
    );
    // Each chunk ran on the engine plan chose (passthrough tensors always on the CPU).
    for line in logs[0].lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let k: usize = f[0].parse().unwrap();
        let passthrough = c.header().tensors[f[1].parse::<usize>().unwrap()]
            .codec
            .is_none();
        let want = if passthrough { "cpu" } else { plan[k].route };
        assert_eq!(f[4], want, "chunk {k}: the engine");
        assert_eq!(f[3], plan[k].route, "chunk {k}: the route the policy chose");
    }
    assert!(plan.iter().any(|p| p.route == "cpu") && plan.iter().any(|p| p.route == "gpu"));
}

#[test]
fn statistics_json_has_the_design_keys_and_true_values() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let out = dir.path().join("s.safetensors");
    let stats = dir.path().join("s.json");
    let hist = dir.path().join("s.hgrm");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&out)
        .arg("--stats-json")
        .arg(&stats)
        .arg("--histogram-out")
        .arg(&hist)
        .args(["--", "-w", "2"])
        .output()
        .unwrap();
    common::assert_success(&st);
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("no GPU"),
        "says once that it has no GPU"
    );
    assert!(std::fs::read(&out).unwrap() == original);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    for key in [
        "total_decompressions",
        "gpu_decompressions",
        "cpu_decompressions",
        "hybrid_decompressions",
        "mode_switches",
        "memory_pressure_events",
        "gpu_memory_saved_mb",
        "average_gpu_time",
        "average_cpu_time",
        "current_mode",
        "current_engine",
        "gpu_memory_state",
        "avg_cpu_utilization",
        "cache_hits",
        "cache_misses",
        "latency",
        "bytes_in",
        "bytes_out",
        "wall_time_s",
    ] {
        assert!(v.get(key).is_some(), "stats lack {key}");
    }
    let c = Container::open(&packed).unwrap();
    let chunks: u64 = c
        .header()
        .tensors
        .iter()
        .map(|t| t.chunks.len() as u64)
        .sum();
    assert_eq!(v["total_decompressions"], chunks);
    assert_eq!(v["cpu_decompressions"], chunks);
    assert_eq!(v["gpu_decompressions"], 0);
    assert!(v["gpu_memory_state"].is_null());
    assert_eq!(v["current_mode"], "auto");
    assert_eq!(v["current_engine"], "cpu", "AUTO without a GPU");
    assert_eq!(v["bytes_out"], common::data_region(&original).len() as u64);
    assert_eq!(v["latency"]["cpu"]["count"], chunks);
    assert_eq!(v["latency"]["gpu"]["count"], 0);
    for q in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(v["latency"]["cpu"][q].as_u64().unwrap() > 0, "{q}");
    }
    assert!(v["latency"]["cpu"]["p50_us"].as_u64() <= v["latency"]["cpu"]["max_us"].as_u64());
    // One file per route with samples, in HdrHistogram's own format.
    let h = std::fs::read_to_string(dir.path().join("s.cpu.hgrm")).unwrap();
    assert!(h.contains("Percentile"), "{h}");
    let parsed = parse_percentile_distribution(&h);
    assert_eq!(parsed.total, chunks, "the last TotalCount is every sample");
    assert!(
        !dir.path().join("s.gpu.hgrm").exists(),
        "no GPU samples, no GPU file"
    );
    assert!(!hist.exists());
}

/// What HdrHistogram's `plotFiles.html` and `HistogramLogProcessor` read from
/// a percentile distribution, checked the way they read it: rows of four
/// whitespace-separated numbers (the last row, at 100%, three), the lines
/// starting with `#` or holding `Value` skipped; TotalCount cumulative; the
/// footer's Total count equal to the last row's.
struct Distribution {
    total: u64,
}

fn parse_percentile_distribution(text: &str) -> Distribution {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut footer_total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#[Max") {
            let n = rest.split("Total count").nth(1).unwrap();
            footer_total = Some(
                n.trim_matches(|c: char| c == '=' || c == ']' || c.is_whitespace())
                    .parse::<u64>()
                    .unwrap(),
            );
            continue;
        }
        if line.starts_with('#') || line.contains("Value") || line.trim().is_empty() {
            continue;
        }
        rows.push(
            line.split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect(),
        );
    }
    assert!(rows.len() > 2, "{text}");
    let (last, body) = rows.split_last().unwrap();
    for r in body {
        assert_eq!(r.len(), 4, "four columns: {r:?}");
        let p = r[1];
        assert!(
            (r[3] - 1.0 / (1.0 - p)).abs() <= 0.01 * r[3].max(1.0),
            "{r:?}"
        );
    }
    assert_eq!(last.len(), 3, "the 100% row has three columns: {last:?}");
    assert_eq!(last[1], 1.0);
    for w in rows.windows(2) {
        assert!(w[1][0] >= w[0][0], "values rise");
        assert!(w[1][1] >= w[0][1], "percentiles rise");
        assert!(w[1][2] >= w[0][2], "TotalCount is cumulative");
    }
    let total = last[2] as u64;
    assert_eq!(footer_total, Some(total), "{text}");
    Distribution { total }
}

#[test]
fn statistics_count_what_ran_where_apart_from_what_the_policy_chose() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let chunks = c.header().chunk_count() as u64;
    // A trace that sends some chunks to the GPU and some to the CPU, and no GPU.
    let trace = padic_burst::pressure::Trace::new(vec![
        padic_burst::pressure::Sample {
            t_ms: 0,
            used_mb: 100.0,
            total_mb: 1000.0,
        },
        padic_burst::pressure::Sample {
            t_ms: 30,
            used_mb: 950.0,
            total_mb: 1000.0,
        },
    ])
    .unwrap();
    let mut o = opts(Mode::Auto, 2);
    o.trace = Some(trace);
    o.replay_step_ms = 10;
    let out = dir.path().join("t.safetensors");
    let s = run(&packed, &out, &o).unwrap();
    assert!(std::fs::read(&out).unwrap() == original);
    assert!(s.chunks.routed_gpu > 0 && s.chunks.routed_cpu > 0, "{s:?}");
    assert_eq!(
        s.chunks.routed_gpu + s.chunks.routed_cpu + s.chunks.routed_hybrid,
        chunks
    );
    assert_eq!(s.chunks.gpu_decompressions, 0, "no GPU: nothing ran on one");
    assert_eq!(
        s.chunks.cpu_decompressions, chunks,
        "every chunk ran on the CPU"
    );
    assert_eq!(
        s.gpu_memory_saved_mb, 0.0,
        "without a GPU no device memory was saved"
    );
    let m = s.gpu_memory_state.expect("the trace's latest sample");
    assert_eq!((m.used_mb, m.total_mb, m.free_mb), (950.0, 1000.0, 50.0));
    assert!(s.avg_cpu_utilization >= 0.0 && s.avg_cpu_utilization <= 1.0);
    // With a GPU, the same trace runs GPU-routed chunks there, and the CPU's
    // output in AUTO is device memory saved.
    let gpu = Arc::new(FakeGpu::new(&[]));
    o.gpu = Some(gpu);
    let s = run(&packed, &out, &o).unwrap();
    assert!(std::fs::read(&out).unwrap() == original);
    assert!(s.chunks.gpu_decompressions > 0, "{s:?}");
    assert_eq!(
        s.chunks.gpu_decompressions + s.chunks.cpu_decompressions + s.chunks.hybrid_decompressions,
        chunks
    );
    assert!(s.gpu_memory_saved_mb > 0.0);
}

#[test]
fn a_two_process_cluster_on_loopback_writes_the_identical_file() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let (hosts, _) = common::loopback_hosts(dir.path());
    let out = dir.path().join("cluster.safetensors");
    let log = dir.path().join("cluster.csv");
    let procs: Vec<_> = (0..2)
        .map(|p| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"));
            cmd.arg("decompress").arg(&packed).arg("-o").arg(&out);
            if p == 0 {
                cmd.arg("--placement-log").arg(&log);
            }
            cmd.args(["--", "-n", "2", "-p", &p.to_string(), "-w", "1", "-h"])
                .arg(&hosts);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (p, child) in procs.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "process {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Nothing on standard output (timely's own start printed its waits
        // there), which may be where a decode streams its file.
        assert!(
            o.stdout.is_empty(),
            "process {p}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    assert!(
        std::fs::read(&out).unwrap() == original,
        "the cluster's file differs"
    );
    let chunks: usize = Container::open(&packed)
        .unwrap()
        .header()
        .tensors
        .iter()
        .map(|t| t.chunks.len())
        .sum();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        chunks + 1,
        "process 0 saw every part once"
    );
    common::assert_no_temp_files(dir.path());
}

#[test]
fn configuration_drives_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let data = common::data_region(&original);
    // progressive_precision with mantissa_bits: every float tensor to min(bits, stored) digits.
    for bits in [3u32, 10] {
        let cfg = ConfigLayer {
            progressive_precision: Some(true),
            mantissa_bits: Some(bits as i64),
            cpu_batch_size: Some(3),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let mut o = RunOptions::new(Mode::Auto, cfg);
        o.timely_args = vec!["-w".into(), "2".into()];
        let out = dir.path().join(format!("p{bits}.safetensors"));
        run(&packed, &out, &o).unwrap();
        let got = std::fs::read(&out).unwrap();
        let got = common::data_region(&got);
        for t in &c.header().tensors {
            let range = t.data_offset as usize..(t.data_offset + t.byte_len) as usize;
            let (exp, frac, size) = match t.dtype.as_str() {
                "BF16" => (8, 7u32, 2usize),
                "F16" => (5, 10, 2),
                "F32" => (8, 23, 4),
                _ => {
                    assert!(got[range.clone()] == data[range], "passthrough {}", t.name);
                    continue;
                }
            };
            let k = bits.min(frac);
            for (a, b) in data[range.clone()]
                .chunks_exact(size)
                .zip(got[range].chunks_exact(size))
                .take(5000)
            {
                let word = |x: &[u8]| {
                    if size == 4 {
                        u32::from_le_bytes(x.try_into().unwrap())
                    } else {
                        u16::from_le_bytes(x.try_into().unwrap()) as u32
                    }
                };
                assert_eq!(
                    word(b),
                    common::reference_truncate(word(a), exp, frac, 2, k),
                    "{} at {bits} bits",
                    t.name
                );
            }
        }
    }
    // use_multiprocessing is refused: a cluster runs through timely's arguments.
    let cfg = ConfigLayer {
        use_multiprocessing: Some(true),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let err = run(
        &packed,
        &dir.path().join("m.safetensors"),
        &RunOptions::new(Mode::Auto, cfg),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("use_multiprocessing"), "{err}");
    // enable_profiling off: counts stay, histograms are empty.
    let cfg = ConfigLayer {
        enable_profiling: Some(false),
        cpu_affinity: Some(vec![0]),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let s = run(
        &packed,
        &dir.path().join("q.safetensors"),
        &RunOptions::new(Mode::CpuOnly, cfg),
    )
    .unwrap();
    assert!(s.chunks.cpu_decompressions > 0);
    assert_eq!(s.latency.cpu.count, 0);
    assert!(std::fs::read(dir.path().join("q.safetensors")).unwrap() == original);
}

#[test]
fn pinning_puts_a_thread_on_its_core() {
    let got = std::thread::spawn(|| {
        padic_burst::pipeline::pin_current_thread(0).unwrap();
        padic_burst::pipeline::current_affinity()
    })
    .join()
    .unwrap();
    assert_eq!(got, vec![0]);
    assert!(padic_burst::pipeline::pin_current_thread(1 << 20).is_err());
}

#[test]
fn a_run_of_one_pinned_worker_leaves_the_calling_thread_unpinned() {
    // A run of one worker runs it on the calling thread, except when
    // `cpu_affinity` pins it: the caller's thread (Python's, say) keeps its
    // cores.
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let out = dir.path().join("pinned.safetensors");
    let (before, after) = std::thread::spawn(move || {
        let before = padic_burst::pipeline::current_affinity();
        let cfg = ConfigLayer {
            cpu_affinity: Some(vec![0]),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let mut o = RunOptions::new(Mode::CpuOnly, cfg);
        o.timely_args = vec!["-w".into(), "1".into()];
        run(&packed, &out, &o).unwrap();
        assert!(std::fs::read(&out).unwrap() == original);
        (before, padic_burst::pipeline::current_affinity())
    })
    .join()
    .unwrap();
    assert_eq!(before, after);
    if before == [0] {
        eprintln!("one core only: pinning to core 0 changes nothing to see here");
    }
}

/// The cache keys a tensor by the file it was decoded from. A damaged copy
/// keeps the header, and so the contents' identity, of the original: its
/// tensor was served from the cache, damage unseen. The copy, and the file
/// rewritten in place, are now read and their damage found.
#[test]
fn the_cache_serves_a_tensor_only_for_the_file_it_was_decoded_from() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let bytes = std::fs::read(&packed).unwrap();
    let c = Arc::new(Container::open(&packed).unwrap());
    let b = tensor_index(&c, "b");
    let at = c.header().tensors[b].chunks[0].offset as usize + 3;
    let mut bad = bytes.clone();
    bad[at] ^= 0x10;
    let p = padic_burst::pipeline::Pipeline::new(Config::default());
    let good = p.decompress_tensor(&c, "b", None).unwrap();
    let copy = dir.path().join("copy.padic");
    std::fs::write(&copy, &bad).unwrap();
    let d = Arc::new(Container::open(&copy).unwrap());
    assert_eq!(d.identity(), c.identity(), "the same header");
    let err = p.decompress_tensor(&d, "b", None).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    // The file itself, rewritten in place (a later modification time).
    std::thread::sleep(std::time::Duration::from_millis(30));
    std::fs::write(&packed, &bad).unwrap();
    let e = Arc::new(Container::open(&packed).unwrap());
    let err = p.decompress_tensor(&e, "b", None).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    // The original's container, still open, is served from the cache.
    let hits = |p: &padic_burst::pipeline::Pipeline| p.statistics().unwrap().cache_hits;
    let before = hits(&p);
    assert_eq!(p.decompress_tensor(&c, "b", None).unwrap().data, good.data);
    assert_eq!(hits(&p), before + 1);
}

#[test]
fn a_one_tensor_read_checks_and_builds_only_that_tensors_digits() {
    // f32 "b" stores 23 digits, bf16 "a" 7 and f16 "small" 10: reading "b"
    // at 12 digits must not fail on the others' precision.
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Arc::new(Container::open(&packed).unwrap());
    let p = padic_burst::pipeline::Pipeline::new(Config::default());
    let exact = p.decompress_tensor(&c, "b", None).unwrap();
    let low = p.decompress_tensor(&c, "b", Some(12)).unwrap();
    assert_eq!(low.data.len(), exact.data.len());
    // The 11 digits below the 12 read differ; sign, exponent and the top
    // digits do not.
    let words = |d: &[u8]| -> Vec<u32> {
        d.chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    };
    let (low, exact) = (words(&low.data), words(&exact.data));
    assert!(low.iter().zip(&exact).all(|(l, e)| (l ^ e) >> 11 == 0));
    assert!(
        low.iter().zip(&exact).any(|(l, e)| l != e),
        "nothing dropped"
    );
    // Reading "a" at 12 digits names it.
    let err = p
        .decompress_tensor(&c, "a", Some(12))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds the 7 digits stored for tensor 'a'"),
        "{err}"
    );
    // It says how to take at most 12, in a configuration that is accepted.
    assert!(err.contains("mantissa_bits = 12"), "{err}");
    let layer: padic_burst::config::ConfigLayer =
        toml::from_str("progressive_precision = true\nmantissa_bits = 12").unwrap();
    assert!(layer.resolve().is_ok());
    // Above any float's digits it says to leave the target out: no
    // mantissa_bits could take it.
    let err = p
        .decompress_tensor(&c, "b", Some(24))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds the 23 digits stored for tensor 'b'")
            && err.contains("leave the target precision out")
            && !err.contains("mantissa_bits"),
        "{err}"
    );
    // A whole decode at 12 digits still fails, naming a tensor with fewer.
    let mut o = RunOptions::new(Mode::CpuOnly, Config::default());
    o.target_precision = Some(12);
    let err = padic_burst::pipeline::decompress_to_memory(c, &o)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds the"), "{err}");
}

#[test]
fn a_decode_into_memory_refuses_a_cluster_rather_than_return_one_process_share() {
    // In a cluster each process holds only the parts it decoded: memory is
    // no output for one, so the library refuses before connecting.
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Arc::new(Container::open(&packed).unwrap());
    let (hosts, _) = common::loopback_hosts(dir.path());
    let mut o = opts(Mode::CpuOnly, 1);
    o.timely_args = ["-n", "2", "-p", "0", "-w", "1", "-h"]
        .iter()
        .map(|s| s.to_string())
        .chain([hosts.display().to_string()])
        .collect();
    let whole = padic_burst::pipeline::decompress_to_memory(c.clone(), &o).unwrap_err();
    let one = padic_burst::pipeline::decompress_tensor(c, 0, &o).unwrap_err();
    for err in [whole.to_string(), one.to_string()] {
        assert!(err.contains("a cluster run (timely's -n 2)"), "{err}");
        assert!(err.contains("into memory"), "{err}");
    }
}

#[test]
fn a_container_over_the_release_size_gives_its_pages_back_and_decodes_exactly() {
    // A stored (integer) tensor takes the container past RELEASE_ABOVE, so
    // the workers give back their decoded chunks' pages in batches while
    // the other worker still reads its own share.
    let dir = tempfile::tempdir().unwrap();
    let ids = padic_burst::format::RELEASE_ABOVE / 8 + (1 << 18);
    let (packed, original) = common::gaussian_model(
        dir.path(),
        "big",
        5,
        &[
            ("a", Dtype::BF16, vec![1 << 20], 0.03),
            ("ids", Dtype::I64, vec![ids], 0.0),
            ("b", Dtype::BF16, vec![1 << 20], 0.03),
        ],
        1024,
    );
    let c = Container::open(&packed).unwrap();
    assert!(std::fs::metadata(&packed).unwrap().len() > padic_burst::format::RELEASE_ABOVE as u64);
    let t = common::tensor_index(&c, "b");
    let span = c
        .releasable(t, 0)
        .expect("a chunk of a large container is releasable");
    assert_eq!(span.start as u64, c.header().tensors[t].chunks[0].offset);
    for workers in [1, 2] {
        let out = dir.path().join(format!("out{workers}.safetensors"));
        run(&packed, &out, &opts(Mode::CpuOnly, workers)).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == original,
            "{workers} workers"
        );
    }
}

#[test]
fn a_part_of_a_tensor_decodes_only_the_chunks_that_hold_it() {
    // "w" is 64 chunks of 4 KiB (1024 f32 values each); "s1", "s2" are small
    // tensors that share a chunk run.
    let dir = tempfile::tempdir().unwrap();
    let (packed, file) = gaussian_model(
        dir.path(),
        "parts",
        11,
        &[
            ("w", Dtype::F32, vec![256, 256], 0.02),
            ("s1", Dtype::BF16, vec![40], 0.5),
            ("s2", Dtype::BF16, vec![50], 0.5),
        ],
        4,
    );
    let c = Arc::new(Container::open(&packed).unwrap());
    let (wi, s2) = (tensor_index(&c, "w"), tensor_index(&c, "s2"));
    assert_eq!(c.header().tensors[wi].chunks.len(), 64);
    assert!(c.header().shares_chunks(s2));
    let data = data_region(&file);
    let whole = |name: &str| tensor_bytes(&c, data, name);
    let p = padic_burst::pipeline::Pipeline::new(Config {
        enable_caching: false,
        ..Config::default()
    });
    for (range, chunks) in [
        (0..4096, 1),
        (4095..4097, 2),
        (10_000..30_000, 6),
        (65_536 * 4 - 1..65_536 * 4, 1),
        (0..65_536 * 4, 64),
    ] {
        let got = p
            .decompress_tensor_bytes(&c, "w", range.clone(), None)
            .unwrap();
        assert!(
            got == whole("w")[range.start as usize..range.end as usize],
            "{range:?}"
        );
        let s = p.statistics().unwrap();
        assert_eq!(s.chunks.total_decompressions, chunks, "{range:?}");
    }
    assert!(p
        .decompress_tensor_bytes(&c, "w", 5000..5000, None)
        .unwrap()
        .is_empty());
    let got = p.decompress_tensor_bytes(&c, "s2", 10..60, None).unwrap();
    assert!(got == whole("s2")[10..60]);
    // With the cache holding the tensor, a part is copied from it.
    let cached = padic_burst::pipeline::Pipeline::new(Config::default());
    cached.decompress_tensor(&c, "w", None).unwrap();
    let got = cached
        .decompress_tensor_bytes(&c, "w", 100..9000, None)
        .unwrap();
    assert!(got == whole("w")[100..9000]);
    assert_eq!(cached.statistics().unwrap().cache_hits, 1);
    let err = p
        .decompress_tensor_bytes(&c, "w", 0..65_536 * 4 + 1, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bytes 0..262145 of tensor 'w', which has 262144"),
        "{err}"
    );
    let err = p
        .decompress_tensor_bytes(&c, "nope", 0..1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tensor named 'nope'"), "{err}");
}
