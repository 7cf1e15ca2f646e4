//! Bit-exact round trips, progressive precision and lossy bounds.

mod common;

use common::*;
use padic_burst::compress::CompressOptions;
use proptest::prelude::*;
use safetensors::Dtype;

const PRIMES: [u32; 5] = [2, 3, 5, 7, 257];

fn opts(prime: u32) -> CompressOptions {
    CompressOptions {
        prime,
        chunk_kib: 48, // several chunks per tensor, a short last one
        ..CompressOptions::default()
    }
}

#[test]
fn every_bf16_and_f16_pattern_round_trips_for_every_prime() {
    let dir = tempfile::tempdir().unwrap();
    let patterns = all_u16_patterns();
    let ids: Vec<u8> = (0..1000i64)
        .flat_map(|i| (i * 7919).to_le_bytes())
        .collect();
    let flags: Vec<u8> = (0..333).map(|i| (i % 2) as u8).collect();
    let file = safetensors_bytes(&[
        ("bf16.all", Dtype::BF16, vec![256, 256], patterns.clone()),
        ("f16.all", Dtype::F16, vec![65536], patterns),
        ("ids", Dtype::I64, vec![1000], ids),
        ("mask", Dtype::BOOL, vec![333], flags),
    ]);
    for p in PRIMES {
        let packed = compress_bytes(dir.path(), &format!("all-{p}"), &file, &opts(p));
        let back = decode(&packed, None);
        assert!(
            back.to_safetensors() == file,
            "prime {p}: restored file differs"
        );
    }
}

#[test]
fn f32_specials_round_trip_for_every_prime() {
    let dir = tempfile::tempdir().unwrap();
    let specials: [u32; 14] = [
        0x0000_0000,
        0x8000_0000, // +-0
        0x7f80_0000,
        0xff80_0000, // +-inf
        0x7fc0_0000,
        0x7f80_0001,
        0xffbf_ffff,
        0x7fff_ffff, // NaNs with payloads
        0x0000_0001,
        0x007f_ffff,
        0x8040_0000, // subnormals
        0x3f80_0000,
        0x7f7f_ffff,
        0x0080_0000, // 1, max, min normal
    ];
    let bytes: Vec<u8> = specials.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = safetensors_bytes(&[("s", Dtype::F32, vec![specials.len()], bytes)]);
    for p in PRIMES {
        let packed = compress_bytes(dir.path(), &format!("sp-{p}"), &file, &opts(p));
        assert!(decode(&packed, None).to_safetensors() == file, "prime {p}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn random_f32_patterns_round_trip(
        words in proptest::collection::vec(any::<u32>(), 1..3000),
        prime_index in 0usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = safetensors_bytes(&[("w", Dtype::F32, vec![words.len()], bytes)]);
        let p = PRIMES[prime_index];
        let packed = compress_bytes(dir.path(), "r", &file, &CompressOptions { prime: p, chunk_kib: 4, ..CompressOptions::default() });
        prop_assert!(decode(&packed, None).to_safetensors() == file);
    }

    #[test]
    fn progressive_decode_equals_truncating_the_digits(
        words in proptest::collection::vec(any::<u32>(), 1..2000),
        prime_index in 0usize..5,
        k_frac in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = PRIMES[prime_index];
        let bytes: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = safetensors_bytes(&[("w", Dtype::F32, vec![words.len()], bytes)]);
        let packed = compress_bytes(dir.path(), "t", &file, &CompressOptions { prime: p, chunk_kib: 4, ..CompressOptions::default() });
        let w = padic_burst::codec::layout::exact_digits(padic_burst::codec::FloatKind::F32, p);
        let k = 1 + ((w - 1) as f64 * k_frac) as u32;
        let got = decode(&packed, Some(k));
        for (i, (&orig, b)) in words.iter().zip(data_region(&got.to_safetensors()).chunks_exact(4)).enumerate() {
            let want = reference_truncate(orig, 8, 23, p as u64, k);
            prop_assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), want, "value {} prime {} k {}", i, p, k);
        }
    }
}

#[test]
fn progressive_decode_of_every_bf16_and_f16_pattern_equals_truncation() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, kind, frac) in [
        (Dtype::BF16, padic_burst::codec::FloatKind::BF16, 7u32),
        (Dtype::F16, padic_burst::codec::FloatKind::F16, 10),
    ] {
        let file = safetensors_bytes(&[("a", dtype, vec![65536], all_u16_patterns())]);
        for p in [2u32, 3, 7] {
            let packed = compress_bytes(dir.path(), &format!("pb-{p}"), &file, &opts(p));
            let w = padic_burst::codec::layout::exact_digits(kind, p);
            for k in 1..=w {
                let got = decode(&packed, Some(k)).data;
                for (v, b) in (0..=u16::MAX).zip(got.chunks_exact(2)) {
                    let want = reference_truncate(v as u32, kind.exp_bits(), frac, p as u64, k);
                    let got = u16::from_le_bytes([b[0], b[1]]);
                    assert_eq!(got, want as u16, "{dtype:?} p {p} k {k} pattern {v:#06x}");
                    // A NaN stays a NaN at every precision, and nothing else becomes one.
                    assert_eq!(
                        kind.to_f64(got as u32).is_nan(),
                        kind.to_f64(v as u32).is_nan(),
                        "{dtype:?} p {p} k {k} pattern {v:#06x} came back {got:#06x}"
                    );
                }
            }
        }
    }
}

#[test]
fn lossy_values_stay_within_the_reported_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = padic_burst::demo::Rng::new(3);
    let bytes = padic_burst::demo::gaussian_bytes(&mut rng, 50_000, 0.05, Dtype::F32);
    let file = safetensors_bytes(&[("w", Dtype::F32, vec![50_000], bytes.clone())]);
    for (p, n) in [(2u32, 9u32), (3, 6), (5, 4), (257, 2)] {
        let o = CompressOptions {
            prime: p,
            precision: Some(n),
            lossy: true,
            chunk_kib: 64,
            ..CompressOptions::default()
        };
        let packed = compress_bytes(dir.path(), &format!("l-{p}"), &file, &o);
        let c = padic_burst::format::Container::open(&packed).unwrap();
        let bound = c.header().tensors[0]
            .codec
            .as_ref()
            .unwrap()
            .max_abs_error
            .unwrap();
        assert!(
            bound > 0.0,
            "p {p} n {n}: a lossy split of Gaussian weights has an error"
        );
        let got = decode(&packed, None).data;
        let mut worst = 0.0f64;
        for (a, b) in bytes.chunks_exact(4).zip(got.chunks_exact(4)) {
            let (a, b) = (
                f32::from_le_bytes(a.try_into().unwrap()) as f64,
                f32::from_le_bytes(b.try_into().unwrap()) as f64,
            );
            worst = worst.max((a - b).abs());
        }
        assert!(
            worst <= bound,
            "p {p}: error {worst} above the reported {bound}"
        );
        assert_eq!(
            worst, bound,
            "p {p}: the reported bound is the largest error seen"
        );
    }
}

#[test]
fn precision_that_cannot_hold_the_fraction_is_refused_without_lossy() {
    let dir = tempfile::tempdir().unwrap();
    let file = safetensors_bytes(&[("w", Dtype::F32, vec![2], vec![0u8; 8])]);
    let input = dir.path().join("in.safetensors");
    std::fs::write(&input, &file).unwrap();
    let out = dir.path().join("out.padic");
    let o = CompressOptions {
        precision: Some(9),
        ..CompressOptions::default()
    };
    let err = padic_burst::compress::compress_file(
        &input,
        &out,
        &o,
        &padic_burst::progress::Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--lossy"), "{err}");
    assert!(!out.exists());
}

#[test]
fn chunks_decode_alone_in_any_order() {
    use padic_burst::engine::{chunk_jobs, tables_for, CpuEngine};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = padic_burst::demo::Rng::new(4);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 40_000, 0.05, Dtype::F16);
    let file = safetensors_bytes(&[("w", Dtype::F16, vec![40_000], w)]);
    let packed = compress_bytes(
        dir.path(),
        "alone",
        &file,
        &CompressOptions {
            chunk_kib: 8,
            ..CompressOptions::default()
        },
    );
    let c = padic_burst::format::Container::open(&packed).unwrap();
    let tables = tables_for(&c, None).unwrap();
    let mut jobs = chunk_jobs(&c);
    assert_eq!(jobs.len(), 10);
    jobs.reverse();
    let mut data = vec![0u8; c.header().data_len as usize];
    for job in &jobs {
        let start = job.out_offset as usize;
        let out = &mut data[start..start + job.out_len as usize];
        CpuEngine::decode_chunk(&c, &tables, job, out, &mut Vec::new()).unwrap();
    }
    assert!(
        data == data_region(&file),
        "chunks decoded alone, last first, rebuild the tensor"
    );
}

#[test]
fn a_model_of_many_small_tensors_round_trips_with_a_compact_header() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [Dtype::BF16, Dtype::F32] {
        let file = padic_burst::demo::many_small_model(3, 2_000_000, dtype);
        let packed = compress_bytes(
            dir.path(),
            &format!("small-{dtype:?}"),
            &file,
            &CompressOptions::default(),
        );
        let c = std::sync::Arc::new(padic_burst::format::Container::open(&packed).unwrap());
        let tensors = c.header().tensors.len();
        assert!(tensors >= 150, "{tensors} tensors");
        assert_eq!(decode(&packed, None).to_safetensors(), file, "{dtype:?}");
        // One tensor alone decodes to its bytes.
        let t = &c.header().tensors[tensors / 2];
        let p = padic_burst::pipeline::Pipeline::new(padic_burst::config::Config::default());
        let one = p.decompress_tensor(&c, &t.name, None).unwrap();
        assert!(one.data[..] == *tensor_bytes(&c, data_region(&file), &t.name));
        // The header, stored compressed, is a small part of the file: the
        // plain JSON is several times larger.
        let bytes = std::fs::read(&packed).unwrap();
        let n = bytes.len();
        let stored = u64::from_le_bytes(bytes[n - 24..n - 16].try_into().unwrap()) as usize;
        let plain = serde_json::to_vec(&header_json(&bytes).1).unwrap().len();
        assert!(
            plain > 4 * stored,
            "{dtype:?}: plain {plain}, stored {stored}"
        );
        assert!(stored * 100 < n, "{dtype:?}: header {stored} of {n} bytes");
    }
}

#[test]
fn every_safetensors_dtype_round_trips_byte_for_byte() {
    // The floats are coded, every other dtype passes through; C64 was refused
    // as "not a valid safetensors file" until the safetensors crate 0.7.
    use Dtype::*;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = padic_burst::demo::Rng::new(5);
    let dtypes = [
        BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32,
        U32, F32, C64, F64, I64, U64,
    ];
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = dtypes
        .iter()
        .map(|&d| {
            let shape = vec![6, 8];
            let len = 48 * d.bitsize() / 8;
            let bytes = (0..len)
                .map(|_| match d {
                    BOOL => (rng.next_u64() & 1) as u8,
                    _ => rng.next_u64() as u8,
                })
                .collect();
            (format!("{d:?}"), d, shape, bytes)
        })
        .collect();
    let listed: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let file = safetensors_bytes(&listed);
    let packed = compress_bytes(dir.path(), "every", &file, &CompressOptions::default());
    assert_eq!(decode(&packed, None).to_safetensors(), file);
}

#[test]
fn megabytes_of_repetitive_metadata_open_again() {
    // A source header of 2 MB of one note compresses to a few hundred bytes,
    // which the reader refuses (its cap is 64 times the stored bytes, so
    // that a header asks memory in proportion to the file): such a header is
    // stored in raw blocks, and the container opens.
    let dir = tempfile::tempdir().unwrap();
    let header = format!(
        "{{\"__metadata__\":{{\"notes\":\"{}\"}},\"w\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}}}",
        "a".repeat(2_000_000)
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend((0..4u32).flat_map(|i| (i as f32 * 0.5).to_le_bytes()));
    let packed = compress_bytes(dir.path(), "notes", &file, &CompressOptions::default());
    let stored = std::fs::metadata(&packed).unwrap().len();
    assert!(stored < file.len() as u64 + 4096, "{stored} bytes");
    assert_eq!(decode(&packed, None).to_safetensors(), file);
}

#[test]
fn bytes_in_memory_compress_to_the_same_container_as_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = mixed_sample(dir.path());
    let input = dir.path().join("in.safetensors");
    std::fs::write(&input, &file).unwrap();
    let quiet = padic_burst::progress::Progress::new(false);
    let (a, b) = (dir.path().join("a.padic"), dir.path().join("b.padic"));
    padic_burst::compress::compress_file(&input, &a, &opts(2), &quiet).unwrap();
    let s = padic_burst::compress::compress_bytes(
        std::path::Path::new("(given)"),
        &file,
        &b,
        &opts(2),
        &quiet,
    )
    .unwrap();
    assert_eq!(s.original_bytes, file.len() as u64);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // Bad bytes are named as given, and leave nothing.
    let c = dir.path().join("c.padic");
    let err = padic_burst::compress::compress_bytes(
        std::path::Path::new("(given)"),
        &file[..40],
        &c,
        &opts(2),
        &quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("(given)"), "{err}");
    assert!(!c.exists());
    assert_no_temp_files(dir.path());
}

#[test]
fn a_lossy_tensor_reports_its_own_largest_error_read_back_exactly() {
    // Small tensors share one chunk; each reports its own error, not the
    // run's. 0x7f7f (bf16) loses 63 * 2^120 at one digit, a float a parser
    // that does not round-trip reads back an ulp off.
    let dir = tempfile::tempdir().unwrap();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let bf16s = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let file = safetensors_bytes(&[
        ("a", Dtype::F32, vec![2], f32s(&[1.0, 2.0])),
        ("b", Dtype::F32, vec![1], f32s(&[1.999_999_9])),
        ("c", Dtype::F32, vec![1], f32s(&[f32::NAN])),
        ("d", Dtype::BF16, vec![1], bf16s(&[0x3f80])),
        ("e", Dtype::BF16, vec![1], bf16s(&[0x7f7f])),
    ]);
    let o = CompressOptions {
        prime: 2,
        precision: Some(1),
        lossy: true,
        ..CompressOptions::default()
    };
    let packed = compress_bytes(dir.path(), "own", &file, &o);
    let c = padic_burst::format::Container::open(&packed).unwrap();
    let got = decode(&packed, None).data;
    let original = data_region(&file);
    let tensors = &c.header().tensors;
    assert!(
        tensors[1].chunks_of.is_some() && tensors[4].chunks_of.is_some(),
        "runs share chunks"
    );
    for t in tensors {
        let (a, n) = (t.data_offset as usize, t.byte_len as usize);
        let values = |bytes: &[u8]| -> Vec<f64> {
            match t.dtype.as_str() {
                "F32" => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                _ => bytes
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64)
                    .collect(),
            }
        };
        let own = values(&original[a..a + n])
            .iter()
            .zip(values(&got[a..a + n]))
            .filter(|(x, _)| x.is_finite())
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        let reported = t.codec.as_ref().unwrap().max_abs_error.unwrap();
        assert_eq!(
            reported.to_bits(),
            own.to_bits(),
            "{}: reported {reported:e}, own {own:e}",
            t.name
        );
    }
    assert_eq!(
        tensors[4].codec.as_ref().unwrap().max_abs_error,
        Some(63.0 * 2f64.powi(120))
    );
}
