//! [`ChunkDecoder`]: decodes routed chunks on the CPU and the GPU. A chunk
//! routed HYBRID is split by element range on a rANS segment boundary, the
//! GPU taking the first values; the GPU parts of a batch go to the engine in
//! one call. A GPU out-of-memory outside GPU_ONLY sends the part to the CPU
//! and counts as memory pressure; any other failure travels on as data.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::{PartDecoder, RouteTag};

use super::pool::BufferPool;
use super::records::{ChunkTask, DecodedPart, Failure};
use super::shards::ShardRun;
use crate::codec::chunk::RANGE_ALIGN;
use crate::codec::Tables;
use crate::engine::gpu::{GpuEngine, GpuError, GpuRange};
use crate::error::{Error, Location, Result};
use crate::format::Container;
use crate::policy::{Mode, Policy};
use crate::stats::Engine;

/// Decodes routed chunks on the CPU and the GPU.
pub(crate) struct ChunkDecoder {
    /// Every shard's container, tables and output; a task names its shard.
    pub(crate) shards: Arc<Vec<ShardRun>>,
    pub(crate) gpu: Option<Arc<dyn GpuEngine>>,
    pub(crate) mode: Mode,
    pub(crate) policy: Arc<Mutex<Policy>>,
    pub(crate) started: Instant,
    /// Chunks this worker has decoded (the source's read-ahead counts on it).
    pub(crate) done: std::cell::Cell<usize>,
    pub(crate) pool: Arc<BufferPool>,
    /// Whether parts may be decoded straight into their shard's output.
    pub(crate) direct: bool,
    /// Alignment scratch of the CPU decoder, reused.
    pub(crate) scratch: std::cell::RefCell<Vec<u32>>,
}

impl ChunkDecoder {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The container of `t`'s shard.
    fn container(&self, t: &ChunkTask) -> &Container {
        &self.shards[t.shard].container
    }

    /// The tables of `t`'s tensor (`None`: stored as it was).
    fn tables(&self, t: &ChunkTask) -> Option<&Tables> {
        self.shards[t.shard].tables[t.tensor].as_deref()
    }

    fn place(&self, t: &ChunkTask) -> Location {
        Location {
            tensor: Some(self.container(t).header().tensors[t.tensor].name.clone()),
            chunk: Some(t.chunk),
            ..Location::default()
        }
    }

    /// Decodes values from `first` of the chunk on the CPU, as many as `out` holds.
    fn cpu(&self, t: &ChunkTask, first: u64, out: &mut [u8]) -> Result<u64> {
        crate::engine::CpuEngine::decode_part(
            self.container(t),
            self.tables(t),
            t.tensor,
            t.chunk,
            first as usize,
            out,
            &mut self.scratch.borrow_mut(),
        )
    }

    /// One part on the CPU: values `[first, last)`.
    fn cpu_part(
        &self,
        t: &ChunkTask,
        route: RouteTag,
        first: u64,
        last: u64,
    ) -> std::result::Result<DecodedPart, Failure> {
        let (part, dest) = self.open_part(t, route, Engine::Cpu, first, last);
        let started = self.now_us();
        let result = dest.and_then(|mut dest| self.cpu(t, first, dest.bytes()).map(|n| (n, dest)));
        self.close_part(part, result, started)
    }

    /// A part's record, and where its values go: straight into the output
    /// when it is in memory, else a pooled buffer.
    fn open_part(
        &self,
        t: &ChunkTask,
        route: RouteTag,
        engine: Engine,
        first: u64,
        last: u64,
    ) -> (DecodedPart, Result<Dest<'_>>) {
        let unit = t.out_len / t.elements.max(1);
        let len = ((last - first) * unit) as usize;
        let part = DecodedPart {
            global: t.global,
            shard: t.shard,
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
        };
        let direct = self.direct.then(|| &self.shards[t.shard].out);
        let dest = match direct.and_then(|o| o.claim(part.out_offset, len)) {
            // The output is ours: a claim it refuses is a fault of the graph.
            Some(Err(e)) => Err(Error::Internal(format!("{}: {e}", self.place(t)))),
            Some(Ok(out)) => Ok(Dest::Direct(out)),
            None => Ok(Dest::Pooled(self.pool.take(len))),
        };
        (part, dest)
    }

    /// Records how a part's decode (begun at `started` µs) ended, and feeds
    /// HYBRID's throughput estimate.
    fn close_part(
        &self,
        mut part: DecodedPart,
        result: Result<(u64, Dest<'_>)>,
        started: u64,
    ) -> std::result::Result<DecodedPart, Failure> {
        match result {
            Ok((bytes_in, Dest::Direct(out))) => {
                part.bytes_in = bytes_in;
                part.placed = out.len() as u64;
            }
            Ok((bytes_in, Dest::Pooled(data))) => {
                part.bytes_in = bytes_in;
                part.data = data;
            }
            Err(error) => {
                return Err(Failure {
                    global: part.global,
                    error: Box::new(error),
                })
            }
        }
        part.done_us = self.now_us();
        part.decode_us = part.done_us - started;
        if self.mode == Mode::Hybrid {
            let secs = part.decode_us.max(1) as f64 / 1e6;
            self.policy.lock().expect("policy lock").observe(
                part.engine == Engine::Gpu,
                part.bytes(),
                secs,
            );
        }
        Ok(part)
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
    ) -> Result<u64> {
        let Some(attempt) = attempt else {
            part.engine = Engine::Cpu;
            return self.cpu(t, first, out);
        };
        match attempt {
            Ok(()) => Ok(self.container(t).header().tensors[t.tensor].chunks[t.chunk]
                .sections
                .iter()
                .map(|s| s.len)
                .sum()),
            Err(source) if self.mode == Mode::GpuOnly => Err(Error::Gpu {
                at: Some(Box::new(self.place(t))),
                doing: format!("GPU_ONLY cannot decode {} bytes on the GPU", out.len()),
                source,
            }),
            // Out of device memory is memory pressure: the CPU takes the
            // part, and it counts.
            Err(GpuError::OutOfMemory { .. }) => {
                self.policy.lock().expect("policy lock").record_oom();
                part.rerouted_oom = true;
                part.engine = Engine::Cpu;
                self.cpu(t, first, out)
            }
            // Anything else (a driver error, damage the kernels found) is
            // no reason to decode elsewhere: it stops the run, said.
            Err(source) => Err(Error::Gpu {
                at: Some(Box::new(self.place(t))),
                doing: format!("the GPU failed on {} bytes", out.len()),
                source,
            }),
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
    type Error = Failure;

    /// The GPU parts of the whole batch go to the engine in one call
    /// ([`GpuEngine::decode_batch`]; without an engine each fails, saying
    /// why); the CPU parts decode one by one. Each GPU part's time is its
    /// share, by bytes, of the call's.
    fn decode_batch(
        &self,
        chunks: Vec<(ChunkTask, RouteTag)>,
    ) -> Vec<std::result::Result<DecodedPart, Failure>> {
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
        let mut slots: Vec<Option<std::result::Result<DecodedPart, Failure>>> =
            specs.iter().map(|_| None).collect();
        // The GPU parts: opened together, decoded in one call.
        let mut open = Vec::new();
        for (i, &(k, engine, a, b)) in specs.iter().enumerate() {
            let (t, tag) = &chunks[k];
            if engine != Engine::Gpu {
                continue;
            }
            let (part, dest) = self.open_part(t, *tag, engine, a, b);
            match dest {
                Ok(dest) => open.push((i, part, dest)),
                Err(e) => {
                    let now = self.now_us();
                    slots[i] = Some(self.close_part(part, Err(e), now));
                }
            }
        }
        // One engine call per shard (a call reads one container).
        open.sort_by_key(|(i, _, _)| chunks[specs[*i].0].0.shard);
        if !open.is_empty() {
            let started = self.now_us();
            let results = {
                let mut ranges: Vec<(usize, GpuRange<'_>)> = open
                    .iter_mut()
                    .map(|(i, _, dest)| {
                        let (k, _, a, _) = specs[*i];
                        let t = &chunks[k].0;
                        let range = GpuRange {
                            tables: self
                                .tables(t)
                                .expect("split sends only float chunks to the GPU"),
                            tensor: t.tensor,
                            chunk: t.chunk,
                            total: t.elements as usize,
                            first: a as usize,
                            out: dest.bytes(),
                        };
                        (t.shard, range)
                    })
                    .collect();
                let mut results = Vec::with_capacity(ranges.len());
                while !ranges.is_empty() {
                    let shard = ranges[0].0;
                    let n = ranges.iter().take_while(|(s, _)| *s == shard).count();
                    let mut batch: Vec<GpuRange<'_>> = ranges.drain(..n).map(|(_, r)| r).collect();
                    // No engine: `None` a range, the CPU's (said once, at the
                    // start of the run).
                    match &self.gpu {
                        Some(gpu) => results.extend(
                            gpu.decode_batch(&self.shards[shard].container, &mut batch)
                                .into_iter()
                                .map(Some),
                        ),
                        None => results.extend(batch.iter().map(|_| None)),
                    }
                }
                results
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
                slots[i] = Some(self.close_part(part, result, at - share.min(at)));
            }
        }
        for (i, &(k, _, a, b)) in specs.iter().enumerate() {
            if slots[i].is_none() {
                let (t, tag) = &chunks[k];
                slots[i] = Some(self.cpu_part(t, *tag, a, b));
            }
        }
        for (t, _) in &chunks {
            self.container(t).release(t.tensor, t.chunk);
            self.done.set(self.done.get() + 1);
        }
        slots.into_iter().flatten().collect()
    }
}

impl ChunkDecoder {
    /// A routed chunk's parts: (engine, first value, end), the GPU's first.
    fn split(&self, t: &ChunkTask, tag: RouteTag) -> Vec<(Engine, u64, u64)> {
        let n = t.elements;
        let passthrough = self.tables(t).is_none();
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
