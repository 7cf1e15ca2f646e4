//! GPU memory pressure: samples of used / total memory, where they come from,
//! and the levels the policy reads from them.
//!
//! Sources: a recorded trace (CSV with header `t_ms,used_mb,total_mb`, the
//! form `--record-pressure` writes), "no GPU", and (with the `cuda` feature)
//! NVML, sampled live on its own thread.
#![forbid(unsafe_code)]

#[cfg(feature = "cuda")]
pub mod nvml;
pub mod trace;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
pub use trace::Trace;

/// One reading of GPU memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the run (or the trace) started.
    pub t_ms: u64,
    /// MiB in use.
    pub used_mb: f64,
    /// MiB on the device.
    pub total_mb: f64,
}

impl Sample {
    /// used / total.
    pub fn utilization(&self) -> f64 {
        if self.total_mb > 0.0 {
            self.used_mb / self.total_mb
        } else {
            1.0
        }
    }

    /// total - used.
    pub fn free_mb(&self) -> f64 {
        self.total_mb - self.used_mb
    }

    /// The level of this sample's utilization.
    pub fn level(&self) -> Level {
        Level::of(self.utilization())
    }
}

/// Memory-pressure levels by utilization u, as the design defines them: LOW
/// u < 0.50, MODERATE u < 0.75, HIGH u ≤ 0.90, CRITICAL above 90%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// u < 0.50.
    Low,
    /// 0.50 <= u < 0.75.
    Moderate,
    /// 0.75 <= u <= 0.90.
    High,
    /// u > 0.90.
    Critical,
}

impl Level {
    /// The level of `utilization` (used / total).
    pub fn of(utilization: f64) -> Self {
        if utilization < 0.50 {
            Level::Low
        } else if utilization < 0.75 {
            Level::Moderate
        } else if utilization <= 0.90 {
            Level::High
        } else {
            Level::Critical
        }
    }

    /// The level in lower case, as logs and statistics print it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Moderate => "moderate",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// Where samples come from.
pub trait PressureSource: Send + Sync {
    /// The latest sample at time `t_ms` (the source's clock), or `None` when
    /// there is no GPU to sample.
    fn sample_at(&self, t_ms: u64) -> Option<Sample>;
    /// Whether a GPU stands behind the samples.
    fn has_gpu(&self) -> bool;
    /// Every sample taken so far, for a live source (`--record-pressure`).
    fn history(&self) -> Option<Vec<Sample>> {
        None
    }
    /// Readings that failed so far, and the last failure in words: a live
    /// source keeps its latest good sample meanwhile, and a run's notes say
    /// how many failed while it went.
    fn failed_reads(&self) -> (u64, Option<String>) {
        (0, None)
    }
}

/// The live source of this build: NVML on GPU `device`, sampled every
/// `interval_ms` (with the `cuda` feature), or why there is none.
pub fn live(device: u32, interval_ms: u64) -> Result<Arc<dyn PressureSource>> {
    #[cfg(feature = "cuda")]
    {
        Ok(Arc::new(nvml::Nvml::start(device, interval_ms)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (device, interval_ms);
        Err(Error::InvalidArgument(
            "no live GPU memory readings: built without the `cuda` feature, this build has no NVML"
                .into(),
        ))
    }
}

/// A device that reports its own memory: what a run reads when NVML
/// cannot. Every GPU engine is one (`engine::gpu`); the monitor knows only
/// this trait, so it does not depend on the engine.
pub trait MemoryReport: Send + Sync {
    /// Device memory, (free, total) bytes, where the device can tell.
    fn free_and_total(&self) -> Option<(u64, u64)>;
}

/// GPU memory as the device reports it (the CUDA driver's free/total), for
/// when NVML is missing.
pub struct EngineMemory {
    report: Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>,
    started: std::time::Instant,
}

impl EngineMemory {
    /// The readings of `device`, timed from now.
    pub fn new<M: MemoryReport + ?Sized + 'static>(device: Arc<M>) -> Self {
        EngineMemory {
            report: Box::new(move || device.free_and_total()),
            started: std::time::Instant::now(),
        }
    }
}

impl PressureSource for EngineMemory {
    fn sample_at(&self, _t_ms: u64) -> Option<Sample> {
        let (free, total) = (self.report)()?;
        const MB: f64 = 1024.0 * 1024.0;
        Some(Sample {
            t_ms: self.started.elapsed().as_millis() as u64,
            used_mb: total.saturating_sub(free) as f64 / MB,
            total_mb: total as f64 / MB,
        })
    }
    fn has_gpu(&self) -> bool {
        true
    }
}

/// The live source for a run on `engine`: NVML on GPU `device`, else the
/// engine's own free/total memory, with a note saying so.
pub fn for_engine<M: MemoryReport + ?Sized + 'static>(
    engine: Arc<M>,
    device: u32,
    interval_ms: u64,
) -> (Arc<dyn PressureSource>, Option<String>) {
    match live(device, interval_ms) {
        Ok(source) => (source, None),
        Err(e) => (
            Arc::new(EngineMemory::new(engine)),
            Some(format!(
                "{e}; reading GPU memory from the CUDA driver instead"
            )),
        ),
    }
}

/// Writes what a live source sampled as a trace CSV (`t_ms,used_mb,total_mb`)
/// that `--pressure-trace` replays.
pub fn record(source: &dyn PressureSource, path: &Path) -> Result<usize> {
    let samples = source.history().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: the memory-pressure source is not live: nothing to record",
            path.display()
        ))
    })?;
    let n = samples.len();
    let trace = Trace::new(samples)
        .map_err(|e| e.context(format_args!("{}: cannot record", path.display())))?;
    trace.write(path)?;
    Ok(n)
}

/// No GPU: no samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGpu;

impl PressureSource for NoGpu {
    fn sample_at(&self, _t_ms: u64) -> Option<Sample> {
        None
    }
    fn has_gpu(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_have_the_documented_bounds() {
        assert_eq!(Level::of(0.0), Level::Low);
        assert_eq!(Level::of(0.4999), Level::Low);
        assert_eq!(Level::of(0.50), Level::Moderate);
        assert_eq!(Level::of(0.7499), Level::Moderate);
        assert_eq!(Level::of(0.75), Level::High);
        assert_eq!(Level::of(0.8999), Level::High);
        // The design: CRITICAL is above 90%, so exactly 90% is still HIGH.
        assert_eq!(Level::of(0.90), Level::High);
        assert_eq!(Level::of(0.9001), Level::Critical);
        assert_eq!(Level::of(1.0), Level::Critical);
    }
}
