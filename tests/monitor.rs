//! Watching a decode while it runs: the `--stats-interval` JSON lines (to a
//! file, a FIFO, stderr), the library's monitor and `Pipeline::statistics`
//! from another thread, and the progress bar's status line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use padic_burst::compress::CompressOptions;
use padic_burst::config::Config;
use padic_burst::format::Container;
use padic_burst::monitor::{status, Snapshot};
use padic_burst::pipeline::Pipeline;
use padic_burst::policy::{EngineState, Mode};
use padic_burst::stats::GpuMemoryState;
use safetensors::Dtype;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_padic-burst"))
}

/// Values in the long model: 24 Mi f32 (96 MiB) in 1536 chunks of 64 KiB,
/// which one worker takes well over a tenth of a second to decode.
const LONG_VALUES: usize = 24 << 20;

/// A model that takes one worker a while to decode.
fn long_model(dir: &Path) -> PathBuf {
    let mut rng = padic_burst::demo::Rng::new(5);
    let half = LONG_VALUES / 2;
    let a = padic_burst::demo::gaussian_bytes(&mut rng, half, 0.05, Dtype::F32);
    let b = padic_burst::demo::gaussian_bytes(&mut rng, LONG_VALUES - half, 0.02, Dtype::F32);
    let file = common::safetensors_bytes(&[
        ("a", Dtype::F32, vec![half], a),
        ("b", Dtype::F32, vec![LONG_VALUES - half], b),
    ]);
    let o = CompressOptions {
        chunk_kib: 64,
        ..CompressOptions::default()
    };
    common::compress_bytes(dir, "long", &file, &o)
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The counters that may only grow during a run.
const COUNTERS: &[&str] = &[
    "total_decompressions",
    "routed_gpu",
    "routed_cpu",
    "routed_hybrid",
    "cpu_decompressions",
    "mode_switches",
    "memory_pressure_events",
    "bytes_in",
    "bytes_out",
    "wall_time_s",
];

fn assert_monotone(lines: &[Value]) {
    for pair in lines.windows(2) {
        for key in COUNTERS {
            let (a, b) = (
                pair[0][key].as_f64().unwrap(),
                pair[1][key].as_f64().unwrap(),
            );
            assert!(a <= b, "{key} fell from {a} to {b} between two lines");
        }
        let count = |v: &Value| v["stages"]["decode"]["count"].as_u64().unwrap();
        assert!(count(&pair[0]) <= count(&pair[1]), "decoded parts fell");
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn stats_stream_has_the_stats_json_keys_grows_and_ends_with_the_final_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let model = long_model(dir.path());
    let chunks = Container::open(&model).unwrap().header().chunk_count() as u64;
    let (stream, json) = (dir.path().join("s.jsonl"), dir.path().join("s.json"));
    let out = bin()
        .arg("decompress")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("out.safetensors"))
        .args(["--workers", "1", "--stats-interval", "0.05"])
        .arg("--stats-stream")
        .arg(&stream)
        .arg("--stats-json")
        .arg(&json)
        .output()
        .unwrap();
    common::assert_success(&out);
    // The lines went to the file, not to stderr.
    assert!(parse_lines(&String::from_utf8_lossy(&out.stderr)).is_empty());
    let lines = parse_lines(&std::fs::read_to_string(&stream).unwrap());
    let last: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for line in &lines {
        assert_eq!(keys(line), keys(&last));
    }
    assert_monotone(&lines);
    // The last line is the run's final statistics, as --stats-json has them.
    assert_eq!(lines.last(), Some(&last));
    assert_eq!(last["total_decompressions"], chunks);
    // At least one line came while the run went (a run this long needs one).
    let mid_run = lines
        .iter()
        .filter(|l| l["total_decompressions"].as_u64().unwrap() < chunks)
        .count();
    assert!(
        mid_run >= 1,
        "no line before the end: {} lines",
        lines.len()
    );
}

#[test]
fn stats_lines_go_to_stderr_without_a_stream_and_to_a_fifo_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = common::mixed_sample(dir.path());
    let model = dir.path().join("m.padic");
    std::fs::write(&model, packed).unwrap();
    let chunks = Container::open(&model).unwrap().header().chunk_count() as u64;
    let out = bin()
        .arg("decompress")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("a.safetensors"))
        .args(["--stats-interval", "0.05"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let lines = parse_lines(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines.last().unwrap()["total_decompressions"], chunks);

    let fifo = dir.path().join("stats.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let out = bin()
        .arg("decompress")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("b.safetensors"))
        .args(["--stats-interval", "0.05", "--stats-stream"])
        .arg(&fifo)
        .output()
        .unwrap();
    if !out.status.success() {
        // Frees the reader, had the run failed before opening the FIFO.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
    }
    common::assert_success(&out);
    let lines = parse_lines(&reader.join().unwrap());
    assert_eq!(lines.last().unwrap()["total_decompressions"], chunks);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo_like());
}

/// `is_fifo` through the Unix extension trait, named for the assertion.
trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn a_failed_run_leaves_no_stream_file_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = common::mixed_sample(dir.path());
    let model = dir.path().join("m.padic");
    std::fs::write(&model, &packed).unwrap();
    let stream = dir.path().join("s.jsonl");
    // The stream opens, then the output cannot be made: the run fails.
    let out = bin()
        .arg("decompress")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("missing/out.safetensors"))
        .args(["--stats-interval", "0.05", "--stats-stream"])
        .arg(&stream)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(!stream.exists(), "a half stream under the final name");
    common::assert_no_temp_files(dir.path());

    let refused = |args: &[&str]| {
        let out = bin()
            .arg("decompress")
            .arg(&model)
            .args(["-o", "x.safetensors"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(refused(&["--stats-interval", "0"]).contains("--stats-interval 0"));
    assert!(refused(&["--stats-interval", "-1"]).contains("above 0"));
    // More seconds than a Duration holds: refused (it was a panic, exit 101).
    for big in ["1e20", "18446744073709551616"] {
        assert!(refused(&["--stats-interval", big]).contains("--stats-interval"));
    }
    assert!(refused(&["--stats-stream", "s.jsonl"]).contains("--stats-interval"));
    assert!(
        refused(&["--stats-interval", "1", "--stats-stream", "x.safetensors"])
            .contains("--stats-stream x.safetensors is -o x.safetensors itself")
    );
}

#[test]
fn the_library_watcher_and_statistics_from_another_thread_see_growing_counters() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Container::open(long_model(dir.path())).unwrap());
    let chunks = model.header().chunk_count() as u64;
    let cfg = Config {
        num_cpu_workers: 1,
        ..Config::default()
    };
    let seen = Arc::new(Mutex::new(Vec::<Snapshot>::new()));
    let record = seen.clone();
    let pipeline = Arc::new(
        Pipeline::with_mode(cfg, Mode::CpuOnly)
            .with_monitor(Duration::from_millis(5), move |s| {
                record.lock().unwrap().push(s.clone())
            })
            .unwrap(),
    );
    assert!(pipeline.statistics().is_none(), "statistics before any run");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (pipeline, done) = (pipeline.clone(), done.clone());
        std::thread::spawn(move || {
            let mut polled = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(s) = pipeline.statistics() {
                    polled.push(serde_json::to_value(&s).unwrap());
                }
                std::thread::yield_now();
            }
            polled
        })
    };
    let (_, info) = pipeline.decompress_model(&model, None).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let polled = poller.join().unwrap();
    let last = pipeline.statistics().unwrap();
    assert_eq!(last.chunks.total_decompressions, chunks);
    assert_eq!(info.cpu_chunks, chunks);
    let last_json = serde_json::to_value(&last).unwrap();
    for p in &polled {
        assert_eq!(keys(p), keys(&last_json));
    }
    assert_monotone(&polled);
    assert!(
        polled
            .iter()
            .any(|p| p["total_decompressions"].as_u64().unwrap() < chunks),
        "no snapshot from the other thread while the run went ({} polls)",
        polled.len()
    );
    // The watcher ends with the run's final statistics (it stops with the pipeline).
    drop(Arc::into_inner(pipeline).expect("the poller is done"));
    let seen = seen.lock().unwrap();
    let final_snapshot = seen.last().expect("the watcher saw the run");
    assert!(final_snapshot.finished);
    assert_eq!(final_snapshot.statistics, last);
    assert_eq!(final_snapshot.chunks_total, chunks);
    assert_eq!(seen.iter().filter(|s| s.finished).count(), 1);
    let seen_json: Vec<Value> = seen
        .iter()
        .map(|s| serde_json::to_value(&s.statistics).unwrap())
        .collect();
    assert_monotone(&seen_json);
}

/// A small run's statistics and a snapshot of them, for the status line.
fn small_snapshot() -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = common::mixed_sample(dir.path());
    let path = dir.path().join("m.padic");
    std::fs::write(&path, packed).unwrap();
    let pipeline = Pipeline::with_mode(Config::default(), Mode::Auto);
    let c = Arc::new(Container::open(&path).unwrap());
    pipeline.decompress_model(&c, None).unwrap();
    let s = pipeline.monitor().snapshot().unwrap();
    assert!(s.finished);
    s
}

#[test]
fn the_status_line_says_mode_state_memory_routes_rate_and_cpu() {
    let mut now = small_snapshot();
    // This build and machine decode without a GPU: the line says so.
    if now.statistics.gpu_device.is_none() {
        let line = status::line(&now, None);
        assert!(line.starts_with("auto (CPU) | no GPU | CPU "), "{line}");
        let n = now.chunks_total;
        let routes = format!("chunks {n}/{n}: gpu 0 cpu {n} hybrid 0");
        assert!(line.ends_with(&routes), "{line}");
        assert_eq!(now.statistics.chunks.routed_cpu, n);
    }
    let set = |s: &mut Snapshot, bytes: u64, wall: f64, cpu: f64| {
        s.statistics.bytes_out = bytes;
        s.statistics.wall_time_s = wall;
        s.statistics.avg_cpu_utilization = cpu;
    };
    now.chunks_total = 10;
    now.engine_state = EngineState::Gpu;
    (
        now.statistics.chunks.routed_gpu,
        now.statistics.chunks.routed_cpu,
    ) = (4, 2);
    now.statistics.chunks.routed_hybrid = 1;
    now.statistics.gpu_device = Some("a card".into());
    now.statistics.gpu_memory_state = Some(GpuMemoryState {
        total_mb: 4000.0,
        used_mb: 3000.0,
        free_mb: 1000.0,
        utilization: 0.75,
    });
    set(&mut now, 3_000_000_000, 2.0, 0.5);
    let line = status::line(&now, None);
    assert_eq!(
        line,
        "auto (GPU) | GPU 1000 MiB free, 3000 MiB used | CPU 50% | 1.50 GB/s | chunks 7/10: gpu 4 cpu 2 hybrid 1"
    );
    // Since the previous snapshot: 0.5*2.0 - 0.25*1.0 = 0.75 CPU-s over 1 s.
    let mut before = now.clone();
    set(&mut before, 1, 1.0, 0.25);
    assert!(status::line(&now, Some(&before)).contains("| CPU 75% |"));
    // A snapshot of another run does not count as the previous one.
    before.run += 1;
    assert!(status::line(&now, Some(&before)).contains("| CPU 50% |"));
    // A replayed trace without a GPU, and the other modes.
    now.statistics.gpu_device = None;
    now.statistics.current_mode = "hybrid".into();
    let line = status::line(&now, None);
    assert!(
        line.starts_with("hybrid | no GPU (trace: 1000 MiB free, 3000 MiB used) | "),
        "{line}"
    );
    now.statistics.gpu_memory_state = None;
    now.statistics.current_mode = "auto".into();
    now.engine_state = EngineState::Cpu;
    assert!(status::line(&now, None).starts_with("auto (CPU) | no GPU | CPU 50% | "));
}

#[test]
fn the_status_line_is_drawn_only_on_a_terminal() {
    use std::io::IsTerminal;
    let progress = Arc::new(padic_burst::progress::Progress::new(true));
    let pipeline = Pipeline::with_mode(Config::default(), Mode::CpuOnly);
    assert_eq!(progress.visible(), std::io::stderr().is_terminal());
    let watcher = progress.follow(pipeline.monitor());
    assert_eq!(watcher.is_some(), progress.visible());
    assert!(Arc::new(padic_burst::progress::Progress::hidden())
        .follow(pipeline.monitor())
        .is_none());
}

/// Every snapshot of an AUTO decode of `model` replaying `trace` (`step` ms
/// a chunk), taken `every` while it runs, then the final one.
fn watch_replay(
    model: &Arc<Container>,
    cfg: Config,
    trace: padic_burst::pressure::Trace,
    step: u64,
    every: Duration,
) -> Vec<Snapshot> {
    let seen = Arc::new(Mutex::new(Vec::<Snapshot>::new()));
    let record = seen.clone();
    let pipeline = Pipeline::with_mode(cfg, Mode::Auto)
        .with_trace(trace, step)
        .with_monitor(every, move |s| record.lock().unwrap().push(s.clone()))
        .unwrap();
    pipeline.decompress_model(model, None).unwrap();
    drop(pipeline);
    let seen = seen.lock().unwrap().clone();
    seen
}

/// A trace over `chunks` chunks `step` ms apart: low, then over the
/// threshold for the middle third, then low again.
fn high_middle_third(chunks: usize, step: u64) -> padic_burst::pressure::Trace {
    use padic_burst::pressure::{Sample, Trace};
    let at = |k: usize, used_mb: f64| Sample {
        t_ms: k as u64 * step,
        used_mb,
        total_mb: 1000.0,
    };
    Trace::new(vec![
        at(0, 300.0),
        at(chunks / 3, 970.0),
        at(2 * chunks / 3, 400.0),
    ])
    .unwrap()
}

/// A replayed trace decides every chunk before the run starts. Snapshots
/// reported the replay's end from the first one (the AUTO state after the
/// last chunk, both switches counted at 25 of 256 chunks); they report the
/// state and counts after the furthest chunk merged, with one worker the
/// chunks merged so far.
#[test]
fn a_replay_is_watched_as_it_goes_not_as_it_will_end() {
    use padic_burst::policy::Policy;
    use padic_burst::pressure::PressureSource;
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Container::open(long_model(dir.path())).unwrap());
    let chunks = model.header().chunk_count();
    let step = 10u64;
    let trace = high_middle_third(chunks, step);
    let cfg = Config {
        num_cpu_workers: 1,
        ..Config::default()
    };
    // What the replay holds after each chunk.
    let mut replay = Policy::new(cfg.policy(), Mode::Auto, true);
    let expected: Vec<(u64, EngineState)> = (0..chunks)
        .map(|k| {
            let now = k as u64 * step;
            replay.decide(now, trace.sample_at(now));
            (replay.mode_switches(), replay.state())
        })
        .collect();
    assert_eq!(expected.last().unwrap().0, 2, "the trace switches twice");
    let seen = watch_replay(&model, cfg, trace, step, Duration::from_millis(2));
    let during: Vec<&Snapshot> = seen.iter().filter(|s| !s.finished).collect();
    for s in &during {
        let merged = s.statistics.chunks.total_decompressions as usize;
        let (switches, state) = expected[merged.max(1) - 1];
        assert_eq!(
            (s.statistics.mode_switches, s.engine_state),
            (switches, state),
            "after {merged} of {chunks} chunks"
        );
        assert_eq!(s.statistics.current_engine.as_deref(), Some(state.name()));
    }
    assert!(
        during
            .iter()
            .any(|s| (s.statistics.chunks.total_decompressions as usize) < chunks / 3),
        "no snapshot in the first third ({} in all)",
        during.len()
    );
    let last = seen.last().unwrap();
    assert!(last.finished && last.statistics.mode_switches == 2);
}

#[test]
fn a_replay_with_two_workers_is_watched_as_of_the_furthest_chunk_merged() {
    // Two workers each take their own share, so chunks merge out of order:
    // the second worker's first chunks lie where the trace is high and go to
    // the CPU while few chunks are merged. A snapshot's switches must
    // account for them (the state after the furthest chunk merged, not
    // after as many chunks as were merged).
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Container::open(long_model(dir.path())).unwrap());
    let chunks = model.header().chunk_count();
    let step = 10u64;
    let trace = high_middle_third(chunks, step);
    let cfg = Config {
        num_cpu_workers: 2,
        ..Config::default()
    };
    for s in &watch_replay(&model, cfg, trace, step, Duration::from_millis(1)) {
        let c = &s.statistics.chunks;
        assert!(
            c.routed_cpu == 0 || s.statistics.mode_switches >= 1,
            "{} chunks routed to the CPU with no switch ({} merged of {chunks})",
            c.routed_cpu,
            c.total_decompressions
        );
    }
}
