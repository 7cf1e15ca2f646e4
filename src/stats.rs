//! Run statistics: counts per route, the policy's counters, HDR latency
//! histograms per route and per stage, bytes and time; as JSON with the
//! design's key names.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::policy::{Mode, Policy};

/// The engine that decoded a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// The GPU engine (the CUDA kernels).
    Gpu,
    /// The CPU engine.
    Cpu,
}

/// Latency summary of one histogram, in µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
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

/// Chunks counted by where they ran and how the policy routed them: a
/// run's ([`Statistics`]) or one shard's share of it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChunkCounts {
    /// Chunks decoded.
    pub total_decompressions: u64,
    /// Chunks the GPU engine decoded whole (what ran where, not what the
    /// policy chose: see `routed_gpu`).
    pub gpu_decompressions: u64,
    /// Chunks the CPU engine decoded whole (GPU-routed chunks included when
    /// there is no GPU, and passthrough tensors always).
    pub cpu_decompressions: u64,
    /// Chunks split between the two engines.
    pub hybrid_decompressions: u64,
    /// Chunks the policy routed to the GPU.
    pub routed_gpu: u64,
    /// Chunks the policy routed to the CPU.
    pub routed_cpu: u64,
    /// Chunks the policy split (HYBRID).
    pub routed_hybrid: u64,
}

/// Counts chunks part by part into [`ChunkCounts`]: a chunk counts once,
/// however many parts it has, and as hybrid when both engines ran parts.
#[derive(Debug, Default)]
pub struct ChunkTally {
    /// Chunks by the route the policy chose (gpu, cpu, hybrid).
    by_route: [std::collections::HashSet<usize>; 3],
    /// Chunks with a part the GPU engine decoded, and with one the CPU did.
    on: [std::collections::HashSet<usize>; 2],
    /// The highest-numbered chunk with a part counted.
    furthest: Option<usize>,
}

impl ChunkTally {
    /// A part of chunk `global`, routed `route`, decoded by `engine`.
    pub fn part(&mut self, global: usize, route: crate::policy::Route, engine: Engine) {
        self.by_route[route.index()].insert(global);
        self.on[matches!(engine, Engine::Cpu) as usize].insert(global);
        self.furthest = self.furthest.max(Some(global));
    }

    /// Chunks with at least one part counted.
    pub fn chunks(&self) -> usize {
        self.by_route.iter().map(|s| s.len()).sum()
    }

    /// The highest-numbered chunk with a part counted: with several
    /// workers, each taking its own share, chunks are merged out of order.
    pub fn furthest(&self) -> Option<usize> {
        self.furthest
    }

    /// The counts so far.
    pub fn counts(&self) -> ChunkCounts {
        let [on_gpu, on_cpu] = &self.on;
        ChunkCounts {
            total_decompressions: self.chunks() as u64,
            gpu_decompressions: on_gpu.difference(on_cpu).count() as u64,
            cpu_decompressions: on_cpu.difference(on_gpu).count() as u64,
            hybrid_decompressions: on_gpu.intersection(on_cpu).count() as u64,
            routed_gpu: self.by_route[0].len() as u64,
            routed_cpu: self.by_route[1].len() as u64,
            routed_hybrid: self.by_route[2].len() as u64,
        }
    }
}

/// Accumulates what the merge sees.
pub struct Recorder {
    /// Per route (gpu, cpu, hybrid): end-to-end chunk-part latency (queue + decode + merge).
    route: [Histogram<u64>; 3],
    /// Per stage: queue wait, decode, merge.
    stage: [Histogram<u64>; 3],
    chunks: ChunkTally,
    gpu_parts: u64,
    cpu_parts: u64,
    gpu_us: u64,
    cpu_us: u64,
    cpu_bytes: u64,
    bytes_in: u64,
    bytes_out: u64,
    oom_reroutes: u64,
    /// This process's CPU seconds when the run began.
    cpu_at_start: Option<f64>,
    /// Record latency histograms (`enable_profiling`); counts are kept regardless.
    pub profile: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            route: [hist(), hist(), hist()],
            stage: [hist(), hist(), hist()],
            chunks: Default::default(),
            gpu_parts: 0,
            cpu_parts: 0,
            gpu_us: 0,
            cpu_us: 0,
            cpu_bytes: 0,
            bytes_in: 0,
            bytes_out: 0,
            oom_reroutes: 0,
            cpu_at_start: process_cpu_seconds(),
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
        self.chunks.part(global, route, engine);
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

    /// Chunks with at least one merged part so far.
    pub fn chunks_seen(&self) -> usize {
        self.chunks.chunks()
    }

    /// The highest-numbered chunk merged so far ([`ChunkTally::furthest`]).
    pub fn furthest_chunk(&self) -> Option<usize> {
        self.chunks.furthest()
    }

    /// Each route's latency as HdrHistogram's percentile distribution (the
    /// text `HistogramLogProcessor` writes and `plotFiles.html` reads), for
    /// the routes with samples: (route, text).
    pub fn histogram_texts(&self) -> Vec<(String, String)> {
        ["gpu", "cpu", "hybrid"]
            .iter()
            .zip(&self.route)
            .filter(|(_, h)| !h.is_empty())
            .map(|(name, h)| (name.to_string(), percentile_distribution(h)))
            .collect()
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
        last_sample: Option<crate::pressure::Sample>,
    ) -> Statistics {
        let avg = |us: u64, n: u64| {
            if n == 0 {
                0.0
            } else {
                us as f64 / n as f64 / 1e6
            }
        };
        // The CPU time spent since the run began (other threads of this
        // process included), over the machine's capacity in that time.
        let cpu_util = match (process_cpu_seconds(), self.cpu_at_start) {
            (Some(now), Some(then)) => ((now - then)
                / (wall.as_secs_f64().max(1e-9) * crate::config::cores() as f64))
                .clamp(0.0, 1.0),
            _ => 0.0,
        };
        Statistics {
            chunks: self.chunks.counts(),
            mode_switches: p.mode_switches(),
            memory_pressure_events: p.memory_pressure_events(),
            gpu_oom_reroutes: self.oom_reroutes,
            gpu_memory_saved_mb: if gpu.is_some() && matches!(mode, Mode::Auto | Mode::Hybrid) {
                self.cpu_bytes as f64 / (1 << 20) as f64
            } else {
                0.0
            },
            average_gpu_time: avg(self.gpu_us, self.gpu_parts),
            average_cpu_time: avg(self.cpu_us, self.cpu_parts),
            current_mode: mode.name().to_string(),
            current_engine: matches!(mode, Mode::Auto | Mode::Hybrid)
                .then(|| p.state().name().to_string()),
            gpu_memory_state: last_sample.map(|s| GpuMemoryState {
                total_mb: s.total_mb,
                used_mb: s.used_mb,
                free_mb: s.free_mb(),
                utilization: s.utilization(),
            }),
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
            histogram_texts: self.histogram_texts(),
            latency_curves: self.latency_curves(),
        }
    }
}

/// `h` in HdrHistogram's percentile-distribution text, as the Java
/// `outputPercentileDistribution` writes it (five ticks per half distance,
/// values in microseconds): four columns (Value, Percentile, cumulative
/// TotalCount, 1/(1-Percentile); the last row, at 100%, has three), then
/// the `#[Mean ...]`, `#[Max ...]` and `#[Buckets ...]` footer.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            out += &format!(
                "{:12.3} {:14.12} {:10} {:14.2}\n",
                v.value_iterated_to() as f64,
                q,
                total,
                1.0 / (1.0 - q)
            );
        } else {
            out += &format!(
                "{:12.3} {:14.12} {:10}\n",
                v.value_iterated_to() as f64,
                q,
                total
            );
        }
    }
    out += &format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        h.mean(),
        h.stdev()
    );
    out += &format!(
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.max() as f64,
        h.len()
    );
    out += &format!(
        "#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.buckets(),
        // HdrHistogram's sub-bucket count: 2 * 10^digits, up to a power of two.
        (2 * 10u64.pow(h.sigfig() as u32)).next_power_of_two()
    );
    out
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

/// End-to-end latency of chunk parts (queue + decode + merge), by the route
/// the policy chose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyByRoute {
    /// Parts of GPU-routed chunks.
    pub gpu: Latency,
    /// Parts of CPU-routed chunks.
    pub cpu: Latency,
    /// Parts of split (HYBRID) chunks.
    pub hybrid: Latency,
}

/// Latency of each stage of the graph, over every part.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stages {
    /// From the source handing the chunk out to its decode starting.
    pub queue_wait: Latency,
    /// The decode itself.
    pub decode: Latency,
    /// Placing the decoded bytes in the output.
    pub merge: Latency,
}

/// GPU memory at the end of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuMemoryState {
    /// The card's memory, MB.
    pub total_mb: f64,
    /// In use, MB.
    pub used_mb: f64,
    /// Free (total − used), MB.
    pub free_mb: f64,
    /// used / total, 0 to 1.
    pub utilization: f64,
}

/// A run's statistics (`--stats-json`). A decompression is one chunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Statistics {
    /// Chunks by where they ran and how the policy routed them (their keys
    /// at the top level of the JSON).
    #[serde(flatten)]
    pub chunks: ChunkCounts,
    /// AUTO state changes (GPU to CPU and back).
    pub mode_switches: u64,
    /// Rises of the pressure level into HIGH or CRITICAL, plus GPU out-of-memory errors.
    pub memory_pressure_events: u64,
    /// GPU out-of-memory errors whose part the CPU decoded instead.
    pub gpu_oom_reroutes: u64,
    /// MiB of output the CPU decoded while a GPU was present in AUTO or
    /// HYBRID: device memory the bursting kept free. 0 without a GPU, and in
    /// CPU_ONLY or GPU_ONLY.
    pub gpu_memory_saved_mb: f64,
    /// Mean decode seconds per part on the GPU.
    pub average_gpu_time: f64,
    /// Mean decode seconds per part on the CPU.
    pub average_cpu_time: f64,
    /// The mode at the end of the run (`auto`, `gpu-only`, `cpu-only`, `hybrid`).
    pub current_mode: String,
    /// Where AUTO sends chunks (HYBRID: whether the GPU takes a share) after
    /// the last chunk routed: `gpu` or `cpu`; `null` in GPU_ONLY and CPU_ONLY.
    pub current_engine: Option<String>,
    /// The latest memory-pressure sample (live, or from the replayed trace);
    /// `null` when there is none (no GPU and no trace).
    pub gpu_memory_state: Option<GpuMemoryState>,
    /// The GPU engine's description (card, driver, CUDA and NVRTC versions); `null` without one.
    pub gpu_device: Option<String>,
    /// This process's CPU time over the run's wall time times the cores: a
    /// fraction of the whole machine, 0 to 1 (not a percentage).
    pub avg_cpu_utilization: f64,
    /// Tensors the library's LRU cache served (`decompress_tensor`); 0 for a whole-file run.
    pub cache_hits: u64,
    /// Tensors the library's LRU cache did not hold; 0 for a whole-file run.
    pub cache_misses: u64,
    /// Latency per route.
    pub latency: LatencyByRoute,
    /// Latency per stage.
    pub stages: Stages,
    /// Container bytes read.
    pub bytes_in: u64,
    /// Decoded bytes (the safetensors data region).
    pub bytes_out: u64,
    /// Seconds from the start of the run to its end.
    pub wall_time_s: f64,
    /// Things the run wants said once (no GPU, HYBRID running CPU-only).
    pub notes: Vec<String>,
    /// Each route's latency in HdrHistogram's percentile-distribution text,
    /// for the routes with samples: (route, text) (`--histogram-out`).
    #[serde(skip)]
    pub histogram_texts: Vec<(String, String)>,
    /// Per route with samples: (percentile, µs) points of its latency distribution.
    #[serde(skip)]
    pub latency_curves: Vec<(String, Vec<(f64, u64)>)>,
}
