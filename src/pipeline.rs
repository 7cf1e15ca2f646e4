//! The decompression graph, on timely dataflow:
//!
//! ```text
//! source (driver loop, bounded read-ahead) -> route -> decode (CPU / GPU) -> merge (exchange by tensor) -> sink
//! ```
//!
//! Workers take chunks from a shared counter (balanced, whatever the chunk
//! sizes), many chunks to a timestamp, and each holds back while
//! `prefetch_factor` of its chunks are undecoded, so memory stays bounded
//! whatever the model's size; a probe on the merge's output says when all is
//! merged. Routes
//! come from the switching policy: replayed from a pressure trace (the same
//! decisions `plan` prints) or, live, from the pressure source. A chunk
//! routed HYBRID is split by element range on rANS segment boundaries. The
//! merge brings every part of a tensor to one worker, which writes it at its
//! offset and checks that every chunk arrives exactly once. Decode errors
//! travel as data and fail the run with the first one, by place.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::{
    Decode, MergeInOrder, Part, PartDecoder, Route as RouteOp, RouteTag, Router, Sink,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::{Exchange as _, Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::codec::chunk::RANGE_ALIGN;
use crate::codec::Tables;
use crate::config::Config;
use crate::engine::gpu::{GpuEngine, GpuError, GpuRange};
use crate::engine::{chunk_jobs, tables_for};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::output::TempOutput;
use crate::policy::{Mode, Policy, Route};
use crate::pressure::{PressureSource, Trace};
use crate::stats::{Engine, Recorder, Statistics};

mod resident;
mod whole;
pub use resident::{LoadInfo, Residence, ResidentTensor, Values};

/// One chunk to decode: a handle of a few words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkTask {
    /// Index in global order (tensors in file order, chunks in order).
    pub global: usize,
    pub tensor: usize,
    pub chunk: usize,
    /// Values in the chunk.
    pub elements: u64,
    /// Byte offset of the chunk's output in the data region.
    pub out_offset: u64,
    pub out_len: u64,
    /// When the source emitted it (µs since the run started).
    pub sent_us: u64,
}

/// A decoded piece of a chunk, or the error that stopped it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodedPart {
    pub global: usize,
    pub tensor: usize,
    pub chunk: usize,
    /// The route the chunk was given.
    pub route: u8,
    /// The engine that decoded this part.
    pub engine: Engine,
    /// First value of the chunk this part holds.
    pub first: u64,
    /// Byte offset of this part in the data region.
    pub out_offset: u64,
    pub data: Vec<u8>,
    /// Bytes decoded straight into the output (in-memory runs); `data` is
    /// then empty.
    pub placed: u64,
    /// Container bytes read for it.
    pub bytes_in: u64,
    pub queue_us: u64,
    pub decode_us: u64,
    /// When decoding ended (µs since the run started).
    pub done_us: u64,
    /// Whether a GPU out-of-memory sent this part to the CPU.
    pub rerouted_oom: bool,
    pub error: Option<String>,
}

/// What a merge did with a part; all receipts go to worker 0, which checks
/// that every chunk arrived exactly once and whether anything failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeReceipt {
    pub global: usize,
    pub tensor: usize,
    pub chunk: usize,
    pub first: u64,
    pub engine: Engine,
    pub out_offset: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

impl DecodedPart {
    /// Decoded bytes, carried or already placed.
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64 + self.placed
    }
}

impl Part for DecodedPart {
    fn tensor(&self) -> usize {
        self.tensor
    }
}

/// Chunks a worker sends under one timestamp: many chunks share one, so the
/// graph's per-timestamp cost is spread thin.
const EPOCH_CHUNKS: usize = 64;

/// Route codes carried in parts.
pub const ROUTE_GPU: u8 = 0;
pub const ROUTE_CPU: u8 = 1;
pub const ROUTE_HYBRID: u8 = 2;

fn route_code(tag: RouteTag) -> u8 {
    match tag {
        RouteTag::Gpu => ROUTE_GPU,
        RouteTag::Cpu => ROUTE_CPU,
        RouteTag::Hybrid { .. } => ROUTE_HYBRID,
    }
}

fn tag_of(route: Route) -> RouteTag {
    match route {
        Route::Gpu => RouteTag::Gpu,
        Route::Cpu => RouteTag::Cpu,
        Route::Hybrid { gpu_fraction } => RouteTag::Hybrid { gpu_fraction },
    }
}

/// How to run a decompression.
#[derive(Clone)]
pub struct RunOptions {
    pub mode: Mode,
    pub config: Config,
    /// Decode to this many digits (`None`: all stored).
    pub target_precision: Option<u32>,
    /// Replay routing from this trace (virtual time `k * replay_step_ms`).
    pub trace: Option<Trace>,
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
}

impl RunOptions {
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
        }
    }
}

/// Routes from a decision list made up front (replay, or no GPU).
struct PlannedRouter {
    decisions: Arc<Vec<Route>>,
}

impl Router<ChunkTask> for PlannedRouter {
    fn route(&self, c: &ChunkTask) -> RouteTag {
        tag_of(self.decisions[c.global])
    }
}

/// Routes live: the shared policy on the latest sample.
struct LiveRouter {
    policy: Arc<Mutex<Policy>>,
    source: Arc<dyn PressureSource>,
    started: Instant,
}

impl Router<ChunkTask> for LiveRouter {
    fn route(&self, _c: &ChunkTask) -> RouteTag {
        let now = self.started.elapsed().as_millis() as u64;
        let sample = self.source.sample_at(now);
        let mut p = self.policy.lock().expect("policy lock");
        tag_of(p.decide(now, sample).route)
    }
}

/// Decodes routed chunks on the CPU and the GPU.
struct ChunkDecoder {
    container: Arc<Container>,
    tables: Arc<Vec<Option<Arc<Tables>>>>,
    gpu: Option<Arc<dyn GpuEngine>>,
    mode: Mode,
    policy: Arc<Mutex<Policy>>,
    started: Instant,
    /// Chunks this worker has decoded (the source's read-ahead counts on it).
    done: std::cell::Cell<usize>,
    pool: Arc<BufferPool>,
    /// The output, when parts may be decoded straight into it.
    direct: Option<Arc<dyn Placement>>,
    /// Alignment scratch of the CPU decoder, reused.
    scratch: std::cell::RefCell<Vec<u32>>,
}

impl ChunkDecoder {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn place(&self, t: &ChunkTask) -> String {
        format!(
            "tensor '{}', chunk {}",
            self.container.header().tensors[t.tensor].name,
            t.chunk
        )
    }

    /// Decodes values from `first` of the chunk on the CPU, as many as `out` holds.
    fn cpu(&self, t: &ChunkTask, first: u64, out: &mut [u8]) -> Result<u64> {
        crate::engine::CpuEngine::decode_part(
            &self.container,
            self.tables[t.tensor].as_deref(),
            t.tensor,
            t.chunk,
            first as usize,
            out,
            &mut self.scratch.borrow_mut(),
        )
    }

    /// One part on the CPU: values `[first, last)`.
    fn cpu_part(&self, t: &ChunkTask, route: u8, first: u64, last: u64) -> DecodedPart {
        let (mut part, dest) = self.open_part(t, route, Engine::Cpu, first, last);
        let started = self.now_us();
        let result = dest.and_then(|mut dest| {
            self.cpu(t, first, dest.bytes())
                .map(|n| (n, dest))
                .map_err(|e| e.to_string())
        });
        self.close_part(&mut part, result, started);
        part
    }

    /// A part's record, and where its values go: straight into the output
    /// when it is in memory, else a pooled buffer.
    fn open_part(
        &self,
        t: &ChunkTask,
        route: u8,
        engine: Engine,
        first: u64,
        last: u64,
    ) -> (DecodedPart, std::result::Result<Dest<'_>, String>) {
        let unit = t.out_len / t.elements.max(1);
        let len = ((last - first) * unit) as usize;
        let part = DecodedPart {
            global: t.global,
            tensor: t.tensor,
            chunk: t.chunk,
            route,
            engine,
            first,
            out_offset: t.out_offset + first * unit,
            data: Vec::new(),
            placed: 0,
            bytes_in: 0,
            queue_us: self.now_us().saturating_sub(t.sent_us),
            decode_us: 0,
            done_us: 0,
            rerouted_oom: false,
            error: None,
        };
        let dest = match self
            .direct
            .as_ref()
            .and_then(|o| o.claim(part.out_offset, len))
        {
            Some(Err(e)) => Err(format!("{}: {e}", self.place(t))),
            Some(Ok(out)) => Ok(Dest::Direct(out)),
            None => Ok(Dest::Pooled(self.pool.take(len))),
        };
        (part, dest)
    }

    /// Records how a part's decode (begun at `started` µs) ended, and feeds
    /// HYBRID's throughput estimate.
    fn close_part(
        &self,
        part: &mut DecodedPart,
        result: std::result::Result<(u64, Dest<'_>), String>,
        started: u64,
    ) {
        match result {
            Ok((bytes_in, Dest::Direct(out))) => {
                part.bytes_in = bytes_in;
                part.placed = out.len() as u64;
            }
            Ok((bytes_in, Dest::Pooled(data))) => {
                part.bytes_in = bytes_in;
                part.data = data;
            }
            Err(e) => part.error = Some(e),
        }
        part.done_us = self.now_us();
        part.decode_us = part.done_us - started;
        if part.error.is_none() && self.mode == Mode::Hybrid {
            let secs = part.decode_us.max(1) as f64 / 1e6;
            self.policy.lock().expect("policy lock").observe(
                part.engine == Engine::Gpu,
                part.bytes(),
                secs,
            );
        }
    }

    /// What a GPU attempt comes to: the bytes read; with no engine
    /// (`None`), the CPU's decode; an out-of-memory outside GPU_ONLY, the
    /// CPU's decode, counted as a memory-pressure event; any other failure,
    /// the error that stops the run.
    fn gpu_outcome(
        &self,
        t: &ChunkTask,
        first: u64,
        out: &mut [u8],
        part: &mut DecodedPart,
        attempt: Option<std::result::Result<(), GpuError>>,
    ) -> std::result::Result<u64, String> {
        let Some(attempt) = attempt else {
            part.engine = Engine::Cpu;
            return self.cpu(t, first, out).map_err(|e| e.to_string());
        };
        match attempt {
            Ok(()) => Ok(self.container.header().tensors[t.tensor].chunks[t.chunk]
                .sections
                .iter()
                .map(|s| s.len)
                .sum()),
            Err(e) if self.mode == Mode::GpuOnly => Err(format!(
                "{}: GPU_ONLY cannot decode {} bytes on the GPU: {e}",
                self.place(t),
                out.len()
            )),
            // Out of device memory is memory pressure: the CPU takes the
            // part, and it counts.
            Err(GpuError::OutOfMemory { .. }) => {
                self.policy.lock().expect("policy lock").record_oom();
                part.rerouted_oom = true;
                part.engine = Engine::Cpu;
                self.cpu(t, first, out).map_err(|e| e.to_string())
            }
            // Anything else (a driver error, damage the kernels found) is
            // no reason to decode elsewhere: it stops the run, said.
            Err(e) => Err(format!(
                "{}: the GPU failed on {} bytes: {e}",
                self.place(t),
                out.len()
            )),
        }
    }
}

/// Where a part's values go.
enum Dest<'a> {
    /// Its bytes of the in-memory output.
    Direct(&'a mut [u8]),
    /// A pooled buffer, handed to the merge.
    Pooled(Vec<u8>),
}

impl Dest<'_> {
    fn len(&self) -> usize {
        match self {
            Dest::Direct(b) => b.len(),
            Dest::Pooled(v) => v.len(),
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        match self {
            Dest::Direct(b) => b,
            Dest::Pooled(v) => v,
        }
    }
}

impl PartDecoder<ChunkTask> for ChunkDecoder {
    type Part = DecodedPart;
    fn decode(&self, t: ChunkTask, tag: RouteTag) -> Vec<DecodedPart> {
        self.decode_batch(vec![(t, tag)])
    }

    /// The GPU parts of the whole batch go to the engine in one call
    /// ([`GpuEngine::decode_batch`]; without an engine each fails, saying
    /// why); the CPU parts decode one by one. Each GPU part's time is its
    /// share, by bytes, of the call's.
    fn decode_batch(&self, chunks: Vec<(ChunkTask, RouteTag)>) -> Vec<DecodedPart> {
        // Every part, in order: (chunk, engine, first, last).
        let specs: Vec<(usize, Engine, u64, u64)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(k, (t, tag))| {
                self.split(t, *tag)
                    .into_iter()
                    .map(move |(e, a, b)| (k, e, a, b))
            })
            .collect();
        let mut slots: Vec<Option<DecodedPart>> = specs.iter().map(|_| None).collect();
        // The GPU parts: opened together, decoded in one call.
        let mut open = Vec::new();
        for (i, &(k, engine, a, b)) in specs.iter().enumerate() {
            let (t, tag) = &chunks[k];
            if engine != Engine::Gpu {
                continue;
            }
            let (mut part, dest) = self.open_part(t, route_code(*tag), engine, a, b);
            match dest {
                Ok(dest) => open.push((i, part, dest)),
                Err(e) => {
                    let now = self.now_us();
                    self.close_part(&mut part, Err(e), now);
                    slots[i] = Some(part);
                }
            }
        }
        if !open.is_empty() {
            let started = self.now_us();
            let results = {
                let mut ranges: Vec<GpuRange<'_>> = open
                    .iter_mut()
                    .map(|(i, _, dest)| {
                        let (k, _, a, _) = specs[*i];
                        let t = &chunks[k].0;
                        GpuRange {
                            tables: self.tables[t.tensor]
                                .as_deref()
                                .expect("split sends only float chunks to the GPU"),
                            tensor: t.tensor,
                            chunk: t.chunk,
                            total: t.elements as usize,
                            first: a as usize,
                            out: dest.bytes(),
                        }
                    })
                    .collect();
                // No engine: `None` a range, the CPU's (said once, at the
                // start of the run).
                match &self.gpu {
                    Some(gpu) => gpu
                        .decode_batch(&self.container, &mut ranges)
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => ranges.iter().map(|_| None).collect::<Vec<_>>(),
                }
            };
            let spent = self.now_us() - started;
            let total: u64 = open
                .iter()
                .map(|(_, _, d)| d.len() as u64)
                .sum::<u64>()
                .max(1);
            for ((i, mut part, mut dest), attempt) in open.into_iter().zip(results) {
                let (k, _, a, _) = specs[i];
                let t = &chunks[k].0;
                let share = spent * dest.len() as u64 / total;
                let at = self.now_us();
                let result = self
                    .gpu_outcome(t, a, dest.bytes(), &mut part, attempt)
                    .map(|n| (n, dest));
                // Its share of the call, plus any CPU fallback it took.
                self.close_part(&mut part, result, at - share.min(at));
                slots[i] = Some(part);
            }
        }
        for (i, &(k, _, a, b)) in specs.iter().enumerate() {
            if slots[i].is_none() {
                let (t, tag) = &chunks[k];
                slots[i] = Some(self.cpu_part(t, route_code(*tag), a, b));
            }
        }
        for (t, _) in &chunks {
            self.container.release(t.tensor, t.chunk);
            self.done.set(self.done.get() + 1);
        }
        slots.into_iter().flatten().collect()
    }
}

impl ChunkDecoder {
    /// A routed chunk's parts: (engine, first value, end), the GPU's first.
    fn split(&self, t: &ChunkTask, tag: RouteTag) -> Vec<(Engine, u64, u64)> {
        let n = t.elements;
        let passthrough = self.tables[t.tensor].is_none();
        match tag {
            RouteTag::Cpu => vec![(Engine::Cpu, 0, n)],
            RouteTag::Gpu if passthrough => vec![(Engine::Cpu, 0, n)],
            RouteTag::Gpu => vec![(Engine::Gpu, 0, n)],
            RouteTag::Hybrid { gpu_fraction } => {
                // Split on a segment boundary: the GPU takes the first values.
                let align = RANGE_ALIGN as u64;
                let raw = (gpu_fraction.clamp(0.0, 1.0) * n as f64).round() as u64;
                let split = if passthrough {
                    0
                } else {
                    ((raw + align / 2) / align * align).min(n)
                };
                let split = if raw >= n { n } else { split };
                let mut parts = Vec::new();
                if split > 0 {
                    parts.push((Engine::Gpu, 0, split));
                }
                if split < n {
                    parts.push((Engine::Cpu, split, n));
                }
                parts
            }
        }
    }
}

/// Hands a process's task list out to its workers: each owns a contiguous
/// share and takes from its front, and once it is empty takes from the back
/// of the others' shares. The workers thus start far apart in the output (two
/// threads that first touch the same fresh huge page wait on each other's
/// page fault, which cost the graph 10% against the bare loop on 2 workers),
/// and a worker that drew small chunks still takes more.
struct WorkQueue {
    /// Per share, its remaining tasks `[lo, hi)` as `lo << 32 | hi`.
    shares: Vec<std::sync::atomic::AtomicU64>,
}

impl WorkQueue {
    /// `tasks` (below 2^32) shared among `workers`.
    fn new(tasks: usize, workers: usize) -> Self {
        let n = tasks.min(u32::MAX as usize) as u64;
        let k = workers.max(1) as u64;
        let shares = (0..k)
            .map(|w| std::sync::atomic::AtomicU64::new(((n * w / k) << 32) | (n * (w + 1) / k)))
            .collect();
        WorkQueue { shares }
    }

    /// Up to `batch` task indices for worker `me`, or `None` when all are taken.
    fn take(&self, me: usize, batch: usize) -> Option<std::ops::Range<usize>> {
        use std::sync::atomic::Ordering;
        let k = self.shares.len();
        let batch = batch.max(1) as u64;
        for step in 0..k {
            let share = &self.shares[(me + step) % k];
            let mut cur = share.load(Ordering::Acquire);
            loop {
                let (lo, hi) = (cur >> 32, cur & 0xffff_ffff);
                if lo >= hi {
                    break;
                }
                let (next, range) = if step == 0 {
                    let end = (lo + batch).min(hi);
                    ((end << 32) | hi, lo..end)
                } else {
                    let start = hi.saturating_sub(batch).max(lo);
                    ((lo << 32) | start, start..hi)
                };
                match share.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(range.start as usize..range.end as usize),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

/// Recycled part buffers: a part's bytes come back here once merged, so
/// chunk after chunk decodes into memory that is already mapped rather than
/// into fresh pages the kernel must fault in and zero.
#[derive(Default)]
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers a pool keeps; beyond this, merged buffers are freed.
const POOL_MAX: usize = 64;

impl BufferPool {
    /// `n` bytes (their content is overwritten by the decoder).
    fn take(&self, n: usize) -> Vec<u8> {
        let mut v = self
            .free
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_default();
        v.clear();
        v.resize(n, 0);
        v
    }

    fn give(&self, v: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        if free.len() < POOL_MAX {
            free.push(v);
        }
    }
}

/// Where merged bytes land: `place(offset, bytes)` with `offset` in the
/// safetensors data region.
pub trait Placement: Send + Sync {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// The file written, if it is one (named in write errors).
    fn path(&self) -> Option<&Path> {
        None
    }
    /// For output in memory: the `len` bytes at `offset`, for a decoder to
    /// write into directly, saving the merge a copy. Each byte is handed out
    /// once; a second claim on it is an error. `None`: use [`Placement::place`].
    fn claim(&self, _offset: u64, _len: usize) -> Option<std::io::Result<&mut [u8]>> {
        None
    }
}

/// The output file: the data region starts at `base`.
struct FilePlacement {
    file: File,
    base: u64,
    path: PathBuf,
}

impl Placement for FilePlacement {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.base + offset)
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// Memory holding the data region from `start` on. Byte ranges are handed
/// out once each, through [`Placement::claim`] (a decoder writes there
/// directly) or [`Placement::place`] (a copy): a second claim on any byte is
/// refused, so the writers of different parts never alias, and a part placed
/// twice is a hard error, not a silent overwrite.
struct MemoryPlacement {
    buf: Vec<u8>,
    /// `buf`'s data; written only through claimed, disjoint ranges.
    ptr: *mut u8,
    /// Claimed ranges, start -> end (relative to `buf`).
    claimed: Mutex<std::collections::BTreeMap<usize, usize>>,
    start: u64,
}

// SAFETY: `buf` is written only through `ptr`, in ranges that `claim` hands
// out at most once (checked under the `claimed` lock), so no two threads
// write the same byte; it is read only by `into_inner`, which owns it.
unsafe impl Sync for MemoryPlacement {}
// SAFETY: as above; the pointer refers to memory the placement owns.
unsafe impl Send for MemoryPlacement {}

impl MemoryPlacement {
    fn new(mut buf: Vec<u8>, start: u64) -> Self {
        let ptr = buf.as_mut_ptr();
        MemoryPlacement {
            buf,
            ptr,
            claimed: Mutex::new(Default::default()),
            start,
        }
    }

    /// The bytes, once the run that wrote them is over.
    fn into_inner(this: Arc<Self>) -> Result<Vec<u8>> {
        Arc::try_unwrap(this)
            .map(|p| p.buf)
            .map_err(|_| Error::Decode("the output is still shared after the run".into()))
    }

    #[allow(clippy::mut_from_ref)]
    fn take(&self, offset: u64, len: usize) -> std::io::Result<&mut [u8]> {
        let at = offset
            .checked_sub(self.start)
            .map(|a| a as usize)
            .filter(|&a| a.checked_add(len).is_some_and(|e| e <= self.buf.len()))
            .ok_or_else(|| std::io::Error::other(format!("part at {offset} outside the output")))?;
        if len == 0 {
            return Ok(&mut []);
        }
        let mut claimed = self.claimed.lock().expect("claim lock");
        // The claim starting last before our end must end at or before our start.
        if let Some((&s, &e)) = claimed.range(..at + len).next_back() {
            if e > at {
                return Err(std::io::Error::other(format!(
                    "bytes {}..{} placed twice (they overlap {}..{})",
                    offset,
                    offset + len as u64,
                    s as u64 + self.start,
                    e as u64 + self.start
                )));
            }
        }
        claimed.insert(at, at + len);
        // SAFETY: `at..at + len` lies inside `buf` (checked above) and
        // overlaps no range handed out before (checked under the lock), so
        // this is the only live reference to these bytes.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) })
    }
}

impl Placement for MemoryPlacement {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.take(offset, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }
    fn claim(&self, offset: u64, len: usize) -> Option<std::io::Result<&mut [u8]>> {
        Some(self.take(offset, len))
    }
}

/// Places parts at their offsets and checks each chunk's coverage.
struct PartSink {
    out: Arc<dyn Placement>,
    pool: Arc<BufferPool>,
    state: Arc<Mutex<MergeState>>,
    started: Instant,
}

/// What the merges saw, across workers.
#[derive(Default)]
struct MergeState {
    first_error: Option<(usize, String)>,
    /// The first write that failed: the file and the error's kind (the run
    /// then fails as an I/O error, exit status 1, naming the file).
    write_error: Option<(PathBuf, std::io::ErrorKind)>,
    /// Set on the first error: the sources stop sending.
    abort: Arc<std::sync::atomic::AtomicBool>,
    recorder: Recorder,
    /// Every merge receipt (worker 0 of process 0 only).
    receipts: Vec<MergeReceipt>,
}

impl MergeState {
    fn fail(&mut self, global: usize, what: String) {
        self.abort.store(true, std::sync::atomic::Ordering::Relaxed);
        match &self.first_error {
            Some((g, _)) if *g <= global => {}
            _ => self.first_error = Some((global, what)),
        }
    }
}

impl Sink<DecodedPart> for PartSink {
    type Receipt = MergeReceipt;
    fn accept(&mut self, p: DecodedPart) -> MergeReceipt {
        let merged_at = self.started.elapsed().as_micros() as u64;
        let mut receipt = MergeReceipt {
            global: p.global,
            tensor: p.tensor,
            chunk: p.chunk,
            first: p.first,
            engine: p.engine,
            out_offset: p.out_offset,
            bytes: p.bytes(),
            error: p.error.clone(),
        };
        if let Some(e) = p.error {
            self.state.lock().expect("merge lock").fail(p.global, e);
            return receipt;
        }
        // The write happens outside the merge lock: merges of other workers
        // go on meanwhile.
        let bytes = p.bytes();
        let placed = if p.placed > 0 {
            Ok(())
        } else {
            self.out.place(p.out_offset, &p.data)
        };
        self.pool.give(p.data);
        let mut st = self.state.lock().expect("merge lock");
        if let Err(e) = placed {
            let what = format!("writing {bytes} bytes at {}: {e}", p.out_offset);
            if let (Some(path), None) = (self.out.path(), &st.write_error) {
                st.write_error = Some((path.to_path_buf(), e.kind()));
            }
            st.fail(p.global, what.clone());
            receipt.error = Some(what);
            return receipt;
        }
        let merge_us = merged_at.saturating_sub(p.done_us);
        st.recorder.part(
            p.global,
            p.route,
            p.engine,
            bytes,
            p.bytes_in,
            p.queue_us,
            p.decode_us,
            merge_us,
            p.rerouted_oom,
        );
        receipt
    }
}

/// Decompresses `c` into the safetensors file `output` through the dataflow graph.
pub fn decompress_file(c: Arc<Container>, output: &Path, opts: &RunOptions) -> Result<Statistics> {
    let cluster = Cluster::of(&timely_args(opts)?);
    let head = &c.header().source_header;
    let base = 8 + head.len() as u64;
    let prepare = |file: &File, path: &Path| -> Result<()> {
        let io = |e| Error::io(path, e);
        file.set_len(base + c.header().data_len).map_err(io)?;
        file.write_all_at(&(head.len() as u64).to_le_bytes(), 0)
            .map_err(io)?;
        file.write_all_at(head.as_bytes(), 8).map_err(io)
    };
    if cluster.processes == 1 {
        let temp = TempOutput::create(output)?;
        let file = temp
            .file()
            .try_clone()
            .map_err(|e| Error::io(temp.temp_path(), e))?;
        prepare(&file, temp.temp_path())?;
        let path = temp.temp_path().to_path_buf();
        let stats = run_graph(c, opts, None, Arc::new(FilePlacement { file, base, path }))?;
        temp.commit()?;
        return Ok(stats);
    }
    // A cluster: every process writes its merges into one temporary file of
    // an agreed name; process 0, which sees every receipt, renames it when
    // all is well and removes it otherwise.
    let name = output.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!("{} is not a file path", output.display()))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".tmp-cluster");
    let temp = output.with_file_name(temp_name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&temp)
        .map_err(|e| Error::io(&temp, e))?;
    prepare(&file, &temp)?;
    let sync = file.try_clone().map_err(|e| Error::io(&temp, e))?;
    let watch = ClusterWatch::install(cluster.process, temp.clone(), connect_timeout()?);
    let result = run_graph_watched(
        c,
        opts,
        None,
        Arc::new(FilePlacement {
            file,
            base,
            path: temp.clone(),
        }),
        Some(watch.formed.clone()),
    );
    drop(watch);
    match result {
        Ok(stats) => {
            if cluster.process == 0 {
                sync.sync_all().map_err(|e| Error::io(&temp, e))?;
                std::fs::rename(&temp, output).map_err(|e| Error::io(output, e))?;
            }
            Ok(stats)
        }
        Err(e) => {
            if cluster.process == 0 {
                let _ = std::fs::remove_file(&temp);
            }
            Err(e)
        }
    }
}

/// How long a cluster process waits for the others to connect:
/// `PADIC_CLUSTER_CONNECT_TIMEOUT_S` seconds, 60 by default.
fn connect_timeout() -> Result<std::time::Duration> {
    match std::env::var("PADIC_CLUSTER_CONNECT_TIMEOUT_S") {
        Err(_) => Ok(std::time::Duration::from_secs(60)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "PADIC_CLUSTER_CONNECT_TIMEOUT_S={v:?}: expected a number of seconds above 0"
                ))
            }),
    }
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync>;

/// Turns the loss of a cluster peer into a hard, clear failure. Timely's
/// network threads panic when a connection drops, and the panic cascades
/// through the workers; here the first such panic prints one line naming the
/// process, removes the shared temporary output, and exits with status 2.
/// A watchdog does the same when the other processes have not connected
/// within the timeout. Without this, a lost peer means a backtrace, status
/// 101, and a temporary file left behind; a peer that never starts means a
/// wait without end.
struct ClusterWatch {
    formed: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<std::sync::atomic::AtomicBool>,
    previous: Arc<PanicHook>,
}

/// Panic messages of a lost connection, from timely's network threads and
/// the workers and main thread they take down.
fn is_lost_peer(msg: &str) -> bool {
    msg.contains("timely communication error")
        || msg.contains("MergeQueue poisoned")
        || msg.contains("Send thread panic")
        || msg.contains("Recv thread panic")
}

fn cluster_exit(process: usize, temp: &Path, why: &str) -> ! {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let _ = std::fs::remove_file(temp);
        eprintln!("error: cluster process {process}: {why}; stopping, no output written");
    }
    std::process::exit(2)
}

impl ClusterWatch {
    fn install(process: usize, temp: PathBuf, timeout: std::time::Duration) -> Self {
        let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let prev = previous.clone();
        let hook_temp = temp.clone();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if is_lost_peer(&msg) {
                cluster_exit(
                    process,
                    &hook_temp,
                    &format!("lost the connection to another process ({msg})"),
                );
            }
            prev(info)
        }));
        let formed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, d) = (formed.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !f.load(std::sync::atomic::Ordering::SeqCst)
                && !d.load(std::sync::atomic::Ordering::SeqCst)
            {
                if start.elapsed() > timeout {
                    cluster_exit(
                        process,
                        &temp,
                        &format!(
                            "the other processes did not connect within {:.1} s (PADIC_CLUSTER_CONNECT_TIMEOUT_S); check the hosts file and that every process was started",
                            timeout.as_secs_f64()
                        ),
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        ClusterWatch {
            formed,
            done,
            previous,
        }
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let prev = self.previous.clone();
        std::panic::set_hook(Box::new(move |info| prev(info)));
    }
}

/// Decompresses `c` into memory through the dataflow graph: the safetensors
/// data region (see [`crate::engine::DecodedModel`]).
pub fn decompress_to_memory(
    c: Arc<Container>,
    opts: &RunOptions,
) -> Result<(crate::engine::DecodedModel, Statistics)> {
    let out = Arc::new(MemoryPlacement::new(
        crate::engine::cpu::output_buffer(c.header().data_len as usize),
        0,
    ));
    let stats = run_graph(c.clone(), opts, None, out.clone())?;
    let data = MemoryPlacement::into_inner(out)?;
    Ok((
        crate::engine::DecodedModel {
            source_header: c.header().source_header.clone(),
            data,
        },
        stats,
    ))
}

/// Decompresses one tensor into memory through the dataflow graph: only its
/// chunks are read.
pub fn decompress_tensor(
    c: Arc<Container>,
    tensor: usize,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Statistics)> {
    let t = &c.header().tensors[tensor];
    let out = Arc::new(MemoryPlacement::new(
        crate::engine::cpu::output_buffer(t.byte_len as usize),
        t.data_offset,
    ));
    let stats = run_graph(c.clone(), opts, Some(tensor), out.clone())?;
    let data = MemoryPlacement::into_inner(out)?;
    Ok((data, stats))
}

/// Runs the graph over every chunk (or one tensor's), placing the bytes in `out`.
fn run_graph(
    c: Arc<Container>,
    opts: &RunOptions,
    only: Option<usize>,
    out: Arc<dyn Placement>,
) -> Result<Statistics> {
    run_graph_watched(c, opts, only, out, None)
}

/// [`run_graph`]; `formed` is set once the workers run (a cluster's
/// processes have all connected).
fn run_graph_watched(
    c: Arc<Container>,
    opts: &RunOptions,
    only: Option<usize>,
    out: Arc<dyn Placement>,
    formed: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<Statistics> {
    let started = Instant::now();
    if opts.config.use_multiprocessing {
        return Err(Error::InvalidArgument(
            "use_multiprocessing = true: multi-process runs are not supported yet (the sinks write from one process)".into(),
        ));
    }
    let tables = Arc::new(TargetPrecision::of(opts).tables(&c)?);
    let jobs = chunk_jobs(&c);
    let args = timely_args(opts)?;
    let cluster = Cluster::of(&args);
    let all_tasks: Vec<ChunkTask> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| only.is_none_or(|t| t == j.tensor))
        .map(|(k, j)| ChunkTask {
            global: k,
            tensor: j.tensor,
            chunk: j.chunk,
            elements: c.header().tensors[j.tensor].chunks[j.chunk].elements,
            out_offset: j.out_offset,
            out_len: j.out_len,
            sent_us: 0,
        })
        .collect();
    // This process's sources read every `processes`-th chunk.
    let tasks: Arc<Vec<ChunkTask>> = Arc::new(
        all_tasks
            .iter()
            .filter(|t| t.global % cluster.processes == cluster.process)
            .cloned()
            .collect(),
    );
    let gpu_present = opts.gpu.is_some();
    let gpu_absent = opts
        .gpu_absent
        .clone()
        .unwrap_or_else(|| crate::engine::gpu::unavailable_reason().to_string());
    if opts.mode == Mode::GpuOnly && !gpu_present {
        return Err(Error::InvalidArgument(format!(
            "--mode gpu-only: no GPU: {gpu_absent}"
        )));
    }
    let mut notes = Vec::new();
    if !gpu_present && matches!(opts.mode, Mode::Auto | Mode::Hybrid) {
        notes.push(format!(
            "no GPU ({gpu_absent}): every chunk decodes on the CPU{}",
            if opts.mode == Mode::Hybrid {
                "; HYBRID runs CPU-only"
            } else {
                ""
            }
        ));
    }
    let policy = Arc::new(Mutex::new(Policy::new(
        opts.config.policy(),
        opts.mode,
        gpu_present,
    )));
    // Replay (or no GPU at all): every decision up front, the same every run.
    let planned: Option<Arc<Vec<Route>>> = match (&opts.trace, gpu_present) {
        (Some(trace), _) => {
            let mut p = policy.lock().expect("policy lock");
            let mut replay = Policy::new(opts.config.policy(), opts.mode, true);
            let d = (0..jobs.len())
                .map(|k| {
                    let now = (k as u64).saturating_mul(opts.replay_step_ms);
                    replay.decide(now, trace.sample_at(now)).route
                })
                .collect();
            *p = replay;
            Some(Arc::new(d))
        }
        (None, false) => Some(Arc::new(vec![
            if opts.mode == Mode::GpuOnly {
                Route::Gpu
            } else {
                Route::Cpu
            };
            jobs.len()
        ])),
        (None, true) => None,
    };

    let state = Arc::new(Mutex::new(MergeState::default()));
    let abort = state.lock().expect("merge lock").abort.clone();
    state.lock().expect("merge lock").recorder.profile = opts.config.enable_profiling;
    // When a GPU takes work, the workers' batches add up to
    // `gpu_batch_chunks`: the decode operator hands each batch to the GPU
    // engine in one call, and the workers' calls run side by side on streams
    // of their own.
    let gpu_takes_work = opts.gpu.is_some() && opts.mode != Mode::CpuOnly;
    let (cpu_batch, gpu_batch) = (opts.config.cpu_batch_size, opts.config.gpu_batch_chunks);
    let prefetch_factor = opts.config.prefetch_factor;
    let affinity = opts.config.cpu_affinity.clone();
    let gpu = opts.gpu.clone();
    let pressure: Arc<dyn PressureSource> = opts
        .pressure
        .clone()
        .unwrap_or_else(|| Arc::new(crate::pressure::NoGpu));
    let mode = opts.mode;
    if u32::try_from(tasks.len()).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{} chunks in one process: at most 2^32 - 1",
            tasks.len()
        )));
    }
    // Made by the first worker, which knows how many there are.
    let queue = Arc::new(std::sync::OnceLock::<WorkQueue>::new());
    let pool = Arc::new(BufferPool::default());
    let (c2, tables2, state2, policy2, tasks2, out2) = (
        c.clone(),
        tables.clone(),
        state.clone(),
        policy.clone(),
        tasks.clone(),
        out.clone(),
    );
    let guards = timely::execute_from_args(args.into_iter(), move |worker| {
        if let Some(f) = &formed {
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(cores) = &affinity {
            // Worker i on the i-th listed core (round robin).
            if let Err(e) = pin_current_thread(cores[worker.index() % cores.len()]) {
                state2.lock().expect("merge lock").fail(0, e);
            }
        }
        let batch = if gpu_takes_work {
            cpu_batch.max(gpu_batch.div_ceil(worker.peers()))
        } else {
            cpu_batch
        };
        // At least one batch in flight, or a worker would wait on itself.
        let prefetch = prefetch_factor.max(batch);
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let decoder = std::rc::Rc::new(ChunkDecoder {
            container: c2.clone(),
            tables: tables2.clone(),
            gpu: gpu.clone(),
            mode,
            policy: policy2.clone(),
            started,
            done: std::cell::Cell::new(0),
            pool: pool.clone(),
            direct: (cluster.processes == 1).then(|| out2.clone()),
            scratch: Default::default(),
        });
        let sink = std::rc::Rc::new(std::cell::RefCell::new(PartSink {
            out: out2.clone(),
            pool: pool.clone(),
            state: state2.clone(),
            started,
        }));
        let planned = planned.clone();
        let policy3 = policy2.clone();
        let decoder_in_loop = decoder.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let chunks = scope.input_from(&mut input);
            let routed = match planned {
                Some(decisions) => chunks.route(std::rc::Rc::new(PlannedRouter { decisions })),
                None => chunks.route(std::rc::Rc::new(LiveRouter {
                    policy: policy3,
                    source: pressure.clone(),
                    started,
                })),
            };
            let collect = state2.clone();
            routed
                .decode(decoder)
                .merge_in_order(sink)
                .exchange(|_| 0)
                .inspect(move |r: &MergeReceipt| {
                    let mut st = collect.lock().expect("merge lock");
                    if let Some(e) = &r.error {
                        st.fail(r.global, e.clone());
                    }
                    st.receipts.push(r.clone());
                })
                .probe_with(&probe);
        });
        // The source: workers take chunks from a shared queue, so a worker
        // that drew small chunks takes more; each keeps at most
        // `prefetch_factor` chunks in flight of its own (a local count, not a
        // probe: a probe's frontier would hold every worker to the slowest).
        let local_workers = (worker.peers() / cluster.processes).max(1);
        let me = worker.index() % local_workers;
        let queue = queue.get_or_init(|| WorkQueue::new(tasks2.len(), local_workers));
        let mut sent = 0usize;
        let mut epoch = 0u64;
        let abort = abort.clone();
        loop {
            // A hard failure stops the job: no new chunks after the first error.
            if abort.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            // `cpu_batch_size` chunks at a time from the shared queue.
            let Some(take) = queue.take(me, batch) else {
                break;
            };
            for task in &tasks2[take] {
                let mut t = task.clone();
                t.sent_us = started.elapsed().as_micros() as u64;
                input.send(t);
                sent += 1;
                if sent % EPOCH_CHUNKS == 0 {
                    epoch += 1;
                    input.advance_to(epoch);
                }
            }
            if sent - decoder_in_loop.done.get() >= prefetch {
                // Records wait in the input's buffer until flushed.
                input.flush();
                while sent - decoder_in_loop.done.get() >= prefetch {
                    worker.step();
                }
            }
        }
        input.close();
        while worker.step() {}
    })
    .map_err(|e| Error::InvalidArgument(format!("timely: {e}")))?;
    for r in guards.join() {
        r.map_err(|e| Error::InvalidArgument(format!("a dataflow worker failed: {e}")))?;
    }

    let mut st = state.lock().expect("merge lock");
    if let Some((path, kind)) = st.write_error.take() {
        let what = st.first_error.take().map_or_else(String::new, |(_, e)| e);
        return Err(Error::io(path, std::io::Error::new(kind, what)));
    }
    if let Some((_, e)) = st.first_error.take() {
        return Err(Error::Decode(e));
    }
    if cluster.process == 0 {
        // Exactly once, over every process's merges: each chunk's values
        // arrived in full, each part once.
        let mut seen: HashMap<(usize, usize, u64), ()> = HashMap::new();
        let mut covered: HashMap<(usize, usize), u64> = HashMap::new();
        for r in &st.receipts {
            if seen.insert((r.tensor, r.chunk, r.first), ()).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{}' chunk {}: the part from value {} arrived twice",
                    c.header().tensors[r.tensor].name,
                    r.chunk,
                    r.first
                )));
            }
            *covered.entry((r.tensor, r.chunk)).or_default() += r.bytes;
        }
        for t in all_tasks.iter() {
            let got = covered.get(&(t.tensor, t.chunk)).copied().unwrap_or(0);
            if got != t.out_len {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{}' chunk {}: {got} of {} bytes arrived",
                    c.header().tensors[t.tensor].name,
                    t.chunk,
                    t.out_len
                )));
            }
        }
        if let Some(path) = &opts.placement_log {
            let mut rows: Vec<&MergeReceipt> = st.receipts.iter().collect();
            rows.sort_by_key(|r| (r.global, r.first));
            let mut text = String::from("chunk,tensor,chunk_in_tensor,engine,out_offset,bytes\n");
            for r in rows {
                let engine = match r.engine {
                    Engine::Gpu => "gpu",
                    Engine::Cpu => "cpu",
                };
                text += &format!(
                    "{},{},{},{engine},{},{}\n",
                    r.global, r.tensor, r.chunk, r.out_offset, r.bytes
                );
            }
            std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        }
    }
    let p = policy.lock().expect("policy lock");
    let wall = started.elapsed();
    Ok(st.recorder.statistics(
        &p,
        opts.mode,
        wall,
        notes,
        opts.gpu.as_ref().map(|g| g.describe()),
    ))
}

/// How many digits a run decodes.
enum TargetPrecision {
    All,
    /// Exactly `k` for every float tensor; above a tensor's stored precision is an error.
    Exactly(u32),
    /// `k` or the tensor's stored precision, whichever is smaller
    /// (`progressive_precision` with `mantissa_bits` from the configuration).
    AtMost(u32),
}

impl TargetPrecision {
    /// What `opts` asks for: `--target-precision`, else the configuration's
    /// `progressive_precision` and `mantissa_bits`.
    fn of(opts: &RunOptions) -> Self {
        match (opts.target_precision, opts.config.progressive_precision) {
            (Some(k), _) => TargetPrecision::Exactly(k),
            (None, true) => TargetPrecision::AtMost(opts.config.mantissa_bits),
            (None, false) => TargetPrecision::All,
        }
    }

    fn tables(&self, c: &Container) -> Result<Vec<Option<Arc<Tables>>>> {
        match *self {
            TargetPrecision::All => tables_for(c, None),
            TargetPrecision::Exactly(k) => tables_for(c, Some(k)),
            TargetPrecision::AtMost(k) => {
                let mut built: HashMap<(&crate::codec::Layout, u32), Arc<Tables>> = HashMap::new();
                Ok((0..c.header().tensors.len())
                    .map(|t| {
                        c.layout(t).map(|l| {
                            let k = k.min(l.precision);
                            built
                                .entry((l, k))
                                .or_insert_with(|| Arc::new(Tables::new(l, k)))
                                .clone()
                        })
                    })
                    .collect())
            }
        }
    }
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if core >= libc::CPU_SETSIZE as usize {
            return Err(format!(
                "cpu_affinity core {core} is beyond this system's CPU set"
            ));
        }
        // SAFETY: `core` is below CPU_SETSIZE (checked above) and `set` is a valid set.
        unsafe { libc::CPU_SET(core, &mut set) };
        // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(format!(
                "cannot pin a worker to core {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(format!(
            "cpu_affinity (core {core}) is supported on Linux only"
        ))
    }
}

/// The cores the calling thread may run on.
#[cfg(target_os = "linux")]
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set, which sched_getaffinity fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    // SAFETY: `set` is initialised and every index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Timely's arguments: the caller's, or `-w num_cpu_workers`. A cluster
/// (more than one process) is refused: the file sink writes from one process.
fn timely_args(opts: &RunOptions) -> Result<Vec<String>> {
    let mut args = vec!["padic-burst".to_string()];
    if opts.timely_args.is_empty() {
        args.push("-w".into());
        args.push(opts.config.num_cpu_workers.to_string());
    } else {
        args.extend(opts.timely_args.iter().cloned());
    }
    timely::Config::from_args(args.clone().into_iter())
        .map_err(|e| Error::InvalidArgument(format!("timely arguments {:?}: {e}", &args[1..])))?;
    Ok(args)
}

/// This process's place in a timely cluster (`-n processes -p process`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    pub processes: usize,
    pub process: usize,
}

impl Cluster {
    /// Reads `-n`/`--processes` and `-p`/`--process` from timely's arguments.
    pub fn of(args: &[String]) -> Cluster {
        let value = |short: &str, long: &str| {
            args.iter()
                .position(|a| a == short || a == long)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let processes = value("-n", "--processes").unwrap_or(1).max(1);
        let process = value("-p", "--process").unwrap_or(0).min(processes - 1);
        Cluster { processes, process }
    }
}

/// A decoded tensor.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Little-endian values, as in a safetensors file.
    pub data: Arc<Vec<u8>>,
}

/// What one `decompress` did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub mode: Mode,
    pub gpu_chunks: u64,
    pub cpu_chunks: u64,
    pub hybrid_chunks: u64,
    pub wall: std::time::Duration,
}

/// The library API: decode containers through the graph, with a mode that
/// can be forced at run time, an LRU cache of tensors, and statistics. All
/// methods take `&self` and are safe to call from several threads.
pub struct Pipeline {
    config: Config,
    mode: Mutex<Mode>,
    gpu: Option<Arc<dyn GpuEngine>>,
    gpu_absent: Option<String>,
    pressure: Option<Arc<dyn PressureSource>>,
    cache: Option<crate::cache::TensorCache>,
    last: Mutex<Option<Statistics>>,
}

impl Pipeline {
    /// A pipeline in AUTO_SWITCH, on GPU `gpu_device` where this build and
    /// this machine have one (the `cuda` feature and a driver), else on the
    /// CPU, with the reason kept for the statistics' notes.
    pub fn new(config: Config) -> Self {
        let cache = config.enable_caching.then(|| {
            crate::cache::TensorCache::new((config.cache_size_mb * (1 << 20) as f64) as usize)
        });
        let (gpu, gpu_absent) = match crate::engine::gpu::open(config.gpu_device) {
            Ok(g) => {
                g.set_reserve_mb(config.gpu_memory_threshold_mb);
                (Some(g), None)
            }
            Err(why) => (None, Some(why)),
        };
        // Live readings where there is a GPU (NVML, else the engine's own).
        let pressure = gpu.as_ref().map(|g| {
            crate::pressure::for_engine(g.clone(), config.gpu_device, config.sample_interval_ms).0
        });
        Pipeline {
            config,
            mode: Mutex::new(Mode::Auto),
            gpu,
            gpu_absent,
            pressure,
            cache,
            last: Mutex::new(None),
        }
    }

    /// Uses `gpu` for chunks routed to the GPU.
    pub fn with_gpu(mut self, gpu: Arc<dyn GpuEngine>) -> Self {
        self.gpu = Some(gpu);
        self.gpu_absent = None;
        self
    }

    /// Sets the mode for the following runs.
    pub fn force_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    pub fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode lock")
    }

    fn options(&self, target: Option<u32>) -> RunOptions {
        let mut o = RunOptions::new(self.mode(), self.config.clone());
        o.target_precision = target;
        o.gpu = self.gpu.clone();
        o.gpu_absent = self.gpu_absent.clone();
        o.pressure = self.pressure.clone();
        o
    }

    fn remember(&self, s: &Statistics) {
        *self.last.lock().expect("stats lock") = Some(s.clone());
    }

    /// Decodes every tensor of `container`.
    pub fn decompress(
        &self,
        container: &Arc<Container>,
        target: Option<u32>,
    ) -> Result<(Vec<Tensor>, RunInfo)> {
        let opts = self.options(target);
        let (model, s) = decompress_to_memory(container.clone(), &opts)?;
        self.remember(&s);
        let tensors = container
            .header()
            .tensors
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                data: Arc::new(
                    model.data[t.data_offset as usize..(t.data_offset + t.byte_len) as usize]
                        .to_vec(),
                ),
            })
            .collect();
        let info = RunInfo {
            mode: opts.mode,
            gpu_chunks: s.gpu_decompressions,
            cpu_chunks: s.cpu_decompressions,
            hybrid_chunks: s.hybrid_decompressions,
            wall: std::time::Duration::from_secs_f64(s.wall_time_s),
        };
        Ok((tensors, info))
    }

    /// Decodes one tensor (reading only its chunks), from the cache when it
    /// holds it.
    pub fn decompress_tensor(
        &self,
        container: &Arc<Container>,
        name: &str,
        target: Option<u32>,
    ) -> Result<Tensor> {
        let index = container
            .header()
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: no tensor named '{name}'",
                    container.path().display()
                ))
            })?;
        let t = &container.header().tensors[index];
        let key = crate::cache::CacheKey {
            container: container.identity(),
            tensor: name.to_string(),
            target,
        };
        let tensor = |data| Tensor {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            data,
        };
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(tensor(hit));
        }
        let (data, s) = decompress_tensor(container.clone(), index, &self.options(target))?;
        self.remember(&s);
        let data = Arc::new(data);
        if let Some(c) = &self.cache {
            c.put(key, data.clone());
        }
        Ok(tensor(data))
    }

    /// The last run's statistics, with the cache's running counts; `None`
    /// before the first run.
    pub fn statistics(&self) -> Option<Statistics> {
        let mut s = self.last.lock().expect("stats lock").clone()?;
        if let Some(c) = &self.cache {
            (s.cache_hits, s.cache_misses) = c.counts();
        }
        s.current_mode = self.mode().name().to_string();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_queue_hands_out_every_task_once_owners_from_the_front() {
        // One worker alone takes its share front to back.
        let q = WorkQueue::new(10, 1);
        let got: Vec<_> = std::iter::from_fn(|| q.take(0, 4)).collect();
        assert_eq!(got, vec![0..4, 4..8, 8..10]);
        // Two: each starts at its own share's front; once its share is
        // empty, worker 0 takes from the back of worker 1's.
        let q = WorkQueue::new(10, 2);
        assert_eq!(q.take(0, 2), Some(0..2));
        assert_eq!(q.take(1, 2), Some(5..7));
        assert_eq!(q.take(0, 3), Some(2..5));
        assert_eq!(q.take(0, 2), Some(8..10));
        assert_eq!(q.take(1, 2), Some(7..8));
        assert_eq!((q.take(0, 1), q.take(1, 1)), (None, None));
        // More workers than tasks, and a batch of zero.
        let q = WorkQueue::new(2, 3);
        assert_eq!(q.take(2, 0), Some(1..2));
        assert_eq!(q.take(2, 5), Some(0..1));
        assert_eq!(q.take(0, 1), None);
        // Four threads racing over 100,003 tasks: each taken exactly once.
        let n = 100_003;
        let q = WorkQueue::new(n, 4);
        let seen: Vec<std::sync::atomic::AtomicU8> = (0..n)
            .map(|_| std::sync::atomic::AtomicU8::new(0))
            .collect();
        std::thread::scope(|s| {
            for me in 0..4 {
                let (q, seen) = (&q, &seen);
                s.spawn(move || {
                    while let Some(r) = q.take(me, 1 + me * 3) {
                        for i in r {
                            seen[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(seen
            .iter()
            .all(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1));
    }

    #[test]
    fn memory_placement_takes_concurrent_parts_and_refuses_strays() {
        let n = (5 << 20) + 123;
        let out = Arc::new(MemoryPlacement::new(vec![0u8; n], 1000));
        // Parts of uneven sizes straddling stripe boundaries, from 4 threads.
        let cuts: Vec<usize> = (0..=40).map(|i| i * n / 40).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (out, cuts) = (out.clone(), &cuts);
                s.spawn(move || {
                    for w in cuts.windows(2).skip(t).step_by(4) {
                        let bytes: Vec<u8> = (w[0]..w[1]).map(|i| (i % 251) as u8).collect();
                        out.place(1000 + w[0] as u64, &bytes).unwrap();
                    }
                });
            }
        });
        assert!(out.place(999, &[1]).is_err(), "before the start");
        assert!(out.place(1000 + n as u64, &[1]).is_err(), "past the end");
        assert!(out.place(u64::MAX, &[1, 2]).is_err(), "overflowing");
        let twice = out
            .place(1000 + cuts[3] as u64, &[9])
            .unwrap_err()
            .to_string();
        assert!(twice.contains("placed twice"), "{twice}");
        assert!(
            out.claim(1000 + cuts[7] as u64 - 1, 2).unwrap().is_err(),
            "straddling two parts"
        );
        let data = MemoryPlacement::into_inner(out).unwrap();
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn pooled_buffers_come_back_sized_and_zeroed() {
        let pool = BufferPool::default();
        let mut a = pool.take(100);
        a.iter_mut().for_each(|b| *b = 7);
        pool.give(a);
        let b = pool.take(50);
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|&x| x == 0));
        assert!(b.capacity() >= 100, "the pooled buffer was reused");
    }
}
