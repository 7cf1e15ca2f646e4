//! `padic-burst bench`: compression, decompression in each mode × worker
//! count × target precision, the bare decode loop (so the dataflow graph's
//! overhead is a ratio from the same run), peers on the same file, and policy
//! scenarios replayed from pressure traces. Every figure is the median and
//! min–max of `repeat` runs after a warm-up; every decode is checked
//! byte for byte.
//!
//! One module per thing measured: `input` (the model under test),
//! `decode` (decompression, graph overhead, worker scaling), `peers`,
//! `to_file` (the whole decompression to a file), `scenarios` (policy
//! replays); `report` holds the figures, `render` and `svg` show them.
#![forbid(unsafe_code)]

mod decode;
mod input;
pub mod peers;
mod render;
mod report;
mod scenarios;
pub mod svg;
mod to_file;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::compress::{compress_file, CompressOptions};
use crate::config::{Config, ConfigLayer};
use crate::engine::gpu::GpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::policy::Mode;
use crate::progress::Progress;

pub use input::{exponent_entropy_bits, main_float_dtype};
pub use render::render;
pub use report::{
    utc, utc_now, Compression, DecodeRun, InputInfo, Machine, Overhead, Report, Scaling, Scenario,
    Stat, ToFile,
};

/// The pressure traces shipped in `benches/traces/`, built in.
pub const TRACES: [(&str, &str); 4] = [
    (
        "steady-low",
        include_str!("../../benches/traces/steady-low.csv"),
    ),
    (
        "ramp-to-critical",
        include_str!("../../benches/traces/ramp-to-critical.csv"),
    ),
    (
        "oscillating",
        include_str!("../../benches/traces/oscillating.csv"),
    ),
    (
        "short-spike",
        include_str!("../../benches/traces/short-spike.csv"),
    ),
];

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A safetensors file; `None`: a generated model of `synthetic_mb`.
    pub input: Option<PathBuf>,
    /// Size of the generated model in MB (10^6 bytes), when there is no `input`.
    pub synthetic_mb: f64,
    /// Draw each scenario's switching timeline (SVG, from one more replay)
    /// into this folder as `timeline-NAME.svg`.
    pub timelines: Option<PathBuf>,
    /// Generate many small tensors ([`crate::demo::many_small_model`])
    /// instead of a transformer's shapes.
    pub small_tensors: bool,
    /// bf16, f16 or f32 (the generated model's dtype; ZipNN's reading of a file).
    pub dtype: String,
    /// Timed runs per configuration, after one warm-up run.
    pub repeat: usize,
    /// CPU worker counts to measure, each at least 1.
    pub workers: Vec<usize>,
    /// `None`: every stored digit.
    pub targets: Vec<Option<u32>>,
    /// Decode modes to run the graph in (gpu-only is skipped without a GPU).
    pub modes: Vec<Mode>,
    /// Whether to measure the peers (zstd, lz4, ZipNN) on the same file.
    pub peers: bool,
    /// The Python with `zipnn` (default: [`config::zipnn_python`](crate::config::zipnn_python), then `.venv-peers/bin/python`, then `python3`).
    pub zipnn_python: Option<PathBuf>,
    /// Traces to replay: (name, CSV text).
    pub traces: Vec<(String, String)>,
    /// Chunk size of the container the scenarios replay on (small, so a trace
    /// meets many decisions).
    pub scenario_chunk_kib: u32,
    /// zstd-19 compress runs (it is slow).
    pub slow_compress_runs: usize,
}

impl BenchOptions {
    /// The defaults: a 64 MB generated bf16 model, 5 runs, 1 and all cores,
    /// every mode this machine can run, every digit and half of them.
    pub fn new(quick: bool) -> Self {
        let cores = crate::config::cores();
        let mut workers = vec![1, cores];
        workers.dedup();
        BenchOptions {
            input: None,
            synthetic_mb: if quick { 16.0 } else { 64.0 },
            small_tensors: false,
            timelines: None,
            dtype: "bf16".into(),
            repeat: if quick { 2 } else { 5 },
            workers: if quick { vec![cores] } else { workers },
            targets: if quick {
                vec![None]
            } else {
                vec![None, Some(0)]
            },
            modes: vec![Mode::CpuOnly, Mode::Auto, Mode::Hybrid, Mode::GpuOnly],
            peers: true,
            zipnn_python: None,
            traces: TRACES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            scenario_chunk_kib: 64,
            slow_compress_runs: 1,
        }
    }
}

/// Removes a folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TempDir {
    /// A fresh folder for one run's files.
    fn new() -> Result<TempDir> {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "padic-burst-bench-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(TempDir(dir))
    }
}

/// Checks the counts of `opts`: at least one run and one worker count, none 0.
fn check(opts: &BenchOptions) -> Result<()> {
    if opts.repeat == 0 {
        return Err(Error::InvalidArgument(
            "--repeat 0: at least one run is needed".into(),
        ));
    }
    if opts.workers.is_empty() || opts.workers.contains(&0) {
        return Err(Error::InvalidArgument(
            "--workers: give one or more counts, each at least 1".into(),
        ));
    }
    Ok(())
}

/// The modes of `opts` this machine can run (gpu-only needs a GPU), and a
/// note for each left out.
fn runnable_modes(
    opts: &BenchOptions,
    gpu: &std::result::Result<Arc<dyn GpuEngine>, String>,
) -> (Vec<Mode>, Vec<String>) {
    let mut skipped = Vec::new();
    let modes = opts
        .modes
        .iter()
        .copied()
        .filter(|m| {
            let ok = *m != Mode::GpuOnly || gpu.is_ok();
            if !ok {
                skipped.push(format!(
                    "gpu-only: no GPU: {}",
                    gpu.as_ref().err().map_or("", |e| e.as_str())
                ));
            }
            ok
        })
        .collect();
    (modes, skipped)
}

/// `runs` compressions of `input` into `packed` (the first a warm-up):
/// the ratio and the input's GB/s.
fn compression(
    input: &std::path::Path,
    packed: &std::path::Path,
    runs: usize,
    original: u64,
) -> Result<Compression> {
    let mut secs = Vec::new();
    let mut summary = None;
    for i in 0..runs {
        let t = Instant::now();
        let s = compress_file(
            input,
            packed,
            &CompressOptions::default(),
            &Progress::hidden(),
        )?;
        if i > 0 {
            secs.push(t.elapsed().as_secs_f64());
        }
        summary = Some(s);
    }
    let summary = summary.expect("at least one compression ran");
    Ok(Compression {
        ratio: summary.compressed_bytes as f64 / summary.original_bytes.max(1) as f64,
        compressed_bytes: summary.compressed_bytes,
        gb_per_s: Stat::of_throughput(original, &secs),
    })
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions, bar: &Progress) -> Result<Report> {
    check(opts)?;
    let kind = input::float_dtype(&opts.dtype)?;
    let dir = TempDir::new()?;
    let (input, source) = input::prepare(opts, kind, &dir.0)?;
    let original = std::fs::read(&input).map_err(|e| Error::io(&input, e))?;
    let entropy = exponent_entropy_bits(&input, &original)?;

    // Work out every run first, so the bar knows its length.
    let runs_each = opts.repeat + 1;
    let gpu = crate::engine::gpu::open(Config::load(None, ConfigLayer::default())?.gpu_device);
    let gpu_engine = gpu.as_ref().ok().cloned();
    let (modes, skipped) = runnable_modes(opts, &gpu);
    let total_steps = runs_each
        + opts.workers.len() * opts.targets.len() * (modes.len() + 1)
        + opts.workers.len()
        + if opts.peers { 5 } else { 0 }
        + opts.traces.len();
    bar.start(total_steps as u64, "bench");

    let packed = dir.0.join("model.padic");
    let compression = compression(&input, &packed, runs_each, original.len() as u64)?;
    bar.advance(1);
    let c = Arc::new(Container::open(&packed)?);
    let data = input::data_region(&input, &original)?;
    let targets = decode::targets(&c, &opts.targets);
    decode::warm_up(&c)?;
    let (decompression, graph_overhead) = decode::decompression(
        &c,
        &input,
        &opts.workers,
        &targets,
        &modes,
        runs_each,
        data,
        &gpu_engine,
        bar,
    )?;
    let worker_scaling = decode::worker_scaling(&c, opts, &modes, runs_each, data)?;
    let to_file = to_file::to_file(&c, &dir.0, &opts.workers, runs_each, &original, bar)?;
    let peers = if opts.peers {
        peers::run_all(opts, &original, &dir.0, &input, bar)?
    } else {
        Vec::new()
    };
    let scenarios = scenarios::replay_all(opts, &input, &dir.0, runs_each, data, &gpu_engine, bar)?;
    bar.finish();
    Ok(Report {
        date_utc: utc_now(),
        machine: Machine::here(&gpu),
        repeat: opts.repeat,
        input: InputInfo {
            source,
            dtype: opts.dtype.clone(),
            bytes: original.len() as u64,
            tensors: c.header().tensors.len(),
            chunks: c.header().tensors.iter().map(|t| t.chunks.len()).sum(),
            exponent_entropy_bits: entropy,
        },
        compression,
        decompression,
        graph_overhead,
        worker_scaling,
        to_file,
        peers,
        scenarios,
        skipped,
    })
}
