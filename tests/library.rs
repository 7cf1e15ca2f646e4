//! The library API: Pipeline::decompress / decompress_tensor / force_mode /
//! statistics, the tensor cache, and use from several threads.

mod common;

use std::sync::Arc;

use padic_burst::config::{Config, ConfigLayer};
use padic_burst::format::Container;
use padic_burst::pipeline::{Pipeline, Residence};
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
            t.data[..] == *common::tensor_bytes(&c, data, &e.name),
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
    assert!(a.data[..] == *common::tensor_bytes(&c, data, "layer.0.w"));
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
    let s = p.statistics().unwrap();
    assert_eq!(
        (s.current_mode.as_str(), s.current_engine),
        ("cpu-only", None)
    );
    // The mode and the engine are the pipeline's now: they agree (the engine
    // was the last run's, null, beside "auto").
    p.force_mode(Mode::Auto);
    let s = p.statistics().unwrap();
    assert_eq!(
        (s.current_mode.as_str(), s.current_engine.as_deref()),
        ("auto", Some("cpu"))
    );
    p.decompress(&c, None).unwrap();
    p.force_mode(Mode::CpuOnly);
    let s = p.statistics().unwrap();
    assert_eq!(
        (s.current_mode.as_str(), s.current_engine),
        ("cpu-only", None)
    );
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
            assert!(
                t.data[..] == *common::tensor_bytes(&c, data, &t.name),
                "{}",
                t.name
            );
        }
    }
    let s = p.statistics().unwrap();
    assert_eq!(s.cache_hits + s.cache_misses, 12);
}

/// AutoSwap: tensors wanted in host memory decode on the CPU; those wanted on
/// the device go there while it has room, then to host memory, saying why.
#[test]
fn load_puts_each_tensor_where_it_is_wanted_while_the_device_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let (c, file) = model(dir.path());
    let data = common::data_region(&file);
    let bytes = |name: &str| common::tensor_bytes(&c, data, name).to_vec();
    let index = |name: &str| common::tensor_index(&c, name);
    // Room for layer.1.w (200 KB) and ids (512 B), never for layer.0.w (400 KB).
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    *gpu.device_room.lock().unwrap() = 200_000 + 512 + 1000;
    let p = Pipeline::new(config(64.0)).with_gpu(gpu.clone());
    let want = |name: &str| match name {
        "layer.1.w" | "layer.0.w" | "ids" => Residence::Device,
        _ => Residence::Host,
    };
    let (tensors, info) = p.load(&c, None, want).unwrap();
    assert_eq!(tensors.len(), 3);
    for t in &tensors {
        assert!(
            *t.to_host().unwrap() == bytes(&t.name),
            "{}: values differ",
            t.name
        );
    }
    let on = |name: &str| tensors.iter().find(|t| t.name == name).unwrap();
    assert!(
        on("layer.1.w").on_device() && on("ids").on_device(),
        "{:?}",
        tensors
            .iter()
            .map(|t| (&t.name, &t.fallback))
            .collect::<Vec<_>>()
    );
    let swapped = on("layer.0.w");
    assert!(!swapped.on_device());
    let why = swapped.fallback.as_deref().unwrap();
    assert!(why.contains("out of memory"), "{why}");
    assert_eq!(info.device_tensors, 2);
    assert_eq!((info.host_tensors, info.fallbacks), (1, 1));
    assert_eq!(info.memory_pressure_events, 1, "the out-of-memory counts");
    assert_eq!(*gpu.on_device.lock().unwrap(), vec![index("layer.1.w")]);

    // Wanted in host memory: decoded on the CPU, the GPU left alone.
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    let p = Pipeline::new(config(64.0)).with_gpu(gpu.clone());
    let (tensors, info) = p.load(&c, None, |_| Residence::Host).unwrap();
    assert!(tensors
        .iter()
        .all(|t| !t.on_device() && t.fallback.is_none()));
    assert_eq!(info.host_tensors, 3);
    assert_eq!(gpu.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(gpu.on_device.lock().unwrap().is_empty());
    for t in &tensors {
        assert!(*t.to_host().unwrap() == bytes(&t.name), "{}", t.name);
    }
}

/// In `load` as in the graph, only an out-of-memory sends a tensor to host
/// memory: another GPU failure stops AUTO, naming the tensor.
#[test]
fn load_stops_on_a_gpu_failure_that_is_not_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = model(dir.path());
    let mut gpu = common::FakeGpu::new(&[]);
    gpu.fail_on
        .insert((common::tensor_index(&c, "layer.1.w"), 0));
    let p = Pipeline::new(config(64.0)).with_gpu(Arc::new(gpu));
    let err = p
        .load(&c, None, |_| Residence::Device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor 'layer.1.w'") && err.contains("an injected launch failure"),
        "{err}"
    );
}

/// A shard of a test checkpoint in `dir`: `NAME.w` (bf16) and `NAME.b`
/// (f32), and with `small` two small f32 tensors, `NAME.n1` and `NAME.n2`,
/// coded together in one chunk.
fn shard(dir: &std::path::Path, name: &str, seed: u64, small: bool) -> (Arc<Container>, Vec<u8>) {
    let mut tensors = vec![
        (format!("{name}.w"), Dtype::BF16, vec![100, 300], 0.04),
        (format!("{name}.b"), Dtype::F32, vec![3_000], 0.02),
    ];
    if small {
        tensors.push((format!("{name}.n1"), Dtype::F32, vec![64], 0.5));
        tensors.push((format!("{name}.n2"), Dtype::F32, vec![64], 0.5));
    }
    let tensors: Vec<(&str, Dtype, Vec<usize>, f64)> = tensors
        .iter()
        .map(|(n, d, shape, std)| (n.as_str(), *d, shape.clone(), *std))
        .collect();
    let (packed, file) = common::gaussian_model(dir, name, seed, &tensors, 16);
    (Arc::new(Container::open(packed).unwrap()), file)
}

/// Chunks of the tensor that codes `name`'s values: its own, or those of
/// the tensor whose chunk it shares.
fn owner_chunks(c: &Container, name: &str) -> usize {
    let owner = c.header().chunk_owner(common::tensor_index(c, name));
    c.header().tensors[owner].chunks.len()
}

/// Each shard's loaded tensors, in file order, are its data region bit for bit.
fn assert_loaded(
    loaded: &[Vec<padic_burst::pipeline::ResidentTensor>],
    shards: &[(&Arc<Container>, &[u8])],
) {
    assert_eq!(loaded.len(), shards.len());
    for (got, (c, file)) in loaded.iter().zip(shards) {
        let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
        let want: Vec<&str> = c.header().tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, want);
        let whole: Vec<u8> = got
            .iter()
            .flat_map(|t| t.to_host().unwrap().to_vec())
            .collect();
        assert!(
            whole == common::data_region(file),
            "{}: bit-exact",
            c.path().display()
        );
    }
}

/// GPU memory 95% used at the first reading, 85% at every later one: above
/// the 90% threshold, then inside its 10-point hysteresis band.
struct RiseThenBand(std::sync::atomic::AtomicUsize);

impl padic_burst::pressure::PressureSource for RiseThenBand {
    fn sample_at(&self, t_ms: u64) -> Option<padic_burst::pressure::Sample> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(padic_burst::pressure::Sample {
            t_ms,
            used_mb: if n == 0 { 9_500.0 } else { 8_500.0 },
            total_mb: 10_000.0,
        })
    }
    fn has_gpu(&self) -> bool {
        true
    }
}

#[test]
fn a_sharded_load_decides_every_shard_under_one_policy_and_decodes_host_shards_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_file) = shard(dir.path(), "a", 5, false);
    let (b, b_file) = shard(dir.path(), "b", 6, false);
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    let p = Pipeline::new(config(64.0))
        .with_gpu(gpu.clone())
        .with_pressure(Arc::new(RiseThenBand(Default::default())));
    let (shards, info) = p
        .load_shards(&[a.clone(), b.clone()], None, |_| Residence::Device)
        .unwrap();
    // The first reading switches AUTO to the CPU; 85% is not below 80%, so
    // it stays there through the second shard (a policy begun afresh for
    // that shard would start on the GPU, with 85% under the threshold).
    assert!(gpu.on_device.lock().unwrap().is_empty());
    for t in shards.iter().flatten() {
        assert!(!t.on_device(), "{}", t.name);
        let why = t.fallback.as_deref().unwrap();
        assert!(
            why.contains("memory pressure (GPU memory"),
            "{}: {why}",
            t.name
        );
    }
    assert_eq!(
        (info.device_tensors, info.host_tensors, info.fallbacks),
        (0, 4, 4)
    );
    assert_eq!(info.memory_pressure_events, 1);
    assert_loaded(&shards, &[(&a, &a_file), (&b, &b_file)]);
    // Both shards, every tensor in host memory: one graph run decoded them.
    let chunks = a.header().chunk_count() + b.header().chunk_count();
    let s = p.statistics().unwrap();
    assert_eq!(s.chunks.total_decompressions as usize, chunks);
}

#[test]
fn a_device_load_decodes_every_fallback_of_every_shard_in_one_graph_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_file) = shard(dir.path(), "a", 7, true);
    let (b, b_file) = shard(dir.path(), "b", 8, true);
    let n1 = common::tensor_index(&a, "a.n1");
    assert!(
        a.header().shares_chunks(n1),
        "the small tensors share a chunk"
    );
    // Tensors are stored in name order: a.b, a.n1, a.n2, a.w. Room for a.b
    // only: every later tensor runs out of device memory.
    let first = common::tensor_index(&a, "a.b");
    assert_eq!(first, 0);
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    *gpu.device_room.lock().unwrap() = a.header().tensors[first].byte_len + 100;
    let p = Pipeline::new(config(64.0)).with_gpu(gpu.clone());
    let (shards, info) = p
        .load_shards(&[a.clone(), b.clone()], None, |_| Residence::Device)
        .unwrap();
    assert_eq!(*gpu.on_device.lock().unwrap(), vec![0]);
    assert_eq!(
        (info.device_tensors, info.host_tensors, info.fallbacks),
        (1, 7, 7)
    );
    // A shard's fallbacks are ranges of its one decoded region, not copies.
    for shard in &shards {
        let regions: Vec<_> = shard
            .iter()
            .filter_map(|t| match &t.values {
                padic_burst::pipeline::Values::Host(h) => Some(h.region().0.clone()),
                _ => None,
            })
            .collect();
        assert!(regions.len() >= 3);
        assert!(regions.iter().all(|r| Arc::ptr_eq(r, &regions[0])));
    }
    assert_loaded(&shards, &[(&a, &a_file), (&b, &b_file)]);
    // The seven fallbacks decoded in one run: its chunks are theirs (the two
    // small tensors' one shared chunk counted once), a.b's not among them.
    let owner = |c: &Container, name: &str| c.header().chunk_owner(common::tensor_index(c, name));
    assert_eq!(owner(&a, "a.n1"), owner(&a, "a.n2"));
    let want = owner_chunks(&a, "a.n1")
        + owner_chunks(&a, "a.w")
        + owner_chunks(&b, "b.b")
        + owner_chunks(&b, "b.n1")
        + owner_chunks(&b, "b.w");
    let s = p.statistics().unwrap();
    assert_eq!(s.chunks.total_decompressions as usize, want);
}

#[test]
fn small_tensors_sharing_a_chunk_decode_in_the_loads_one_run_then_go_to_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_file) = shard(dir.path(), "a", 9, true);
    let (b, b_file) = shard(dir.path(), "b", 10, true);
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    let p = Pipeline::new(config(64.0)).with_gpu(gpu.clone());
    let (shards, info) = p
        .load_shards(&[a.clone(), b.clone()], None, |_| Residence::Device)
        .unwrap();
    // Room for everything: every tensor on the device, the small ones
    // uploaded, the others decoded there.
    for t in shards.iter().flatten() {
        assert!(t.on_device(), "{}: {:?}", t.name, t.fallback);
    }
    assert_eq!((info.device_tensors, info.fallbacks), (8, 0));
    assert_eq!(
        gpu.on_device.lock().unwrap().len(),
        4,
        "w and b of each shard"
    );
    assert_loaded(&shards, &[(&a, &a_file), (&b, &b_file)]);
    // The CPU decoded both shards' shared chunks in one run, which the
    // load's statistics show (a run per small tensor left only the last).
    let s = p.statistics().unwrap();
    assert_eq!(
        s.chunks.total_decompressions as usize,
        owner_chunks(&a, "a.n1") + owner_chunks(&b, "b.n1")
    );
    assert_eq!(s.chunks.cpu_decompressions, s.chunks.total_decompressions);
}

#[test]
fn load_in_gpu_only_fails_naming_the_tensor_and_cpu_only_stays_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (c, file) = model(dir.path());
    let gpu = Arc::new(common::FakeGpu::new(&[]));
    *gpu.device_room.lock().unwrap() = 0;
    let p = Pipeline::new(config(64.0)).with_gpu(gpu);
    p.force_mode(Mode::GpuOnly);
    let err = p
        .load(&c, None, |_| Residence::Device)
        .unwrap_err()
        .to_string();
    // The first tensor in file order is the first refused.
    let first = &c.header().tensors[0];
    assert!(err.contains(&format!("tensor '{}'", first.name)), "{err}");
    assert!(
        err.contains(&format!("its {} bytes", first.byte_len)),
        "{err}"
    );
    assert!(err.contains("out of memory"), "{err}");

    p.force_mode(Mode::CpuOnly);
    let (tensors, info) = p.load(&c, None, |_| Residence::Device).unwrap();
    assert_eq!((info.device_tensors, info.fallbacks), (0, 3));
    assert!(tensors
        .iter()
        .all(|t| t.fallback.as_deref().unwrap().contains("CPU_ONLY")));
    let data = common::data_region(&file);
    let whole: Vec<u8> = tensors
        .iter()
        .flat_map(|t| t.to_host().unwrap().to_vec())
        .collect();
    assert!(whole == data, "every tensor, in order, bit-exact");

    // Without a GPU, AUTO keeps them in host memory and says why.
    let p = Pipeline::new(config(64.0));
    let (tensors, _) = p.load(&c, None, |_| Residence::Device).unwrap();
    assert!(tensors
        .iter()
        .all(|t| !t.on_device() && t.fallback.as_deref().unwrap().contains("no GPU")));
}
