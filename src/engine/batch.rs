//! The host's half of a GPU decode, apart from any device: ranges planned
//! and grouped into sub-batches ([`sub_batches`], [`tensor_batches`]) in
//! memory kept from earlier ones ([`Spares`]), and a sub-batch's output
//! handed back to its ranges ([`scatter`]). The CUDA
//! engine uploads each sub-batch and runs [`BatchPlan::launches`] on it;
//! the tests run the same launches through `kernels/decode.cu` compiled
//! for the host, so everything here is checked without a GPU.
#![forbid(unsafe_code)]

use std::sync::Mutex;

use super::cpu::{job_slices, ChunkJob};
use super::gpu::{GpuError, GpuRange};
use crate::codec::plan::BatchPlan;
use crate::codec::Tables;
use crate::format::Container;

/// Plans values `[first, first + count)` of chunk `chunk` (of `total`
/// values) of tensor `tensor` into `batch`: its sections read and
/// checksummed, then parsed and checked as the CPU decoder would, their
/// bytes copied once, into the batch. On an error the batch is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn push_chunk(
    batch: &mut BatchPlan,
    container: &Container,
    tables: &Tables,
    tensor: usize,
    chunk: usize,
    total: usize,
    first: usize,
    count: usize,
) -> Result<usize, GpuError> {
    let secs = container
        .sections(tensor, chunk, tables.sections_used())
        .map_err(|e| GpuError::Failed(e.to_string()))?;
    batch
        .push_range(tables, &secs, total, first, count)
        .map_err(|e| GpuError::Failed(e.to_string()))
}

/// Plans one range of a batch into `batch`.
pub fn push_range(
    batch: &mut BatchPlan,
    container: &Container,
    r: &GpuRange<'_>,
) -> Result<usize, GpuError> {
    let size = r.tables.kind.size();
    if r.out.len() % size != 0 {
        return Err(GpuError::Failed(format!(
            "tensor {} chunk {}: an output of {} bytes is not a whole number of {size}-byte values",
            r.tensor,
            r.chunk,
            r.out.len()
        )));
    }
    let count = r.out.len() / size;
    match r.sections {
        // Read and checksummed by the caller: not read again.
        Some(secs) if secs.len() < r.tables.sections_used() => Err(GpuError::Failed(format!(
            "tensor {} chunk {}: {} sections given, {} needed",
            r.tensor,
            r.chunk,
            secs.len(),
            r.tables.sections_used()
        ))),
        Some(secs) => batch
            .push_range(r.tables, secs, r.total, r.first, count)
            .map_err(|e| GpuError::Failed(e.to_string())),
        None => push_chunk(
            batch, container, r.tables, r.tensor, r.chunk, r.total, r.first, count,
        ),
    }
}

/// Batch plans whose memory is kept for the next sub-batches. A sub-batch
/// of tens of MiB in fresh memory costs a page fault every 4 KiB, which
/// made planning several times slower than the copy it does
/// (`examples/gpu_host_side.rs`).
#[derive(Debug, Default)]
pub struct Spares(Mutex<Vec<BatchPlan>>);

impl Spares {
    /// Plans kept at most: one a core (each worker's call plans its own
    /// sub-batches), and at least four. Only plans given back are kept, so
    /// this holds no more than the most that were in use at once.
    pub fn keep() -> usize {
        crate::config::cores().max(4)
    }

    /// An empty plan for `word_size`-byte values, in kept memory when there is some.
    pub fn take(&self, word_size: usize) -> BatchPlan {
        match self.0.lock().expect("spares lock").pop() {
            Some(mut p) => {
                p.reset(word_size);
                p
            }
            None => BatchPlan::new(word_size),
        }
    }

    /// Keeps `plan`'s memory for a later sub-batch.
    pub fn give(&self, plan: BatchPlan) {
        let mut kept = self.0.lock().expect("spares lock");
        if kept.len() < Self::keep() {
            kept.push(plan);
        }
    }
}

/// Ranges decoded together: one word size, one set of launches.
#[derive(Debug)]
pub struct SubBatch {
    /// The ranges' sections, tables and launches.
    pub plan: BatchPlan,
    /// The ranges it holds, as indices into the caller's ranges, in the
    /// order of `plan.starts`.
    pub ranges: Vec<usize>,
}

/// Plans `ranges` and groups them, in order, into sub-batches of one word
/// size (16- and 32-bit values apart) of about `target` output bytes each.
/// A range that cannot be planned gets its error in `results[i]` and is
/// left out; the others are unaffected. The plans come from `spares`.
pub fn sub_batches(
    container: &Container,
    ranges: &[GpuRange<'_>],
    target: usize,
    results: &mut [Result<(), GpuError>],
    spares: &Spares,
) -> Vec<SubBatch> {
    let target = target.max(1);
    let mut open: [Option<SubBatch>; 2] = [None, None];
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let size = r.tables.kind.size();
        let slot = (size == 4) as usize;
        let b = open[slot].get_or_insert_with(|| SubBatch {
            plan: spares.take(size),
            ranges: Vec::new(),
        });
        if let Err(e) = push_range(&mut b.plan, container, r) {
            results[i] = Err(e);
            continue;
        }
        b.ranges.push(i);
        if b.plan.count * size >= target {
            out.extend(open[slot].take());
        }
    }
    out.extend(open.into_iter().flatten());
    out
}

/// Hands each range of `sub` its values from `output`, the sub-batch's
/// words as the device wrote them (little-endian), converted to this
/// host's byte order.
pub fn scatter(sub: &SubBatch, output: &[u8], ranges: &mut [GpuRange<'_>]) {
    let ws = sub.plan.word_size;
    for (j, &i) in sub.ranges.iter().enumerate() {
        let out = &mut *ranges[i].out;
        let src = &output[sub.plan.starts[j] * ws..][..out.len()];
        if cfg!(target_endian = "little") {
            out.copy_from_slice(src);
        } else {
            for (d, s) in out.chunks_exact_mut(ws).zip(src.chunks_exact(ws)) {
                d.iter_mut().zip(s.iter().rev()).for_each(|(a, b)| *a = *b);
            }
        }
    }
}

/// A whole-chunk range for each of `jobs` (every chunk, in file order) that
/// is a float chunk (`tables` has its tensor's), each writing its own bytes
/// of `out`, the model's data region. Other jobs are left out and their
/// bytes untouched.
pub fn whole_chunk_ranges<'a>(
    container: &Container,
    tables: &'a [Option<std::sync::Arc<Tables>>],
    jobs: &[ChunkJob],
    out: &'a mut [u8],
) -> Vec<GpuRange<'a>> {
    job_slices(jobs, out)
        .into_iter()
        .filter_map(|(j, o)| {
            Some(GpuRange {
                tables: tables[j.tensor].as_deref()?,
                tensor: j.tensor,
                chunk: j.chunk,
                total: container.header().tensors[j.tensor].chunks[j.chunk].elements as usize,
                first: 0,
                out: o,
                sections: None,
            })
        })
        .collect()
}

/// Every chunk of float tensor `tensor`, planned whole and grouped in order
/// into batches of about `target` output bytes; the batches' outputs, back
/// to back, are the tensor. Lazy: a batch is planned when it is asked for,
/// in a plan from `spares`.
pub fn tensor_batches<'a>(
    container: &'a Container,
    tables: &'a Tables,
    tensor: usize,
    target: usize,
    spares: &'a Spares,
) -> impl Iterator<Item = Result<BatchPlan, GpuError>> + 'a {
    let chunks = &container.header().tensors[tensor].chunks;
    let size = tables.kind.size();
    let target = target.max(1);
    let mut next = 0usize;
    std::iter::from_fn(move || {
        if next == chunks.len() {
            return None;
        }
        let mut batch = spares.take(size);
        while next < chunks.len() && batch.count * size < target {
            let n = chunks[next].elements as usize;
            let pushed = push_chunk(&mut batch, container, tables, tensor, next, n, 0, n);
            next += 1;
            if let Err(e) = pushed {
                next = chunks.len();
                return Some(Err(e));
            }
        }
        Some(Ok(batch))
    })
}
