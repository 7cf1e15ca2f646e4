//! `padic-burst bench`: every configuration measured and checked, missing
//! peers reported, and the policy scenarios deciding as their traces say.

mod common;

use common::safetensors_bytes;
use padic_burst::bench::{self, BenchOptions};
use padic_burst::policy::Mode;
use padic_burst::progress::Progress;

fn small() -> BenchOptions {
    let mut o = BenchOptions::new(true);
    o.synthetic_mb = 3.0;
    o.repeat = 1;
    o.workers = vec![1, 2];
    o.targets = vec![None, Some(0)];
    o.zipnn_python = Some("/nonexistent/python".into());
    o
}

#[test]
fn bench_measures_every_configuration_and_reports_missing_peers() {
    let r = bench::run(&small(), &Progress::hidden()).unwrap();
    assert!(
        r.compression.ratio > 0.5 && r.compression.ratio < 0.8,
        "{}",
        r.compression.ratio
    );
    assert_eq!(
        r.compression.compressed_bytes,
        (r.compression.ratio * r.input.bytes as f64).round() as u64
    );
    // Exponent entropy of Gaussian bf16 weights: a few bits, well below 8.
    assert!(r.input.exponent_entropy_bits > 1.5 && r.input.exponent_entropy_bits < 4.0);
    // bare + cpu-only + auto + hybrid for each workers x target; no GPU here.
    assert_eq!(r.decompression.len(), 2 * 2 * 4);
    for w in [1, 2] {
        for mode in ["bare", "cpu-only", "auto", "hybrid"] {
            let runs: Vec<_> = r
                .decompression
                .iter()
                .filter(|d| d.workers == w && d.mode == mode)
                .collect();
            assert_eq!(runs.len(), 2, "{mode} with {w} workers");
            assert_eq!(runs[0].target_precision, None);
            assert_eq!(runs[1].target_precision, Some(3), "half of bf16's 7 digits");
            for d in runs {
                assert!(d.gb_per_s.median > 0.0 && d.gb_per_s.runs == 1);
                assert_eq!(
                    d.chunks_cpu as usize, r.input.chunks,
                    "{mode}: every chunk on the CPU"
                );
            }
        }
    }
    assert!(r.skipped.iter().any(|s| s.starts_with("gpu-only: no GPU")));
    assert_eq!(r.graph_overhead.len(), 4);
    assert!(r
        .graph_overhead
        .iter()
        .all(|g| g.pipeline_over_bare.is_finite()
            && g.min > 0.0
            && g.min <= g.pipeline_over_bare
            && g.pipeline_over_bare <= g.max
            && g.pairs >= 1));
    let sc = r
        .worker_scaling
        .as_ref()
        .expect("1 and 2 workers were measured");
    assert!(
        sc.workers == 2
            && sc.pairs >= 1
            && sc.min > 0.0
            && sc.min <= sc.median
            && sc.median <= sc.max
    );
    // The whole decompression to a file, each output checked by the bench.
    assert_eq!(
        r.to_file.iter().map(|t| t.workers).collect::<Vec<_>>(),
        [1, 2]
    );
    for t in &r.to_file {
        assert!(t.gb_per_s.median > 0.0 && t.gb_per_s.runs == 1, "{t:?}");
        assert!(std::path::Path::new(&t.dir).is_absolute(), "{}", t.dir);
        // Cores busy: CPU time over wall time, so above 0 and at most the
        // machine's cores (and a little rounding).
        let cores = std::thread::available_parallelism().unwrap().get() as f64;
        let busy = t.cores_busy.median;
        assert!(busy > 0.0 && busy <= cores + 0.05, "{busy} of {cores}");
    }
    let names: Vec<&str> = r.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zstd-1", "zstd-3", "zstd-19", "lz4", "zipnn"]);
    for p in &r.peers[..4] {
        assert_eq!(p.status, "ok");
        let ratio = p.ratio.unwrap();
        // Byte-oriented codecs cannot reach the exponent model's ratio on bf16.
        assert!(
            ratio > r.compression.ratio && ratio < 1.1,
            "{}: {ratio}",
            p.name
        );
        assert_eq!(
            p.decompress_gb_per_s
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(p.decompress_write_gb_per_s.is_empty(), "{}", p.name);
    }
    assert!(
        r.peers[4].status.starts_with("missing: "),
        "{}",
        r.peers[4].status
    );
    assert!(r.peers[4].status.contains("/nonexistent/python"));
    let text = bench::render(&r);
    assert!(text.contains("zipnn          missing: "), "{text}");
    assert!(text.contains("to a file in "), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "date_utc",
        "machine",
        "input",
        "compression",
        "decompression",
        "graph_overhead",
        "to_file",
        "peers",
        "scenarios",
        "skipped",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn scenarios_decide_as_their_traces_say() {
    let mut o = small();
    o.peers = false;
    o.workers = vec![2];
    o.targets = vec![None];
    o.modes = vec![Mode::CpuOnly];
    let r = bench::run(&o, &Progress::hidden()).unwrap();
    let s = |name: &str| r.scenarios.iter().find(|s| s.name == name).unwrap();
    assert_eq!(r.scenarios.len(), 4);
    for sc in &r.scenarios {
        // The trace is spread over the whole file.
        assert!(sc.replay_step_ms * sc.chunks as u64 >= 2000, "{}", sc.name);
        assert_eq!(
            sc.chunks_gpu + sc.chunks_cpu + sc.chunks_hybrid,
            sc.chunks as u64
        );
        assert!(!sc.latency_curves.is_empty());
    }
    let low = s("steady-low");
    assert_eq!(
        (
            low.mode_switches,
            low.memory_pressure_events,
            low.chunks_cpu
        ),
        (0, 0, 0)
    );
    let ramp = s("ramp-to-critical");
    // Up through HIGH and CRITICAL: two events; over 0.9 once: one switch, never back.
    assert_eq!((ramp.mode_switches, ramp.memory_pressure_events), (1, 2));
    assert!(ramp.chunks_cpu > 0 && ramp.chunks_gpu > ramp.chunks_cpu);
    let osc = s("oscillating");
    assert!(osc.mode_switches >= 4, "{}", osc.mode_switches);
    let spike = s("short-spike");
    // A 30 ms spike: off the GPU at once (the first switch is free), back
    // only after the 50 ms switch delay, so the CPU stint outlasts the spike.
    assert_eq!((spike.mode_switches, spike.memory_pressure_events), (2, 1));
    assert!(
        spike.chunks_cpu * spike.replay_step_ms >= 50,
        "{} chunks",
        spike.chunks_cpu
    );
    assert!(spike.chunks_cpu * spike.replay_step_ms <= 50 + 2 * spike.replay_step_ms);
}

/// `padic-burst bench` on a 1 MB generated model, once, 1 worker, no peers.
fn small_bench() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"));
    c.args([
        "bench",
        "--synthetic",
        "1",
        "--repeat",
        "1",
        "--workers",
        "1",
        "--no-peers",
        "--quiet",
    ]);
    c
}

#[test]
fn bench_writes_json_and_plots_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("plots");
    let out = small_bench()
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("graph overhead"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["repeat"], 1);
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 4);
    for f in [
        "throughput.svg",
        "latency-steady-low.svg",
        "latency-ramp-to-critical.svg",
        "latency-oscillating.svg",
        "latency-short-spike.svg",
        "timeline-steady-low.svg",
        "timeline-ramp-to-critical.svg",
        "timeline-oscillating.svg",
        "timeline-short-spike.svg",
    ] {
        let text = std::fs::read_to_string(svg.join(f)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("polyline") || text.contains("<rect"),
            "{f}"
        );
        if f == "latency-ramp-to-critical.svg" && v["machine"]["gpu"].is_null() {
            // No GPU here: the GPU route's curve says where it ran.
            assert!(text.contains("gpu route (ran on the CPU: no GPU)"), "{f}");
        }
        if f.starts_with("timeline-") {
            // The threshold and its hysteresis band (the default T and h).
            assert!(text.contains("band 0.80–0.90"), "{f}");
        }
    }
}

#[test]
fn bench_refuses_bad_arguments_clearly() {
    for (args, want) in [
        (vec!["--repeat", "0"], "--repeat 0"),
        (vec!["--workers", "0"], "--workers"),
        (vec!["--dtype", "f64"], "--dtype f64"),
        (
            vec!["--target-precision", "zero"],
            "--target-precision zero",
        ),
        (vec!["--synthetic=0"], "--synthetic 0"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
            .arg("bench")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_file_s_main_float_dtype_is_what_zipnn_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let f = |name: &str, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]| {
        let p = dir.path().join(name);
        std::fs::write(&p, safetensors_bytes(tensors)).unwrap();
        p
    };
    let mixed = f(
        "mixed.safetensors",
        &[
            ("a", safetensors::Dtype::BF16, vec![10], vec![0; 20]),
            ("b", safetensors::Dtype::F32, vec![10], vec![0; 40]),
            ("c", safetensors::Dtype::I64, vec![100], vec![0; 800]),
        ],
    );
    assert_eq!(bench::main_float_dtype(&mixed).unwrap(), "f32");
    let ints = f(
        "ints.safetensors",
        &[("c", safetensors::Dtype::I64, vec![10], vec![0; 80])],
    );
    let err = bench::main_float_dtype(&ints).unwrap_err().to_string();
    assert!(err.contains("pass --dtype"), "{err}");
}

#[test]
fn plots_into_a_path_that_is_a_file_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let out = small_bench().arg("--svg").arg(&blocker).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not-a-dir"), "{err}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
}
