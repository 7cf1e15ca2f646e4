//! Policy scenarios: pressure traces replayed through the auto mode on a
//! container of small chunks, so a trace meets many decisions; a replay is
//! deterministic, and the bench checks that it is.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use super::decode::{p99, run_options, timed_runs};
use super::{BenchOptions, Scenario, Stat};
use crate::compress::{compress_file, CompressOptions};
use crate::engine::gpu::GpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::policy::Mode;
use crate::pressure::Trace;
use crate::progress::Progress;

/// Replays every trace of `opts` on `input` compressed into `dir` in small
/// chunks, with the most workers; the replay step spreads each trace over
/// the whole file.
#[allow(clippy::too_many_arguments)]
pub(super) fn replay_all(
    opts: &BenchOptions,
    input: &Path,
    dir: &Path,
    runs_each: usize,
    data: &[u8],
    gpu: &Option<Arc<dyn GpuEngine>>,
    bar: &Progress,
) -> Result<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    if opts.traces.is_empty() {
        return Ok(scenarios);
    }
    let small = dir.join("scenario.padic");
    compress_file(
        input,
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
        let mut s = scenario(&sc, name, trace, step, w, runs_each, data, gpu)?;
        if let Some(dir) = &opts.timelines {
            s.timeline = Some(draw_timeline(
                &sc,
                &s,
                dir,
                data,
                gpu,
                Trace::parse(Path::new(name), text)?,
            )?);
        }
        scenarios.push(s);
        bar.advance(1);
    }
    Ok(scenarios)
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
            s.chunks.routed_gpu,
            s.chunks.routed_cpu,
            s.chunks.routed_hybrid,
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
        // What the policy chose (without a GPU, every chunk ran on the CPU).
        chunks_gpu: s.chunks.routed_gpu,
        chunks_cpu: s.chunks.routed_cpu,
        chunks_hybrid: s.chunks.routed_hybrid,
        gb_per_s: Stat::of_throughput(reference.len() as u64, &times),
        p99_us: Stat::of(&p99s),
        latency_curves: s.latency_curves,
        notes: s.notes,
        timeline: None,
    })
}

/// Replays `s` once more, drawing its switching timeline into `dir`.
fn draw_timeline(
    c: &Arc<Container>,
    s: &Scenario,
    dir: &Path,
    reference: &[u8],
    gpu: &Option<Arc<dyn GpuEngine>>,
    trace: Trace,
) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("timeline-{}.svg", s.name));
    let mut o = run_options(Mode::Auto, s.workers, None, gpu)?;
    o.trace = Some(trace);
    o.replay_step_ms = s.replay_step_ms;
    o.timeline = Some(path.clone());
    timed_runs(
        c,
        &o,
        1,
        reference,
        &format!("scenario {} (timeline)", s.name),
    )?;
    Ok(path)
}
