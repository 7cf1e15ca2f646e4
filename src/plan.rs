//! `padic-burst plan`: the routing decisions a run would take, replayed from a
//! recorded pressure trace, without decoding and without a GPU.
//!
//! Chunk `k` in global order (for a packed directory, shards in index
//! order, as one `decompress` run numbers them; tensors in file order, chunks
//! in order) is
//! decided at virtual time `k * step_ms` with the latest sample whose `t_ms`
//! is at or before it (the first sample before any); the switch delay runs on
//! that virtual clock. The same trace and container give the same plan.

use serde::Serialize;

use crate::format::Container;
use crate::policy::{Decision, Mode, Policy, PolicySettings};
use crate::pressure::{PressureSource, Trace};

/// One chunk's decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanLine {
    /// The chunk's index in global order (across shards in index order,
    /// then tensors in file order).
    pub chunk: usize,
    /// The shard the chunk belongs to (a packed directory's; absent for one
    /// container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The name of the tensor the chunk belongs to.
    pub tensor: String,
    /// The route chosen: `gpu`, `cpu` or `hybrid`.
    pub route: &'static str,
    /// The GPU's share of the chunk, 0..=1 (1 for `gpu`, 0 for `cpu`).
    pub gpu_fraction: f64,
    /// The pressure level of the sample: `low`, `moderate`, `high` or `critical`.
    pub level: &'static str,
    /// GPU memory used / total in the sample, 0..=1.
    pub utilization: f64,
    /// Free GPU memory in the sample, in MB.
    pub free_mb: f64,
}

/// The run's totals.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanSummary {
    /// Chunks decided.
    pub chunks: usize,
    /// The mode replayed: `auto`, `gpu-only`, `cpu-only` or `hybrid`.
    pub mode: &'static str,
    /// AUTO state changes (GPU to CPU or back) over the replay.
    pub mode_switches: u64,
    /// Rises of the pressure level into HIGH or CRITICAL over the replay.
    pub memory_pressure_events: u64,
}

/// Virtual milliseconds between consecutive chunks in a replay:
/// `--replay-step-ms N`, or `auto`, which spreads the trace over the chunks:
/// the least whole step at which the last chunk comes at or after the
/// trace's last sample (so every sample is seen; the last few chunks may
/// come up to a step after it, on that sample), and at least 1 ms, which a
/// trace shorter than the chunks leaves behind ([`beyond_the_trace`] says
/// so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    /// This many milliseconds.
    Fixed(u64),
    /// The trace's span over the chunks.
    Auto,
}

impl ReplayStep {
    /// Parses `auto` or a whole number of milliseconds.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(ReplayStep::Auto),
            n => n.parse::<u64>().map(ReplayStep::Fixed).map_err(|_| {
                format!("--replay-step-ms {s}: expected `auto` or a whole number, at least 0")
            }),
        }
    }

    /// The step for `chunks` chunks over `trace`.
    pub fn millis(self, trace: &Trace, chunks: usize) -> u64 {
        match self {
            ReplayStep::Fixed(ms) => ms,
            ReplayStep::Auto => {
                let span = trace.samples().last().map_or(0, |s| s.t_ms);
                span.div_ceil(chunks.saturating_sub(1).max(1) as u64).max(1)
            }
        }
    }
}

/// What a replay of `chunks` chunks at `step` does past the trace's last
/// sample, said when it does: those chunks are routed on that sample. An
/// `auto` step ends at the trace's end by design, and is said only where
/// the trace is shorter than 1 ms a chunk.
pub fn beyond_the_trace(trace: &Trace, chunks: usize, step: ReplayStep) -> Option<String> {
    // One sample is every chunk's reading, wherever the chunks fall.
    let samples = trace.samples();
    if samples.len() < 2 {
        return None;
    }
    let end = samples[samples.len() - 1].t_ms;
    let step_ms = step.millis(trace, chunks);
    if step_ms == 0 || (step == ReplayStep::Auto && end >= chunks.saturating_sub(1) as u64) {
        return None;
    }
    let first_after = usize::try_from((end / step_ms).checked_add(1)?).ok()?;
    let n = chunks.checked_sub(first_after).filter(|&n| n > 0)?;
    Some(format!(
        "the pressure trace ends at {end} ms: at {step_ms} ms a chunk, {n} of {chunks} chunks \
         (from chunk {first_after}) are routed on its last sample"
    ))
}

/// The switching timeline of a plan (see [`crate::timeline`]).
pub fn timeline(
    title: String,
    trace: &Trace,
    settings: &PolicySettings,
    lines: &[PlanLine],
    step_ms: u64,
) -> crate::timeline::Timeline {
    crate::timeline::Timeline {
        title,
        samples: trace.samples().to_vec(),
        threshold: settings.memory_pressure_threshold,
        hysteresis: settings.hysteresis_factor,
        free_threshold_mb: settings.gpu_memory_threshold_mb,
        chunks: lines
            .iter()
            .map(|l| crate::timeline::TimelineChunk {
                chunk: l.chunk,
                t_ms: l.chunk as f64 * step_ms as f64,
                route: l.route,
                engine: None,
            })
            .collect(),
        note: None,
    }
}

/// The virtual time at which a replay decides chunk `k` (`step_ms` apart):
/// the one rule of `plan`, the graph's router and its snapshots.
pub fn replay_time(k: usize, step_ms: u64) -> u64 {
    (k as u64).saturating_mul(step_ms)
}

/// The trace replay `plan` and `decompress --pressure-trace` share: chunk
/// `k` decided at virtual time `k * step_ms` on the sample the trace holds
/// then, for `chunks` chunks; `policy` keeps the replay's state.
pub fn replay<'a>(
    policy: &'a mut Policy,
    trace: &'a Trace,
    chunks: usize,
    step_ms: u64,
) -> impl Iterator<Item = Decision> + 'a {
    (0..chunks).map(move |k| {
        let now = replay_time(k, step_ms);
        policy.decide(now, trace.sample_at(now))
    })
}

/// Replays `trace` over every chunk of `c` (a GPU is assumed present).
pub fn plan(
    c: &Container,
    trace: &Trace,
    mode: Mode,
    settings: PolicySettings,
    step_ms: u64,
) -> (Vec<PlanLine>, PlanSummary) {
    plan_shards(&[(None, c)], trace, mode, settings, step_ms)
}

/// Replays `trace` over every chunk of every shard, numbered on across the
/// shards in the order given (each named in its lines, where it has a name).
pub fn plan_shards(
    shards: &[(Option<String>, &Container)],
    trace: &Trace,
    mode: Mode,
    settings: PolicySettings,
    step_ms: u64,
) -> (Vec<PlanLine>, PlanSummary) {
    let mut policy = Policy::new(settings, mode, true);
    let names = shards.iter().flat_map(|(shard, c)| {
        c.header()
            .tensors
            .iter()
            .flat_map(move |t| t.chunks.iter().map(move |_| (shard, &t.name)))
    });
    let chunks = names.clone().count();
    let lines = replay(&mut policy, trace, chunks, step_ms)
        .zip(names)
        .enumerate()
        .map(|(k, (d, (shard, tensor)))| {
            let s = d.sample.expect("a trace always has a sample");
            PlanLine {
                chunk: k,
                shard: shard.clone(),
                tensor: tensor.clone(),
                route: d.route.name(),
                gpu_fraction: d.route.gpu_fraction(),
                level: s.level().name(),
                utilization: s.utilization(),
                free_mb: s.free_mb(),
            }
        })
        .collect();
    let summary = PlanSummary {
        chunks,
        mode: mode.name(),
        mode_switches: policy.mode_switches(),
        memory_pressure_events: policy.memory_pressure_events(),
    };
    (lines, summary)
}
