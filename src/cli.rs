//! The command line: flags, and one function per command.
//!
//! Exit statuses ([`crate::Error::exit_code`]): 0 success, 1 I/O and
//! environment (the disk, the GPU), 2 bad input or arguments (clap's usage
//! errors included), 3 an internal fault.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::checkpoint;
use crate::compress::{compress_file, CompressOptions};
use crate::config::{Config, ConfigLayer};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::inspect;
use crate::monitor::stream::{Last, StatsStream};
use crate::pipeline::Pipeline;
use crate::plan::ReplayStep;
use crate::pressure::Trace;
use crate::progress::Progress;

/// Streams compressed neural-network weights (a p-adic container) and decodes them bit-exact.
#[derive(Debug, Parser)]
#[command(name = "padic-burst", version, about)]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand to run.
    pub command: Command,
    /// Never show a progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
/// The subcommands of `padic-burst`.
pub enum Command {
    /// Compress a safetensors file into a p-adic container, or a model directory (or its `model.safetensors.index.json`) into a directory of `.padic` shards.
    Compress(CompressArgs),
    /// Decompress a container into a safetensors file, or a directory of `.padic` shards back into the model directory.
    Decompress(DecompressArgs),
    /// Show per-tensor sizes and ratios of a container (of a packed directory: per shard, and totals).
    Inspect(InspectArgs),
    /// Print the routing decisions a run would take under a recorded pressure trace (JSON lines), without decoding.
    Plan(PlanArgs),
    /// Measure compression, decoding in each mode, the graph's overhead, peers and policy scenarios.
    Bench(BenchArgs),
    /// Compress and decompress a generated model offline and say what happened.
    Demo(DemoArgs),
}

/// The arguments of `compress`.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The safetensors file to read (or a model directory, or its index).
    pub input: PathBuf,
    /// The container to write (for a directory: a directory, absent or empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Base of the digit expansion of each fraction (a prime below 2048).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>("--prime", 2, 2047))]
    pub prime: u32,
    /// Digits kept per value [default: every digit, exact for each dtype].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>("--precision", 1, u32::MAX.into()))]
    pub precision: Option<u32>,
    /// Allow --precision to drop low digits (inspect reports the largest error).
    #[arg(long)]
    pub lossy: bool,
    /// Flush the output to disk (fsync) before renaming it into place; without it, as with cp, a crash right after the run may lose the file, but never leaves a torn one.
    #[arg(long)]
    pub fsync: bool,
    /// Decoded KiB per chunk.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = whole::<u32>("--chunk-kib", 1, (crate::format::MAX_CHUNK_BYTES / 1024).into()))]
    pub chunk_kib: u32,
    /// Coding threads [default: num_cpu_workers, one per core].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("--workers", 1, u32::MAX.into()))]
    pub workers: Option<usize>,
}

/// The arguments of `decompress`.
#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// The container to read (or a packed directory, or its index).
    pub input: PathBuf,
    /// The safetensors file to write (for a directory: a directory, absent or empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Decode only the leading K digits of each fraction (reads fewer planes) [default: all stored].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>("--target-precision", 1, u32::MAX.into()))]
    pub target_precision: Option<u32>,
    /// Decode workers (timely worker threads) [default: num_cpu_workers, one per core].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("--workers", 1, u32::MAX.into()))]
    pub workers: Option<usize>,
    /// auto, gpu-only, cpu-only or hybrid.
    #[arg(long, default_value = "auto")]
    pub mode: crate::policy::Mode,
    /// TOML configuration (defaults < file < SARAPHIS_* environment < flags).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Replay routing from recorded GPU memory samples (CSV: t_ms,used_mb,total_mb).
    #[arg(long)]
    pub pressure_trace: Option<PathBuf>,
    /// Virtual milliseconds between consecutive chunks in a replay, or `auto` (the trace spread over the chunks, at least 1 ms a chunk).
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = ReplayStep::parse, requires = "pressure_trace")]
    pub replay_step_ms: ReplayStep,
    /// Draw the run's switching timeline (SVG): memory use, the threshold band, each chunk's route and the engine that ran it.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Sample GPU memory live (NVML, every sample_interval_ms) and write the samples as a trace CSV that --pressure-trace replays.
    #[arg(long, conflicts_with = "pressure_trace")]
    pub record_pressure: Option<PathBuf>,
    /// Write the run's statistics as JSON.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// While the run goes, write its statistics (--stats-json's keys) as one JSON line every SECS seconds, and a last line at the end, to stderr or --stats-stream [default: no lines].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub stats_interval: Option<std::time::Duration>,
    /// Where --stats-interval's lines go: a FIFO, a device or - (stdout) line by line; a regular file whole at the end [default: stderr].
    #[arg(long, value_name = "FILE", requires = "stats_interval")]
    pub stats_stream: Option<PathBuf>,
    /// Write each route's latency as HdrHistogram's percentile distribution, one file per route with samples: FILE.hgrm becomes FILE.cpu.hgrm, FILE.gpu.hgrm, FILE.hybrid.hgrm.
    #[arg(long)]
    pub histogram_out: Option<PathBuf>,
    /// Write, per chunk part, which engine decoded which byte range of which shard (CSV).
    #[arg(long)]
    pub placement_log: Option<PathBuf>,
    /// Flush the output to disk (fsync) before renaming it into place; without it, as with cp, a crash right after the run may lose the file, but never leaves a torn one.
    #[arg(long)]
    pub fsync: bool,
    /// Timely's own arguments, after `--` (`-w 2`).
    #[arg(last = true)]
    pub timely: Vec<String>,
}

/// The arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The container to read (or a packed directory, or its index).
    pub input: PathBuf,
    /// Print JSON: for a file, every tensor's entry (`tensors`, a list) and the totals (original_bytes, compressed_bytes, ratio); for a packed directory, each shard's report (`shards`) and the totals (`tensors` and `chunks` counts among them).
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The container to plan (or a packed directory, or its index: every shard, chunks numbered on across shards).
    pub input: PathBuf,
    /// Recorded GPU memory samples (CSV: t_ms,used_mb,total_mb).
    #[arg(long)]
    pub pressure_trace: PathBuf,
    /// auto, gpu-only, cpu-only or hybrid.
    #[arg(long, default_value = "auto")]
    pub mode: crate::policy::Mode,
    /// TOML configuration (defaults < file < SARAPHIS_* environment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Virtual milliseconds between consecutive chunks, or `auto` (the trace spread over the chunks, at least 1 ms a chunk).
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = ReplayStep::parse)]
    pub replay_step_ms: ReplayStep,
    /// Draw the plan as a switching timeline (SVG): memory use, the threshold band, each chunk's route.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// The arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A safetensors file [default: a generated model, see --synthetic].
    pub input: Option<PathBuf>,
    /// Size in MB of a generated model with per-tensor scales [default: 64, 16 with --quick].
    #[arg(long, conflicts_with = "input", allow_negative_numbers = true, value_parser = above_zero("--synthetic"))]
    pub synthetic: Option<f64>,
    /// Generate the model as many small tensors (6,000 to 14,000 values each) instead of a transformer's shapes.
    #[arg(long, conflicts_with = "input")]
    pub small_tensors: bool,
    /// The generated model's dtype, and the dtype ZipNN reads the file as: bf16, f16 or f32 [default: a file's main float dtype; bf16 for a generated model].
    #[arg(long)]
    pub dtype: Option<String>,
    /// Timed runs per figure, after one warm-up [default: 5, 2 with --quick].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("--repeat", 1, u32::MAX.into()))]
    pub repeat: Option<usize>,
    /// Worker counts, comma-separated [default: 1 and all cores; all cores with --quick].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = whole::<usize>("--workers", 1, u32::MAX.into()))]
    pub workers: Option<Vec<usize>>,
    /// Target precisions, comma-separated: `all`, `half` or a digit count [default: all,half; all with --quick].
    #[arg(long, value_delimiter = ',')]
    pub target_precision: Option<Vec<String>>,
    /// Modes, comma-separated [default: cpu-only,auto,hybrid,gpu-only; gpu-only only with a GPU].
    #[arg(long, value_delimiter = ',')]
    pub modes: Option<Vec<crate::policy::Mode>>,
    /// Skip the peers (zstd, lz4, ZipNN).
    #[arg(long)]
    pub no_peers: bool,
    /// The Python that has `zipnn` [default: $PADIC_ZIPNN_PYTHON, .venv-peers/bin/python, python3].
    #[arg(long)]
    pub zipnn_python: Option<PathBuf>,
    /// Pressure traces to replay, CSV files [default: the four in benches/traces/, built in].
    #[arg(long, value_delimiter = ',')]
    pub traces: Option<Vec<PathBuf>>,
    /// Write every figure, with the machine, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write plots (throughput per mode and peer, latency curves per route, each scenario's switching timeline) into this folder.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// A run under a minute: 16 MB, 2 runs, all cores, every digit only.
    #[arg(long)]
    pub quick: bool,
}

/// The arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Parameters per dtype of the generated model (at most 10^9: the demo holds each dtype's model in memory, 4 GB of f32 at that).
    #[arg(long, default_value_t = 4_000_000, allow_negative_numbers = true, value_parser = whole::<usize>("--params", 1, 1_000_000_000))]
    pub params: usize,
    /// CPU worker threads [default: one per core].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("--workers", 1, u32::MAX.into()))]
    pub workers: Option<usize>,
    /// Folder for the demo's files [default: a fresh temporary folder, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A parser for a whole-number flag in `min..=max`: a value out of range
/// (a negative one included) is refused naming the flag and the range.
fn whole<T>(
    flag: &'static str,
    min: i128,
    max: i128,
) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<i128> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let range = if max >= i128::from(u32::MAX) {
            format!("a whole number, at least {min}")
        } else {
            format!("a whole number from {min} to {max}")
        };
        s.trim()
            .parse::<i128>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| format!("{flag} {s}: expected {range}"))
    }
}

/// A parser for a flag that takes a number above 0.
fn above_zero(
    flag: &'static str,
) -> impl Fn(&str) -> std::result::Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("{flag} {s}: expected a number above 0"))
    }
}

/// `--stats-interval`'s seconds ([`crate::config::seconds`]).
fn parse_seconds(s: &str) -> std::result::Result<std::time::Duration, String> {
    crate::config::seconds(s).ok_or_else(|| {
        format!(
            "--stats-interval {s}: expected a number of seconds above 0 (and below about 10^19)"
        )
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Compress(a) => compress(a, quiet),
        Command::Decompress(a) => decompress(a, quiet),
        Command::Inspect(a) => inspect(a),
        Command::Plan(a) => plan(a),
        Command::Bench(a) => bench(a, quiet),
        Command::Demo(a) => demo(a),
    }
}

/// Writes `text` to standard output; a reader that has gone (`| head`) ends
/// the output quietly, not as an error.
fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("<stdout>", e)),
        _ => Ok(()),
    }
}

/// `value` as JSON (what serializes our own reports cannot fail on).
fn json(value: &impl serde::Serialize, pretty: bool) -> Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|e| Error::Internal(format!("writing JSON: {e}")))
}

fn compress(a: CompressArgs, quiet: bool) -> Result<()> {
    crate::output::set_durable(a.fsync);
    let flags = ConfigLayer {
        num_cpu_workers: a.workers.map(|w| w as i64),
        ..Default::default()
    };
    let opts = CompressOptions {
        prime: a.prime,
        precision: a.precision,
        lossy: a.lossy,
        chunk_kib: a.chunk_kib,
        workers: Config::load(None, flags)?.num_cpu_workers,
    };
    let started = std::time::Instant::now();
    // The time and the speed (GB/s of original bytes) of a summary line.
    let took = |original: u64| {
        let secs = started.elapsed().as_secs_f64();
        format!(
            "in {secs:.3} s ({:.2} GB/s)",
            original as f64 / secs.max(1e-9) / 1e9
        )
    };
    if checkpoint::is_checkpoint(&a.input) {
        let r = checkpoint::compress_dir(&a.input, &a.output, &opts, &Progress::new(!quiet))?;
        let s = r.total();
        eprintln!(
            "{}: {}, {} copied, {} tensors, {} chunks, {} -> {} bytes (ratio {:.4}) {}",
            a.output.display(),
            counted(r.shards.len(), "shard"),
            counted(r.copied, "file"),
            s.tensors,
            s.chunks,
            s.original_bytes,
            s.compressed_bytes,
            s.compressed_bytes as f64 / s.original_bytes.max(1) as f64,
            took(s.original_bytes)
        );
        return Ok(());
    }
    let s = compress_file(&a.input, &a.output, &opts, &Progress::new(!quiet))?;
    eprintln!(
        "{}: {} tensors, {} chunks, {} -> {} bytes (ratio {:.4}) {}",
        a.output.display(),
        s.tensors,
        s.chunks,
        s.original_bytes,
        s.compressed_bytes,
        s.compressed_bytes as f64 / s.original_bytes.max(1) as f64,
        took(s.original_bytes)
    );
    Ok(())
}

fn decompress(a: DecompressArgs, quiet: bool) -> Result<()> {
    crate::output::set_durable(a.fsync);
    let flags = ConfigLayer {
        num_cpu_workers: a.workers.map(|w| w as i64),
        ..Default::default()
    };
    let cfg = Config::load_for_command_line(a.config.as_deref(), flags)?;
    refuse_clashes(&a)?;
    // A packed directory decodes in one graph run over all its shards.
    let input = match checkpoint::is_checkpoint(&a.input) {
        true => Input::Dir(checkpoint::PackedCheckpoint::open(&a.input)?),
        false => Input::File(Arc::new(Container::open(&a.input)?)),
    };
    let progress = Arc::new(Progress::new(!quiet));
    let mut pipeline = Pipeline::with_mode(cfg, a.mode);
    if let Some(gpu) = pipeline.gpu_description() {
        eprintln!("GPU: {gpu}");
    }
    if let Some(path) = &a.pressure_trace {
        let trace = Trace::load(path)?;
        let step = a.replay_step_ms.millis(&trace, input.chunk_count());
        if let Some(note) =
            crate::plan::beyond_the_trace(&trace, input.chunk_count(), a.replay_step_ms)
        {
            eprintln!("note: {note}");
        }
        pipeline = pipeline.with_trace(trace, step);
    } else if a.record_pressure.is_some() {
        pipeline = pipeline.with_live_pressure()?;
    } else {
        for note in pipeline.setup_notes() {
            eprintln!("note: {note}");
        }
    }
    let pipeline = pipeline
        .with_timely_args(a.timely)
        .with_placement_log(a.placement_log)
        .with_timeline(a.timeline.clone())
        .with_progress(progress.clone());
    // A packed directory's statistics add its shards to the run's: its
    // stream's last line is what `--stats-json` writes, as a file's is.
    let last = match &input {
        Input::File(_) => Last::FromRun,
        Input::Dir(_) => Last::FromCaller,
    };
    let watch = LiveStatistics::start(
        (a.stats_interval, a.stats_stream.as_deref()),
        &pipeline,
        &progress,
        last,
    )?;
    let (s, stats_json) = match &input {
        Input::File(c) => {
            let s = pipeline.decompress_to_file(c, &a.output, a.target_precision)?;
            watch.finish(None::<&crate::stats::Statistics>)?;
            let text = json(&s, true)?;
            (s, text)
        }
        Input::Dir(packed) => {
            let r = packed.decompress(&a.output, &pipeline, a.target_precision)?;
            watch.finish(Some(&r))?;
            let text = json(&r, true)?;
            (r.statistics, text)
        }
    };
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    if let (Some(path), Some(source)) = (&a.record_pressure, pipeline.pressure()) {
        let n = crate::pressure::record(source.as_ref(), path)?;
        eprintln!("{}: {n} memory samples", path.display());
    }
    if let Some(path) = &a.stats_json {
        crate::output::write_atomic(path, stats_json.as_bytes())?;
    }
    if let Some(path) = &a.histogram_out {
        for (route, text) in &s.histogram_texts {
            let file = histogram_path(path, route);
            crate::output::write_atomic(&file, text.as_bytes())?;
        }
    }
    // The bytes written: a file's (or each shard's) preamble and data (in a
    // cluster, only process 0 renames it into place).
    let preamble =
        |c: &Container| crate::output::safetensors_preamble(&c.header().source_header).len() as u64;
    let (shards, written) = match &input {
        Input::File(c) => (
            String::new(),
            match std::fs::metadata(&a.output) {
                Ok(m) if m.is_file() => m.len(),
                // A stream got the preamble and the data.
                _ => preamble(c) + s.bytes_out,
            },
        ),
        Input::Dir(p) => (
            format!("{}, ", counted(p.shards().len(), "shard")),
            p.shards().iter().map(|(_, c)| preamble(c)).sum::<u64>() + s.bytes_out,
        ),
    };
    eprintln!(
        "{}: {shards}{} chunks ({} gpu, {} cpu, {} hybrid), {} bytes read, {} written in {:.3} s ({:.2} GB/s)",
        a.output.display(),
        s.chunks.total_decompressions,
        s.chunks.gpu_decompressions,
        s.chunks.cpu_decompressions,
        s.chunks.hybrid_decompressions,
        s.bytes_in,
        written,
        s.wall_time_s,
        written as f64 / s.wall_time_s.max(1e-9) / 1e9
    );
    Ok(())
}

/// `decompress`'s outputs, refused before any work where one would land on
/// what the run reads, inside a model directory it reads or writes, or on
/// another of them.
fn refuse_clashes(a: &DecompressArgs) -> Result<()> {
    let mut reads = vec![("the input", a.input.as_path())];
    reads.extend(a.config.as_deref().map(|p| ("--config", p)));
    reads.extend(a.pressure_trace.as_deref().map(|p| ("--pressure-trace", p)));
    let mut trees = Vec::new();
    let mut writes = Vec::new();
    let root;
    if checkpoint::is_checkpoint(&a.input) {
        root = checkpoint::root_of(&a.input);
        trees.extend([("the input", root.as_path()), ("-o", a.output.as_path())]);
    } else {
        writes.push(("-o", a.output.as_path()));
    }
    let histograms: Vec<PathBuf> = a
        .histogram_out
        .iter()
        .flat_map(|h| ["cpu", "gpu", "hybrid"].map(|route| histogram_path(h, route)))
        .collect();
    let side = [
        ("--stats-json", &a.stats_json),
        ("--placement-log", &a.placement_log),
        ("--timeline", &a.timeline),
        ("--record-pressure", &a.record_pressure),
        (
            "--stats-stream",
            if a.stats_interval.is_some() {
                &a.stats_stream
            } else {
                &None
            },
        ),
    ];
    writes.extend(
        side.iter()
            .filter_map(|(flag, p)| p.as_deref().map(|p| (*flag, p))),
    );
    writes.extend(histograms.iter().map(|p| ("--histogram-out", p.as_path())));
    crate::output::refuse_clashes(&reads, &trees, &writes)
}

/// What follows a decode while it goes: the bar's status line on a
/// terminal, and the `--stats-interval` lines.
struct LiveStatistics {
    status: Option<crate::monitor::Watcher>,
    stream: Option<crate::monitor::stream::StreamWatch>,
}

impl LiveStatistics {
    /// `--stats-interval` and `--stats-stream` (checked against the run's
    /// other paths by [`refuse_clashes`]).
    fn start(
        (interval, path): (Option<std::time::Duration>, Option<&std::path::Path>),
        pipeline: &Pipeline,
        progress: &Arc<Progress>,
        last: Last,
    ) -> Result<Self> {
        let stream = match interval {
            Some(secs) => {
                let stream = StatsStream::open(path, Some(progress.clone()))?;
                Some(stream.follow(pipeline.monitor(), secs, last)?)
            }
            None => None,
        };
        Ok(LiveStatistics {
            status: progress.follow(pipeline.monitor()),
            stream,
        })
    }

    /// Stops following: the last line written (`last`, where the stream
    /// was started with [`Last::FromCaller`]), the stream's file in place.
    fn finish(self, last: Option<&impl serde::Serialize>) -> Result<()> {
        if let Some(status) = self.status {
            status.stop();
        }
        match self.stream {
            Some(stream) => stream.finish_with(last),
            None => Ok(()),
        }
    }
}

/// What `decompress` and `plan` read: one container, or a packed directory.
enum Input {
    File(Arc<Container>),
    Dir(checkpoint::PackedCheckpoint),
}

impl Input {
    /// Chunks over the whole input (every shard of a directory).
    fn chunk_count(&self) -> usize {
        match self {
            Input::File(c) => c.header().chunk_count(),
            Input::Dir(p) => p.chunk_count(),
        }
    }
}

/// `s.hgrm` for route `cpu`: `s.cpu.hgrm` (the route before the extension).
fn histogram_path(path: &std::path::Path, route: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{route}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{route}"),
    };
    path.with_file_name(name)
}

fn inspect(a: InspectArgs) -> Result<()> {
    if checkpoint::is_checkpoint(&a.input) {
        let r = checkpoint::inspect_dir(&a.input)?;
        return if a.json {
            print_stdout(&(json(&r, true)? + "\n"))
        } else {
            print_stdout(&checkpoint::render(&r))
        };
    }
    let c = Container::open(&a.input)?;
    let r = inspect::inspect(&c);
    if a.json {
        print_stdout(&(json(&r, true)? + "\n"))
    } else {
        print_stdout(&inspect::render(&r))
    }
}

fn plan(a: PlanArgs) -> Result<()> {
    let cfg = Config::load_for_command_line(a.config.as_deref(), ConfigLayer::default())?;
    let trace = Trace::load(&a.pressure_trace)?;
    if let Some(svg) = &a.svg {
        let mut reads = vec![
            ("the input", a.input.as_path()),
            ("--pressure-trace", a.pressure_trace.as_path()),
        ];
        reads.extend(a.config.as_deref().map(|p| ("--config", p)));
        let root = checkpoint::is_checkpoint(&a.input).then(|| checkpoint::root_of(&a.input));
        let trees: Vec<_> = root.iter().map(|r| ("the input", r.as_path())).collect();
        crate::output::refuse_clashes(&reads, &trees, &[("--svg", svg)])?;
    }
    // A packed directory is planned as one run decodes it: every shard, in index order.
    let input = match checkpoint::is_checkpoint(&a.input) {
        true => Input::Dir(checkpoint::PackedCheckpoint::open(&a.input)?),
        false => Input::File(Arc::new(Container::open(&a.input)?)),
    };
    let step = a.replay_step_ms.millis(&trace, input.chunk_count());
    let shards: Vec<(Option<String>, &Container)> = match &input {
        Input::File(c) => vec![(None, &**c)],
        Input::Dir(p) => p
            .shards()
            .iter()
            .map(|(rel, c)| (Some(rel.display().to_string()), &**c))
            .collect(),
    };
    let (lines, summary) = crate::plan::plan_shards(&shards, &trace, a.mode, cfg.policy(), step);
    if let Some(note) = crate::plan::beyond_the_trace(&trace, lines.len(), a.replay_step_ms) {
        eprintln!("note: {note}");
    }
    if let Some(path) = &a.svg {
        let title = format!(
            "plan of {} under {} ({}, {step} ms a chunk): {} switches",
            a.input.display(),
            a.pressure_trace.display(),
            a.mode.name(),
            summary.mode_switches
        );
        let t = crate::plan::timeline(title, &trace, &cfg.policy(), &lines, step);
        crate::output::write_atomic(path, t.to_svg().as_bytes())?;
    }
    let mut out = String::new();
    for l in &lines {
        out += &json(l, false)?;
        out.push('\n');
    }
    out += &json(&summary, false)?;
    out.push('\n');
    print_stdout(&out)
}

fn bench(a: BenchArgs, quiet: bool) -> Result<()> {
    if let Some(path) = &a.json {
        let mut reads: Vec<_> = a.input.iter().map(|p| ("the input", p.as_path())).collect();
        reads.extend(a.traces.iter().flatten().map(|p| ("--traces", p.as_path())));
        crate::output::refuse_clashes(&reads, &[], &[("--json", path)])?;
    }
    let mut o = crate::bench::BenchOptions::new(a.quick);
    o.input = a.input;
    if let Some(mb) = a.synthetic {
        o.synthetic_mb = mb;
    }
    o.small_tensors = a.small_tensors;
    o.timelines = a.svg.clone();
    o.dtype = match (a.dtype, &o.input) {
        (Some(d), _) => d,
        (None, Some(path)) => crate::bench::main_float_dtype(path)?,
        (None, None) => "bf16".into(),
    };
    if let Some(r) = a.repeat {
        o.repeat = r;
    }
    if let Some(w) = a.workers {
        o.workers = w;
    }
    if let Some(t) = a.target_precision {
        o.targets = t
            .iter()
            .map(|s| match s.as_str() {
                "all" | "full" => Ok(None),
                "half" => Ok(Some(0)),
                n => match n.parse::<u32>() {
                    Ok(k) if k > 0 => Ok(Some(k)),
                    _ => Err(Error::InvalidArgument(format!(
                        "--target-precision {n}: expected all, half or a digit count of at least 1"
                    ))),
                },
            })
            .collect::<Result<_>>()?;
    }
    if let Some(m) = a.modes {
        o.modes = m;
    }
    o.peers = !a.no_peers;
    o.zipnn_python = a.zipnn_python;
    if let Some(files) = a.traces {
        o.traces = files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
                let name = f
                    .file_stem()
                    .map_or("trace".into(), |s| s.to_string_lossy().into_owned());
                Ok((name, text))
            })
            .collect::<Result<_>>()?;
    }
    let report = crate::bench::run(&o, &Progress::steps(!quiet))?;
    print_stdout(&crate::bench::render(&report))?;
    if let Some(path) = &a.json {
        crate::output::write_atomic(path, json(&report, true)?.as_bytes())?;
    }
    if let Some(dir) = &a.svg {
        for f in crate::bench::svg::write(&report, dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn demo(a: DemoArgs) -> Result<()> {
    // --workers checked as the other commands check it, before any work
    // (the demo's bursting stage refused it only at its end).
    let flags = ConfigLayer {
        num_cpu_workers: a.workers.map(|w| w as i64),
        ..Default::default()
    };
    Config::load_for_command_line(None, flags)?;
    let (guard, dir) = match a.dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            (None, d)
        }
        None => {
            let d = std::env::temp_dir().join(format!("padic-burst-demo-{}", std::process::id()));
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            (Some(RemoveOnDrop(d.clone())), d)
        }
    };
    crate::demo::run(&dir, a.params, a.workers)?;
    if guard.is_some() {
        eprintln!(
            "note: the demo's files (the timeline among them) are removed on exit; pass --dir DIR to keep them"
        );
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// "1 shard", "2 shards": a count and its noun.
fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
