//! Whole-model decode per dtype on a generated transformer-shaped model:
//! the bare CPU engine (`decode/<dtype>/cpu-<workers>`), the dataflow graph
//! (`decode/<dtype>/graph-<workers>`: its ratio to `cpu-<workers>` is the
//! graph's overhead), and a memcpy of the same output size as the baseline,
//! all in the same run:
//!
//! ```text
//! cargo bench --bench decode
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use padic_burst::config::{Config, ConfigLayer};
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_to_memory, RunOptions};
use padic_burst::policy::Mode;
use safetensors::Dtype;

fn decode(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("padic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    for (dtype, name) in [
        (Dtype::BF16, "bf16"),
        (Dtype::F16, "f16"),
        (Dtype::F32, "f32"),
    ] {
        let packed = padic_burst::demo::compressed_model(&dir, name, 9, 4_000_000, dtype).unwrap();
        let container = Container::open(&packed).unwrap();
        let out_len = container.header().data_len;
        group.throughput(Throughput::Bytes(out_len));
        for workers in [1usize, 2] {
            let engine = CpuEngine::new(Some(workers)).unwrap();
            group.bench_function(format!("{name}/cpu-{workers}"), |b| {
                b.iter(|| engine.decompress_to_memory(&container, None).unwrap())
            });
        }
        let shared = std::sync::Arc::new(Container::open(&packed).unwrap());
        for workers in [1usize, 2] {
            let cfg = Config::load(
                None,
                ConfigLayer {
                    num_cpu_workers: Some(workers as i64),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut opts = RunOptions::new(Mode::CpuOnly, cfg);
            opts.timely_args = vec!["-w".into(), workers.to_string()];
            group.bench_function(format!("{name}/graph-{workers}"), |b| {
                b.iter(|| decompress_to_memory(shared.clone(), &opts).unwrap())
            });
        }
        let src = vec![1u8; out_len as usize];
        let mut dst = vec![0u8; out_len as usize];
        group.bench_function(format!("{name}/memcpy-baseline"), |b| {
            b.iter(|| dst.copy_from_slice(std::hint::black_box(&src)))
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, decode);
criterion_main!(benches);
