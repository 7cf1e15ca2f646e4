//! The CPU engine: decodes chunks in parallel on a rayon pool of its own.
//!
//! Each worker keeps one scratch buffer for its whole life (a chunk's output
//! is decoded into warm, already-faulted memory and then written at its
//! offset), so a file decode does not fault a fresh page per chunk. An
//! in-memory decode writes straight into the caller's preallocated buffer,
//! each chunk into its own disjoint slice.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::codec::{Layout, Tables};
use crate::error::{Error, Result};
use crate::format::{Container, TensorEntry};
use crate::output::TempOutput;
use crate::progress::Progress;

/// One chunk to decode: where it lies in the data region.
#[derive(Debug, Clone, Copy)]
pub struct ChunkJob {
    /// Index of the tensor in the container's header.
    pub tensor: usize,
    /// Index of the chunk in its tensor.
    pub chunk: usize,
    /// Byte offset of the chunk's output in the safetensors data region.
    pub out_offset: u64,
    /// Bytes of output.
    pub out_len: u64,
}

/// Each job with its own bytes of `data`, the model's data region (jobs
/// are contiguous and in order: the header was validated so).
pub fn job_slices<'j, 'd>(
    jobs: &'j [ChunkJob],
    data: &'d mut [u8],
) -> Vec<(&'j ChunkJob, &'d mut [u8])> {
    let mut slices = Vec::with_capacity(jobs.len());
    let mut rest = data;
    for job in jobs {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(job.out_len as usize);
        slices.push((job, head));
        rest = tail;
    }
    slices
}

/// Every chunk of a container, in file order.
pub fn chunk_jobs(c: &Container) -> Vec<ChunkJob> {
    let mut jobs = Vec::new();
    for (ti, t) in c.header().tensors.iter().enumerate() {
        let unit = t.unit();
        let mut off = t.data_offset;
        for (ci, ch) in t.chunks.iter().enumerate() {
            let len = ch.elements * unit;
            jobs.push(ChunkJob {
                tensor: ti,
                chunk: ci,
                out_offset: off,
                out_len: len,
            });
            off += len;
        }
    }
    jobs
}

/// The decoding tables of every split tensor for a decode to `target` digits
/// (`None`: every stored digit). A target above a tensor's stored precision is an error.
pub fn tables_for(c: &Container, target: Option<u32>) -> Result<Vec<Option<Arc<Tables>>>> {
    tables_with(c, |_, layout, t| {
        checked_digits(target, layout, t).map(Some)
    })
}

/// The digits a decode to `target` reads of tensor `t` (`None`: every
/// stored digit); above its stored precision, or 0, is an error naming it.
pub fn checked_digits(target: Option<u32>, layout: &Layout, t: &TensorEntry) -> Result<u32> {
    let k = target.unwrap_or(layout.precision);
    if k > layout.precision {
        let instead = if k <= crate::config::MAX_MANTISSA_BITS {
            format!(
                "to take at most {k}, set progressive_precision = true and mantissa_bits = {k} \
                 in the configuration"
            )
        } else {
            format!(
                "no float stores more than {} digits: leave the target precision out to decode \
                 every stored digit",
                crate::config::MAX_MANTISSA_BITS
            )
        };
        return Err(Error::InvalidArgument(format!(
            "target precision {k} exceeds the {} digits stored for tensor '{}' ({}); {instead}",
            layout.precision, t.name, t.dtype
        )));
    }
    if k == 0 {
        return Err(Error::InvalidArgument(
            "target precision 0: at least one digit must be read".into(),
        ));
    }
    Ok(k)
}

/// The one table builder: for split tensor `ti`, the tables for the digits
/// `digits(ti, layout, entry)` asks, or none where it asks for none (a
/// tensor the run does not decode); tensors of one dtype share a layout, so
/// each distinct (layout, digits) set is built once.
pub fn tables_with(
    c: &Container,
    mut digits: impl FnMut(usize, &Layout, &TensorEntry) -> Result<Option<u32>>,
) -> Result<Vec<Option<Arc<Tables>>>> {
    let mut built: HashMap<(&Layout, u32), Arc<Tables>> = HashMap::new();
    c.header()
        .tensors
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let Some(layout) = c.layout(ti) else {
                return Ok(None);
            };
            let Some(k) = digits(ti, layout, t)? else {
                return Ok(None);
            };
            Ok(Some(
                built
                    .entry((layout, k))
                    .or_insert_with(|| Arc::new(Tables::new(layout, k)))
                    .clone(),
            ))
        })
        .collect()
}

/// What a decode did.
#[derive(Debug, Clone, Default)]
pub struct DecodeStats {
    /// Chunks decoded.
    pub chunks: usize,
    /// Container bytes read (the sections decoded).
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Wall time of the decode.
    pub wall: Duration,
}

impl DecodeStats {
    /// Decoded output per second, in GB/s (10^9 bytes).
    pub fn gb_per_s(&self) -> f64 {
        self.bytes_out as f64 / self.wall.as_secs_f64().max(1e-9) / 1e9
    }
}

/// A decoded model held in memory: the safetensors data region and its index.
#[derive(Debug, Clone)]
pub struct DecodedModel {
    /// The safetensors header (JSON) of the data region.
    pub source_header: String,
    /// The data region: every tensor's bytes, back to back.
    pub data: Vec<u8>,
}

impl DecodedModel {
    /// The full safetensors file bytes.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut v = crate::output::safetensors_preamble(&self.source_header);
        v.extend_from_slice(&self.data);
        v
    }
}

/// A zeroed buffer for `n` bytes of output. On Linux a large one is marked for
/// transparent huge pages before it is first touched: decoding writes every
/// byte, and with 4 KiB pages the kernel's page faults cost about as much as
/// the decode itself (measured with `examples/throughput`: fresh versus reused
/// buffers). `PADIC_NO_HUGEPAGE` ([`crate::config::no_hugepage`]) turns this
/// off; a bad value leaves it on (the CLI refuses it first).
pub fn output_buffer(n: usize) -> Vec<u8> {
    let data = vec![0u8; n];
    #[cfg(target_os = "linux")]
    if n >= 4 << 20 && !crate::config::no_hugepage().unwrap_or(false) {
        advise_within(data.as_ptr() as usize, n, 2 << 20, libc::MADV_HUGEPAGE);
    }
    data
}

/// Maps the whole 4 KiB pages of the `len` output bytes at `addr` before a
/// decoder writes them (`MADV_POPULATE_WRITE`, Linux 5.14 and later): one
/// call instead of a page fault a page. A Python load of MiniLM bf16 into
/// 4 KiB pages took 24.6 ms against 26.5 ms (median of 30, alternated; 3%
/// less with huge pages). Best effort: an older kernel refuses it, and the
/// decoder's writes fault the pages in as before.
pub(crate) fn populate(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    advise_within(addr, len, 4096, libc::MADV_POPULATE_WRITE);
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

/// `madvise(advice)` over the `align`-aligned blocks that lie wholly within
/// the `len` bytes at `addr` (best effort: the advice only changes how the
/// pages are backed, and a refusal changes nothing).
#[cfg(target_os = "linux")]
fn advise_within(addr: usize, len: usize, align: usize, advice: libc::c_int) {
    let first = addr.next_multiple_of(align);
    let end = (addr + len) / align * align;
    if end > first {
        // SAFETY: the range lies inside the caller's allocation; MADV_HUGEPAGE
        // and MADV_POPULATE_WRITE change how its pages are backed, never
        // their contents.
        let _ = unsafe { libc::madvise(first as *mut libc::c_void, end - first, advice) };
    }
}

/// Decodes chunks on the CPU.
#[derive(Debug)]
pub struct CpuEngine {
    pool: rayon::ThreadPool,
}

impl CpuEngine {
    /// An engine with `workers` threads (`None`: one per core).
    pub fn new(workers: Option<usize>) -> Result<Self> {
        let n = match workers {
            Some(0) => {
                return Err(Error::InvalidArgument(
                    "--workers 0: at least one worker is needed".into(),
                ))
            }
            Some(n) => n,
            None => crate::config::cores(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("padic-cpu-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start {n} CPU workers: {e}")))?;
        Ok(CpuEngine { pool })
    }

    /// Decode threads in the pool.
    pub fn workers(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Decodes one chunk into `out` (`job.out_len` bytes).
    pub fn decode_chunk(
        c: &Container,
        tables: &[Option<Arc<Tables>>],
        job: &ChunkJob,
        out: &mut [u8],
        scratch: &mut Vec<u32>,
    ) -> Result<u64> {
        let table = tables[job.tensor].as_deref();
        Self::decode_part(c, table, job.tensor, job.chunk, 0, out, scratch)
    }

    /// Decodes values `[first, first + n)` of chunk `chunk` of tensor
    /// `tensor` into `out` (`n` values' bytes; for a tensor stored as it was,
    /// `table` being `None`, values are bytes); returns the bytes read.
    pub fn decode_part(
        c: &Container,
        table: Option<&Tables>,
        tensor: usize,
        chunk: usize,
        first: usize,
        out: &mut [u8],
        scratch: &mut Vec<u32>,
    ) -> Result<u64> {
        match table {
            Some(tab) => c.read_sections(tensor, chunk, tab.sections_used(), |secs| {
                let total = c.header().tensors[tensor].chunks[chunk].elements as usize;
                tab.decode_range_bytes(secs, total, first, out, scratch)
                    .map_err(|e| c.decode_error(tensor, chunk, e))?;
                Ok(secs.iter().map(|s| s.len() as u64).sum())
            }),
            None => {
                let secs = c.sections(tensor, chunk, 1)?;
                let bytes = secs[0].get(first..first + out.len()).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "bytes {first}..{} of a {}-byte chunk",
                        first + out.len(),
                        secs[0].len()
                    ))
                })?;
                out.copy_from_slice(bytes);
                Ok(out.len() as u64)
            }
        }
    }

    /// Decodes the whole data region into memory.
    pub fn decompress_to_memory(
        &self,
        c: &Container,
        target: Option<u32>,
    ) -> Result<(DecodedModel, DecodeStats)> {
        let started = Instant::now();
        let mut data = output_buffer(c.header().data_len as usize);
        let mut stats = self.decompress_into(c, target, &mut data)?;
        stats.wall = started.elapsed();
        Ok((
            DecodedModel {
                source_header: c.header().source_header.clone(),
                data,
            },
            stats,
        ))
    }

    /// Decodes the whole data region into `data` (exactly `data_len` bytes),
    /// a buffer the caller may reuse from one decode to the next.
    pub fn decompress_into(
        &self,
        c: &Container,
        target: Option<u32>,
        data: &mut [u8],
    ) -> Result<DecodeStats> {
        if data.len() as u64 != c.header().data_len {
            return Err(Error::InvalidArgument(format!(
                "output buffer of {} bytes for a data region of {}",
                data.len(),
                c.header().data_len
            )));
        }
        let tables = tables_for(c, target)?;
        let jobs = chunk_jobs(c);
        let started = Instant::now();
        let slices = job_slices(&jobs, data);
        let bytes_in = self.pool.install(|| {
            slices
                .into_par_iter()
                .map_init(Vec::new, |scratch, (job, out)| {
                    Self::decode_chunk(c, &tables, job, out, scratch)
                })
                .try_reduce(|| 0u64, |a, b| Ok(a + b))
        })?;
        Ok(DecodeStats {
            chunks: jobs.len(),
            bytes_in,
            bytes_out: data.len() as u64,
            wall: started.elapsed(),
        })
    }

    /// Decodes into the safetensors file `output` (temporary name, renamed when complete).
    pub fn decompress_file(
        &self,
        c: &Container,
        output: &Path,
        target: Option<u32>,
        progress: &Progress,
    ) -> Result<DecodeStats> {
        let tables = tables_for(c, target)?;
        let jobs = chunk_jobs(c);
        let started = Instant::now();
        let temp = TempOutput::create_from(output, c.path())?;
        let file = temp.file();
        let io = |e| temp.write_error(e);
        let base = crate::output::write_safetensors_preamble(
            file,
            &c.header().source_header,
            c.header().data_len,
        )
        .map_err(io)?;
        progress.start(c.header().data_len, "decompress");
        let bytes_in = self.pool.install(|| {
            jobs.par_iter()
                .map_init(
                    || (Vec::<u8>::new(), Vec::<u32>::new()),
                    |(buf, scratch), job| {
                        buf.resize(job.out_len as usize, 0);
                        let n = Self::decode_chunk(c, &tables, job, buf, scratch)?;
                        file.write_all_at(buf, base + job.out_offset).map_err(io)?;
                        progress.advance(job.out_len);
                        Ok::<u64, Error>(n)
                    },
                )
                .try_reduce(|| 0u64, |a, b| Ok(a + b))
        })?;
        temp.commit()?;
        progress.finish();
        Ok(DecodeStats {
            chunks: jobs.len(),
            bytes_in,
            bytes_out: base + c.header().data_len,
            wall: started.elapsed(),
        })
    }
}
