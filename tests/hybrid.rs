//! HYBRID through the whole graph: a split chunk is read and checksummed
//! once; without a GPU, HYBRID costs what CPU_ONLY costs (no split, the same
//! bytes read); the GPU's share follows measured speed in live and replayed
//! runs alike, and the placement log says which share each chunk got. The
//! GPU is the test-only stand-in (`tests/common`); that the two shares run
//! at the same time is checked in `src/graph/decoder.rs`, where the part
//! times can be compared with the stand-in's.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::FakeGpu;
use padic_burst::config::Config;
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_file, RunOptions};
use padic_burst::policy::Mode;
use padic_burst::pressure::{Sample, Trace};
use safetensors::Dtype;

/// bf16 and f32 tensors in 1 MiB chunks (of four and two rANS segments:
/// a split falls on a segment boundary), and a passthrough tensor: 9 chunks.
fn model(dir: &Path) -> (PathBuf, Vec<u8>) {
    common::gaussian_model(
        dir,
        "m",
        7,
        &[
            ("a", Dtype::BF16, vec![2000, 1000], 0.04),
            ("b", Dtype::F32, vec![1_000_000], 0.02),
            ("ids", Dtype::I64, vec![300], 0.0),
        ],
        1024,
    )
}

fn opts(mode: Mode, workers: usize) -> RunOptions {
    let mut o = RunOptions::new(mode, Config::default());
    o.timely_args = vec!["-w".into(), workers.to_string()];
    o
}

/// A run of `packed` into `out` on a container of its own: the statistics,
/// and the section bytes the run read and checksummed.
fn run(packed: &Path, out: &Path, o: &RunOptions) -> (padic_burst::stats::Statistics, u64) {
    let c = Arc::new(Container::open(packed).unwrap());
    let s = decompress_file(c.clone(), out, o).unwrap();
    (s, c.bytes_checksummed())
}

fn sample(t_ms: u64, used_mb: f64) -> Sample {
    Sample {
        t_ms,
        used_mb,
        total_mb: 1000.0,
    }
}

/// The placement log's rows: (chunk, route, engine, gpu_fraction).
fn log_rows(path: &Path) -> Vec<(usize, String, String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "chunk,tensor,chunk_in_tensor,route,engine,out_offset,bytes,gpu_fraction,shard"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[3].to_string(),
                f[4].to_string(),
                f[7].parse().unwrap(),
            )
        })
        .collect()
}

fn chunks(packed: &Path) -> usize {
    Container::open(packed).unwrap().header().chunk_count()
}

#[test]
fn a_chunk_split_between_the_engines_is_read_and_checksummed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let out = dir.path().join("o.safetensors");
    let (cpu_only, cpu_read) = run(&packed, &out, &opts(Mode::CpuOnly, 2));
    assert!(std::fs::read(&out).unwrap() == original);
    let gpu = Arc::new(FakeGpu::new(&[]));
    let mut o = opts(Mode::Hybrid, 2);
    o.gpu = Some(gpu.clone());
    let (hybrid, hybrid_read) = run(&packed, &out, &o);
    assert!(std::fs::read(&out).unwrap() == original);
    assert!(
        hybrid.chunks.hybrid_decompressions > 0,
        "some chunk was split"
    );
    assert!(!gpu.seen.lock().unwrap().is_empty(), "the GPU took parts");
    assert_eq!(
        hybrid_read, cpu_read,
        "HYBRID read and checksummed each section once, as CPU_ONLY"
    );
    assert_eq!(hybrid.bytes_in, cpu_only.bytes_in, "bytes_in says so");
    assert_eq!(cpu_only.bytes_in, cpu_read);
}

#[test]
fn without_a_gpu_hybrid_is_cpu_only_at_cpu_only_s_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path());
    let n = chunks(&packed);
    let out = dir.path().join("o.safetensors");
    let (cpu_only, cpu_read) = run(&packed, &out, &opts(Mode::CpuOnly, 2));
    // Replayed from a calm trace the policy routes every chunk HYBRID, and
    // live it routes them CPU; neither splits one without a GPU.
    let trace = Trace::new(vec![sample(0, 300.0)]).unwrap();
    for replayed in [true, false] {
        let mut o = opts(Mode::Hybrid, 2);
        if replayed {
            o.trace = Some(trace.clone());
        }
        let log = dir.path().join(format!("h{replayed}.csv"));
        o.placement_log = Some(log.clone());
        let (hybrid, hybrid_read) = run(&packed, &out, &o);
        assert!(std::fs::read(&out).unwrap() == original);
        assert_eq!(
            hybrid_read, cpu_read,
            "replayed {replayed}: bytes checksummed"
        );
        assert_eq!(hybrid.bytes_in, cpu_only.bytes_in, "replayed {replayed}");
        let rows = log_rows(&log);
        assert_eq!(rows.len(), n, "replayed {replayed}: one part a chunk");
        assert!(rows.iter().all(|r| r.2 == "cpu"), "{rows:?}");
        if replayed {
            assert!(rows.iter().all(|r| r.1 == "hybrid"), "the replay's route");
        }
        assert_eq!(hybrid.chunks.hybrid_decompressions, 0);
        assert_eq!(hybrid.chunks.cpu_decompressions as usize, n);
    }
}

/// HYBRID on a GPU stand-in 50 ms slower per call than the CPU needs for
/// a chunk, one chunk at a time (each routed once the one before is
/// decoded): (placement log rows, the output is right).
fn slow_gpu_run(
    dir: &Path,
    packed: &Path,
    trace: Option<&Trace>,
    name: &str,
) -> Vec<(usize, String, String, f64)> {
    let config = Config {
        cpu_batch_size: 1,
        gpu_batch_chunks: 1,
        prefetch_factor: 1,
        ..Config::default()
    };
    let mut o = RunOptions::new(Mode::Hybrid, config);
    o.timely_args = vec!["-w".into(), "1".into()];
    o.gpu = Some(Arc::new(FakeGpu {
        batch_delay: std::time::Duration::from_millis(50),
        ..FakeGpu::new(&[])
    }));
    o.trace = trace.cloned();
    let log = dir.join(format!("{name}.csv"));
    o.placement_log = Some(log.clone());
    let out = dir.join(format!("{name}.safetensors"));
    run(packed, &out, &o);
    log_rows(&log)
}

#[test]
fn the_split_follows_measured_speed_in_live_and_replayed_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let initial = Config::default().policy().hybrid_initial_gpu_fraction;
    // Calm until 60 ms, then a full card: chunks from 6 on go to the CPU.
    let trace = Trace::new(vec![sample(0, 300.0), sample(60, 990.0)]).unwrap();
    let (plan, _) =
        padic_burst::plan::plan(&c, &trace, Mode::Hybrid, Config::default().policy(), 10);
    assert!(plan[..6].iter().all(|p| p.gpu_fraction == initial));
    assert!(plan[6..].iter().all(|p| p.gpu_fraction == 0.0));
    for (name, replay) in [("live", None), ("replayed", Some(&trace))] {
        let rows = slow_gpu_run(dir.path(), &packed, replay, name);
        // The first chunk is routed before anything was measured.
        assert_eq!(rows[0].3, initial, "{name}: {rows:?}");
        // Once both engines were measured, the slow GPU gets a smaller share.
        let calm = if replay.is_some() {
            2..6
        } else {
            2..rows.len()
        };
        for r in rows.iter().filter(|r| calm.contains(&r.0)) {
            assert!(
                r.3 > 0.0 && r.3 < initial,
                "{name}: chunk {} took {}: {rows:?}",
                r.0,
                r.3
            );
        }
        if replay.is_some() {
            // The replay decided each chunk's route; under pressure, no GPU share.
            for r in &rows {
                assert_eq!(r.1, plan[r.0].route, "chunk {}", r.0);
                if r.0 >= 6 {
                    assert_eq!((r.2.as_str(), r.3), ("cpu", 0.0), "chunk {}", r.0);
                }
            }
        }
    }
}

#[test]
fn real_weights_hybrid_without_a_gpu_reads_what_cpu_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["f32", "bf16"] {
        let Some((original, packed)) = common::compress_real_weights(dir.path(), dtype) else {
            return;
        };
        let out = dir.path().join(format!("{dtype}.safetensors"));
        let (cpu_only, cpu_read) = run(&packed, &out, &opts(Mode::CpuOnly, 2));
        let mut o = opts(Mode::Hybrid, 2);
        o.trace = Some(Trace::new(vec![sample(0, 300.0)]).unwrap());
        let (hybrid, hybrid_read) = run(&packed, &out, &o);
        assert!(std::fs::read(&out).unwrap() == original, "{dtype}");
        assert_eq!(hybrid_read, cpu_read, "{dtype}: bytes checksummed");
        assert_eq!(hybrid.bytes_in, cpu_only.bytes_in, "{dtype}: bytes_in");
        eprintln!("{dtype}: HYBRID (trace, no GPU) read {hybrid_read} bytes, CPU_ONLY {cpu_read}");
    }
}

#[test]
fn damage_in_a_split_chunk_is_caught_by_its_one_checksum_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path());
    let c = Container::open(&packed).unwrap();
    let t = common::tensor_index(&c, "b");
    let at = c.header().tensors[t].chunks[1].offset + 100;
    drop(c);
    let mut bytes = std::fs::read(&packed).unwrap();
    bytes[at as usize] ^= 0x40;
    let damaged = dir.path().join("damaged.padic");
    std::fs::write(&damaged, &bytes).unwrap();
    // One worker: its first batch holds every chunk, each routed (and so
    // split) at the initial share, before any speed was measured.
    let gpu = Arc::new(FakeGpu::new(&[]));
    let mut o = opts(Mode::Hybrid, 1);
    o.gpu = Some(gpu.clone());
    let out = dir.path().join("d.safetensors");
    let c = Arc::new(Container::open(&damaged).unwrap());
    let err = decompress_file(c, &out, &o).unwrap_err();
    match &err {
        padic_burst::Error::Corrupt { at, what, .. } => {
            assert_eq!(
                (at.tensor.as_deref(), at.chunk),
                (Some("b"), Some(1)),
                "{err}"
            );
            assert!(what.contains("checksum mismatch"), "{err}");
        }
        other => panic!("not a located corruption: {other}"),
    }
    assert!(
        !gpu.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| (s.0, s.1) == (t, 1)),
        "the damaged chunk never reached the GPU"
    );
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}
