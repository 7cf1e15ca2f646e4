//! The decompression graph, on timely dataflow:
//!
//! ```text
//! source (work queue, bounded read-ahead) -> route -> decode (CPU / GPU) -> merge (exchange by tensor) -> sink
//! ```
//!
//! Where each idea lives:
//! - [`records`]: the chunk handles and decoded parts that flow;
//! - the source ([`padic_burst_operators::WorkQueue::feed`]): workers take
//!   chunks from a shared queue, many chunks to a timestamp, and each holds
//!   back while `prefetch_factor` of its chunks are undecoded, so memory
//!   stays bounded;
//! - `routers`: each chunk's route, replayed from a pressure trace (the same
//!   decisions `plan` prints) or live from the pressure source;
//! - `decoder`: CPU and GPU decoding, a HYBRID chunk split by element range;
//! - `sink` and `placement`: the merge brings every part of a tensor to one
//!   worker, which writes it at its offset, into a file or memory;
//! - `ledger`: every chunk arrived exactly once, checked after the run;
//! - `shards`: one run over several containers (a packed checkpoint
//!   directory), each chunk task carrying its shard;
//! - `cluster`: timely's arguments, and runs over several processes;
//!   `agreement`: its processes agree before writing, and on the outcome;
//!   `mesh`: the connections timely's workers talk over.
//!
//! Failures travel as data (typed [`crate::Error`]s, on the decode's and the
//! merge's error outputs) and fail the run with the first one, by place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use padic_burst_operators::{Decode, Feed, Merge, Route as RouteOp, WorkQueue};
use timely::dataflow::operators::{Concat, Exchange as _, Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::config::Config;
use crate::engine::gpu::GpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::policy::{Mode, Policy, Route};
use crate::pressure::{PressureSource, Trace};
use crate::stats::Statistics;

mod affinity;
mod agreement;
mod cluster;
mod decoder;
mod ledger;
mod mesh;
mod placement;
mod pool;
mod precision;
pub mod records;
mod routers;
mod shards;
mod sink;

use shards::Only;

pub use affinity::{current_affinity, pin_current_thread};
pub use cluster::Cluster;
pub(crate) use placement::Placement;
pub(crate) use precision::TargetPrecision;
pub use shards::{
    decompress_files, decompress_tensors, decompress_to_memory_all, ShardFigures, ShardedRun,
};

use cluster::Timely;
use decoder::ChunkDecoder;
use placement::{MemoryPlacement, StreamPlacement};
use pool::BufferPool;
use records::{ChunkTask, Failure, MergeReceipt};
use routers::{LiveRouter, PlannedRouter};
use shards::ShardRun;
use sink::{MergeState, PartSink, StatsSource};

/// The source's handle on the graph's input.
type ChunkInput = InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<ChunkTask>>>;

/// Chunks a worker sends under one timestamp: many chunks share one, so the
/// graph's per-timestamp cost is spread thin.
const EPOCH_CHUNKS: usize = 64;

/// How to run a decompression.
#[derive(Clone)]
pub struct RunOptions {
    /// How chunks are routed: AUTO, GPU_ONLY, CPU_ONLY or HYBRID.
    pub mode: Mode,
    /// The validated configuration (workers, thresholds, precision, GPU device).
    pub config: Config,
    /// Decode to this many digits (`None`: all stored).
    pub target_precision: Option<u32>,
    /// Replay routing from this trace (virtual time `k * replay_step_ms`).
    pub trace: Option<Trace>,
    /// Virtual milliseconds between two chunks when replaying `trace` (default 10).
    pub replay_step_ms: u64,
    /// The GPU engine, when there is one.
    pub gpu: Option<Arc<dyn GpuEngine>>,
    /// Why there is none (said once in the notes; GPU_ONLY's error).
    pub gpu_absent: Option<String>,
    /// Live memory-pressure readings (NVML with the `cuda` feature); without
    /// one, AUTO keeps its state and HYBRID its measured split.
    pub pressure: Option<Arc<dyn PressureSource>>,
    /// Timely's own arguments (`-w N`); without them, `num_cpu_workers` threads.
    pub timely_args: Vec<String>,
    /// Write, per part, which engine decoded which element range.
    pub placement_log: Option<std::path::PathBuf>,
    /// Where to draw the run's switching timeline (SVG), if anywhere.
    pub timeline: Option<std::path::PathBuf>,
    /// Report the decoded bytes here (a bar on a terminal).
    pub progress: Option<Arc<crate::progress::Progress>>,
    /// Hand chunks out in order, from one queue for all workers (a streamed
    /// output), instead of a contiguous share for each worker.
    pub ordered: bool,
    /// Follow the run here, for snapshots of its statistics while it goes.
    pub monitor: Option<crate::monitor::Monitor>,
}

impl RunOptions {
    /// Options for a run in `mode` under `config`: all digits, live routing,
    /// no GPU, trace, log or progress yet (the caller fills those in).
    pub fn new(mode: Mode, config: Config) -> Self {
        RunOptions {
            mode,
            config,
            target_precision: None,
            trace: None,
            replay_step_ms: 10,
            gpu: None,
            gpu_absent: None,
            pressure: None,
            timely_args: Vec::new(),
            placement_log: None,
            timeline: None,
            progress: None,
            ordered: false,
            monitor: None,
        }
    }
}

/// Decompresses `c` into the safetensors file `output` through the dataflow graph.
pub fn decompress_file(c: Arc<Container>, output: &Path, opts: &RunOptions) -> Result<Statistics> {
    let timely = Timely::parse(opts)?;
    if timely.cluster.processes > 1 {
        return cluster::decompress_file(c, output, opts, timely);
    }
    // The null device needs no order: it takes the file path below, which
    // drops the bytes (`shards::decompress_files`).
    let stream = if crate::output::is_null_device(output) {
        None
    } else {
        crate::output::open_stream(output)?
    };
    if let Some((path, dest)) = stream {
        // A stream takes the bytes in order as they decode: chunks are
        // handed out in order, and early parts wait (bounded) in memory.
        let out = Arc::new(StreamPlacement::prepare(dest, path, &c)?);
        let ordered = RunOptions {
            ordered: true,
            ..opts.clone()
        };
        let data_len = c.header().data_len;
        let placed: Arc<dyn Placement> = out.clone();
        let (stats, _) = run(vec![(c, placed)], &ordered, timely, Only::ALL, None)?;
        out.finish(data_len)?;
        return Ok(stats);
    }
    // A file: the one-shard case of a sharded run (temporary name, renamed
    // once the run has succeeded).
    Ok(shards::decompress_files(&[(c, output.to_path_buf())], opts)?.statistics)
}

/// Decodes every container of `files` into its file, all inside the
/// directory `temp`, as one process of the cluster timely's arguments name
/// (`-n`, `-p`, `-h`), in one graph run: every process writes its chunks
/// into the same files, and process 0, once all is well, runs `complete`
/// and renames `temp` to `target` (see `graph::cluster`).
pub fn decompress_files_in_cluster(
    files: Vec<(Arc<Container>, PathBuf)>,
    temp: &Path,
    target: &Path,
    complete: &dyn Fn() -> Result<()>,
    opts: &RunOptions,
) -> Result<ShardedRun> {
    let timely = Timely::parse(opts)?;
    let shared = cluster::Shared {
        temp: temp.to_path_buf(),
        target: target.to_path_buf(),
        files,
    };
    cluster::decompress_shared(shared, complete, opts, timely)
}

/// The cluster timely's arguments in `opts` name (one process when none).
pub fn cluster_of(opts: &RunOptions) -> Result<Cluster> {
    Ok(Timely::parse(opts)?.cluster)
}

/// Decompresses `c` into memory through the dataflow graph: the safetensors
/// data region (see [`crate::engine::DecodedModel`]).
pub fn decompress_to_memory(
    c: Arc<Container>,
    opts: &RunOptions,
) -> Result<(crate::engine::DecodedModel, Statistics)> {
    let (mut models, r) = shards::to_memory(&[c], opts, shards::one_process(opts)?, None)?;
    let model = models
        .pop()
        .ok_or_else(|| Error::Internal("no model decoded".into()))?;
    Ok((model, r.statistics))
}

/// Decompresses one tensor into memory through the dataflow graph: only its
/// chunks are read (for a small tensor that shares chunks, the run's, of at
/// most a chunk's bytes).
pub fn decompress_tensor(
    c: Arc<Container>,
    tensor: usize,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Statistics)> {
    let len = c.header().tensors.get(tensor).map_or(0, |t| t.byte_len);
    decompress_tensor_bytes(c, tensor, 0..len, opts)
}

/// Decompresses the chunks of tensor `owner` (a [`crate::format::Header::chunk_owner`]):
/// its bytes and those of every tensor that shares its chunks, which follow
/// it ([`crate::format::Header::chunked_range`]).
pub(crate) fn decompress_chunk_run(
    c: Arc<Container>,
    owner: usize,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Statistics)> {
    let range = c.header().chunked_range(owner);
    decode_into_memory(c, owner, range, None, opts)
}

/// Decompresses the bytes `bytes` (offsets within the tensor) of tensor
/// `tensor`: only the chunks that hold them are decoded (for a tensor that
/// shares chunks with other small ones, the run of them). A range past the
/// tensor's end is an error.
pub fn decompress_tensor_bytes(
    c: Arc<Container>,
    tensor: usize,
    bytes: std::ops::Range<u64>,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Statistics)> {
    let h = c.header();
    let t = h.tensors.get(tensor).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no tensor {tensor} (it has {})",
            c.path().display(),
            h.tensors.len()
        ))
    })?;
    if bytes.start > bytes.end || bytes.end > t.byte_len {
        return Err(Error::InvalidArgument(format!(
            "{}: bytes {}..{} of tensor '{}', which has {}",
            c.path().display(),
            bytes.start,
            bytes.end,
            t.name,
            t.byte_len
        )));
    }
    let owner = h.chunk_owner(tensor);
    let (start, end) = (t.data_offset + bytes.start, t.data_offset + bytes.end);
    let (data, at, stats) = if h.shares_chunks(tensor) {
        let (data, stats) = decompress_chunk_run(c.clone(), owner, opts)?;
        (data, h.chunked_range(owner).start, stats)
    } else {
        // The chunks that meet the range, end to end (none for an empty one).
        let unit = t.unit();
        let mut covered: Option<(u64, u64)> = None;
        let mut off = t.data_offset;
        for ch in &t.chunks {
            let len = ch.elements * unit;
            if off < end && off + len > start {
                covered = Some((covered.map_or(off, |c| c.0), off + len));
            }
            off += len;
        }
        let covered = covered.unwrap_or((start, start));
        let (data, stats) = decode_into_memory(
            c.clone(),
            owner,
            covered.0..covered.1,
            Some((start, end)),
            opts,
        )?;
        (data, covered.0, stats)
    };
    let from = (start - at) as usize;
    let len = (end - start) as usize;
    if from == 0 && data.len() == len {
        return Ok((data, stats));
    }
    Ok((data[from..from + len].to_vec(), stats))
}

/// One graph run over tensor `owner`'s chunks (those meeting `bytes` of the
/// data region, where given) into a buffer holding `range` of the data region.
fn decode_into_memory(
    c: Arc<Container>,
    owner: usize,
    range: std::ops::Range<u64>,
    bytes: Option<(u64, u64)>,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Statistics)> {
    let out = Arc::new(MemoryPlacement::new(
        crate::engine::cpu::output_buffer((range.end - range.start) as usize),
        range.start,
    ));
    let (stats, _) = run(
        vec![(c, out.clone() as Arc<dyn Placement>)],
        opts,
        shards::one_process(opts)?,
        Only {
            tensors: Some(&[(0, owner)]),
            bytes,
        },
        None,
    )?;
    Ok((MemoryPlacement::into_inner(out)?, stats))
}

/// Tensor `tensor`'s bytes within `data`, the decoded chunks of `owner`.
pub(crate) fn run_part<'a>(
    h: &crate::format::Header,
    owner: usize,
    tensor: usize,
    data: &'a [u8],
) -> &'a [u8] {
    let t = &h.tensors[tensor];
    let at = (t.data_offset - h.chunked_range(owner).start) as usize;
    &data[at..at + t.byte_len as usize]
}

/// What every worker of a run shares: its fixed inputs, and the state the
/// merges fill.
struct Shared {
    /// Every shard's container, tables and output, in index order.
    shards: Arc<Vec<ShardRun>>,
    /// This process's chunks (its share of the output bytes, in global order).
    tasks: Vec<ChunkTask>,
    cluster: Cluster,
    mode: Mode,
    gpu: Option<Arc<dyn GpuEngine>>,
    /// Chunks a worker takes from the queue at a time.
    cpu_batch: usize,
    /// When a GPU takes work, the workers' batches add up to this many.
    gpu_batch: Option<usize>,
    prefetch_factor: usize,
    affinity: Option<Vec<usize>>,
    pressure: Arc<dyn PressureSource>,
    policy: Arc<Mutex<Policy>>,
    /// Every chunk's route, when decided up front.
    planned: Option<Arc<Vec<Route>>>,
    state: Arc<Mutex<MergeState>>,
    abort: Arc<AtomicBool>,
    /// Made by the first worker, which knows how many there are.
    queue: OnceLock<WorkQueue>,
    pool: Arc<BufferPool>,
    started: Instant,
    /// Set once the workers run (a cluster's processes have all connected).
    formed: Option<Arc<AtomicBool>>,
    progress: Option<Arc<crate::progress::Progress>>,
    /// Chunks go out in order, from one queue (see `RunOptions::ordered`).
    ordered: bool,
}

/// Runs the graph over the chunks `only` selects, placing each shard's
/// bytes in its output; `formed` is set once the workers run. The
/// statistics cover the run; the figures, each shard's share.
fn run(
    shards: Vec<(Arc<Container>, Arc<dyn Placement>)>,
    opts: &RunOptions,
    timely: Timely,
    only: Only<'_>,
    formed: Option<Arc<AtomicBool>>,
) -> Result<(Statistics, Vec<ShardFigures>)> {
    let started = Instant::now();
    if opts.config.use_multiprocessing {
        return Err(Error::InvalidArgument(
            "use_multiprocessing = true is not supported: run a cluster with timely's arguments (-n, -p, -h) instead".into(),
        ));
    }
    let precision = TargetPrecision::of(opts);
    for (shard, (container, _)) in shards.iter().enumerate() {
        opts.config
            .check_exponent_bits(container, |t| only.selected(shard, t))?;
    }
    let shards = shards
        .into_iter()
        .enumerate()
        .map(|(shard, (container, out))| {
            Ok(ShardRun {
                tables: precision.tables(&container, |t| only.selected(shard, t))?,
                container,
                out,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let shards = Arc::new(shards);
    let all_tasks = shards::chunk_tasks(&shards, only);
    let chunk_count = shards
        .iter()
        .map(|s| s.container.header().chunk_count())
        .sum();
    let notes = gpu_notes(opts)?;
    let policy = Arc::new(Mutex::new(Policy::new(
        opts.config.policy(),
        opts.mode,
        opts.gpu.is_some(),
    )));
    let planned = routers::planned(opts, &policy, chunk_count);
    let cluster = timely.cluster;
    let tasks: Vec<ChunkTask> = all_tasks
        .iter()
        .zip(cluster::shares(&all_tasks, cluster.processes))
        .filter(|(_, p)| *p == cluster.process)
        .map(|(t, _)| t.clone())
        .collect();
    for (k, shard) in shards.iter().enumerate() {
        let bytes = tasks.iter().filter(|t| t.shard == k).map(|t| t.out_len);
        shard.out.expect(bytes.sum());
    }
    if u32::try_from(tasks.len()).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{} chunks in one process: at most 2^32 - 1",
            tasks.len()
        )));
    }
    let state = Arc::new(Mutex::new(MergeState::default()));
    let abort = {
        let mut st = state.lock().expect("merge lock");
        st.recorder.profile = opts.config.enable_profiling;
        st.abort.clone()
    };
    let shared = Arc::new(Shared {
        shards: shards.clone(),
        tasks,
        cluster,
        mode: opts.mode,
        gpu: opts.gpu.clone(),
        cpu_batch: opts.config.cpu_batch_size,
        gpu_batch: (opts.gpu.is_some() && opts.mode != Mode::CpuOnly)
            .then_some(opts.config.gpu_batch_chunks),
        prefetch_factor: opts.config.prefetch_factor,
        affinity: opts.config.cpu_affinity.clone(),
        pressure: opts
            .pressure
            .clone()
            .unwrap_or_else(|| Arc::new(crate::pressure::NoGpu)),
        policy: policy.clone(),
        planned: planned.as_ref().map(|p| p.routes.clone()),
        state: state.clone(),
        abort,
        queue: OnceLock::new(),
        pool: Arc::new(BufferPool::default()),
        started,
        formed,
        progress: opts.progress.clone(),
        ordered: opts.ordered,
    });
    if let Some(p) = &opts.progress {
        p.start(all_tasks.iter().map(|t| t.out_len).sum(), "decompress");
    }
    let stats = Arc::new(StatsSource {
        state: state.clone(),
        policy: policy.clone(),
        mode: opts.mode,
        started,
        notes,
        gpu: opts.gpu.as_ref().map(|g| g.describe()),
        trace: opts.trace.clone().map(|t| (t, opts.replay_step_ms)),
        pressure: opts.pressure.clone(),
        failed_reads_before: opts.pressure.as_ref().map_or(0, |p| p.failed_reads().0),
        chunks: all_tasks.len(),
        replayed: planned.and_then(|p| p.marks),
        last: std::sync::OnceLock::new(),
    });
    let live = opts.monitor.as_ref().map(|m| {
        let probe = stats.clone();
        m.begin(
            all_tasks.len() as u64,
            Box::new(move || probe.statistics(false)),
        )
    });
    let ran = execute(timely.at_most(shared.tasks.len()).config, shared);
    if let Some(p) = &opts.progress {
        p.finish();
    }
    ran?;
    let mut st = state.lock().expect("merge lock");
    st.take_error()?;
    // Every byte out before the run counts as done (its time included).
    for s in shards.iter() {
        s.out.flush().map_err(|e| match s.out.path() {
            Some(path) => Error::io(path, e),
            None => Error::Internal(format!("placing the output: {e}")),
        })?;
    }
    let mut figures = Vec::new();
    if cluster.process == 0 {
        ledger::check_exactly_once(&shards, &all_tasks, &st.receipts)?;
        figures = shards::figures(&shards, &st.receipts);
        if let Some(path) = &opts.placement_log {
            ledger::write_placement_log(path, &st.receipts)?;
        }
        if let Some(path) = &opts.timeline {
            let samples = match (&opts.trace, &opts.pressure) {
                (Some(t), _) => t.samples().to_vec(),
                (None, Some(p)) => p.history().unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            let t = ledger::timeline(
                &run_name(&shards),
                &st.receipts,
                samples,
                &opts.config.policy(),
                opts.trace.as_ref().map(|_| opts.replay_step_ms),
                opts.gpu.is_none(),
            );
            crate::output::write_atomic(path, t.to_svg().as_bytes())?;
        }
    }
    drop(st);
    let (engine_state, statistics) = stats.statistics(true);
    if let Some(live) = live {
        live.finish(engine_state, &statistics);
    }
    Ok((statistics, figures))
}

/// What a run decodes, in words: the container's file name, or for several
/// shards their directory's and their count.
fn run_name(shards: &[ShardRun]) -> String {
    let file_name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    match shards {
        [one] => file_name(one.container.path()),
        [first, ..] => {
            let dir = first.container.path().parent().unwrap_or(Path::new("."));
            format!("{} ({} shards)", file_name(dir), shards.len())
        }
        [] => String::new(),
    }
}

/// What the statistics' notes say of a missing GPU; GPU_ONLY without one is
/// refused.
fn gpu_notes(opts: &RunOptions) -> Result<Vec<String>> {
    if opts.gpu.is_some() {
        return Ok(Vec::new());
    }
    let absent = opts
        .gpu_absent
        .clone()
        .unwrap_or_else(|| crate::engine::gpu::unavailable_reason().to_string());
    Ok(match opts.mode {
        Mode::GpuOnly => {
            return Err(Error::InvalidArgument(format!(
                "mode gpu-only: no GPU: {absent}"
            )))
        }
        Mode::Auto => vec![format!("no GPU: {absent}; every chunk decodes on the CPU")],
        Mode::Hybrid => vec![format!(
            "no GPU: {absent}; every chunk decodes on the CPU, and HYBRID runs CPU-only"
        )],
        Mode::CpuOnly => Vec::new(),
    })
}

/// Runs the workers to the end.
fn execute(config: timely::Config, shared: Arc<Shared>) -> Result<()> {
    if matches!(config.communication, timely::CommunicationConfig::Thread)
        && shared.affinity.is_none()
    {
        return execute_here(config.worker, &shared);
    }
    let (allocators, keep) = mesh::allocators(config.communication, || {
        Ok(crate::config::cluster_connect_timeout()?)
    })?;
    let guards = timely::execute::execute_from(allocators, keep, config.worker, move |worker| {
        run_worker(worker, &shared)
    })
    .map_err(|e| Error::Internal(format!("timely: {e}")))?;
    for r in guards.join() {
        r.map_err(|e| Error::Internal(format!("a dataflow worker failed: {e}")))?;
    }
    Ok(())
}

/// A run's one worker on the calling thread, as timely's `execute_directly`
/// runs one: spawning a thread and waiting for it cost each small run (a
/// `safe_open` tensor) more than its decode. A worker pinned to a core
/// (`cpu_affinity`) still gets a thread of its own, so that the caller's
/// thread is never pinned.
fn execute_here(config: timely::WorkerConfig, shared: &Shared) -> Result<()> {
    use timely::communication::allocator::{thread::Thread, Allocator};
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let allocator = Allocator::Thread(Thread::default());
        let mut worker = timely::worker::Worker::new(config, allocator, Some(Instant::now()));
        run_worker(&mut worker, shared);
        while worker.has_dataflows() {
            worker.step_or_park(None);
        }
    }))
    .map_err(|panic| {
        let why = crate::error::panic_message(panic.as_ref());
        Error::Internal(format!("a dataflow worker failed: {why}"))
    })
}

/// One worker: builds its graph, then feeds it from the queue.
fn run_worker(worker: &mut timely::worker::Worker, sh: &Shared) {
    if let Some(f) = &sh.formed {
        f.store(true, Ordering::SeqCst);
    }
    if let Some(cores) = &sh.affinity {
        // Worker i on the i-th listed core (round robin).
        if let Err(e) = pin_current_thread(cores[worker.index() % cores.len()]) {
            sh.state.lock().expect("merge lock").fail(Failure {
                global: 0,
                error: Box::new(Error::InvalidArgument(format!("cpu_affinity: {e}"))),
            });
        }
    }
    let batch = match sh.gpu_batch {
        Some(gpu_batch) => sh.cpu_batch.max(gpu_batch.div_ceil(worker.peers())),
        None => sh.cpu_batch,
    };
    // Timely numbers a cluster's workers process by process.
    let local_workers = (worker.peers() / sh.cluster.processes).max(1);
    let first_local = sh.cluster.process * local_workers;
    let decoder = std::rc::Rc::new(ChunkDecoder {
        shards: sh.shards.clone(),
        gpu: sh.gpu.clone(),
        mode: sh.mode,
        policy: sh.policy.clone(),
        started: sh.started,
        done: std::cell::Cell::new(0),
        pool: sh.pool.clone(),
        direct: sh.cluster.processes == 1,
        merges: first_local..first_local + local_workers,
        scratch: Default::default(),
        unreleased: Default::default(),
    });
    let mut input = InputHandle::new();
    build_dataflow(worker, sh, &mut input, decoder.clone());
    // Workers take chunks from a shared queue, so a worker that drew small
    // chunks takes more; each keeps at most `prefetch_factor` chunks in
    // flight of its own (a local count, `done`, not a probe: a probe's
    // frontier would hold every worker to the slowest).
    let queue = sh
        .queue
        .get_or_init(|| WorkQueue::new(sh.tasks.len(), if sh.ordered { 1 } else { local_workers }));
    let feed = Feed {
        me: worker.index() % local_workers,
        batch,
        read_ahead: sh.prefetch_factor,
        per_timestamp: EPOCH_CHUNKS,
    };
    queue.feed(
        worker,
        input,
        &sh.tasks,
        feed,
        &decoder.done,
        &sh.abort,
        |task| {
            let mut t = task.clone();
            t.sent_us = sh.started.elapsed().as_micros() as u64;
            t
        },
    );
}

/// `source -> route -> decode -> merge`; the receipts, and the decode's and
/// the merge's failures, to worker 0.
fn build_dataflow(
    worker: &mut timely::worker::Worker,
    sh: &Shared,
    input: &mut ChunkInput,
    decoder: std::rc::Rc<ChunkDecoder>,
) {
    let sink = std::rc::Rc::new(std::cell::RefCell::new(PartSink {
        shards: sh.shards.clone(),
        pool: sh.pool.clone(),
        state: sh.state.clone(),
        started: sh.started,
        progress: sh.progress.clone(),
    }));
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let chunks = scope.input_from(input);
        let routed = match sh.planned.clone() {
            Some(decisions) => chunks.route(std::rc::Rc::new(PlannedRouter {
                decisions,
                policy: sh.policy.clone(),
            })),
            None => chunks.route(std::rc::Rc::new(LiveRouter {
                policy: sh.policy.clone(),
                source: sh.pressure.clone(),
                started: sh.started,
            })),
        };
        let (parts, decode_failures) = routed.decode(decoder);
        let (receipts, merge_failures) = parts.merge(sink);
        let (here, there) = (sh.state.clone(), sh.state.clone());
        // A failure stops this process's sources at once, and reaches
        // process 0, which reports the first of all by place.
        decode_failures
            .concat(merge_failures)
            .inspect(move |f: &Failure| here.lock().expect("merge lock").fail(f.clone()))
            .exchange(|_| 0)
            .inspect(move |f: &Failure| there.lock().expect("merge lock").fail(f.clone()))
            .probe_with(&probe);
        let collect = sh.state.clone();
        receipts
            .exchange(|_| 0)
            .inspect(move |r: &MergeReceipt| {
                collect.lock().expect("merge lock").receipts.push(r.clone())
            })
            .probe_with(&probe);
    });
}
