//! The container's validation, check by check: each damaged or inconsistent
//! container is refused when it is opened, with an error that names the file
//! and the place (the byte offset for framing, the tensor and chunk for the
//! index); a well-formed one on each boundary opens. Only `Container::open`
//! and the section reader run here, so this is the fast test set that the
//! mutation run of `scripts/mutants.sh --value-model` uses for `format/`
//! (`tests/corruption.rs` flips and truncates every byte through a decode).

mod common;

use common::*;
use padic_burst::compress::CompressOptions;
use padic_burst::format::{
    dtype_bits, Container, Header, Writer, FORMAT_NAME, MAX_CHUNK_BYTES, MAX_DATA_LEN,
};
use padic_burst::Error;
use safetensors::Dtype;

fn open(dir: &std::path::Path, bytes: &[u8]) -> Result<Container, Error> {
    let path = dir.join("victim.padic");
    std::fs::write(&path, bytes).unwrap();
    Container::open(&path)
}

/// The error text of opening `bytes`, which must fail.
fn refused(dir: &std::path::Path, bytes: &[u8]) -> String {
    let err = open(dir, bytes).expect_err("opened").to_string();
    assert!(err.contains("victim.padic"), "{err}");
    err
}

/// The index of tensor `name` (the index lists tensors in data order).
fn position(c: &Container, name: &str) -> usize {
    c.header()
        .tensors
        .iter()
        .position(|t| t.name == name)
        .unwrap()
}

/// (header offset, header length) of a container's bytes.
fn header_span(b: &[u8]) -> (usize, usize) {
    let n = b.len();
    let len = u64::from_le_bytes(b[n - 24..n - 16].try_into().unwrap()) as usize;
    (n - 24 - len, len)
}

/// `body` with `json` as its header, stored as this build stores it.
fn with_footer(body: &[u8], json: &[u8]) -> Vec<u8> {
    with_stored_header(
        body,
        &padic_burst::format::seal_header(json, (body.len() as u64).saturating_sub(16)).unwrap(),
    )
}

#[test]
fn framing_errors_name_their_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let n = packed.len();
    let (start, _) = header_span(&packed);
    let edit = |at: usize, value: &[u8]| {
        let mut b = packed.clone();
        b[at..at + value.len()].copy_from_slice(value);
        b
    };

    let err = refused(dir.path(), &edit(0, b"SAFETENS"));
    assert!(
        err.contains("not a padic-burst container") && err.contains("SAFETENS"),
        "{err}"
    );
    // Only a file that starts as safetensors does is called one.
    assert!(!err.contains("safetensors file"), "{err}");
    // A version 4 file called another version, one this build reads or
    // not: its header says 4, under its checksum, so the field is damaged.
    for v in [0u32, 1, 2, 3, 5, 6, 12] {
        let err = refused(dir.path(), &edit(8, &v.to_le_bytes()));
        assert!(
            err.contains(&format!(
                "byte offset 8: the version field says {v}, the header (under its checksum) says 4"
            )),
            "{err}"
        );
    }
    let err = refused(dir.path(), &edit(12, &1u32.to_le_bytes()));
    assert!(
        err.contains("byte offset 12") && err.contains("reserved"),
        "{err}"
    );
    let err = refused(dir.path(), &edit(n - 8, b"PADICENX"));
    assert!(
        err.contains(&format!("byte offset {}", n - 8)) && err.contains("end magic"),
        "{err}"
    );
    let err = refused(dir.path(), &edit(n - 24, &(n as u64).to_le_bytes()));
    assert!(
        err.contains(&format!("byte offset {}", n - 24)) && err.contains("header length"),
        "{err}"
    );
    let err = refused(dir.path(), &edit(start + 2, b"#"));
    assert!(
        err.contains(&format!("byte offset {start}")) && err.contains("header checksum"),
        "{err}"
    );
    // A header with a valid checksum that is not JSON.
    let err = refused(dir.path(), &with_footer(&packed[..start], b"not json"));
    assert!(
        err.contains(&format!("byte offset {start}")) && err.contains("does not parse"),
        "{err}"
    );
    // Stored bytes with a valid checksum that are not a zstd frame.
    let err = refused(
        dir.path(),
        &with_stored_header(&packed[..start], b"not zstd"),
    );
    assert!(
        err.contains(&format!("byte offset {start}")) && err.contains("not a zstd frame"),
        "{err}"
    );
    // A frame that states more JSON than the cap: refused before anything
    // is allocated (a frame header stating 2^40 bytes, then one RLE block).
    let mut bomb = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bomb.extend_from_slice(&[0x03, 0x00, 0x00, b' ']);
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&bomb).unwrap(),
        Some(1 << 40)
    );
    let err = refused(dir.path(), &with_stored_header(&packed[..start], &bomb));
    assert!(
        err.contains(&format!("byte offset {start}"))
            && err.contains(
                "states 1099511627776 bytes of JSON from 17 stored bytes, over the cap of 1048576"
            ),
        "{err}"
    );
}

/// `tests/fixtures/v2-patterns.padic` was written by padic-burst at commit
/// e4bf0db (container version 2: plane 0 the sign and the top digits, no
/// NaN flag), `--chunk-kib 64`, from a safetensors file of three tensors:
/// `bf16` and `f16`, every 16-bit pattern in order, and `f32`, 8192 values
/// `i * 0x9e3779b9`.
fn version_2_fixture() -> (std::path::PathBuf, Vec<(&'static str, Vec<u8>)>) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-patterns.padic");
    let f32s: Vec<u8> = (0..8192u32)
        .flat_map(|i| i.wrapping_mul(0x9e37_79b9).to_le_bytes())
        .collect();
    let tensors = vec![
        ("bf16", all_u16_patterns()),
        ("f16", all_u16_patterns()),
        ("f32", f32s),
    ];
    (path, tensors)
}

/// `tests/fixtures/v3-patterns.padic` was written by padic-burst at commit
/// 431bbaf (container version 3: no `version` in the header), `--chunk-kib
/// 64`, from a safetensors file of `bf16`, every 16-bit pattern in order,
/// and `f32`, 4096 values `i * 0x9e3779b9`. It decodes exactly; with its
/// version field damaged to 2 it is refused for what version 2 lacks.
#[test]
fn version_3_containers_decode_exactly() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3-patterns.padic");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let c = Container::open(&path).unwrap();
    assert_eq!(c.header().version, None);
    let full = decode(&path, None).to_safetensors();
    let f32s: Vec<u8> = (0..4096u32)
        .flat_map(|i| i.wrapping_mul(0x9e37_79b9).to_le_bytes())
        .collect();
    for (name, data) in [("bf16", all_u16_patterns()), ("f32", f32s)] {
        assert!(
            tensor_bytes(&c, data_region(&full), name) == &data[..],
            "{name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let with_version = |v: u32| {
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&v.to_le_bytes());
        refused(dir.path(), &bad)
    };
    let err = with_version(2);
    assert!(
        err.contains("nan_flag is true in a version 2 container"),
        "{err}"
    );
    // Its header states no version: called version 4, the field is named.
    let err = with_version(4);
    assert!(
        err.contains("byte offset 8: the version field says 4, but the header states no version"),
        "{err}"
    );
    // Called a version no build reads yet: said as such.
    let err = with_version(5);
    assert!(
        err.contains("unsupported container version 5 (this build reads versions 1 to 4)"),
        "{err}"
    );
}

#[test]
fn version_2_containers_decode_as_they_did_exactly_and_at_every_precision() {
    let (path, tensors) = version_2_fixture();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let c = Container::open(&path).unwrap();
    for t in &c.header().tensors {
        let codec = t.codec.as_ref().unwrap();
        assert!(!codec.nan_flag, "{}", t.name);
        let want = match t.dtype.as_str() {
            "BF16" => vec![4],
            "F16" => vec![7],
            _ => vec![7, 8, 5],
        };
        assert_eq!(codec.planes, want, "{}", t.name);
    }
    let full = decode(&path, None).to_safetensors();
    for (name, data) in &tensors {
        assert!(
            tensor_bytes(&c, data_region(&full), name) == &data[..],
            "{name}"
        );
    }
    // Progressive decodes give the plain truncation (no NaN flag: there a
    // NaN whose payload lies in the dropped digits comes back an infinity).
    // (A target applies to every tensor, so bf16's 7 digits bound it.)
    for (kind, frac) in [("bf16", 7u32), ("f16", 10)] {
        for k in 1..7 {
            let got = decode(&path, Some(k)).to_safetensors();
            let got = tensor_bytes(&c, data_region(&got), kind);
            for (v, b) in (0..=u16::MAX as u32).zip(got.chunks_exact(2)) {
                let want = reference_truncate_plain(v, frac, 2, k);
                assert_eq!(
                    u16::from_le_bytes([b[0], b[1]]) as u32,
                    want,
                    "{kind} k {k} {v:#06x}"
                );
            }
        }
    }
}

#[test]
fn version_1_containers_with_a_plain_json_header_still_open_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tensors) = version_2_fixture();
    let packed = std::fs::read(&path).unwrap();
    let (start, h) = header_json(&packed);
    let mut old = with_stored_header(&packed[..start], &serde_json::to_vec(&h).unwrap());
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(
        old.len() > packed.len(),
        "version 2's header is the smaller"
    );
    let path = dir.path().join("v1.padic");
    std::fs::write(&path, &old).unwrap();
    let c = Container::open(&path).unwrap();
    assert_eq!(serde_json::to_value(c.header()).unwrap(), h);
    let full = decode(&path, None).to_safetensors();
    for (name, data) in &tensors {
        assert!(
            tensor_bytes(&c, data_region(&full), name) == &data[..],
            "{name}"
        );
    }
}

#[test]
fn files_shorter_than_the_framing_are_refused_by_what_they_lack() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(dir.path(), b"PADIC");
    assert!(err.contains("not a padic-burst container"), "{err}");
    // The whole magic, nothing after it: a container cut short, not another format.
    let err = refused(dir.path(), b"PADICBST");
    assert!(
        err.contains("file is 8 bytes, shorter than the 40 bytes"),
        "{err}"
    );
    let mut prefix = b"PADICBST".to_vec();
    prefix.extend_from_slice(&1u32.to_le_bytes());
    prefix.extend_from_slice(&0u32.to_le_bytes());
    let err = refused(dir.path(), &with_footer(&prefix, b"")[..39]);
    assert!(err.contains("file is 39 bytes"), "{err}");
    // Exactly the framing, with an empty header: the framing is whole, the header is not JSON.
    let err = refused(dir.path(), &with_footer(&prefix, b""));
    assert!(
        err.contains("byte offset 16") && err.contains("does not parse"),
        "{err}"
    );
}

#[test]
fn a_container_with_no_tensors_fills_the_file_with_its_header_and_opens() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::new(Vec::new()).unwrap();
    let header = Header {
        format: FORMAT_NAME.into(),
        version: Some(padic_burst::format::VERSION),
        source_header: "{}".into(),
        data_len: 0,
        tensors: vec![],
    };
    let (bytes, len) = w.finish(&header).unwrap();
    assert_eq!(len, bytes.len() as u64, "finish returns the file's length");
    let c = open(dir.path(), &bytes).unwrap();
    assert_eq!(c.header(), &header);
    assert_eq!(c.file_len(), len);
}

#[test]
fn the_writer_places_chunks_back_to_back_after_the_prefix() {
    let mut w = Writer::new(Vec::new()).unwrap();
    let a = w.chunk(3, &[b"abc", b"de"]).unwrap();
    let b = w.chunk(1, &[b"f"]).unwrap();
    assert_eq!((a.offset, b.offset), (16, 21));
    assert_eq!(a.elements, 3);
    assert_eq!(
        a.sections.iter().map(|s| s.len).collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert_eq!(a.sections[1].xxh3, xxhash_rust::xxh3::xxh3_64(b"de"));
}

#[test]
fn checksums_computed_ahead_give_the_same_entry_and_must_match_the_sections() {
    let sections: [&[u8]; 2] = [b"abc", b"de"];
    let sums = [
        xxhash_rust::xxh3::xxh3_64(b"abc"),
        xxhash_rust::xxh3::xxh3_64(b"de"),
    ];
    let mut plain = Writer::new(Vec::new()).unwrap();
    let mut summed = Writer::new(Vec::new()).unwrap();
    assert_eq!(
        plain.chunk(3, &sections).unwrap(),
        summed.chunk_summed(3, &sections, &sums).unwrap()
    );
    let err = summed.chunk_summed(1, &sections, &sums[..1]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("2 sections with 1 checksums"),
        "{err}"
    );
    // Nothing of the refused chunk was written.
    let header = Header {
        format: FORMAT_NAME.into(),
        version: Some(padic_burst::format::VERSION),
        source_header: "{}".into(),
        data_len: 0,
        tensors: vec![],
    };
    assert_eq!(
        summed.finish(&header).unwrap().0,
        plain.finish(&header).unwrap().0
    );
}

#[test]
fn index_errors_name_the_tensor_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let orig: serde_json::Value = { header_json(&packed).1 };
    // The index lists tensors in data order, which safetensors chooses.
    let index = |name: &str| {
        orig["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t["name"] == name)
            .unwrap()
    };
    let (w, f, ids) = (index("layer.w"), index("layer.f"), index("ids"));
    let data_len = orig["data_len"].as_u64().unwrap();
    let f_elements = orig["tensors"][f]["chunks"][0]["elements"]
        .as_u64()
        .unwrap();
    let f_offset = orig["tensors"][f]["chunks"][0]["offset"].as_u64().unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, Vec<String>)> = vec![
        (
            "format",
            Box::new(|h| h["format"] = "other".into()),
            vec!["format is \"other\", expected \"padic-burst\"".into()],
        ),
        (
            "data length on the cap (allowed), not covered by the tensors",
            Box::new(|h| h["data_len"] = MAX_DATA_LEN.into()),
            vec![format!(
                "tensors cover {data_len} bytes of a data length of {MAX_DATA_LEN}"
            )],
        ),
        (
            "data length past the cap",
            Box::new(|h| h["data_len"] = (MAX_DATA_LEN + 1).into()),
            vec!["exceeds the cap".into()],
        ),
        (
            "one byte more data than the tensors hold",
            Box::new(move |h| h["data_len"] = (data_len + 1).into()),
            vec![format!("tensors cover {data_len} bytes")],
        ),
        (
            "a shape the source header does not give",
            Box::new(move |h| h["tensors"][w]["shape"] = serde_json::json!([3000])),
            vec![
                "tensor 'layer.w'".into(),
                "differ from the source header".into(),
            ],
        ),
        (
            "a dtype of the same width the source header does not give",
            Box::new(move |h| h["tensors"][w]["dtype"] = "F16".into()),
            vec![
                "tensor 'layer.w'".into(),
                "differ from the source header".into(),
            ],
        ),
        (
            "a tensor the source header lacks",
            Box::new(move |h| h["tensors"][f]["name"] = "layer.g".into()),
            vec![
                "tensor 'layer.g'".into(),
                "missing from the source header".into(),
            ],
        ),
        (
            "head digits alone",
            Box::new(move |h| {
                let t = h["tensors"][f]["codec"]["head_digits"].as_u64().unwrap();
                h["tensors"][f]["codec"]["head_digits"] = (t - 1).into();
            }),
            vec!["tensor 'layer.f'".into(), "digit layout differs".into()],
        ),
        (
            "planes alone",
            Box::new(move |h| h["tensors"][w]["codec"]["planes"][0] = 1.into()),
            vec!["tensor 'layer.w'".into(), "digit layout differs".into()],
        ),
        (
            "an empty chunk",
            Box::new(move |h| h["tensors"][f]["chunks"][0]["elements"] = 0.into()),
            vec![
                "tensor 'layer.f', chunk 0".into(),
                "chunk holds 0 values".into(),
            ],
        ),
        (
            "a chunk of exactly the largest output (allowed), miscounted",
            Box::new(move |h| {
                h["tensors"][f]["chunks"][0]["elements"] = (MAX_CHUNK_BYTES / 4).into()
            }),
            vec!["tensor 'layer.f'".into(), "chunks hold".into()],
        ),
        (
            "a chunk one value past the largest output",
            Box::new(move |h| {
                h["tensors"][f]["chunks"][0]["elements"] = (MAX_CHUNK_BYTES / 4 + 1).into()
            }),
            vec!["tensor 'layer.f', chunk 0".into(), "chunk holds".into()],
        ),
        (
            "one value fewer in a chunk",
            Box::new(move |h| h["tensors"][f]["chunks"][0]["elements"] = (f_elements - 1).into()),
            vec![format!(
                "chunks hold {} values, the tensor has 1500",
                1500 - 1
            )],
        ),
        (
            "sections past the payload",
            Box::new(move |h| {
                h["tensors"][f]["chunks"][0]["sections"][1]["len"] = (1u64 << 30).into()
            }),
            vec![
                format!("tensor 'layer.f', chunk 0, byte offset {f_offset}"),
                "sections run past the payload".into(),
            ],
        ),
        (
            "a passthrough chunk that stores a byte more than it holds",
            Box::new(move |h| h["tensors"][ids]["chunks"][0]["elements"] = 511.into()),
            vec![
                "tensor 'ids', chunk 0".into(),
                "passthrough chunk of 511 bytes stores 512".into(),
            ],
        ),
    ];
    for (what, edit, expect) in cases {
        let err = refused(dir.path(), &with_header(&packed, edit));
        for e in expect {
            assert!(err.contains(&e), "{what}: want {e:?} in {err}");
        }
    }
}

#[test]
fn sections_are_read_in_place_and_a_bad_checksum_names_its_section_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let c = open(dir.path(), &packed).unwrap();
    let w = position(&c, "layer.w");
    let chunk = &c.header().tensors[w].chunks[1];
    let n = chunk.sections.len();
    assert!(n >= 2);
    let got = c.sections(w, 1, n).unwrap();
    let mut at = chunk.offset as usize;
    for (s, bytes) in chunk.sections.iter().zip(&got) {
        assert!(*bytes == &packed[at..at + s.len as usize]);
        at += s.len as usize;
    }
    assert_eq!(
        c.sections(w, 1, 1).unwrap().len(),
        1,
        "only the sections asked for"
    );
    let total = c
        .read_sections(w, 1, n, |secs| {
            Ok(secs.iter().map(|s| s.len()).sum::<usize>())
        })
        .unwrap();
    assert_eq!(
        total as u64,
        chunk.sections.iter().map(|s| s.len).sum::<u64>()
    );

    // Damage digit plane 0 of chunk 1: the exponent section still verifies.
    let plane0 = chunk.offset + chunk.sections[0].len;
    let mut bad = packed.clone();
    bad[plane0 as usize] ^= 0x40;
    let c = open(dir.path(), &bad).unwrap();
    assert!(c.sections(w, 1, 1).is_ok());
    let err = c.sections(w, 1, n).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "tensor 'layer.w', chunk 1, digit plane 0, byte offset {plane0}"
        )) && err.contains("checksum mismatch"),
        "{err}"
    );
    // The checksum is checked after `read`, and its error wins over what `read` returned.
    let err = c.read_sections(w, 1, n, |_| Ok(7)).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_container_describes_its_tensors_and_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let path = dir.path().join("a.padic");
    std::fs::write(&path, &packed).unwrap();
    let c = Container::open(&path).unwrap();
    assert_eq!(c.path(), path);
    assert_eq!(c.file_len(), packed.len() as u64);
    assert!(format!("{c:?}").contains("tensors: 3"), "{c:?}");
    let t = &c.header().tensors;
    let (w, f, ids) = (
        position(&c, "layer.w"),
        position(&c, "layer.f"),
        position(&c, "ids"),
    );
    assert_eq!((t[w].unit(), t[f].unit(), t[ids].unit()), (2, 4, 1));
    assert_eq!(
        (t[w].float_kind(), t[f].float_kind(), t[ids].float_kind()),
        (
            Some(padic_burst::codec::FloatKind::BF16),
            Some(padic_burst::codec::FloatKind::F32),
            None
        )
    );
    for (i, e) in t.iter().enumerate() {
        let coded: u64 = e
            .chunks
            .iter()
            .flat_map(|c| &c.sections)
            .map(|s| s.len)
            .sum();
        assert_eq!(e.compressed_bytes(), coded, "{}", e.name);
        assert_eq!(e.layout().as_ref(), c.layout(i), "{}", e.name);
    }
    assert!(c.layout(w).is_some() && c.layout(ids).is_none());

    // A tensor found by name is the one of that name; another name is none.
    for (i, e) in t.iter().enumerate() {
        assert_eq!(c.tensor_named(&e.name), Some(i), "{}", e.name);
    }
    assert_eq!(c.tensor_named("no such tensor"), None);

    // The identity follows the contents: the same bytes elsewhere share it,
    // another container does not.
    let copy = dir.path().join("b.padic");
    std::fs::write(&copy, &packed).unwrap();
    assert_eq!(Container::open(&copy).unwrap().identity(), c.identity());
    let mut rng = padic_burst::demo::Rng::new(12);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 3000, 0.05, Dtype::BF16);
    let file = safetensors_bytes(&[("layer.w", Dtype::BF16, vec![30, 100], w)]);
    let other = compress_bytes(dir.path(), "other", &file, &CompressOptions::default());
    assert_ne!(Container::open(other).unwrap().identity(), c.identity());
}

#[test]
fn a_chunk_decode_error_is_lifted_to_its_place_and_other_errors_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = mixed_sample(dir.path());
    let c = open(dir.path(), &packed).unwrap();
    let f = position(&c, "layer.f");
    let offset = c.header().tensors[f].chunks[0].offset;
    let err = c
        .decode_error(f, 0, Error::Decode("bad symbol".into()))
        .to_string();
    assert!(
        err.contains(&format!(
            "tensor 'layer.f', chunk 0, byte offset {offset}: bad symbol"
        )),
        "{err}"
    );
    let err = c.decode_error(f, 0, Error::InvalidArgument("no".into()));
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn dtype_names_and_widths_are_safetensors_own() {
    for (name, bits) in [
        ("F32", 32),
        ("BF16", 16),
        ("I64", 64),
        ("BOOL", 8),
        ("U8", 8),
    ] {
        assert_eq!(dtype_bits(name), Some(bits), "{name}");
    }
    for name in ["Q7", "f32", ""] {
        assert_eq!(dtype_bits(name), None, "{name}");
    }
}
