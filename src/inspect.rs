//! Per-tensor facts about a container: what `padic-burst inspect` prints.
#![forbid(unsafe_code)]

use serde::Serialize;

use crate::format::Container;

/// One tensor's row.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// The tensor's name.
    pub name: String,
    /// Its safetensors dtype.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// `null` for a passthrough tensor.
    pub prime: Option<u32>,
    /// Digits stored per value (`null` for a passthrough tensor).
    pub precision: Option<u32>,
    /// Whether every value decodes bit-exact.
    pub exact: bool,
    /// Largest absolute error of a finite value (`null` when a NaN is lost).
    pub max_abs_error: Option<f64>,
    /// Chunks listed under it: for a run of small tensors that share
    /// chunks, the run's on its first tensor and none on the others.
    pub chunks: usize,
    /// Bytes of the tensor.
    pub original_bytes: u64,
    /// Bytes of its sections; for a tensor that shares chunks, its share of
    /// the run's by original bytes.
    pub compressed_bytes: u64,
    /// Coded bytes of the exponent channel (section 0), for split tensors
    /// (shared as `compressed_bytes` is).
    pub exponent_bytes: Option<u64>,
    /// The first tensor of the run of small tensors whose chunks hold this
    /// one's values (itself for that first one); `null` for a tensor with
    /// chunks of its own alone.
    pub shares_chunks_of: Option<String>,
}

/// The whole container.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One row a tensor, in the file's order.
    pub tensors: Vec<TensorReport>,
    /// Bytes of the safetensors file, header included.
    pub original_bytes: u64,
    /// Bytes of the container file.
    pub compressed_bytes: u64,
    /// `compressed_bytes / original_bytes` (lower is better).
    pub ratio: f64,
}

/// Builds the report. `original_bytes` counts the safetensors file (header
/// included); `compressed_bytes` the container file.
pub fn inspect(c: &Container) -> Report {
    let h = c.header();
    let tensors: Vec<TensorReport> = h
        .tensors
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let layout = c.layout(ti);
            let owner = h.chunk_owner(ti);
            let o = &h.tensors[owner];
            let run = h.chunked_range(owner);
            let shared = h.shares_chunks(ti);
            // A tensor's share of its run's bytes, by original bytes.
            let share = |bytes: u64| {
                if shared {
                    (bytes as u128 * t.byte_len as u128 / (run.end - run.start).max(1) as u128)
                        as u64
                } else {
                    bytes
                }
            };
            TensorReport {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                prime: layout.map(|l| l.prime),
                precision: layout.map(|l| l.precision),
                exact: layout.is_none_or(|l| l.is_exact()),
                max_abs_error: t.codec.as_ref().map_or(Some(0.0), |c| c.max_abs_error),
                chunks: t.chunks.len(),
                original_bytes: t.byte_len,
                compressed_bytes: share(o.compressed_bytes()),
                exponent_bytes: layout
                    .map(|_| share(o.chunks.iter().map(|c| c.sections[0].len).sum())),
                shares_chunks_of: shared.then(|| o.name.clone()),
            }
        })
        .collect();
    let original = 8 + h.source_header.len() as u64 + h.data_len;
    let compressed = c.file_len();
    Report {
        tensors,
        original_bytes: original,
        compressed_bytes: compressed,
        ratio: compressed as f64 / original.max(1) as f64,
    }
}

/// The report as a table for a terminal.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{:<48} {:>11} {:>18} {:>5} {:>4} {:>6} {:>12} {:>12} {:>7} {:>10}\n",
        "tensor",
        "dtype",
        "shape",
        "prime",
        "prec",
        "chunks",
        "original",
        "compressed",
        "ratio",
        "max_err"
    );
    for t in &r.tensors {
        let shape = format!("{:?}", t.shape);
        let err = match (t.prime, t.max_abs_error) {
            (None, _) => "-".to_string(),
            (_, Some(0.0)) => "0".to_string(),
            (_, Some(e)) => format!("{e:.3e}"),
            (_, None) => "NaN lost".to_string(),
        };
        s += &format!(
            "{:<48} {:>11} {:>18} {:>5} {:>4} {:>6} {:>12} {:>12} {:>7.4} {:>10}\n",
            crate::error::one_line(&t.name),
            t.dtype,
            shape,
            t.prime.map_or("-".into(), |p| p.to_string()),
            t.precision.map_or("-".into(), |p| p.to_string()),
            // Values held in the chunk of a run's first tensor.
            if t.shares_chunks_of.as_ref().is_some_and(|o| *o != t.name) {
                "shared".to_string()
            } else {
                t.chunks.to_string()
            },
            t.original_bytes,
            t.compressed_bytes,
            t.compressed_bytes as f64 / t.original_bytes.max(1) as f64,
            err
        );
    }
    let shared = r
        .tensors
        .iter()
        .filter(|t| t.shares_chunks_of.is_some())
        .count();
    if shared > 0 {
        s += &format!(
            "{shared} small tensors share chunks in runs (\"shared\": their values lie in the chunk of the run's first tensor, and their compressed bytes are their share of it)\n"
        );
    }
    s += &format!(
        "total: {} tensors, {} -> {} bytes, ratio {:.4}\n",
        r.tensors.len(),
        r.original_bytes,
        r.compressed_bytes,
        r.ratio
    );
    s
}
