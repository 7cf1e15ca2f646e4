//! [`ChunkDecoder`]: decodes routed chunks on the CPU and the GPU. A chunk
//! routed HYBRID is split by element range on a rANS segment boundary, the
//! GPU taking the first values; without a GPU it is not split (one CPU part,
//! as CPU_ONLY). A split chunk's sections are read and checksummed once, and
//! both parts decode from those bytes. The GPU parts of a batch go to the
//! engine in one call, on a thread of its own while this one decodes the CPU
//! parts: the two shares run at the same time. A GPU out-of-memory outside
//! GPU_ONLY sends the part to the CPU and counts as memory pressure; any
//! other failure travels on as data.

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
    /// This process's workers, the merges a part may go to.
    pub(crate) merges: std::ops::Range<usize>,
    /// Alignment scratch of the CPU decoder, reused.
    pub(crate) scratch: std::cell::RefCell<Vec<u32>>,
    /// Decoded chunks' bytes not yet given back: one run of adjacent
    /// chunks of one shard (see [`ChunkDecoder::release`]).
    pub(crate) unreleased: std::cell::RefCell<Option<(usize, std::ops::Range<usize>)>>,
}

/// Decoded input gathered before its pages are given back: one `madvise`,
/// and one TLB shootdown on every core, for this much (a chunk at a time,
/// the shootdowns took 3-4% of the CPU time of a 256 MB model's decode). A
/// few MiB a worker more stay resident.
const RELEASE_BATCH: usize = 4 << 20;

impl ChunkDecoder {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Gives back `t`'s input pages, once [`RELEASE_BATCH`] bytes of
    /// adjacent decoded chunks have gathered (or the next chunk is not
    /// adjacent: another shard, or past another worker's share).
    fn release(&self, t: &ChunkTask) {
        let Some(bytes) = self.container(t).releasable(t.tensor, t.chunk) else {
            return;
        };
        let mut unreleased = self.unreleased.borrow_mut();
        match &mut *unreleased {
            Some((shard, run)) if *shard == t.shard && run.end == bytes.start => {
                run.end = bytes.end
            }
            other => {
                if let Some((shard, run)) = other.replace((t.shard, bytes)) {
                    self.shards[shard].container.release(run);
                }
            }
        }
        if let Some((shard, run)) = unreleased.take_if(|(_, run)| run.len() >= RELEASE_BATCH) {
            self.shards[shard].container.release(run);
        }
    }

    /// The worker of this process whose merge places `t`'s parts: one per
    /// tensor (told apart by its shard), spread over the process's workers.
    fn merge_of(&self, t: &ChunkTask) -> usize {
        let key = t.tensor ^ t.shard.wrapping_mul(0x9e37_79b9);
        self.merges.start + key % self.merges.len().max(1)
    }

    /// The container of `t`'s shard.
    fn container(&self, t: &ChunkTask) -> &Container {
        &self.shards[t.shard].container
    }

    /// The tables of `t`'s tensor (`None`: stored as it was).
    fn tables(&self, t: &ChunkTask) -> Option<&Tables> {
        let tables = self.shards[t.shard].tables[t.tensor].as_deref();
        // A run builds tables only for the tensors it decodes: a split
        // tensor without them must stop the run, not pass as stored bytes.
        assert!(
            tables.is_some() || self.container(t).layout(t.tensor).is_none(),
            "no decode tables for split tensor {} in this run",
            t.tensor
        );
        tables
    }

    fn place(&self, t: &ChunkTask) -> Location {
        Location {
            tensor: Some(self.container(t).header().tensors[t.tensor].name.clone()),
            chunk: Some(t.chunk),
            ..Location::default()
        }
    }

    /// Decodes values from `first` of the chunk on the CPU, as many as `out`
    /// holds; returns the container bytes it read. From `read`, the chunk's
    /// sections when they were read and checksummed already (a split
    /// chunk's): nothing more is read.
    fn cpu(
        &self,
        t: &ChunkTask,
        first: u64,
        out: &mut [u8],
        read: Option<&[&[u8]]>,
    ) -> Result<u64> {
        if let (Some(secs), Some(tab)) = (read, self.tables(t)) {
            tab.decode_range_bytes(
                secs,
                t.elements as usize,
                first as usize,
                out,
                &mut self.scratch.borrow_mut(),
            )
            .map_err(|e| self.container(t).decode_error(t.tensor, t.chunk, e))?;
            return Ok(0);
        }
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

    /// One part on the CPU: values `[first, last)` (from `read`, see [`Self::cpu`]).
    fn cpu_part(
        &self,
        t: &ChunkTask,
        route: RouteTag,
        (first, last): (u64, u64),
        read: Option<&[&[u8]]>,
    ) -> std::result::Result<DecodedPart, Failure> {
        let (part, dest) = self.open_part(t, route, Engine::Cpu, first, last);
        let started = self.now_us();
        let result =
            dest.and_then(|mut dest| self.cpu(t, first, dest.bytes(), read).map(|n| (n, dest)));
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
            merge_at: self.merge_of(t),
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

    /// What a GPU attempt comes to: the bytes the engine read (none when
    /// it was handed `read`, the sections read already); with no engine
    /// (`None`), the CPU's decode; an out-of-memory outside GPU_ONLY, the
    /// CPU's decode, counted as a memory-pressure event; any other failure,
    /// the error that stops the run.
    fn gpu_outcome(
        &self,
        t: &ChunkTask,
        (first, out): (u64, &mut [u8]),
        part: &mut DecodedPart,
        attempt: Option<std::result::Result<(), GpuError>>,
        read: Option<&[&[u8]]>,
    ) -> Result<u64> {
        let Some(attempt) = attempt else {
            part.engine = Engine::Cpu;
            return self.cpu(t, first, out, read);
        };
        match attempt {
            Ok(()) if read.is_some() => Ok(0),
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
                self.cpu(t, first, out, read)
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

/// One part of a batch: (chunk index in the batch, engine, first, end).
type PartSpec = (usize, Engine, u64, u64);

/// A batch's result slots, one a part, in order.
type Slots = Vec<Option<std::result::Result<DecodedPart, Failure>>>;

/// A batch chunk's sections when it is split between the engines: read and
/// checksummed once, for both parts (`Err`: why they could not be).
type SplitRead<'c> = Option<Result<Vec<&'c [u8]>>>;

/// The verified sections in `read`, if any.
fn sections<'r, 'c>(read: &'r SplitRead<'c>) -> Option<&'r [&'c [u8]]> {
    read.as_ref()
        .and_then(|r| r.as_ref().ok())
        .map(Vec::as_slice)
}

impl Drop for ChunkDecoder {
    fn drop(&mut self) {
        if let Some((shard, run)) = self.unreleased.take() {
            self.shards[shard].container.release(run);
        }
    }
}

impl PartDecoder<ChunkTask> for ChunkDecoder {
    type Part = DecodedPart;
    type Error = Failure;

    /// The GPU parts of the whole batch go to the engine in one call
    /// ([`GpuEngine::decode_batch`]; without an engine each fails, saying
    /// why), on a thread of its own while this one decodes the CPU parts.
    /// Each GPU part's time is its share, by bytes, of the call's. A chunk
    /// split between the engines is read and checksummed once, before the
    /// call, and its bytes counted once, on its GPU part.
    fn decode_batch(
        &self,
        chunks: Vec<(ChunkTask, RouteTag)>,
    ) -> Vec<std::result::Result<DecodedPart, Failure>> {
        let specs: Vec<PartSpec> = chunks
            .iter()
            .enumerate()
            .flat_map(|(k, (t, tag))| {
                self.split(t, *tag)
                    .into_iter()
                    .map(move |(e, a, b)| (k, e, a, b))
            })
            .collect();
        let mut slots: Slots = specs.iter().map(|_| None).collect();
        let reads = self.read_split_chunks(&chunks, &specs);
        for (i, &(k, ..)) in specs.iter().enumerate() {
            if let Some(Err(e)) = &reads[k] {
                slots[i] = Some(Err(Failure {
                    global: chunks[k].0.global,
                    error: Box::new(e.clone()),
                }));
            }
        }
        // The GPU parts: opened together, decoded in one call.
        let mut open = Vec::new();
        for (i, &(k, engine, a, b)) in specs.iter().enumerate() {
            let (t, tag) = &chunks[k];
            if engine != Engine::Gpu || slots[i].is_some() {
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
        let cpu_work = specs
            .iter()
            .zip(&slots)
            .any(|(s, slot)| s.1 == Engine::Cpu && slot.is_none());
        // One engine call per shard (a call reads one container).
        open.sort_by_key(|(i, _, _)| chunks[specs[*i].0].0.shard);
        let (results, spent) = {
            let ranges: Vec<(usize, GpuRange<'_>)> = open
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
                        sections: sections(&reads[k]),
                    };
                    (t.shard, range)
                })
                .collect();
            self.gpu_alongside(ranges, cpu_work, || {
                self.decode_cpu_parts(&chunks, &specs, &reads, &mut slots)
            })
        };
        let total: u64 = open
            .iter()
            .map(|(_, _, d)| d.len() as u64)
            .sum::<u64>()
            .max(1);
        for ((i, mut part, mut dest), attempt) in open.into_iter().zip(results) {
            let (k, _, a, _) = specs[i];
            let t = &chunks[k].0;
            let read = sections(&reads[k]);
            // The split chunk's one read, counted on its GPU part.
            let read_bytes: u64 = read.map_or(0, |r| r.iter().map(|s| s.len() as u64).sum());
            let share = spent * dest.len() as u64 / total;
            let at = self.now_us();
            let result = self
                .gpu_outcome(t, (a, dest.bytes()), &mut part, attempt, read)
                .map(|n| (n + read_bytes, dest));
            // Its share of the call, plus any CPU fallback it took.
            slots[i] = Some(self.close_part(part, result, at - share.min(at)));
        }
        for (t, _) in &chunks {
            self.release(t);
            self.done.set(self.done.get() + 1);
        }
        slots.into_iter().flatten().collect()
    }
}

impl ChunkDecoder {
    /// For each chunk of the batch split between the engines, its sections,
    /// read and checksummed once for both parts; `None` for the others.
    fn read_split_chunks(
        &self,
        chunks: &[(ChunkTask, RouteTag)],
        specs: &[PartSpec],
    ) -> Vec<SplitRead<'_>> {
        let mut engines = vec![(false, false); chunks.len()];
        for &(k, engine, ..) in specs {
            match engine {
                Engine::Gpu => engines[k].0 = true,
                Engine::Cpu => engines[k].1 = true,
            }
        }
        chunks
            .iter()
            .zip(engines)
            .map(|((t, _), on)| {
                let tab = self.tables(t)?;
                (on == (true, true)).then(|| {
                    self.container(t)
                        .sections(t.tensor, t.chunk, tab.sections_used())
                })
            })
            .collect()
    }

    /// Decodes the CPU parts of a batch not decided yet, into `slots`.
    fn decode_cpu_parts(
        &self,
        chunks: &[(ChunkTask, RouteTag)],
        specs: &[PartSpec],
        reads: &[SplitRead<'_>],
        slots: &mut Slots,
    ) {
        for (i, &(k, engine, a, b)) in specs.iter().enumerate() {
            if engine == Engine::Cpu && slots[i].is_none() {
                let (t, tag) = &chunks[k];
                slots[i] = Some(self.cpu_part(t, *tag, (a, b), sections(&reads[k])));
            }
        }
    }

    /// Runs the GPU calls on `ranges` (one call per shard: `ranges` come
    /// sorted by their shard) and `cpu` (the CPU parts' decode) at the same
    /// time: the calls on a thread of their own when both have work, else
    /// one after the other here. Returns each range's attempt (`None`: no
    /// engine, the CPU's then) and the µs the calls took.
    fn gpu_alongside(
        &self,
        ranges: Vec<(usize, GpuRange<'_>)>,
        cpu_work: bool,
        cpu: impl FnOnce(),
    ) -> (Vec<Option<std::result::Result<(), GpuError>>>, u64) {
        let shards = &self.shards;
        let gpu = self.gpu.as_deref();
        let apart = cpu_work && gpu.is_some() && !ranges.is_empty();
        let call = move || {
            let started = Instant::now();
            let mut ranges = ranges;
            let mut attempts = Vec::with_capacity(ranges.len());
            while !ranges.is_empty() {
                let shard = ranges[0].0;
                let n = ranges.iter().take_while(|(s, _)| *s == shard).count();
                let mut batch: Vec<GpuRange<'_>> = ranges.drain(..n).map(|(_, r)| r).collect();
                match gpu {
                    Some(gpu) => attempts.extend(
                        gpu.decode_batch(&shards[shard].container, &mut batch)
                            .into_iter()
                            .map(Some),
                    ),
                    None => attempts.extend(batch.iter().map(|_| None)),
                }
            }
            (attempts, started.elapsed().as_micros() as u64)
        };
        if !apart {
            let done = call();
            cpu();
            return done;
        }
        std::thread::scope(|s| {
            let on_gpu = s.spawn(call);
            cpu();
            on_gpu
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
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
            // Without a GPU, HYBRID is CPU_ONLY: one part, read once.
            RouteTag::Hybrid { .. } if self.gpu.is_none() => vec![(Engine::Cpu, 0, n)],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Tables;
    use crate::policy::PolicySettings;
    use std::time::Duration;

    /// A test-only GPU: decodes with the CPU codec after dawdling, and
    /// records when each call began and ended, and on which thread.
    struct RecordingGpu {
        intervals: Mutex<Vec<(Instant, Instant)>>,
        threads: Mutex<Vec<std::thread::ThreadId>>,
        delay: Duration,
    }

    impl GpuEngine for RecordingGpu {
        fn describe(&self) -> String {
            "test stand-in (recording)".into()
        }
        fn decode_range(
            &self,
            c: &Container,
            r: &mut GpuRange<'_>,
        ) -> std::result::Result<(), GpuError> {
            let secs = match r.sections {
                Some(s) => s.to_vec(),
                None => c
                    .sections(r.tensor, r.chunk, r.tables.sections_used())
                    .map_err(|e| GpuError::Failed(e.to_string()))?,
            };
            r.tables
                .decode_range_bytes(&secs, r.total, r.first, r.out, &mut Vec::new())
                .map_err(|e| GpuError::Failed(e.to_string()))
        }
        fn decode_batch(
            &self,
            c: &Container,
            ranges: &mut [GpuRange<'_>],
        ) -> Vec<std::result::Result<(), GpuError>> {
            let start = Instant::now();
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            std::thread::sleep(self.delay);
            let done = ranges.iter_mut().map(|r| self.decode_range(c, r)).collect();
            self.intervals.lock().unwrap().push((start, Instant::now()));
            done
        }
    }

    /// One f32 chunk of 512 Ki values, compressed in `dir`.
    fn one_chunk(dir: &std::path::Path) -> (Arc<Container>, Vec<u8>) {
        let mut rng = crate::demo::Rng::new(5);
        let n = 512 * 1024;
        let bytes = crate::demo::gaussian_bytes(&mut rng, n, 0.02, safetensors::Dtype::F32);
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], &bytes).unwrap();
        let input = dir.join("m.safetensors");
        std::fs::write(&input, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let packed = dir.join("m.padic");
        let opts = crate::compress::CompressOptions {
            chunk_kib: 2048,
            ..Default::default()
        };
        crate::compress::compress_file(
            &input,
            &packed,
            &opts,
            &crate::progress::Progress::hidden(),
        )
        .unwrap();
        (Arc::new(Container::open(&packed).unwrap()), bytes)
    }

    fn decoder(c: &Arc<Container>, gpu: Option<Arc<dyn GpuEngine>>) -> ChunkDecoder {
        let tables: Vec<Option<Arc<Tables>>> = crate::engine::tables_for(c, None).unwrap();
        let out = crate::engine::cpu::output_buffer(c.header().data_len as usize);
        ChunkDecoder {
            shards: Arc::new(vec![ShardRun {
                container: c.clone(),
                tables,
                out: Arc::new(super::super::placement::MemoryPlacement::new(out, 0)),
            }]),
            policy: Arc::new(Mutex::new(Policy::new(
                PolicySettings::default(),
                Mode::Hybrid,
                gpu.is_some(),
            ))),
            gpu,
            mode: Mode::Hybrid,
            started: Instant::now(),
            done: Default::default(),
            pool: Default::default(),
            direct: false,
            merges: 0..1,
            scratch: Default::default(),
            unreleased: Default::default(),
        }
    }

    fn task(c: &Container) -> ChunkTask {
        let job = crate::engine::chunk_jobs(c)[0];
        ChunkTask {
            global: 0,
            shard: 0,
            tensor: job.tensor,
            chunk: job.chunk,
            elements: c.header().tensors[job.tensor].chunks[job.chunk].elements,
            out_offset: job.out_offset,
            out_len: job.out_len,
            sent_us: 0,
        }
    }

    /// The parts' bytes, put back together in order.
    fn rebuilt(parts: &[DecodedPart]) -> Vec<u8> {
        let mut sorted: Vec<&DecodedPart> = parts.iter().collect();
        sorted.sort_by_key(|p| p.first);
        sorted.iter().flat_map(|p| p.data.iter().copied()).collect()
    }

    #[test]
    fn the_gpu_and_cpu_shares_of_a_split_chunk_run_at_the_same_time_from_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let (c, original) = one_chunk(dir.path());
        let gpu = Arc::new(RecordingGpu {
            intervals: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            delay: Duration::from_millis(500),
        });
        let d = decoder(&c, Some(gpu.clone()));
        let parts: Vec<DecodedPart> = d
            .decode_batch(vec![(task(&c), RouteTag::Hybrid { gpu_fraction: 0.5 })])
            .into_iter()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(rebuilt(&parts), original, "the parts rebuild the chunk");
        let on = |e: Engine| {
            parts
                .iter()
                .find(|p| p.engine == e)
                .expect("both engines took a part")
        };
        let cpu = on(Engine::Cpu);
        let (_, gpu_end) = gpu.intervals.lock().unwrap()[0];
        let at = |us: u64| d.started + Duration::from_micros(us);
        // The GPU call ran on a thread of its own, and the CPU share did not
        // wait for it: it was done while the call (500 ms) still ran. Run one
        // after the other, the CPU share would end after the call.
        assert_ne!(gpu.threads.lock().unwrap()[0], std::thread::current().id());
        let cpu_end = at(cpu.done_us);
        assert!(
            cpu_end < gpu_end,
            "the CPU share ended at {cpu_end:?}, the GPU call at {gpu_end:?}"
        );
        // One read and checksum of the chunk, counted once, on the GPU part.
        let sections = c.header().tensors[0].compressed_bytes();
        assert_eq!(c.bytes_checksummed(), sections);
        assert_eq!(on(Engine::Gpu).bytes_in, sections);
        assert_eq!(cpu.bytes_in, 0);
    }

    #[test]
    fn without_a_gpu_a_hybrid_chunk_is_one_cpu_part_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let (c, original) = one_chunk(dir.path());
        let d = decoder(&c, None);
        let parts: Vec<DecodedPart> = d
            .decode_batch(vec![(task(&c), RouteTag::Hybrid { gpu_fraction: 0.5 })])
            .into_iter()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(parts.len(), 1, "not split");
        assert_eq!(parts[0].engine, Engine::Cpu);
        assert_eq!(parts[0].data, original);
        let sections = c.header().tensors[0].compressed_bytes();
        assert_eq!(c.bytes_checksummed(), sections);
        assert_eq!(parts[0].bytes_in, sections);
    }
}
