//! Decompression: the bare decode loop and the graph in each mode, worker
//! count and target precision, every decode checked byte for byte; the
//! graph's overhead and worker scaling as ratios of runs made back to back.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{BenchOptions, DecodeRun, Overhead, Scaling, Stat};
use crate::config::{Config, ConfigLayer};
use crate::engine::gpu::GpuEngine;
use crate::engine::CpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::pipeline::RunOptions;
use crate::policy::Mode;
use crate::progress::Progress;

/// The target precisions to measure: `Some(0)` asks for half of the
/// container's fewest digits; each target once, in order.
pub(super) fn targets(c: &Container, asked: &[Option<u32>]) -> Vec<Option<u32>> {
    let min_precision = (0..c.header().tensors.len())
        .filter_map(|t| c.layout(t).map(|l| l.precision))
        .min();
    let mut unique = Vec::new();
    for t in asked {
        let t = match (t, min_precision) {
            (Some(0), Some(p)) => Some((p / 2).max(1)),
            (Some(0), None) => None,
            (t, _) => *t,
        };
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    unique
}

/// Two untimed decodes: memory freed by the compression step may have gone
/// back to the host of a VM (free page reporting), and the first decodes
/// into it pay the host's faults as well.
pub(super) fn warm_up(c: &Container) -> Result<()> {
    let engine = CpuEngine::new(None)?;
    for _ in 0..2 {
        engine.decompress_to_memory(c, None)?;
    }
    Ok(())
}

/// Every decode configuration: per worker count and target, the bare loop
/// (whose output every graph run must equal; with every digit, `data`),
/// then the graph in each of `modes`, and the cpu-only graph's overhead.
#[allow(clippy::too_many_arguments)]
pub(super) fn decompression(
    c: &Arc<Container>,
    input: &Path,
    workers: &[usize],
    targets: &[Option<u32>],
    modes: &[Mode],
    runs_each: usize,
    data: &[u8],
    gpu: &Option<Arc<dyn GpuEngine>>,
    bar: &Progress,
) -> Result<(Vec<DecodeRun>, Vec<Overhead>)> {
    let mut decompression = Vec::new();
    let mut graph_overhead = Vec::new();
    for &w in workers {
        let engine = CpuEngine::new(Some(w))?;
        for &target in targets {
            let (run, reference) = bare_runs(c, &engine, w, target, runs_each, data, input)?;
            decompression.push(run);
            bar.advance(1);
            for &mode in modes {
                let run = graph_runs(c, mode, w, target, runs_each, &reference, gpu)?;
                decompression.push(run);
                bar.advance(1);
            }
            if modes.contains(&Mode::CpuOnly) {
                graph_overhead.push(paired_overhead(
                    c, &engine, w, target, runs_each, &reference,
                )?);
            }
        }
    }
    Ok((decompression, graph_overhead))
}

/// The bare loop on `engine` (`runs` decodes, the first a warm-up), and its
/// output: the reference every graph run must equal. With every digit it
/// must equal `data`, the input's data region.
fn bare_runs(
    c: &Container,
    engine: &CpuEngine,
    workers: usize,
    target: Option<u32>,
    runs: usize,
    data: &[u8],
    input: &Path,
) -> Result<(DecodeRun, Vec<u8>)> {
    let mut times = Vec::new();
    let mut reference = Vec::new();
    for i in 0..runs {
        let (model, st) = engine.decompress_to_memory(c, target)?;
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
    let run = DecodeRun {
        mode: "bare".into(),
        workers,
        target_precision: target,
        gb_per_s: Stat::of_throughput(reference.len() as u64, &times),
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
    };
    Ok((run, reference))
}

/// [`Scaling`] of the cpu-only graph with the most workers over one worker,
/// when both counts are measured and the cpu-only mode is.
pub(super) fn worker_scaling(
    c: &Arc<Container>,
    opts: &BenchOptions,
    modes: &[Mode],
    runs_each: usize,
    data: &[u8],
) -> Result<Option<Scaling>> {
    let most = opts.workers.iter().copied().max().unwrap_or(1);
    if modes.contains(&Mode::CpuOnly) && opts.workers.contains(&1) && most > 1 {
        Ok(Some(paired_scaling(c, most, runs_each, data)?))
    } else {
        Ok(None)
    }
}

pub(super) fn run_options(
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

/// One in-memory graph decode with `o`, checked against `reference`
/// (`what` names the run in the error): its seconds and statistics.
fn graph_run(
    c: &Arc<Container>,
    o: &RunOptions,
    reference: &[u8],
    what: &str,
) -> Result<(f64, crate::stats::Statistics)> {
    let t = Instant::now();
    let (model, stats) = crate::pipeline::decompress_to_memory(c.clone(), o)?;
    let secs = t.elapsed().as_secs_f64();
    if model.data != reference {
        return Err(Error::Decode(format!(
            "bench: {what} decoded bytes that differ from the bare loop's"
        )));
    }
    Ok((secs, stats))
}

/// Seconds of one checked graph decode ([`graph_run`]).
fn graph_secs(c: &Arc<Container>, o: &RunOptions, reference: &[u8], what: &str) -> Result<f64> {
    graph_run(c, o, reference, what).map(|(secs, _)| secs)
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
pub(super) fn timed_runs(
    c: &Arc<Container>,
    o: &RunOptions,
    runs: usize,
    reference: &[u8],
    what: &str,
) -> Result<(Vec<f64>, Vec<crate::stats::Statistics>)> {
    let mut times = Vec::new();
    let mut stats = Vec::new();
    for i in 0..runs.max(1) {
        let (secs, s) = graph_run(c, o, reference, what)?;
        if i > 0 {
            times.push(secs);
        }
        stats.push(s);
    }
    Ok((times, stats))
}

/// The worst p99 over the routes.
pub(super) fn p99(s: &crate::stats::Statistics) -> u64 {
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
        chunks_gpu: s.chunks.gpu_decompressions,
        chunks_cpu: s.chunks.cpu_decompressions,
        chunks_hybrid: s.chunks.hybrid_decompressions,
        p99_us: p99(&s),
        notes: s.notes,
    })
}
