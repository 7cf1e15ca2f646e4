//! The one-line status of a run in progress, as the progress bar shows it:
//! the mode and the AUTO state, the latest GPU memory reading (or "no GPU"),
//! the CPU utilisation, the decode rate and the chunks per route so far.

use crate::policy::EngineState;

use super::Snapshot;

/// The status line of `now`; `before` (the previous snapshot of the same
/// run, if any) makes the CPU utilisation the one since then rather than
/// the run's average.
pub fn line(now: &Snapshot, before: Option<&Snapshot>) -> String {
    let s = &now.statistics;
    let mode = match (s.current_mode.as_str(), now.engine_state) {
        ("auto", EngineState::Gpu) => "auto (GPU)".to_string(),
        ("auto", EngineState::Cpu) => "auto (CPU)".to_string(),
        (other, _) => other.to_string(),
    };
    let memory = |m: &crate::stats::GpuMemoryState| {
        format!("{:.0} MiB free, {:.0} MiB used", m.free_mb, m.used_mb)
    };
    let gpu = match (&s.gpu_device, &s.gpu_memory_state) {
        (Some(_), Some(m)) => format!("GPU {}", memory(m)),
        (Some(_), None) => "GPU (no reading yet)".to_string(),
        (None, Some(m)) => format!("no GPU (trace: {})", memory(m)),
        (None, None) => "no GPU".to_string(),
    };
    let done = s.chunks.routed_gpu + s.chunks.routed_cpu + s.chunks.routed_hybrid;
    // The chunk counts last: a narrow terminal cuts the line's end.
    format!(
        "{mode} | {gpu} | CPU {:.0}% | {:.2} GB/s | chunks {done}/{}: gpu {} cpu {} hybrid {}",
        cpu_utilization(now, before.filter(|b| b.run == now.run)) * 100.0,
        s.bytes_out as f64 / s.wall_time_s.max(1e-9) / 1e9,
        now.chunks_total,
        s.chunks.routed_gpu,
        s.chunks.routed_cpu,
        s.chunks.routed_hybrid,
    )
}

/// The fraction of the machine's CPU this process used between `before`
/// and `now` (the run's average without `before`, or when no time passed).
pub fn cpu_utilization(now: &Snapshot, before: Option<&Snapshot>) -> f64 {
    let (a, b) = (&now.statistics, before.map(|b| &b.statistics));
    match b {
        Some(b) if a.wall_time_s > b.wall_time_s => {
            let used =
                a.avg_cpu_utilization * a.wall_time_s - b.avg_cpu_utilization * b.wall_time_s;
            (used / (a.wall_time_s - b.wall_time_s)).clamp(0.0, 1.0)
        }
        _ => a.avg_cpu_utilization,
    }
}
