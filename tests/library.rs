//! The library API: Pipeline::decompress / decompress_tensor / force_mode /
//! statistics, the tensor cache, and use from several threads.

mod common;

use std::sync::Arc;

use padic_burst::config::{Config, ConfigLayer};
use padic_burst::format::Container;
use padic_burst::pipeline::Pipeline;
use padic_burst::policy::Mode;
use safetensors::Dtype;

fn model(dir: &std::path::Path) -> (Arc<Container>, Vec<u8>) {
    let (packed, file) = common::gaussian_model(
        dir,
        "lib",
        33,
        &[
            ("layer.0.w", Dtype::BF16, vec![200, 1000], 0.04),
            ("layer.1.w", Dtype::F32, vec![50_000], 0.02),
            ("ids", Dtype::I64, vec![64], 0.0),
        ],
        64,
    );
    (Arc::new(Container::open(packed).unwrap()), file)
}

fn config(cache_mb: f64) -> Config {
    ConfigLayer {
        num_cpu_workers: Some(2),
        cache_size_mb: Some(cache_mb),
        ..ConfigLayer::default()
    }
    .resolve()
    .unwrap()
}

#[test]
fn decompress_returns_every_tensor_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (c, file) = model(dir.path());
    let p = Pipeline::new(config(64.0));
    let (tensors, info) = p.decompress(&c, None).unwrap();
    assert_eq!(tensors.len(), 3);
    let data = common::data_region(&file);
    for (t, e) in tensors.iter().zip(&c.header().tensors) {
        assert_eq!(t.name, e.name);
        assert!(
            t.data[..] == data[e.data_offset as usize..(e.data_offset + e.byte_len) as usize],
            "{}",
            t.name
        );
    }
    let chunks: u64 = c
        .header()
        .tensors
        .iter()
        .map(|t| t.chunks.len() as u64)
        .sum();
    assert_eq!(info.cpu_chunks, chunks);
    assert_eq!(info.mode, Mode::Auto);
}

#[test]
fn repeated_tensor_loads_hit_the_cache_and_the_cache_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (c, file) = model(dir.path());
    let data = common::data_region(&file);
    // 0.5 MiB holds the 400 KB bf16 tensor or the 200 KB f32 one, not both.
    let p = Pipeline::new(config(0.5));
    let a = p.decompress_tensor(&c, "layer.0.w", None).unwrap();
    let e = c
        .header()
        .tensors
        .iter()
        .find(|t| t.name == "layer.0.w")
        .unwrap();
    assert!(a.data[..] == data[e.data_offset as usize..(e.data_offset + e.byte_len) as usize]);
    let a2 = p.decompress_tensor(&c, "layer.0.w", None).unwrap();
    assert!(
        Arc::ptr_eq(&a.data, &a2.data),
        "the second load is the cached tensor"
    );
    assert_eq!(
        (
            p.statistics().unwrap().cache_hits,
            p.statistics().unwrap().cache_misses
        ),
        (1, 1)
    );
    // A different target precision is a different entry.
    let low = p.decompress_tensor(&c, "layer.0.w", Some(3)).unwrap();
    assert!(low.data[..] != a.data[..]);
    // Loading the f32 layer evicts the least recently used bf16 entries.
    p.decompress_tensor(&c, "layer.1.w", None).unwrap();
    let again = p.decompress_tensor(&c, "layer.0.w", None).unwrap();
    assert!(!Arc::ptr_eq(&a.data, &again.data), "evicted, decoded again");
    assert!(again.data[..] == a.data[..]);
    let err = p
        .decompress_tensor(&c, "nope", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tensor named 'nope'"), "{err}");
}

#[test]
fn force_mode_changes_the_routes_of_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = model(dir.path());
    let p = Pipeline::new(config(64.0));
    p.force_mode(Mode::CpuOnly);
    p.decompress(&c, None).unwrap();
    assert_eq!(p.statistics().unwrap().current_mode, "cpu-only");
    p.force_mode(Mode::GpuOnly);
    let err = p.decompress(&c, None).unwrap_err().to_string();
    assert!(
        err.contains("no GPU"),
        "GPU_ONLY without a GPU fails clearly: {err}"
    );
    p.force_mode(Mode::Hybrid);
    let (_, info) = p.decompress(&c, None).unwrap();
    assert_eq!(info.mode, Mode::Hybrid);
    assert!(p
        .statistics()
        .unwrap()
        .notes
        .iter()
        .any(|n| n.contains("HYBRID runs CPU-only")));
}

#[test]
fn one_pipeline_serves_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (c, file) = model(dir.path());
    let p = Arc::new(Pipeline::new(config(64.0)));
    let names = ["layer.0.w", "layer.1.w", "ids"];
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (p, c) = (p.clone(), c.clone());
            std::thread::spawn(move || {
                (0..4)
                    .map(|j| p.decompress_tensor(&c, names[(i + j) % 3], None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let data = common::data_region(&file);
    for h in handles {
        for t in h.join().unwrap() {
            let e = c
                .header()
                .tensors
                .iter()
                .find(|x| x.name == t.name)
                .unwrap();
            assert!(
                t.data[..] == data[e.data_offset as usize..(e.data_offset + e.byte_len) as usize],
                "{}",
                t.name
            );
        }
    }
    let s = p.statistics().unwrap();
    assert_eq!(s.cache_hits + s.cache_misses, 12);
}
