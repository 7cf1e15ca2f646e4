//! The command line: flags and what each command does.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::checkpoint;
use crate::compress::{compress_file, CompressOptions};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::inspect;
use crate::progress::Progress;

/// Streams compressed neural-network weights (a p-adic container) and decodes them bit-exact.
#[derive(Debug, Parser)]
#[command(name = "padic-burst", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Never show a progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compress a safetensors file into a p-adic container, or a model directory (or its `model.safetensors.index.json`) into a directory of `.padic` shards.
    Compress {
        /// The safetensors file to read (or a model directory, or its index).
        input: PathBuf,
        /// The container to write (for a directory: a directory, absent or empty).
        #[arg(short, long)]
        output: PathBuf,
        /// Base of the digit expansion of each fraction (a prime below 2048).
        #[arg(long, default_value_t = 2)]
        prime: u32,
        /// Digits kept per value [default: every digit, exact for each dtype].
        #[arg(long)]
        precision: Option<u32>,
        /// Allow --precision to drop low digits (inspect reports the largest error).
        #[arg(long)]
        lossy: bool,
        /// Decoded KiB per chunk.
        #[arg(long, default_value_t = 1024)]
        chunk_kib: u32,
    },
    /// Decompress a container into a safetensors file, or a directory of `.padic` shards back into the model directory.
    Decompress {
        /// The container to read (or a packed directory, or its index).
        input: PathBuf,
        /// The safetensors file to write (for a directory: a directory, absent or empty).
        #[arg(short, long)]
        output: PathBuf,
        /// Decode only the leading K digits of each fraction (reads fewer planes) [default: all stored].
        #[arg(long)]
        target_precision: Option<u32>,
        /// Decode workers (timely worker threads) [default: num_cpu_workers, one per core].
        #[arg(long)]
        workers: Option<usize>,
        /// auto, gpu-only, cpu-only or hybrid.
        #[arg(long, default_value = "auto")]
        mode: crate::policy::Mode,
        /// TOML configuration (defaults < file < SARAPHIS_* environment < flags).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Replay routing from recorded GPU memory samples (CSV: t_ms,used_mb,total_mb).
        #[arg(long)]
        pressure_trace: Option<PathBuf>,
        /// Virtual milliseconds between consecutive chunks in a replay.
        #[arg(long, default_value_t = 10)]
        replay_step_ms: u64,
        /// Sample GPU memory live (NVML, every sample_interval_ms) and write the samples as a trace CSV that --pressure-trace replays.
        #[arg(long, conflicts_with = "pressure_trace")]
        record_pressure: Option<PathBuf>,
        /// Write the run's statistics as JSON.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Write the HdrHistogram percentile distribution per route.
        #[arg(long)]
        histogram_out: Option<PathBuf>,
        /// Write, per chunk part, which engine decoded which byte range (CSV).
        #[arg(long)]
        placement_log: Option<PathBuf>,
        /// Timely's own arguments, after `--` (`-w 2`).
        #[arg(last = true)]
        timely: Vec<String>,
    },
    /// Show per-tensor sizes and ratios of a container (of a packed directory: per shard, and totals).
    Inspect {
        /// The container to read (or a packed directory, or its index).
        input: PathBuf,
        /// Print JSON (keys: tensors, original_bytes, compressed_bytes, ratio).
        #[arg(long)]
        json: bool,
    },
    /// Print the routing decisions a run would take under a recorded pressure trace (JSON lines), without decoding.
    Plan {
        /// The container to plan.
        input: PathBuf,
        /// Recorded GPU memory samples (CSV: t_ms,used_mb,total_mb).
        #[arg(long)]
        pressure_trace: PathBuf,
        /// auto, gpu-only, cpu-only or hybrid.
        #[arg(long, default_value = "auto")]
        mode: crate::policy::Mode,
        /// TOML configuration (defaults < file < SARAPHIS_* environment).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Virtual milliseconds between consecutive chunks.
        #[arg(long, default_value_t = 10)]
        replay_step_ms: u64,
    },
    /// Measure compression, decoding in each mode, the graph's overhead, peers and policy scenarios.
    Bench {
        /// A safetensors file [default: a generated model, see --synthetic].
        input: Option<PathBuf>,
        /// Size in MB of a generated model with per-tensor scales [default: 64, 16 with --quick].
        #[arg(long, conflicts_with = "input")]
        synthetic: Option<f64>,
        /// The generated model's dtype, and the dtype ZipNN reads the file as: bf16, f16 or f32 [default: a file's main float dtype; bf16 for a generated model].
        #[arg(long)]
        dtype: Option<String>,
        /// Timed runs per figure, after one warm-up [default: 5, 2 with --quick].
        #[arg(long)]
        repeat: Option<usize>,
        /// Worker counts, comma-separated [default: 1 and all cores; all cores with --quick].
        #[arg(long, value_delimiter = ',')]
        workers: Option<Vec<usize>>,
        /// Target precisions, comma-separated: `all`, `half` or a digit count [default: all,half; all with --quick].
        #[arg(long, value_delimiter = ',')]
        target_precision: Option<Vec<String>>,
        /// Modes, comma-separated [default: cpu-only,auto,hybrid,gpu-only; gpu-only only with a GPU].
        #[arg(long, value_delimiter = ',')]
        modes: Option<Vec<crate::policy::Mode>>,
        /// Skip the peers (zstd, lz4, ZipNN).
        #[arg(long)]
        no_peers: bool,
        /// The Python that has `zipnn` [default: $PADIC_ZIPNN_PYTHON, .venv-peers/bin/python, python3].
        #[arg(long)]
        zipnn_python: Option<PathBuf>,
        /// Pressure traces to replay, CSV files [default: the four in benches/traces/, built in].
        #[arg(long, value_delimiter = ',')]
        traces: Option<Vec<PathBuf>>,
        /// Write every figure, with the machine, as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write plots (throughput per mode and peer, latency curves per route) into this folder.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// A run under a minute: 16 MB, 2 runs, all cores, every digit only.
        #[arg(long)]
        quick: bool,
    },
    /// Compress and decompress a generated model offline and say what happened.
    Demo {
        /// Parameters per dtype of the generated model.
        #[arg(long, default_value_t = 4_000_000)]
        params: usize,
        /// CPU worker threads [default: one per core].
        #[arg(long)]
        workers: Option<usize>,
        /// Folder for the demo's files [default: a fresh temporary folder, removed afterwards].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Writes `value` as pretty JSON to `path`, whole or not at all.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let json =
        serde_json::to_string_pretty(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    crate::output::write_atomic(path, json.as_bytes())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let progress = Progress::new(!cli.quiet);
    match cli.command {
        Command::Compress {
            input,
            output,
            prime,
            precision,
            lossy,
            chunk_kib,
        } => {
            let opts = CompressOptions {
                prime,
                precision,
                lossy,
                chunk_kib,
            };
            if checkpoint::is_checkpoint(&input) {
                let r = checkpoint::compress_dir(&input, &output, &opts, &progress)?;
                let s = r.total();
                eprintln!(
                    "{}: {} shards, {} files copied, {} tensors, {} chunks, {} -> {} bytes (ratio {:.4})",
                    output.display(),
                    r.shards.len(),
                    r.copied,
                    s.tensors,
                    s.chunks,
                    s.original_bytes,
                    s.compressed_bytes,
                    s.compressed_bytes as f64 / s.original_bytes.max(1) as f64
                );
                return Ok(());
            }
            let s = compress_file(&input, &output, &opts, &progress)?;
            eprintln!(
                "{}: {} tensors, {} chunks, {} -> {} bytes (ratio {:.4})",
                output.display(),
                s.tensors,
                s.chunks,
                s.original_bytes,
                s.compressed_bytes,
                s.compressed_bytes as f64 / s.original_bytes.max(1) as f64
            );
        }
        Command::Decompress {
            input,
            output,
            target_precision,
            workers,
            mode,
            config,
            pressure_trace,
            replay_step_ms,
            record_pressure,
            stats_json,
            histogram_out,
            placement_log,
            timely,
        } => {
            let flags = crate::config::ConfigLayer {
                num_cpu_workers: workers.map(|w| w as i64),
                ..Default::default()
            };
            if workers == Some(0) {
                return Err(Error::InvalidArgument(
                    "--workers 0: at least one worker is needed".into(),
                ));
            }
            let cfg = crate::config::Config::load(config.as_deref(), flags)?;
            let packed_dir = checkpoint::is_checkpoint(&input);
            if packed_dir
                && (pressure_trace.is_some()
                    || record_pressure.is_some()
                    || histogram_out.is_some()
                    || placement_log.is_some())
            {
                return Err(Error::InvalidArgument(format!(
                    "{}: a checkpoint directory takes --stats-json, but not yet --pressure-trace, --record-pressure, --histogram-out or --placement-log (one graph run for the whole model is to come)",
                    input.display()
                )));
            }
            let c = match packed_dir {
                true => None,
                false => Some(std::sync::Arc::new(Container::open(&input)?)),
            };
            let mut opts = crate::pipeline::RunOptions::new(mode, cfg);
            opts.target_precision = target_precision;
            opts.trace = pressure_trace
                .as_deref()
                .map(crate::pressure::Trace::load)
                .transpose()?;
            opts.replay_step_ms = replay_step_ms;
            let (device, interval) = (opts.config.gpu_device, opts.config.sample_interval_ms);
            if mode != crate::policy::Mode::CpuOnly {
                match crate::engine::gpu::open(device) {
                    Ok(engine) => {
                        eprintln!("GPU: {}", engine.describe());
                        engine.set_reserve_mb(opts.config.gpu_memory_threshold_mb);
                        opts.gpu = Some(engine);
                    }
                    Err(why) => opts.gpu_absent = Some(why),
                }
            }
            if record_pressure.is_some() {
                opts.pressure = Some(crate::pressure::live(device, interval)?);
            } else if let (Some(engine), None) = (&opts.gpu, &opts.trace) {
                let (source, note) = crate::pressure::for_engine(engine.clone(), device, interval);
                if let Some(note) = note {
                    eprintln!("note: {note}");
                }
                opts.pressure = Some(source);
            }
            opts.timely_args = timely;
            opts.placement_log = placement_log;
            let _ = &progress;
            let Some(c) = c else {
                let s = checkpoint::decompress_dir(&input, &output, &opts)?;
                if let Some(path) = &stats_json {
                    write_json(path, &s)?;
                }
                eprintln!(
                    "{}: {} shards, {} chunks, {} bytes written in {:.3} s",
                    output.display(),
                    s.shards.len(),
                    s.total_decompressions,
                    s.bytes_out,
                    s.wall_time_s
                );
                return Ok(());
            };
            let s = crate::pipeline::decompress_file(c, &output, &opts)?;
            for note in &s.notes {
                eprintln!("note: {note}");
            }
            if let (Some(path), Some(source)) = (&record_pressure, &opts.pressure) {
                let n = crate::pressure::record(source.as_ref(), path)?;
                eprintln!("{}: {n} memory samples", path.display());
            }
            if let Some(path) = &stats_json {
                write_json(path, &s)?;
            }
            if let Some(path) = &histogram_out {
                crate::output::write_atomic(path, s.histogram_text.as_bytes())?;
            }
            eprintln!(
                "{}: {} chunks ({} gpu, {} cpu, {} hybrid), {} bytes read, {} written in {:.3} s ({:.2} GB/s)",
                output.display(),
                s.total_decompressions,
                s.gpu_decompressions,
                s.cpu_decompressions,
                s.hybrid_decompressions,
                s.bytes_in,
                s.bytes_out,
                s.wall_time_s,
                s.bytes_out as f64 / s.wall_time_s.max(1e-9) / 1e9
            );
        }
        Command::Inspect { input, json } => {
            if checkpoint::is_checkpoint(&input) {
                let r = checkpoint::inspect_dir(&input)?;
                match json {
                    true => println!(
                        "{}",
                        serde_json::to_string_pretty(&r)
                            .map_err(|e| Error::InvalidArgument(e.to_string()))?
                    ),
                    false => print!("{}", checkpoint::render(&r)),
                }
                return Ok(());
            }
            let c = Container::open(&input)?;
            let r = inspect::inspect(&c);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?
                );
            } else {
                print!("{}", inspect::render(&r));
            }
        }
        Command::Plan {
            input,
            pressure_trace,
            mode,
            config,
            replay_step_ms,
        } => {
            if checkpoint::is_checkpoint(&input) {
                return Err(Error::InvalidArgument(format!(
                    "{}: plan takes one container; plan each shard (`*.padic`) of a checkpoint directory in turn",
                    input.display()
                )));
            }
            let cfg = crate::config::Config::load(
                config.as_deref(),
                crate::config::ConfigLayer::default(),
            )?;
            let trace = crate::pressure::Trace::load(&pressure_trace)?;
            let c = Container::open(&input)?;
            let (lines, summary) =
                crate::plan::plan(&c, &trace, mode, cfg.policy(), replay_step_ms);
            let json = |r: serde_json::Result<String>| {
                r.map_err(|e| Error::InvalidArgument(e.to_string()))
            };
            let mut out = String::new();
            for l in &lines {
                out += &json(serde_json::to_string(l))?;
                out.push('\n');
            }
            out += &json(serde_json::to_string(&summary))?;
            out.push('\n');
            use std::io::Write;
            std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .map_err(|e| Error::io("<stdout>", e))?;
        }
        Command::Bench {
            input,
            synthetic,
            dtype,
            repeat,
            workers,
            target_precision,
            modes,
            no_peers,
            zipnn_python,
            traces,
            json,
            svg,
            quick,
        } => {
            let mut o = crate::bench::BenchOptions::new(quick);
            o.input = input;
            if let Some(mb) = synthetic {
                o.synthetic_mb = mb;
            }
            o.dtype = match (dtype, &o.input) {
                (Some(d), _) => d,
                (None, Some(path)) => crate::bench::main_float_dtype(path)?,
                (None, None) => "bf16".into(),
            };
            if let Some(r) = repeat {
                o.repeat = r;
            }
            if let Some(w) = workers {
                o.workers = w;
            }
            if let Some(t) = target_precision {
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
            if let Some(m) = modes {
                o.modes = m;
            }
            o.peers = !no_peers;
            o.zipnn_python = zipnn_python;
            if let Some(files) = traces {
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
            let report = crate::bench::run(&o, &Progress::steps(!cli.quiet))?;
            print!("{}", crate::bench::render(&report));
            if let Some(path) = &json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                crate::output::write_atomic(path, text.as_bytes())?;
            }
            if let Some(dir) = &svg {
                for f in crate::bench::svg::write(&report, dir)? {
                    eprintln!("wrote {}", f.display());
                }
            }
        }
        Command::Demo {
            params,
            workers,
            dir,
        } => {
            let (_guard, dir) = match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                    (None, d)
                }
                None => {
                    let d = std::env::temp_dir()
                        .join(format!("padic-burst-demo-{}", std::process::id()));
                    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                    (Some(RemoveOnDrop(d.clone())), d)
                }
            };
            crate::demo::run(&dir, params, workers)?;
        }
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
