//! The report of one `bench` run: every figure's type, with the statistics
//! and the clock they are stated in.
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Serialize;

use super::peers::PeerResult;
use crate::engine::gpu::GpuEngine;

/// Median and range of repeated runs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stat {
    /// The middle run (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest run.
    pub min: f64,
    /// The largest run.
    pub max: f64,
    /// Finite values counted.
    pub runs: usize,
}

impl Stat {
    /// The statistics of `values`, leaving out those that are not finite.
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

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// The CPU, as `/proc/cpuinfo` names it.
    pub cpu_model: String,
    /// The GPU, or why there is none.
    pub gpu: Option<String>,
    /// Why there is no GPU, when there is none.
    pub gpu_absent_reason: Option<String>,
    /// Operating system and architecture.
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
            cores: crate::config::cores(),
            cpu_model,
            gpu: gpu.as_ref().ok().map(|g| g.describe()),
            gpu_absent_reason: gpu.as_ref().err().cloned(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// The model under test.
#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// The file, or `synthetic`.
    pub source: String,
    /// Its main float dtype (the generated one's, or the one ZipNN is told).
    pub dtype: String,
    /// Bytes of the safetensors file.
    pub bytes: u64,
    /// Tensors in the file.
    pub tensors: usize,
    /// Chunks of the container it compressed to.
    pub chunks: usize,
    /// Empirical entropy of the exponent field over every float value, in bits.
    pub exponent_entropy_bits: f64,
}

/// Our compression of the model.
#[derive(Debug, Clone, Serialize)]
pub struct Compression {
    /// Compressed bytes over original bytes (lower is better).
    pub ratio: f64,
    /// Bytes of the container.
    pub compressed_bytes: u64,
    /// Input GB/s.
    pub gb_per_s: Stat,
}

/// The whole decompression to a file, with one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct ToFile {
    /// The folder written to (the bench's, in `$TMPDIR`).
    pub dir: String,
    /// Workers of the run.
    pub workers: usize,
    /// Output GB/s of the whole call: decode, write, rename.
    pub gb_per_s: Stat,
    /// Cores the process kept busy (its CPU time over the wall time): with
    /// one worker and a core to spare, a writer thread copies into the page
    /// cache beside it, so one worker already uses more than one core.
    pub cores_busy: Stat,
}

/// One decode configuration's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeRun {
    /// cpu-only, auto, hybrid, gpu-only, or `bare` (the decode loop without the graph).
    pub mode: String,
    /// CPU decode workers.
    pub workers: usize,
    /// `null`: every stored digit.
    pub target_precision: Option<u32>,
    /// Output GB/s.
    pub gb_per_s: Stat,
    /// Chunks decoded on the GPU (last run).
    pub chunks_gpu: u64,
    /// Chunks decoded on the CPU (last run).
    pub chunks_cpu: u64,
    /// Chunks split between the two (last run).
    pub chunks_hybrid: u64,
    /// The worst route's 99th-percentile chunk latency, µs (last run; 0 for `bare`).
    pub p99_us: u64,
    /// What the run noted (fallbacks, reroutes).
    pub notes: Vec<String>,
}

/// The graph's throughput over the bare loop's, same workers and precision:
/// the median, over pairs of runs made back to back (bare, then cpu-only
/// graph), of each pair's ratio, and the smallest and largest of them. A
/// shared machine's slow and fast spells then fall on both sides of a ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    /// CPU decode workers.
    pub workers: usize,
    /// `null`: every stored digit.
    pub target_precision: Option<u32>,
    /// Graph seconds over bare seconds: 1.0 = no overhead, higher is slower.
    pub pipeline_over_bare: f64,
    /// The smallest pair's ratio.
    pub min: f64,
    /// The largest pair's ratio.
    pub max: f64,
    /// Pairs measured (after one warm-up pair).
    pub pairs: usize,
}

/// Throughput with `workers` over throughput with one worker: the median
/// (and min, max) over pairs of cpu-only graph runs made back to back.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    /// The worker count compared with one worker.
    pub workers: usize,
    /// The median pair's speed-up.
    pub median: f64,
    /// The smallest pair's speed-up.
    pub min: f64,
    /// The largest pair's speed-up.
    pub max: f64,
    /// Pairs measured (after one warm-up pair).
    pub pairs: usize,
}

/// One pressure trace replayed through the auto mode.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// The trace.
    pub name: String,
    /// Trace milliseconds each chunk advances the replay clock.
    pub replay_step_ms: u64,
    /// Chunks of the scenario container.
    pub chunks: usize,
    /// CPU decode workers.
    pub workers: usize,
    /// Mode switches the policy made (last run).
    pub mode_switches: u64,
    /// Rises of the pressure level into high or critical, and GPU
    /// out-of-memory errors (last run).
    pub memory_pressure_events: u64,
    /// Chunks decoded on the GPU (last run).
    pub chunks_gpu: u64,
    /// Chunks decoded on the CPU (last run).
    pub chunks_cpu: u64,
    /// Chunks split between the two (last run).
    pub chunks_hybrid: u64,
    /// Output GB/s.
    pub gb_per_s: Stat,
    /// The worst route's p99 chunk latency, µs, over the timed runs.
    pub p99_us: Stat,
    /// Latency percentile curves per route, (percentile, µs).
    pub latency_curves: Vec<(String, Vec<(f64, u64)>)>,
    /// What the runs noted.
    pub notes: Vec<String>,
    /// Its switching timeline (SVG), when `bench --svg` drew one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<std::path::PathBuf>,
}

/// Everything one `bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started, `YYYY-MM-DD HH:MM:SS` UTC.
    pub date_utc: String,
    /// Where it ran.
    pub machine: Machine,
    /// Timed runs per configuration.
    pub repeat: usize,
    /// The model.
    pub input: InputInfo,
    /// Our compression.
    pub compression: Compression,
    /// Every decode configuration, the bare loop first per worker count and target.
    pub decompression: Vec<DecodeRun>,
    /// The cpu-only graph over the bare loop, per worker count and target.
    pub graph_overhead: Vec<Overhead>,
    /// The cpu-only graph with the most workers over one worker, from pairs
    /// run back to back (when both counts are measured).
    pub worker_scaling: Option<Scaling>,
    /// The whole decompression to a file, per worker count.
    pub to_file: Vec<ToFile>,
    /// The peers on the same file.
    pub peers: Vec<PeerResult>,
    /// The policy scenarios.
    pub scenarios: Vec<Scenario>,
    /// Configurations not run, and why.
    pub skipped: Vec<String>,
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
