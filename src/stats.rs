//! Run statistics: counts per route, the policy's counters, HDR latency
//! histograms per route and per stage, bytes and time; as JSON with the
//! design's key names.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::policy::{Mode, Policy};

/// The engine that decoded a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    Gpu,
    Cpu,
}

/// Latency summary of one histogram, in µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Three significant digits, growing to the largest latency recorded: a
/// histogram sized for an hour up front is 180 KiB to zero at every run and
/// to walk at every percentile, a cost a small model's decode notices.
fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("three significant digits are valid")
}

fn summary(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

/// Accumulates what the merge sees.
pub struct Recorder {
    /// Per route (gpu, cpu, hybrid): end-to-end chunk-part latency (queue + decode + merge).
    route: [Histogram<u64>; 3],
    /// Per stage: queue wait, decode, merge.
    stage: [Histogram<u64>; 3],
    chunks_by_route: [std::collections::HashSet<usize>; 3],
    gpu_parts: u64,
    cpu_parts: u64,
    gpu_us: u64,
    cpu_us: u64,
    cpu_bytes: u64,
    bytes_in: u64,
    bytes_out: u64,
    oom_reroutes: u64,
    /// Record latency histograms (`enable_profiling`); counts are kept regardless.
    pub profile: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            route: [hist(), hist(), hist()],
            stage: [hist(), hist(), hist()],
            chunks_by_route: Default::default(),
            gpu_parts: 0,
            cpu_parts: 0,
            gpu_us: 0,
            cpu_us: 0,
            cpu_bytes: 0,
            bytes_in: 0,
            bytes_out: 0,
            oom_reroutes: 0,
            profile: true,
        }
    }
}

impl Recorder {
    /// One merged part of chunk `global`.
    #[allow(clippy::too_many_arguments)]
    pub fn part(
        &mut self,
        global: usize,
        route: crate::policy::Route,
        engine: Engine,
        bytes_out: u64,
        bytes_in: u64,
        queue_us: u64,
        decode_us: u64,
        merge_us: u64,
        rerouted_oom: bool,
    ) {
        let r = route.index();
        self.chunks_by_route[r].insert(global);
        if self.profile {
            let _ = self.route[r].record((queue_us + decode_us + merge_us).max(1));
            let _ = self.stage[0].record(queue_us.max(1));
            let _ = self.stage[1].record(decode_us.max(1));
            let _ = self.stage[2].record(merge_us.max(1));
        }
        match engine {
            Engine::Gpu => {
                self.gpu_parts += 1;
                self.gpu_us += decode_us;
            }
            Engine::Cpu => {
                self.cpu_parts += 1;
                self.cpu_us += decode_us;
                self.cpu_bytes += bytes_out;
            }
        }
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.oom_reroutes += rerouted_oom as u64;
    }

    /// The HdrHistogram percentile distribution of each route, as text.
    pub fn histogram_text(&self) -> String {
        let mut out = String::new();
        for (name, h) in ["gpu", "cpu", "hybrid"].iter().zip(&self.route) {
            out += &format!(
                "# route {name}: {} samples, values in microseconds\n",
                h.len()
            );
            out += "       Value     Percentile TotalCount\n";
            for v in h.iter_quantiles(1) {
                out += &format!(
                    "{:12} {:14.12} {:10}\n",
                    v.value_iterated_to(),
                    v.quantile_iterated_to(),
                    v.count_since_last_iteration()
                );
            }
        }
        out
    }

    /// Per route with samples: (percentile, latency in µs) points, two per
    /// halving of the distance to 100%.
    pub fn latency_curves(&self) -> Vec<(String, Vec<(f64, u64)>)> {
        ["gpu", "cpu", "hybrid"]
            .iter()
            .zip(&self.route)
            .filter(|(_, h)| !h.is_empty())
            .map(|(name, h)| {
                let points = h
                    .iter_quantiles(2)
                    .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
                    .collect();
                (name.to_string(), points)
            })
            .collect()
    }

    /// The run's statistics.
    pub fn statistics(
        &self,
        p: &Policy,
        mode: Mode,
        wall: std::time::Duration,
        notes: Vec<String>,
        gpu: Option<String>,
    ) -> Statistics {
        let avg = |us: u64, n: u64| {
            if n == 0 {
                0.0
            } else {
                us as f64 / n as f64 / 1e6
            }
        };
        let cpu_util = crate::stats::process_cpu_seconds()
            .map(|cpu| {
                cpu / (wall.as_secs_f64().max(1e-9)
                    * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
            })
            .unwrap_or(0.0);
        Statistics {
            total_decompressions: self.chunks_by_route.iter().map(|s| s.len() as u64).sum(),
            gpu_decompressions: self.chunks_by_route[0].len() as u64,
            cpu_decompressions: self.chunks_by_route[1].len() as u64,
            hybrid_decompressions: self.chunks_by_route[2].len() as u64,
            mode_switches: p.mode_switches(),
            memory_pressure_events: p.memory_pressure_events(),
            gpu_oom_reroutes: self.oom_reroutes,
            gpu_memory_saved_mb: self.cpu_bytes as f64 / (1 << 20) as f64,
            average_gpu_time: avg(self.gpu_us, self.gpu_parts),
            average_cpu_time: avg(self.cpu_us, self.cpu_parts),
            current_mode: mode.name().to_string(),
            gpu_memory_state: None,
            gpu_device: gpu,
            avg_cpu_utilization: cpu_util,
            cache_hits: 0,
            cache_misses: 0,
            latency: LatencyByRoute {
                gpu: summary(&self.route[0]),
                cpu: summary(&self.route[1]),
                hybrid: summary(&self.route[2]),
            },
            stages: Stages {
                queue_wait: summary(&self.stage[0]),
                decode: summary(&self.stage[1]),
                merge: summary(&self.stage[2]),
            },
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            wall_time_s: wall.as_secs_f64(),
            notes,
            histogram_text: self.histogram_text(),
            latency_curves: self.latency_curves(),
        }
    }
}

/// Seconds of CPU this process used (user + system).
pub fn process_cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Some(t(ru.ru_utime) + t(ru.ru_stime))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyByRoute {
    pub gpu: Latency,
    pub cpu: Latency,
    pub hybrid: Latency,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stages {
    pub queue_wait: Latency,
    pub decode: Latency,
    pub merge: Latency,
}

/// GPU memory at the end of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuMemoryState {
    pub total_mb: f64,
    pub used_mb: f64,
    pub free_mb: f64,
    pub utilization: f64,
}

/// A run's statistics (`--stats-json`). A decompression is one chunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Statistics {
    pub total_decompressions: u64,
    pub gpu_decompressions: u64,
    pub cpu_decompressions: u64,
    pub hybrid_decompressions: u64,
    pub mode_switches: u64,
    pub memory_pressure_events: u64,
    /// GPU out-of-memory errors whose part the CPU decoded instead.
    pub gpu_oom_reroutes: u64,
    /// Output decoded on the CPU, in MiB.
    pub gpu_memory_saved_mb: f64,
    /// Mean decode seconds per part.
    pub average_gpu_time: f64,
    pub average_cpu_time: f64,
    pub current_mode: String,
    /// `null` without a GPU.
    pub gpu_memory_state: Option<GpuMemoryState>,
    pub gpu_device: Option<String>,
    pub avg_cpu_utilization: f64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub latency: LatencyByRoute,
    pub stages: Stages,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub wall_time_s: f64,
    /// Things the run wants said once (no GPU, HYBRID running CPU-only).
    pub notes: Vec<String>,
    #[serde(skip)]
    pub histogram_text: String,
    /// Per route with samples: (percentile, µs) points of its latency distribution.
    #[serde(skip)]
    pub latency_curves: Vec<(String, Vec<(f64, u64)>)>,
}
