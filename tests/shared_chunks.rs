//! Small tensors that share chunks: a run of small split tensors of one
//! layout coded as one chunk (where that codes smaller), listed under the
//! run's first tensor, the others naming it in `chunks_of`. Whole decodes,
//! one-tensor decodes and the checks a reader makes of such runs.

mod common;

use std::sync::Arc;

use common::*;
use padic_burst::format::Container;
use padic_burst::pipeline::Pipeline;
use safetensors::Dtype;

/// A model of 60 small bf16 tensors of one distribution (1,000 to 3,000
/// values each) with an I64 tensor among them, compressed with 64 KiB
/// chunks: (safetensors bytes, container path).
fn small_model(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf) {
    let names: Vec<String> = (0..61).map(|i| format!("layer.{i:02}")).collect();
    let tensors: Vec<(&str, Dtype, Vec<usize>, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| match i {
            30 => (n.as_str(), Dtype::I64, vec![100], 0.0),
            _ => (n.as_str(), Dtype::BF16, vec![1000 + 37 * i], 0.02),
        })
        .collect();
    let (packed, file) = gaussian_model(dir, "small", 5, &tensors, 64);
    (file, packed)
}

#[test]
fn runs_of_small_tensors_share_chunks_and_every_tensor_decodes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (file, packed) = small_model(dir.path());
    let c = Arc::new(Container::open(&packed).unwrap());
    let h = c.header();
    let sharing = h.tensors.iter().filter(|t| t.chunks_of.is_some()).count();
    assert!(sharing > 0, "no tensor shares a chunk");
    assert!(
        h.chunk_count() < h.tensors.len(),
        "{} chunks for {} tensors",
        h.chunk_count(),
        h.tensors.len()
    );
    for (i, t) in h.tensors.iter().enumerate() {
        let o = h.chunk_owner(i);
        assert!(o <= i && h.tensors[o].chunks_of.is_none(), "{}", t.name);
        // Each run stays within one chunk's bytes.
        let run = h.chunked_range(o);
        assert!(run.end - run.start <= 64 << 10, "{}", t.name);
        if o != i {
            assert_eq!(t.dtype, "BF16", "only split tensors share");
        }
        assert!(run.start <= t.data_offset && t.data_offset + t.byte_len <= run.end);
    }
    // The whole model, byte for byte.
    assert!(decode(&packed, None).to_safetensors() == file);
    // Each tensor alone: only its run's chunk is read, its part returned.
    let data = data_region(&file);
    let p = Pipeline::new(padic_burst::config::Config::default());
    for t in &h.tensors {
        let got = p.decompress_tensor(&c, &t.name, None).unwrap();
        assert!(
            got.data[..] == *tensor_bytes(&c, data, &t.name),
            "tensor '{}'",
            t.name
        );
    }
    // The first read of a shared run cached the run's other tensors: one
    // decode a run, so a safe_open over every key decodes each run once.
    let runs = (0..h.tensors.len())
        .filter(|&i| h.chunk_owner(i) == i)
        .count();
    let s = p.statistics().unwrap();
    assert_eq!(s.cache_misses as usize, runs, "one decode a run");
    assert_eq!(s.cache_hits as usize, h.tensors.len() - runs);
    // A reduced decode is cached apart: its run is decoded again.
    let shared = h.tensors.iter().find(|t| t.chunks_of.is_some()).unwrap();
    let low = p.decompress_tensor(&c, &shared.name, Some(3)).unwrap();
    assert_eq!(low.data.len(), shared.byte_len as usize);
    assert_eq!(p.statistics().unwrap().cache_misses as usize, runs + 1);
    // Without the cache a read decodes its run and returns its part.
    let cfg = padic_burst::config::ConfigLayer {
        enable_caching: Some(false),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let off = Pipeline::new(cfg);
    let got = off.decompress_tensor(&c, &shared.name, None).unwrap();
    assert!(got.data[..] == *tensor_bytes(&c, data, &shared.name));
    // ... and keeps that one run, so its other tensors read in turn do not
    // decode it again: with the run's chunk now damaged on disk, a tensor
    // of the run still reads (from the run held), while a decode of it
    // (at other digits) meets the damage.
    let si = h
        .tensors
        .iter()
        .position(|t| t.name == shared.name)
        .unwrap();
    let owner = h.chunk_owner(si);
    let chunk = &h.tensors[owner].chunks[0];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&packed)
            .unwrap();
        let at = chunk.offset + 4;
        let mut was = [0u8; 1];
        std::fs::File::open(&packed)
            .unwrap()
            .read_at(&mut was, at)
            .unwrap();
        f.write_at(&[was[0] ^ 0x5a], at).unwrap();
    }
    let neighbour = (owner..h.tensors.len())
        .find(|&k| k != si && h.chunk_owner(k) == owner)
        .unwrap();
    let name = &h.tensors[neighbour].name;
    let got = off.decompress_tensor(&c, name, None).unwrap();
    assert!(got.data[..] == *tensor_bytes(&c, data, name));
    let err = off
        .decompress_tensor(&c, name, Some(3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
    // inspect names each shared run's first tensor and shares its bytes out.
    let r = padic_burst::inspect::inspect(&c);
    let shared: u64 = r
        .tensors
        .iter()
        .filter(|t| t.shares_chunks_of.is_some())
        .map(|t| t.compressed_bytes)
        .sum();
    assert!(shared > 0);
    let chunks: usize = r.tensors.iter().map(|t| t.chunks).sum();
    assert_eq!(chunks, h.chunk_count());
    // The table marks them, and says what the mark means.
    let table = padic_burst::inspect::render(&r);
    let follower = r
        .tensors
        .iter()
        .find(|t| t.shares_chunks_of.as_ref().is_some_and(|o| *o != t.name))
        .unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", follower.name)))
        .unwrap();
    assert!(row.contains(" shared "), "{row}");
    assert!(
        table.contains("\"shared\": their values lie in the chunk"),
        "{table}"
    );
}

/// An edit of a container's header JSON.
type Edit = dyn Fn(&mut serde_json::Value);

#[test]
fn a_run_that_breaks_the_rules_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = small_model(dir.path());
    let bytes = std::fs::read(&packed).unwrap();
    let h = Container::open(&packed).unwrap().header().clone();
    // A run of at least three: its first tensor and two that follow.
    let o = (0..h.tensors.len())
        .find(|&i| {
            h.tensors.get(i + 2).and_then(|t| t.chunks_of) == Some(i)
                && h.tensors[i + 1].chunks_of == Some(i)
        })
        .expect("a run of three");
    let (a, b) = (o + 1, o + 2);
    let cases: Vec<(Box<Edit>, String)> = vec![
        (
            Box::new(move |h| h["tensors"][a]["chunks_of"] = a.into()),
            format!("chunks_of {a} is not an earlier tensor"),
        ),
        (
            Box::new(move |h| h["tensors"][b]["chunks_of"] = a.into()),
            "which shares another's chunks itself".into(),
        ),
        (
            Box::new(move |h| {
                h["tensors"][a]["chunks_of"] = serde_json::Value::Null;
            }),
            "tensors sharing chunks must follow their owner".into(),
        ),
        (
            Box::new(move |h| h["tensors"][a]["codec"] = serde_json::Value::Null),
            "is not split the same way".into(),
        ),
        (
            Box::new(move |h| {
                let c = h["tensors"][o]["chunks"][0].clone();
                h["tensors"][a]["chunks"] = serde_json::json!([c]);
            }),
            "chunks of its own".into(),
        ),
    ];
    for (edit, want) in cases {
        let path = dir.path().join("edited.padic");
        std::fs::write(&path, with_header(&bytes, edit)).unwrap();
        let err = Container::open(&path).expect_err(&want).to_string();
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("edited.padic"), "{err}");
    }
    // The run's last tensor taken out of it: the chunk holds more values
    // than the run now has, and the tensor none of its own.
    let last = (o + 1..h.tensors.len())
        .take_while(|&j| h.tensors[j].chunks_of == Some(o))
        .last()
        .unwrap();
    let path = dir.path().join("edited.padic");
    std::fs::write(
        &path,
        with_header(&bytes, |h| {
            h["tensors"][last]["chunks_of"] = serde_json::Value::Null;
        }),
    )
    .unwrap();
    let err = Container::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("the tensor and those sharing its chunks have")
            || err.contains("chunks hold 0 values"),
        "{err}"
    );
}

#[test]
fn a_header_that_is_much_of_its_file_is_compressed_harder() {
    // 400 tensors of 1 to 300 values: the header is about as big as the
    // chunks. Its JSON is stored at the harder level, which makes it smaller
    // here; beside the chunks of bigger tensors it takes the faster one.
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..400).map(|i| format!("block.{i}.norm.bias")).collect();
    let tensors: Vec<(&str, Dtype, Vec<usize>, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), Dtype::F32, vec![1 + (i * 37) % 300], 0.02))
        .collect();
    let (packed, _) = gaussian_model(dir.path(), "tiny", 9, &tensors, 1024);
    let file = std::fs::read(&packed).unwrap();
    let stored = u64::from_le_bytes(file[file.len() - 24..file.len() - 16].try_into().unwrap());
    let chunk_bytes = file.len() as u64 - 16 - stored - 24;
    let c = Container::open(&packed).unwrap();
    let json = serde_json::to_vec(c.header()).unwrap();
    assert!(
        json.len() as u64 >= chunk_bytes / 16,
        "the header is much of the file"
    );
    let harder = padic_burst::format::seal_header(&json, chunk_bytes).unwrap();
    let faster = padic_burst::format::seal_header(&json, 1 << 40).unwrap();
    assert_eq!(harder.len() as u64, stored, "what the writer stored");
    assert!(
        harder.len() < faster.len(),
        "{} against {}",
        harder.len(),
        faster.len()
    );
}
