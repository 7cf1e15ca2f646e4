//! Damaged and hostile containers give a clear error: never a panic, never a
//! wrong answer, never an allocation a file's numbers ask for.

mod common;

use common::*;
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;
use padic_burst::Error;

/// Opens and fully decodes `bytes` as a container.
fn open_and_decode(dir: &std::path::Path, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let path = dir.join("victim.padic");
    std::fs::write(&path, bytes).unwrap();
    let c = Container::open(&path)?;
    let engine = CpuEngine::new(Some(1))?;
    Ok(engine.decompress_to_memory(&c, None)?.0.to_safetensors())
}

#[test]
fn every_flipped_bit_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    assert!(packed.len() > 4000, "the sample spans several chunks");
    for offset in 0..packed.len() {
        let mut bad = packed.clone();
        bad[offset] ^= 1 << (offset % 8);
        match open_and_decode(dir.path(), &bad) {
            Ok(_) => panic!("flip at byte {offset} was not detected"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "flip at {offset}: {e}");
                assert!(
                    e.to_string().contains("victim.padic"),
                    "flip at {offset}: message lacks the file: {e}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    for len in (0..packed.len()).step_by(7).chain([packed.len() - 1]) {
        let err =
            open_and_decode(dir.path(), &packed[..len]).expect_err("a truncated container decoded");
        assert!(err.to_string().contains("victim.padic"), "{err}");
    }
}

/// The version field is under no checksum of its own; the header states the
/// version again, under its checksum. A container of integers only (where
/// nothing else tells the versions apart: the flip was accepted) with its
/// version field set to each other version is refused, naming the field.
#[test]
fn a_damaged_version_field_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u8> = (0..50i64).flat_map(|v| v.to_le_bytes()).collect();
    let file = safetensors_bytes(&[("ids", safetensors::Dtype::I64, vec![50], ids)]);
    let packed = compress_bytes(
        dir.path(),
        "ints",
        &file,
        &padic_burst::compress::CompressOptions::default(),
    );
    let bytes = std::fs::read(&packed).unwrap();
    assert_eq!(open_and_decode(dir.path(), &bytes).unwrap(), file);
    for v in [0u32, 1, 2, 3, 5, 12] {
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&v.to_le_bytes());
        let err = open_and_decode(dir.path(), &bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "byte offset 8: the version field says {v}, the header (under its checksum) says 4"
            )),
            "{msg}"
        );
    }
}

/// What a framing error found is escaped once (it was escaped twice:
/// `"\\0ADICBST"`), and a damaged header length names itself.
#[test]
fn framing_errors_show_what_they_found_and_where_to_look() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let mut bad = packed.clone();
    bad[0] = 0;
    let msg = open_and_decode(dir.path(), &bad).unwrap_err().to_string();
    assert!(
        msg.contains(r#"(expected magic "PADICBST", found "\0ADICBST")"#),
        "{msg}"
    );
    let n = packed.len();
    let msg = open_and_decode(dir.path(), &packed[..n - 3])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(r#"end magic "PADICEND" missing (found ""#),
        "{msg}"
    );
    assert!(!msg.contains(r"\\"), "{msg}");
    let mut bad = packed.clone();
    bad[n - 24] ^= 0x10;
    let msg = open_and_decode(dir.path(), &bad).unwrap_err().to_string();
    assert!(
        msg.contains(&format!(
            "the header, its length (offset {}) or its checksum (offset {}) is damaged",
            n - 24,
            n - 16
        )),
        "{msg}"
    );
}

#[test]
fn a_flip_in_a_payload_names_the_tensor_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let err = {
        let mut bad = packed.clone();
        bad[20] ^= 0x10; // inside the first chunk's first section
        open_and_decode(dir.path(), &bad).unwrap_err().to_string()
    };
    assert!(
        err.contains("tensor 'layer.w'")
            || err.contains("tensor 'ids'")
            || err.contains("tensor 'layer.f'"),
        "{err}"
    );
    assert!(err.contains("chunk 0"), "{err}");
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn hostile_sizes_are_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    // Sanity: rewriting the header unchanged still decodes.
    assert!(open_and_decode(dir.path(), &with_header(&packed, |_| {})).is_ok());
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "huge chunk",
            Box::new(|h| h["tensors"][0]["chunks"][0]["elements"] = (1u64 << 40).into()),
            "chunk 0",
        ),
        (
            "huge section",
            Box::new(|h| h["tensors"][0]["chunks"][0]["sections"][0]["len"] = (1u64 << 50).into()),
            "past the payload",
        ),
        (
            "offset past end",
            Box::new(|h| h["tensors"][1]["chunks"][0]["offset"] = (1u64 << 33).into()),
            "past the payload",
        ),
        (
            "offset in prefix",
            Box::new(|h| h["tensors"][0]["chunks"][0]["offset"] = 3.into()),
            "prefix",
        ),
        (
            "huge shape",
            Box::new(|h| h["tensors"][0]["shape"] = serde_json::json!([1u64 << 62, 1u64 << 62])),
            "differ from the source header",
        ),
        (
            "huge data",
            Box::new(|h| h["data_len"] = (1u64 << 60).into()),
            "data length",
        ),
        (
            "unknown dtype",
            Box::new(|h| h["tensors"][2]["dtype"] = "Q7".into()),
            "differ from the source header",
        ),
        (
            "bad prime",
            Box::new(|h| h["tensors"][1]["codec"]["prime"] = 4.into()),
            "prime",
        ),
        (
            "missing section",
            Box::new(|h| {
                h["tensors"][0]["chunks"][0]["sections"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            "sections",
        ),
        (
            "unknown key",
            Box::new(|h| h["surprise"] = 1.into()),
            "unknown field",
        ),
        (
            "chunk count",
            Box::new(|h| {
                h["tensors"][0]["chunks"].as_array_mut().unwrap().pop();
            }),
            "values",
        ),
    ];
    for (what, edit, expect) in cases {
        let err = open_and_decode(dir.path(), &with_header(&packed, edit))
            .expect_err(what)
            .to_string();
        assert!(err.contains(expect), "{what}: {err}");
    }
}

#[test]
fn garbage_sections_with_valid_checksums_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (file, packed) = mixed_sample(dir.path());
    let (_, header) = header_json(&packed);
    let mut rng = padic_burst::demo::Rng::new(5);
    let mut errors = 0;
    let mut trials = 0;
    for t in 0..2 {
        let chunks = header["tensors"][t]["chunks"].as_array().unwrap().len();
        for c in 0..chunks {
            let ch = &header["tensors"][t]["chunks"][c];
            let mut off = ch["offset"].as_u64().unwrap() as usize;
            for s in 0..ch["sections"].as_array().unwrap().len() {
                let len = ch["sections"][s]["len"].as_u64().unwrap() as usize;
                for keep_kind in [false, true] {
                    let mut bad = packed.clone();
                    for b in &mut bad[off + keep_kind as usize..off + len] {
                        *b = rng.next_u64() as u8;
                    }
                    let sum = xxhash_rust::xxh3::xxh3_64(&bad[off..off + len]);
                    let bad = with_header(&bad, |h| {
                        h["tensors"][t]["chunks"][c]["sections"][s]["xxh3"] = sum.into()
                    });
                    trials += 1;
                    match open_and_decode(dir.path(), &bad) {
                        Err(e) => {
                            errors += 1;
                            assert!(e.to_string().contains(&format!("chunk {c}")), "{e}");
                        }
                        Ok(out) => assert_eq!(out.len(), file.len()),
                    }
                }
                off += len;
            }
        }
    }
    assert!(
        errors * 2 > trials,
        "most garbage is detected by the codec itself ({errors} of {trials})"
    );
}
