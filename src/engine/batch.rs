//! The host's half of a GPU decode, apart from any device: ranges planned
//! and grouped into sub-batches ([`sub_batches`], [`tensor_batches`]), and
//! a sub-batch's output handed back to its ranges ([`scatter`]). The CUDA
//! engine uploads each sub-batch and runs [`BatchPlan::launches`] on it;
//! the tests run the same launches through `kernels/decode.cu` compiled
//! for the host, so everything here is checked without a GPU.

use super::gpu::{GpuError, GpuRange};
use crate::codec::plan::{BatchPlan, ChunkPlan};
use crate::codec::Tables;
use crate::format::Container;

/// Plans values `[first, first + count)` of chunk `chunk` (of `total`
/// values) of tensor `tensor`: its sections read and checksummed, then
/// parsed and checked as the CPU decoder would.
pub fn plan_chunk(
    container: &Container,
    tables: &Tables,
    tensor: usize,
    chunk: usize,
    total: usize,
    first: usize,
    count: usize,
) -> Result<ChunkPlan, GpuError> {
    let secs = container
        .sections(tensor, chunk, tables.sections_used())
        .map_err(|e| GpuError::Failed(e.to_string()))?;
    tables
        .plan(&secs, total, first, count)
        .map_err(|e| GpuError::Failed(e.to_string()))
}

/// Plans one range of a batch.
pub fn plan_range(container: &Container, r: &GpuRange<'_>) -> Result<ChunkPlan, GpuError> {
    let size = r.tables.kind.size();
    if r.out.len() % size != 0 {
        return Err(GpuError::Failed(format!(
            "tensor {} chunk {}: an output of {} bytes is not a whole number of {size}-byte values",
            r.tensor,
            r.chunk,
            r.out.len()
        )));
    }
    plan_chunk(
        container,
        r.tables,
        r.tensor,
        r.chunk,
        r.total,
        r.first,
        r.out.len() / size,
    )
}

/// Ranges decoded together: one word size, one set of launches.
#[derive(Debug)]
pub struct SubBatch {
    pub plan: BatchPlan,
    /// The ranges it holds, as indices into the caller's ranges, in the
    /// order of `plan.starts`.
    pub ranges: Vec<usize>,
}

/// Plans `ranges` and groups them, in order, into sub-batches of one word
/// size (16- and 32-bit values apart) of about `target` output bytes each.
/// A range that cannot be planned gets its error in `results[i]` and is
/// left out; the others are unaffected.
pub fn sub_batches(
    container: &Container,
    ranges: &[GpuRange<'_>],
    target: usize,
    results: &mut [Result<(), GpuError>],
) -> Vec<SubBatch> {
    let target = target.max(1);
    let mut open: [Option<SubBatch>; 2] = [None, None];
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let plan = match plan_range(container, r) {
            Ok(p) => p,
            Err(e) => {
                results[i] = Err(e);
                continue;
            }
        };
        let size = plan.kind.size();
        let slot = (size == 4) as usize;
        let b = open[slot].get_or_insert_with(|| SubBatch {
            plan: BatchPlan::new(size),
            ranges: Vec::new(),
        });
        if let Err(e) = b.plan.push(&plan) {
            results[i] = Err(GpuError::Failed(e.to_string()));
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

/// Every chunk of float tensor `tensor`, planned whole and grouped in order
/// into batches of about `target` output bytes; the batches' outputs, back
/// to back, are the tensor. Lazy: a batch is planned when it is asked for.
pub fn tensor_batches<'a>(
    container: &'a Container,
    tables: &'a Tables,
    tensor: usize,
    target: usize,
) -> impl Iterator<Item = Result<BatchPlan, GpuError>> + 'a {
    let chunks = &container.header().tensors[tensor].chunks;
    let size = tables.kind.size();
    let target = target.max(1);
    let mut next = 0usize;
    std::iter::from_fn(move || {
        if next == chunks.len() {
            return None;
        }
        let mut batch = BatchPlan::new(size);
        while next < chunks.len() && (batch.is_empty() || batch.count * size < target) {
            let n = chunks[next].elements as usize;
            let pushed = plan_chunk(container, tables, tensor, next, n, 0, n)
                .and_then(|p| batch.push(&p).map_err(|e| GpuError::Failed(e.to_string())));
            next += 1;
            if let Err(e) = pushed {
                next = chunks.len();
                return Some(Err(e));
            }
        }
        Some(Ok(batch))
    })
}
