//! `padic-burst bench`: compression, decompression in each mode × worker
//! count × target precision, the bare decode loop (so the dataflow graph's
//! overhead is a ratio from the same run), peers on the same file, and policy
//! scenarios replayed from pressure traces. Every figure is the median and
//! min–max of `repeat` runs after a warm-up; every decode is checked
//! byte for byte.

pub mod peers;
pub mod svg;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::compress::{compress_file, CompressOptions};
use crate::config::{Config, ConfigLayer};
use crate::engine::gpu::GpuEngine;
use crate::engine::CpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::pipeline::RunOptions;
use crate::policy::Mode;
use crate::pressure::Trace;
use crate::progress::Progress;

use peers::PeerResult;

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
    pub synthetic_mb: f64,
    /// bf16, f16 or f32 (the generated model's dtype; ZipNN's reading of a file).
    pub dtype: String,
    pub repeat: usize,
    pub workers: Vec<usize>,
    /// `None`: every stored digit.
    pub targets: Vec<Option<u32>>,
    pub modes: Vec<Mode>,
    pub peers: bool,
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut workers = vec![1, cores];
        workers.dedup();
        BenchOptions {
            input: None,
            synthetic_mb: if quick { 16.0 } else { 64.0 },
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

/// Median and range of repeated runs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                runs: 0,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        }
    }

    /// GB/s of `bytes` over each run's seconds.
    pub fn of_throughput(bytes: u64, secs: &[f64]) -> Stat {
        let v: Vec<f64> = secs
            .iter()
            .map(|s| bytes as f64 / s.max(1e-9) / 1e9)
            .collect();
        Stat::of(&v)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    /// The GPU, or why there is none.
    pub gpu: Option<String>,
    pub gpu_absent_reason: Option<String>,
    pub os: String,
}

impl Machine {
    /// This machine; `gpu`: the GPU engine, or why there is none.
    pub fn here(gpu: &std::result::Result<Arc<dyn GpuEngine>, String>) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            gpu: gpu.as_ref().ok().map(|g| g.describe()),
            gpu_absent_reason: gpu.as_ref().err().cloned(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// The file, or `synthetic`.
    pub source: String,
    pub dtype: String,
    pub bytes: u64,
    pub tensors: usize,
    pub chunks: usize,
    /// Empirical entropy of the exponent field over every float value, in bits.
    pub exponent_entropy_bits: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compression {
    pub ratio: f64,
    pub compressed_bytes: u64,
    pub gb_per_s: Stat,
}

/// One decode configuration's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeRun {
    /// cpu-only, auto, hybrid, gpu-only, or `bare` (the decode loop without the graph).
    pub mode: String,
    pub workers: usize,
    /// `null`: every stored digit.
    pub target_precision: Option<u32>,
    pub gb_per_s: Stat,
    pub chunks_gpu: u64,
    pub chunks_cpu: u64,
    pub chunks_hybrid: u64,
    pub p99_us: u64,
    pub notes: Vec<String>,
}

/// The graph's throughput over the bare loop's, same workers and precision:
/// the median, over pairs of runs made back to back (bare, then cpu-only
/// graph), of each pair's ratio, and the smallest and largest of them. A
/// shared machine's slow and fast spells then fall on both sides of a ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    pub workers: usize,
    pub target_precision: Option<u32>,
    pub pipeline_over_bare: f64,
    pub min: f64,
    pub max: f64,
    pub pairs: usize,
}

/// Throughput with `workers` over throughput with one worker: the median
/// (and min, max) over pairs of cpu-only graph runs made back to back.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub workers: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub pairs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub replay_step_ms: u64,
    pub chunks: usize,
    pub workers: usize,
    pub mode_switches: u64,
    pub memory_pressure_events: u64,
    pub chunks_gpu: u64,
    pub chunks_cpu: u64,
    pub chunks_hybrid: u64,
    pub gb_per_s: Stat,
    pub p99_us: Stat,
    /// Latency percentile curves per route, (percentile, µs).
    pub latency_curves: Vec<(String, Vec<(f64, u64)>)>,
    pub notes: Vec<String>,
}

/// Everything one `bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date_utc: String,
    pub machine: Machine,
    pub repeat: usize,
    pub input: InputInfo,
    pub compression: Compression,
    pub decompression: Vec<DecodeRun>,
    pub graph_overhead: Vec<Overhead>,
    /// The cpu-only graph with the most workers over one worker, from pairs
    /// run back to back (when both counts are measured).
    pub worker_scaling: Option<Scaling>,
    pub peers: Vec<PeerResult>,
    pub scenarios: Vec<Scenario>,
    /// Configurations not run, and why.
    pub skipped: Vec<String>,
}

/// Removes a folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions, bar: &Progress) -> Result<Report> {
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
    let kind = match opts.dtype.as_str() {
        "bf16" => safetensors::Dtype::BF16,
        "f16" => safetensors::Dtype::F16,
        "f32" => safetensors::Dtype::F32,
        other => {
            return Err(Error::InvalidArgument(format!(
                "--dtype {other}: expected bf16, f16 or f32"
            )))
        }
    };
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "padic-burst-bench-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _guard = TempDir(dir.clone());

    let (input, source) = match &opts.input {
        Some(p) => (p.clone(), p.display().to_string()),
        None => {
            if !(opts.synthetic_mb > 0.0 && opts.synthetic_mb <= 65536.0) {
                return Err(Error::InvalidArgument(format!(
                    "--synthetic {}: expected a size in MB in (0, 65536]",
                    opts.synthetic_mb
                )));
            }
            let size = match kind {
                safetensors::Dtype::F32 => 4.0,
                _ => 2.0,
            };
            let params = (opts.synthetic_mb * 1e6 / size / 1.1) as usize;
            let p = dir.join(format!("synthetic-{}.safetensors", opts.dtype));
            let model = crate::demo::synthetic_model(11, params.max(1), kind);
            std::fs::write(&p, &model).map_err(|e| Error::io(&p, e))?;
            (
                p,
                format!("synthetic {} MB {}", opts.synthetic_mb, opts.dtype),
            )
        }
    };
    let original = std::fs::read(&input).map_err(|e| Error::io(&input, e))?;
    let entropy = exponent_entropy_bits(&input, &original)?;

    // Work out every run first, so the bar knows its length.
    let runs_each = opts.repeat + 1;
    let gpu = crate::engine::gpu::open(Config::load(None, ConfigLayer::default())?.gpu_device);
    let gpu_present = gpu.is_ok();
    let gpu_engine = gpu.as_ref().ok().cloned();
    let mut skipped = Vec::new();
    let modes: Vec<Mode> = opts
        .modes
        .iter()
        .copied()
        .filter(|m| {
            let ok = *m != Mode::GpuOnly || gpu_present;
            if !ok {
                skipped.push(format!(
                    "gpu-only: no GPU ({})",
                    gpu.as_ref().err().map_or("", |e| e.as_str())
                ));
            }
            ok
        })
        .collect();
    let total_steps = runs_each
        + opts.workers.len() * opts.targets.len() * (modes.len() + 1)
        + if opts.peers { 5 } else { 0 }
        + opts.traces.len();
    bar.start(total_steps as u64, "bench");

    // Compression.
    let packed = dir.join("model.padic");
    let mut secs = Vec::new();
    let mut summary = None;
    for i in 0..runs_each {
        let t = Instant::now();
        let s = compress_file(
            &input,
            &packed,
            &CompressOptions::default(),
            &Progress::hidden(),
        )?;
        if i > 0 {
            secs.push(t.elapsed().as_secs_f64());
        }
        summary = Some(s);
    }
    bar.advance(1);
    let summary = summary.expect("at least one compression ran");
    let compression = Compression {
        ratio: summary.compressed_bytes as f64 / summary.original_bytes.max(1) as f64,
        compressed_bytes: summary.compressed_bytes,
        gb_per_s: Stat::of_throughput(original.len() as u64, &secs),
    };
    let c = Arc::new(Container::open(&packed)?);
    let data = data_region(&input, &original)?;
    let min_precision = (0..c.header().tensors.len())
        .filter_map(|t| c.layout(t).map(|l| l.precision))
        .min();
    let targets: Vec<Option<u32>> = opts
        .targets
        .iter()
        .map(|t| match (t, min_precision) {
            // Some(0) asks for half of the digits.
            (Some(0), Some(p)) => Some((p / 2).max(1)),
            (Some(0), None) => None,
            (t, _) => *t,
        })
        .collect::<Vec<_>>();
    let mut targets_unique = Vec::new();
    for t in targets {
        if !targets_unique.contains(&t) {
            targets_unique.push(t);
        }
    }

    // Two untimed decodes first: memory freed by the compression step may
    // have gone back to the host of a VM (free page reporting), and the
    // first decodes into it pay the host's faults as well.
    {
        let engine = CpuEngine::new(None)?;
        for _ in 0..2 {
            engine.decompress_to_memory(&c, None)?;
        }
    }
    let mut decompression = Vec::new();
    let mut graph_overhead = Vec::new();
    for &w in &opts.workers {
        let engine = CpuEngine::new(Some(w))?;
        for &target in &targets_unique {
            // The bare loop, and the reference every graph run must equal.
            let mut times = Vec::new();
            let mut reference = Vec::new();
            for i in 0..runs_each {
                let (model, st) = engine.decompress_to_memory(&c, target)?;
                if i == 0 {
                    if target.is_none() && model.data != data {
                        return Err(Error::Decode(format!(
                            "{}: the bare decode differs from the input",
                            input.display()
                        )));
                    }
                    reference = model.data;
                } else {
                    times.push(st.wall.as_secs_f64());
                }
            }
            let bare = Stat::of_throughput(reference.len() as u64, &times);
            decompression.push(DecodeRun {
                mode: "bare".into(),
                workers: w,
                target_precision: target,
                gb_per_s: bare,
                chunks_gpu: 0,
                chunks_cpu: c
                    .header()
                    .tensors
                    .iter()
                    .map(|t| t.chunks.len() as u64)
                    .sum(),
                chunks_hybrid: 0,
                p99_us: 0,
                notes: Vec::new(),
            });
            bar.advance(1);
            for &mode in &modes {
                let run = graph_runs(&c, mode, w, target, runs_each, &reference, &gpu_engine)?;
                decompression.push(run);
                bar.advance(1);
            }
            if modes.contains(&Mode::CpuOnly) {
                graph_overhead.push(paired_overhead(
                    &c, &engine, w, target, runs_each, &reference,
                )?);
            }
        }
    }

    let most = opts.workers.iter().copied().max().unwrap_or(1);
    let worker_scaling = if modes.contains(&Mode::CpuOnly) && opts.workers.contains(&1) && most > 1
    {
        Some(paired_scaling(&c, most, runs_each, data)?)
    } else {
        None
    };

    let mut peers_out = Vec::new();
    if opts.peers {
        for level in [Some(1), Some(3), Some(19), None] {
            let runs = if level == Some(19) {
                opts.slow_compress_runs.max(1)
            } else {
                opts.repeat
            };
            peers_out.push(peers::block_peer(
                &original,
                level,
                &opts.workers,
                opts.repeat,
                runs,
            )?);
            bar.advance(1);
        }
        let python = peers::zipnn_python(opts.zipnn_python.as_deref());
        peers_out.push(peers::zipnn(
            &python,
            &dir,
            &input,
            &opts.dtype,
            &opts.workers,
            opts.repeat,
        ));
        bar.advance(1);
    }

    // Scenarios: small chunks so a trace meets many decisions; the replay
    // step spreads the trace over the whole file.
    let mut scenarios = Vec::new();
    if !opts.traces.is_empty() {
        let small = dir.join("scenario.padic");
        compress_file(
            &input,
            &small,
            &CompressOptions {
                chunk_kib: opts.scenario_chunk_kib,
                ..CompressOptions::default()
            },
            &Progress::hidden(),
        )?;
        let sc = Arc::new(Container::open(&small)?);
        let chunks: usize = sc.header().tensors.iter().map(|t| t.chunks.len()).sum();
        let w = opts.workers.iter().copied().max().unwrap_or(1);
        for (name, text) in &opts.traces {
            let trace = Trace::parse(Path::new(name), text)?;
            let end = trace.samples().last().map_or(0, |s| s.t_ms);
            let step = end.div_ceil(chunks.max(1) as u64).max(1);
            scenarios.push(scenario(
                &sc,
                name,
                trace,
                step,
                w,
                runs_each,
                data,
                &gpu_engine,
            )?);
            bar.advance(1);
        }
    }
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
        peers: peers_out,
        scenarios,
        skipped,
    })
}

fn run_options(
    mode: Mode,
    workers: usize,
    target: Option<u32>,
    gpu: &Option<Arc<dyn GpuEngine>>,
) -> Result<RunOptions> {
    let cfg = Config::load(
        None,
        ConfigLayer {
            num_cpu_workers: Some(workers as i64),
            ..Default::default()
        },
    )?;
    let mut o = RunOptions::new(mode, cfg);
    o.gpu = gpu.clone();
    o.target_precision = target;
    o.timely_args = vec!["-w".into(), workers.to_string()];
    Ok(o)
}

/// A ratio measured in `runs` pairs of runs made back to back (after one
/// pair of warm-up): `pair` times both runs, and each pair gives the first's
/// seconds over the second's. (median, min, max, pairs).
fn paired_ratio(
    runs: usize,
    mut pair: impl FnMut() -> Result<(f64, f64)>,
) -> Result<(f64, f64, f64, usize)> {
    let mut ratios = Vec::new();
    for i in 0..runs.max(1) {
        let (a, b) = pair()?;
        if i > 0 || runs <= 1 {
            ratios.push(a / b.max(1e-9));
        }
    }
    ratios.sort_by(f64::total_cmp);
    Ok((
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len(),
    ))
}

/// Seconds of one in-memory graph decode with `o`, checked against `reference`.
fn graph_secs(c: &Arc<Container>, o: &RunOptions, reference: &[u8], what: &str) -> Result<f64> {
    let t = Instant::now();
    let (model, _) = crate::pipeline::decompress_to_memory(c.clone(), o)?;
    let secs = t.elapsed().as_secs_f64();
    if model.data != reference {
        return Err(Error::Decode(format!(
            "bench: {what} decoded bytes that differ from the bare loop's"
        )));
    }
    Ok(secs)
}

/// [`Overhead`]: pairs of the bare loop on `engine`, then the cpu-only graph
/// with `workers`, both checked.
fn paired_overhead(
    c: &Arc<Container>,
    engine: &CpuEngine,
    workers: usize,
    target: Option<u32>,
    runs: usize,
    reference: &[u8],
) -> Result<Overhead> {
    let o = run_options(Mode::CpuOnly, workers, target, &None)?;
    let (median, min, max, pairs) = paired_ratio(runs, || {
        let (model, st) = engine.decompress_to_memory(c, target)?;
        if model.data != reference {
            return Err(Error::Decode(
                "bench: a paired bare run decoded bytes that differ from the first".into(),
            ));
        }
        drop(model);
        let graph = graph_secs(c, &o, reference, "a paired graph run")?;
        Ok((st.wall.as_secs_f64(), graph))
    })?;
    Ok(Overhead {
        workers,
        target_precision: target,
        pipeline_over_bare: median,
        min,
        max,
        pairs,
    })
}

/// [`Scaling`]: pairs of the cpu-only graph with one worker, then with
/// `workers`, both checked.
fn paired_scaling(
    c: &Arc<Container>,
    workers: usize,
    runs: usize,
    reference: &[u8],
) -> Result<Scaling> {
    let one = run_options(Mode::CpuOnly, 1, None, &None)?;
    let many = run_options(Mode::CpuOnly, workers, None, &None)?;
    let (median, min, max, pairs) = paired_ratio(runs, || {
        Ok((
            graph_secs(c, &one, reference, "a 1-worker scaling run")?,
            graph_secs(c, &many, reference, "a scaling run")?,
        ))
    })?;
    Ok(Scaling {
        workers,
        median,
        min,
        max,
        pairs,
    })
}

/// `runs` graph decodes with `o` (the first a warm-up), each checked against
/// `reference` (`what` names the run in the error): the seconds of the timed
/// runs and the statistics of every run.
fn timed_runs(
    c: &Arc<Container>,
    o: &RunOptions,
    runs: usize,
    reference: &[u8],
    what: &str,
) -> Result<(Vec<f64>, Vec<crate::stats::Statistics>)> {
    let mut times = Vec::new();
    let mut stats = Vec::new();
    for i in 0..runs.max(1) {
        let t = Instant::now();
        let (model, s) = crate::pipeline::decompress_to_memory(c.clone(), o)?;
        let secs = t.elapsed().as_secs_f64();
        if model.data != reference {
            return Err(Error::Decode(format!(
                "bench: {what} decoded bytes that differ from the bare loop's"
            )));
        }
        if i > 0 {
            times.push(secs);
        }
        stats.push(s);
    }
    Ok((times, stats))
}

/// The worst p99 over the routes.
fn p99(s: &crate::stats::Statistics) -> u64 {
    [&s.latency.gpu, &s.latency.cpu, &s.latency.hybrid]
        .iter()
        .map(|l| l.p99_us)
        .max()
        .unwrap_or(0)
}

fn graph_runs(
    c: &Arc<Container>,
    mode: Mode,
    workers: usize,
    target: Option<u32>,
    runs: usize,
    reference: &[u8],
    gpu: &Option<Arc<dyn GpuEngine>>,
) -> Result<DecodeRun> {
    let o = run_options(mode, workers, target, gpu)?;
    let what = format!("{} with {workers} workers", mode.name());
    let (times, mut stats) = timed_runs(c, &o, runs, reference, &what)?;
    let s = stats.pop().expect("at least one run");
    Ok(DecodeRun {
        mode: mode.name().into(),
        workers,
        target_precision: target,
        gb_per_s: Stat::of_throughput(reference.len() as u64, &times),
        chunks_gpu: s.gpu_decompressions,
        chunks_cpu: s.cpu_decompressions,
        chunks_hybrid: s.hybrid_decompressions,
        p99_us: p99(&s),
        notes: s.notes,
    })
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    c: &Arc<Container>,
    name: &str,
    trace: Trace,
    step: u64,
    workers: usize,
    runs: usize,
    reference: &[u8],
    gpu: &Option<Arc<dyn GpuEngine>>,
) -> Result<Scenario> {
    let mut o = run_options(Mode::Auto, workers, None, gpu)?;
    o.trace = Some(trace);
    o.replay_step_ms = step;
    let (times, mut stats) = timed_runs(c, &o, runs, reference, &format!("scenario {name}"))?;
    // Replay is deterministic: the same decisions every run.
    let key = |s: &crate::stats::Statistics| {
        (
            s.mode_switches,
            s.memory_pressure_events,
            s.gpu_decompressions,
            s.cpu_decompressions,
            s.hybrid_decompressions,
        )
    };
    if stats.iter().any(|s| key(s) != key(&stats[0])) {
        return Err(Error::Decode(format!(
            "bench: scenario {name} decided differently on another replay"
        )));
    }
    let p99s: Vec<f64> = stats.iter().skip(1).map(|s| p99(s) as f64).collect();
    let s = stats.pop().expect("at least one run");
    Ok(Scenario {
        name: name.into(),
        replay_step_ms: step,
        chunks: c.header().tensors.iter().map(|t| t.chunks.len()).sum(),
        workers,
        mode_switches: s.mode_switches,
        memory_pressure_events: s.memory_pressure_events,
        chunks_gpu: s.gpu_decompressions,
        chunks_cpu: s.cpu_decompressions,
        chunks_hybrid: s.hybrid_decompressions,
        gb_per_s: Stat::of_throughput(reference.len() as u64, &times),
        p99_us: Stat::of(&p99s),
        latency_curves: s.latency_curves,
        notes: s.notes,
    })
}

/// The safetensors data region of `bytes` (the file at `path`).
fn data_region<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let bad = || Error::Decode(format!("{}: not a safetensors file", path.display()));
    let n = bytes
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().expect("8 bytes")))
        .ok_or_else(bad)?;
    let start = 8usize.checked_add(n as usize).ok_or_else(bad)?;
    bytes.get(start..).ok_or_else(bad)
}

/// The float dtype holding most bytes of a safetensors file (bf16, f16 or
/// f32): the dtype ZipNN is told the file holds.
pub fn main_float_dtype(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Decode(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut by = [0usize; 3];
    for (_, t) in st.tensors() {
        match t.dtype() {
            safetensors::Dtype::BF16 => by[0] += t.data().len(),
            safetensors::Dtype::F16 => by[1] += t.data().len(),
            safetensors::Dtype::F32 => by[2] += t.data().len(),
            _ => {}
        }
    }
    let (i, n) = by
        .iter()
        .enumerate()
        .max_by_key(|x| *x.1)
        .expect("three dtypes");
    if *n == 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: no bf16, f16 or f32 tensor; pass --dtype",
            path.display()
        )));
    }
    Ok(["bf16", "f16", "f32"][i].into())
}

/// Empirical entropy of the exponent field over every float value of a
/// safetensors file, in bits per value.
pub fn exponent_entropy_bits(path: &Path, bytes: &[u8]) -> Result<f64> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Decode(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut counts = vec![0u64; 256];
    for (_, t) in st.tensors() {
        let d = t.data();
        match t.dtype() {
            safetensors::Dtype::BF16 => d.chunks_exact(2).for_each(|b| {
                counts[((u16::from_le_bytes([b[0], b[1]]) >> 7) & 0xff) as usize] += 1
            }),
            safetensors::Dtype::F16 => d.chunks_exact(2).for_each(|b| {
                counts[((u16::from_le_bytes([b[0], b[1]]) >> 10) & 0x1f) as usize] += 1
            }),
            safetensors::Dtype::F32 => d.chunks_exact(4).for_each(|b| {
                counts[((u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 23) & 0xff) as usize] += 1
            }),
            _ => {}
        }
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Ok(0.0);
    }
    Ok(counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = n as f64 / total as f64;
            -p * p.log2()
        })
        .sum())
}

/// Now, as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// Seconds since 1970-01-01 UTC as `YYYY-MM-DD HH:MM:SS`.
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn fmt_stat(s: &Stat) -> String {
    format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
}

fn fmt_target(t: Option<u32>) -> String {
    t.map_or("all".into(), |k| k.to_string())
}

/// The report as terminal tables.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    o += &format!(
        "padic-burst bench, {} UTC: {} cores ({}), GPU: {}\n",
        r.date_utc,
        r.machine.cores,
        r.machine.cpu_model,
        r.machine.gpu.as_deref().unwrap_or("none")
    );
    o += &format!(
        "input: {}, {} bytes, {} tensors, {} chunks, exponent entropy {:.3} bits/value; median (min–max) of {} runs after a warm-up\n\n",
        r.input.source, r.input.bytes, r.input.tensors, r.input.chunks, r.input.exponent_entropy_bits, r.repeat
    );
    o += &format!(
        "compression: ratio {:.4} ({} bytes), {} GB/s\n\n",
        r.compression.ratio,
        r.compression.compressed_bytes,
        fmt_stat(&r.compression.gb_per_s)
    );
    o += &format!(
        "{:<10} {:>7} {:>7} {:>28} {:>6} {:>6} {:>6} {:>9}\n",
        "decode", "workers", "digits", "GB/s", "gpu", "cpu", "hybrid", "p99 µs"
    );
    for d in &r.decompression {
        o += &format!(
            "{:<10} {:>7} {:>7} {:>28} {:>6} {:>6} {:>6} {:>9}\n",
            d.mode,
            d.workers,
            fmt_target(d.target_precision),
            fmt_stat(&d.gb_per_s),
            d.chunks_gpu,
            d.chunks_cpu,
            d.chunks_hybrid,
            if d.mode == "bare" {
                "-".into()
            } else {
                d.p99_us.to_string()
            }
        );
    }
    o += "\ngraph overhead (cpu-only graph over the bare loop, median (min–max) of pairs run back to back):\n";
    for g in &r.graph_overhead {
        o += &format!(
            "  {} workers, digits {}: {:.3} ({:.3}–{:.3}, {} pairs)\n",
            g.workers,
            fmt_target(g.target_precision),
            g.pipeline_over_bare,
            g.min,
            g.max,
            g.pairs
        );
    }
    if let Some(sc) = &r.worker_scaling {
        o += &format!(
            "worker scaling (cpu-only graph, {} workers over 1, pairs run back to back): {:.2}x ({:.2}–{:.2}, {} pairs)\n",
            sc.workers, sc.median, sc.min, sc.max, sc.pairs
        );
    }
    if !r.peers.is_empty() {
        let ours = |w: usize| {
            r.decompression
                .iter()
                .find(|d| d.mode == "cpu-only" && d.workers == w && d.target_precision.is_none())
                .map(|d| d.gb_per_s.median)
        };
        o += &format!(
            "\n{:<14} {:>8} {:>10} {:>28} {:>10}\n",
            "peer", "ratio", "ours/peer", "decode GB/s (workers)", "ours/peer"
        );
        o += &format!(
            "{:<14} {:>8.4} {:>10} {:>28} {:>10}\n",
            "padic-burst", r.compression.ratio, "1.000", "", ""
        );
        for p in &r.peers {
            if p.status != "ok" {
                o += &format!("{:<14} {}\n", p.name, p.status);
                continue;
            }
            let ratio = p.ratio.unwrap_or(f64::NAN);
            for (i, (w, s)) in p.decompress_gb_per_s.iter().enumerate() {
                let speed = ours(*w).map_or("-".into(), |g| format!("{:.2}x", g / s.median));
                if i == 0 {
                    o += &format!(
                        "{:<14} {:>8.4} {:>10.3} {:>28} {:>10}\n",
                        p.name,
                        ratio,
                        r.compression.ratio / ratio,
                        format!("{} ({w})", fmt_stat(s)),
                        speed
                    );
                } else {
                    o += &format!(
                        "{:<14} {:>8} {:>10} {:>28} {:>10}\n",
                        "",
                        "",
                        "",
                        format!("{} ({w})", fmt_stat(s)),
                        speed
                    );
                }
            }
        }
    }
    if !r.scenarios.is_empty() {
        o += &format!(
            "\n{:<18} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>28} {:>9}\n",
            "scenario (auto)",
            "step",
            "switches",
            "events",
            "gpu",
            "cpu",
            "hybrid",
            "GB/s",
            "p99 µs"
        );
        for s in &r.scenarios {
            o += &format!(
                "{:<18} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>28} {:>9.0}\n",
                s.name,
                s.replay_step_ms,
                s.mode_switches,
                s.memory_pressure_events,
                s.chunks_gpu,
                s.chunks_cpu,
                s.chunks_hybrid,
                fmt_stat(&s.gb_per_s),
                s.p99_us.median
            );
        }
        if let Some(n) = r.scenarios.iter().flat_map(|s| &s.notes).next() {
            o += &format!("  note: {n}\n");
        }
    }
    for s in &r.skipped {
        o += &format!("skipped: {s}\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_takes_the_median_and_range() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
        let s = Stat::of_throughput(2_000_000_000, &[1.0, 2.0]);
        assert_eq!((s.min, s.max), (1.0, 2.0));
        assert_eq!(Stat::of(&[]).runs, 0);
    }

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_386_062), "2026-12-04 12:07:42");
    }
}
