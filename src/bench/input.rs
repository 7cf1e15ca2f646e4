//! The model under test: a safetensors file or a generated one, its data
//! region (what every decode must give back), its main float dtype and the
//! entropy of its exponents.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::BenchOptions;
use crate::error::{Error, Result};

/// The dtype of `--dtype`: bf16, f16 or f32.
pub(super) fn float_dtype(name: &str) -> Result<safetensors::Dtype> {
    match name {
        "bf16" => Ok(safetensors::Dtype::BF16),
        "f16" => Ok(safetensors::Dtype::F16),
        "f32" => Ok(safetensors::Dtype::F32),
        other => Err(Error::InvalidArgument(format!(
            "--dtype {other}: expected bf16, f16 or f32"
        ))),
    }
}

/// The file to measure and how the report names it: `opts.input`, or a
/// model of `opts.synthetic_mb` MB of `kind` generated into `dir`.
pub(super) fn prepare(
    opts: &BenchOptions,
    kind: safetensors::Dtype,
    dir: &Path,
) -> Result<(PathBuf, String)> {
    if let Some(p) = &opts.input {
        return Ok((p.clone(), p.display().to_string()));
    }
    if !(opts.synthetic_mb > 0.0 && opts.synthetic_mb <= 65536.0) {
        return Err(Error::InvalidArgument(format!(
            "--synthetic {}: expected a size in MB in (0, 65536]",
            opts.synthetic_mb
        )));
    }
    let size = match kind {
        safetensors::Dtype::F32 => 4.0,
        _ => 2.0,
    };
    let params = (opts.synthetic_mb * 1e6 / size / 1.1) as usize;
    let p = dir.join(format!("synthetic-{}.safetensors", opts.dtype));
    let (model, shape) = if opts.small_tensors {
        (
            crate::demo::many_small_model(11, params, kind),
            " in small tensors",
        )
    } else {
        (crate::demo::synthetic_model(11, params.max(1), kind), "")
    };
    std::fs::write(&p, &model).map_err(|e| Error::io(&p, e))?;
    Ok((
        p,
        format!("synthetic {} MB {}{shape}", opts.synthetic_mb, opts.dtype),
    ))
}

/// The safetensors data region of `bytes` (the file at `path`).
pub(super) fn data_region<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let bad = || Error::Decode(format!("{}: not a safetensors file", path.display()));
    let n = bytes
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().expect("8 bytes")))
        .ok_or_else(bad)?;
    let start = 8usize.checked_add(n as usize).ok_or_else(bad)?;
    bytes.get(start..).ok_or_else(bad)
}

/// The float dtype holding most bytes of a safetensors file (bf16, f16 or
/// f32): the dtype ZipNN is told the file holds.
pub fn main_float_dtype(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Decode(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut by = [0usize; 3];
    for (_, t) in st.tensors() {
        match t.dtype() {
            safetensors::Dtype::BF16 => by[0] += t.data().len(),
            safetensors::Dtype::F16 => by[1] += t.data().len(),
            safetensors::Dtype::F32 => by[2] += t.data().len(),
            _ => {}
        }
    }
    let (i, n) = by
        .iter()
        .enumerate()
        .max_by_key(|x| *x.1)
        .expect("three dtypes");
    if *n == 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: no bf16, f16 or f32 tensor; pass --dtype",
            path.display()
        )));
    }
    Ok(["bf16", "f16", "f32"][i].into())
}

/// Empirical entropy of the exponent field over every float value of a
/// safetensors file, in bits per value.
pub fn exponent_entropy_bits(path: &Path, bytes: &[u8]) -> Result<f64> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Decode(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut counts = vec![0u64; 256];
    for (_, t) in st.tensors() {
        let d = t.data();
        match t.dtype() {
            safetensors::Dtype::BF16 => d.chunks_exact(2).for_each(|b| {
                counts[((u16::from_le_bytes([b[0], b[1]]) >> 7) & 0xff) as usize] += 1
            }),
            safetensors::Dtype::F16 => d.chunks_exact(2).for_each(|b| {
                counts[((u16::from_le_bytes([b[0], b[1]]) >> 10) & 0x1f) as usize] += 1
            }),
            safetensors::Dtype::F32 => d.chunks_exact(4).for_each(|b| {
                counts[((u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 23) & 0xff) as usize] += 1
            }),
            _ => {}
        }
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Ok(0.0);
    }
    Ok(counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = n as f64 / total as f64;
            -p * p.log2()
        })
        .sum())
}
