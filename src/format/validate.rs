//! The header's checks: every size, offset and count against the payload
//! region and the format's caps, tensor by tensor and chunk by chunk, before
//! any chunk is read.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{
    at_tensor, bad, dtype_bits, CodecEntry, Header, TensorEntry, FORMAT_NAME, MAX_CHUNK_BYTES,
    MAX_DATA_LEN, PREFIX_LEN,
};
use crate::codec::{FloatKind, Layout};
use crate::error::{Location, Result};

/// The source safetensors header's view of one tensor.
#[derive(Deserialize)]
struct SourceInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Checks every size, offset and count of the header against the payload
/// region `[PREFIX_LEN, payload_end)` and the caps.
pub(super) fn validate(
    path: &Path,
    h: &Header,
    payload_end: u64,
    version: u32,
) -> Result<Vec<Option<Layout>>> {
    let top = Location::default;
    if h.format != FORMAT_NAME {
        return Err(bad(
            path,
            top(),
            format!("format is {:?}, expected {FORMAT_NAME:?}", h.format),
        ));
    }
    if h.data_len > MAX_DATA_LEN {
        return Err(bad(
            path,
            top(),
            format!("data length {} exceeds the cap {MAX_DATA_LEN}", h.data_len),
        ));
    }
    let source: BTreeMap<String, serde_json::Value> = serde_json::from_str(&h.source_header)
        .map_err(|e| {
            bad(
                path,
                top(),
                format!("source safetensors header does not parse: {e}"),
            )
        })?;
    let source_tensors = source.keys().filter(|k| *k != "__metadata__").count();
    if source_tensors != h.tensors.len() {
        return Err(bad(
            path,
            top(),
            format!(
                "source header lists {source_tensors} tensors, the index {}",
                h.tensors.len()
            ),
        ));
    }
    let mut layouts = Vec::with_capacity(h.tensors.len());
    let mut data_end = 0u64;
    // Per tensor, the bytes its chunks must hold: its own, and those of the
    // tensors that share them.
    let mut chunked: Vec<u64> = h.tensors.iter().map(|t| t.byte_len).collect();
    for (i, t) in h.tensors.iter().enumerate() {
        data_end = check_extent(path, t, &source, data_end, h.data_len)?;
        let layout = layout_of(path, t, version)?;
        if let Some(o) = t.chunks_of {
            check_shared(path, h, i, o, version)?;
            chunked[o] += t.byte_len;
        }
        layouts.push(layout);
    }
    for (t, (layout, &bytes)) in h.tensors.iter().zip(layouts.iter().zip(&chunked)) {
        check_chunks(path, t, layout.as_ref(), bytes, payload_end)?;
    }
    if data_end != h.data_len {
        return Err(bad(
            path,
            top(),
            format!(
                "tensors cover {data_end} bytes of a data length of {}",
                h.data_len
            ),
        ));
    }
    Ok(layouts)
}

/// Checks `t` against the source header, its byte length against its shape
/// and dtype, and that it starts at `data_end` (tensors are contiguous and in
/// order, as safetensors requires) and ends within `data_len`. Returns where
/// it ends.
fn check_extent(
    path: &Path,
    t: &TensorEntry,
    source: &BTreeMap<String, serde_json::Value>,
    data_end: u64,
    data_len: u64,
) -> Result<u64> {
    let at = || at_tensor(&t.name, None);
    let info: SourceInfo = source
        .get(&t.name)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| bad(path, at(), "tensor is missing from the source header"))?;
    if info.dtype != t.dtype
        || info.shape != t.shape
        || info.data_offsets != (t.data_offset, t.data_offset.saturating_add(t.byte_len))
    {
        return Err(bad(
            path,
            at(),
            "dtype, shape or offsets differ from the source header",
        ));
    }
    let bits = dtype_bits(&t.dtype)
        .ok_or_else(|| bad(path, at(), format!("unknown dtype {:?}", t.dtype)))?;
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, at(), "shape's element count overflows"))?;
    let want_bytes = numel
        .checked_mul(bits)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| bad(path, at(), "shape's byte count overflows"))?;
    if want_bytes != t.byte_len {
        return Err(bad(
            path,
            at(),
            format!(
                "shape {:?} of {} needs {want_bytes} bytes, index says {}",
                t.shape, t.dtype, t.byte_len
            ),
        ));
    }
    if t.data_offset != data_end {
        return Err(bad(
            path,
            at(),
            format!("data offset {} where {data_end} was expected (tensors must be contiguous and in order)", t.data_offset),
        ));
    }
    t.data_offset
        .checked_add(t.byte_len)
        .filter(|&e| e <= data_len)
        .ok_or_else(|| {
            bad(
                path,
                at(),
                format!("tensor ends past the data length {data_len}"),
            )
        })
}

/// The digit layout of a p-adic tensor (`None` for a passthrough one),
/// checked against the one its prime and precision define; the NaN flag is
/// in every layout of a container of version 3 or later, and in none before.
fn layout_of(path: &Path, t: &TensorEntry, version: u32) -> Result<Option<Layout>> {
    let at = || at_tensor(&t.name, None);
    let Some(c) = &t.codec else {
        return Ok(None);
    };
    let kind = FloatKind::from_name(&t.dtype).ok_or_else(|| {
        bad(
            path,
            at(),
            format!("dtype {} cannot carry a p-adic split", t.dtype),
        )
    })?;
    if c.nan_flag != (version >= 3) {
        return Err(bad(
            path,
            at(),
            format!(
                "nan_flag is {} in a version {version} container (it is set from version 3 on)",
                c.nan_flag
            ),
        ));
    }
    let l = Layout::with_plane_zero(kind, c.prime, c.precision, c.plane_zero())
        .map_err(|e| bad(path, at(), e.to_string()))?;
    if l.head_digits != c.head_digits || l.planes != c.planes {
        return Err(bad(
            path,
            at(),
            "digit layout differs from the one prime and precision define",
        ));
    }
    Ok(Some(l))
}

/// Checks that tensor `i`, whose values lie in the chunks of tensor `o`,
/// may: `o` comes before it and owns its chunks, every tensor between them
/// shares them too (a run is contiguous), both are split the same way, and
/// `i` has no chunks of its own.
fn check_shared(path: &Path, h: &Header, i: usize, o: usize, version: u32) -> Result<()> {
    let t = &h.tensors[i];
    let at = || at_tensor(&t.name, None);
    let fail = |what: String| Err(bad(path, at(), what));
    if version < 3 {
        return fail(format!(
            "chunks_of in a version {version} container (shared chunks came in version 3)"
        ));
    }
    if o >= i {
        return fail(format!(
            "chunks_of {o} is not an earlier tensor (this is tensor {i})"
        ));
    }
    let owner = &h.tensors[o];
    if owner.chunks_of.is_some() {
        return fail(format!(
            "chunks_of {o} names '{}', which shares another's chunks itself",
            owner.name
        ));
    }
    if i > o + 1 && h.tensors[i - 1].chunks_of != Some(o) {
        return fail(format!(
            "chunks_of {o} skips '{}': tensors sharing chunks must follow their owner",
            h.tensors[i - 1].name
        ));
    }
    if !t.chunks.is_empty() {
        return fail(format!(
            "has {} chunks of its own and shares those of '{}'",
            t.chunks.len(),
            owner.name
        ));
    }
    let split = |c: &Option<CodecEntry>| {
        c.as_ref().map(|c| {
            (
                c.prime,
                c.precision,
                c.head_digits,
                c.planes.clone(),
                c.nan_flag,
            )
        })
    };
    if t.codec.is_none() || t.dtype != owner.dtype || split(&t.codec) != split(&owner.codec) {
        return fail(format!(
            "shares the chunks of '{}' but is not split the same way ({} against {})",
            owner.name, t.dtype, owner.dtype
        ));
    }
    Ok(())
}

/// Checks each chunk of `t`: its value count against the cap, its section
/// count against the layout, its sections inside the payload (which ends at
/// `payload_end`); and that the chunks hold exactly `bytes` of values (the
/// tensor's own, and those of the tensors that share its chunks).
fn check_chunks(
    path: &Path,
    t: &TensorEntry,
    layout: Option<&Layout>,
    bytes: u64,
    payload_end: u64,
) -> Result<()> {
    let unit = layout.map_or(1, |l| l.kind.size() as u64);
    let units = bytes / unit;
    let nsec = layout.map_or(1, |l| l.sections());
    let mut seen = 0u64;
    for (ci, c) in t.chunks.iter().enumerate() {
        let at = || at_tensor(&t.name, Some(ci));
        if c.elements == 0 || c.elements.saturating_mul(unit) > MAX_CHUNK_BYTES {
            return Err(bad(
                path,
                at(),
                format!(
                    "chunk holds {} values (allowed 1..={} bytes of output)",
                    c.elements, MAX_CHUNK_BYTES
                ),
            ));
        }
        seen = seen.saturating_add(c.elements);
        if c.sections.len() != nsec {
            return Err(bad(
                path,
                at(),
                format!("chunk has {} sections, expected {nsec}", c.sections.len()),
            ));
        }
        let mut end = c.offset;
        if end < PREFIX_LEN {
            return Err(bad(
                path,
                at(),
                format!("chunk offset {end} lies inside the file prefix"),
            ));
        }
        for s in &c.sections {
            end = end
                .checked_add(s.len)
                .filter(|&e| e <= payload_end)
                .ok_or_else(|| {
                    bad(
                        path,
                        Location {
                            offset: Some(c.offset),
                            ..at()
                        },
                        format!("sections run past the payload, which ends at byte {payload_end}"),
                    )
                })?;
        }
        if layout.is_none() && c.sections[0].len != c.elements {
            return Err(bad(
                path,
                at(),
                format!(
                    "passthrough chunk of {} bytes stores {}",
                    c.elements, c.sections[0].len
                ),
            ));
        }
    }
    if seen != units && t.chunks_of.is_none() {
        let what = if bytes == t.byte_len {
            "the tensor has"
        } else {
            "the tensor and those sharing its chunks have"
        };
        return Err(bad(
            path,
            at_tensor(&t.name, None),
            format!("chunks hold {seen} values, {what} {units}"),
        ));
    }
    Ok(())
}
