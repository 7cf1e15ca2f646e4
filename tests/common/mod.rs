//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use padic_burst::compress::{compress_file, CompressOptions};
use padic_burst::engine::{CpuEngine, DecodedModel};
use padic_burst::format::Container;
use padic_burst::progress::Progress;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A safetensors file from (name, dtype, shape, bytes).
pub fn safetensors_bytes(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("source".to_string(), "padic-burst tests".to_string());
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// Writes `bytes` as `name` in `dir`, compresses it with `opts`, returns the container path.
pub fn compress_bytes(dir: &Path, name: &str, bytes: &[u8], opts: &CompressOptions) -> PathBuf {
    let input = dir.join(format!("{name}.safetensors"));
    let output = dir.join(format!("{name}.padic"));
    std::fs::write(&input, bytes).unwrap();
    compress_file(&input, &output, opts, &Progress::hidden()).unwrap();
    output
}

/// Decodes a whole container in memory.
pub fn decode(path: &Path, target: Option<u32>) -> DecodedModel {
    let c = Container::open(path).unwrap();
    CpuEngine::new(Some(2))
        .unwrap()
        .decompress_to_memory(&c, target)
        .unwrap()
        .0
}

/// The data region of a safetensors file.
pub fn data_region(file: &[u8]) -> &[u8] {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    &file[8 + n..]
}

/// Every 16-bit pattern, little-endian.
pub fn all_u16_patterns() -> Vec<u8> {
    (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect()
}

/// Reference truncation, written independently of the library: keep the top
/// `k` of the `w` base-`p` digits of the fraction (`w` the exact digit count).
pub fn reference_truncate(bits: u32, frac_bits: u32, p: u64, k: u32) -> u32 {
    let mut w = 0u32;
    let mut pw = 1u64;
    while pw < (1u64 << frac_bits) {
        pw *= p;
        w += 1;
    }
    let unit = p.pow(w - k.min(w));
    let mask = (1u32 << frac_bits) - 1;
    let frac = (bits & mask) as u64;
    (bits & !mask) | ((frac / unit * unit) as u32)
}

/// Fails when a temporary output (`.NAME.tmp-...`) is left in `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
