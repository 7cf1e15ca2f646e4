//! The codec's inner loops, one chunk (512 Ki values of Gaussian weights) at
//! a time, per dtype and prime, with a memcpy of the same output as the
//! baseline in the same run:
//!
//! ```text
//! cargo bench --bench codec              # all
//! cargo bench --bench codec -- bf16/p2   # one dtype and prime
//! ```
//!
//! Names are `codec/<dtype>/p<prime>/<decode|encode>` and
//! `codec/<dtype>/memcpy-baseline`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use padic_burst::codec::{chunk, FloatKind, Layout, Tables};
use padic_burst::demo::{gaussian_bytes, Rng};
use safetensors::Dtype;

const VALUES: usize = 512 * 1024;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.sample_size(20);
    for (dtype, kind, name) in [
        (Dtype::BF16, FloatKind::BF16, "bf16"),
        (Dtype::F16, FloatKind::F16, "f16"),
        (Dtype::F32, FloatKind::F32, "f32"),
    ] {
        let bytes = gaussian_bytes(&mut Rng::new(5), VALUES, 0.03, dtype);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        for prime in [2u32, 3, 257] {
            let layout = Layout::new(kind, prime, None, false).unwrap();
            let encoded = chunk::encode(&layout, &bytes);
            let sections: Vec<&[u8]> = encoded.sections.iter().map(|s| s.as_slice()).collect();
            let tables = Tables::new(&layout, layout.precision);
            let mut out = vec![0u8; bytes.len()];
            let mut scratch = Vec::new();
            tables
                .decode_bytes(&sections, &mut out, &mut scratch)
                .unwrap();
            assert_eq!(out, bytes, "{name} p={prime} round trip");
            group.bench_function(format!("{name}/p{prime}/decode"), |b| {
                b.iter(|| {
                    tables
                        .decode_bytes(&sections, &mut out, &mut scratch)
                        .unwrap()
                })
            });
            group.bench_function(format!("{name}/p{prime}/encode"), |b| {
                b.iter(|| chunk::encode(&layout, std::hint::black_box(&bytes)))
            });
        }
        let mut dst = vec![0u8; bytes.len()];
        group.bench_function(format!("{name}/memcpy-baseline"), |b| {
            b.iter(|| dst.copy_from_slice(std::hint::black_box(&bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
