//! The GPU kernels, `kernels/decode.cu` itself, run on the host (crate
//! `padic-burst-kernels-host`, a model of CUDA's grid, warps and
//! `__ballot_sync`): on batch plans against the CPU decoder, on damaged
//! streams, and behind the CUDA engine's own planning, sub-batching and
//! scatter (`engine::batch`) in the pipeline, on the real test weights. The
//! engine that runs them here is test-only; the shipped binary has no GPU
//! engine without a GPU.

mod common;

use std::sync::Arc;

use common::{run_kernels, HostKernelGpu};
use padic_burst::codec::chunk::{self, RANGE_ALIGN};
use padic_burst::codec::plan::{BatchPlan, Pass, PIECE_CONST, PIECE_RAW};
use padic_burst::codec::rans::{self, Word};
use padic_burst::codec::{symbols, FloatKind, Layout, Tables};
use padic_burst::config::Config;
use padic_burst::demo::{gaussian_bytes, Rng};
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_file, Pipeline, Residence, RunOptions};
use padic_burst::policy::Mode;
use padic_burst_kernels_host as host;

fn gaussian(kind: FloatKind, n: usize, seed: u64) -> Vec<u8> {
    gaussian_bytes(&mut Rng::new(seed), n, 0.03, kind.dtype())
}

/// Decodes `bytes` under `layout` and `target` as several ranges (each
/// segment alone, then the whole) in `batch`, and returns what the CPU
/// decoder gives for the same ranges, in the same order.
fn add_ranges<W: Word>(
    batch: &mut BatchPlan,
    layout: &Layout,
    bytes: &[u8],
    target: u32,
) -> Vec<W> {
    let n = bytes.len() / layout.kind.size();
    let enc = chunk::encode(layout, bytes);
    let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
    add_sections(batch, &Tables::new(layout, target), &secs, n)
}

/// [`add_ranges`] for a chunk of `n` values already encoded.
fn add_sections<W: Word>(
    batch: &mut BatchPlan,
    tables: &Tables,
    secs: &[&[u8]],
    n: usize,
) -> Vec<W> {
    let cuts: Vec<usize> = (0..=n.div_ceil(RANGE_ALIGN))
        .map(|k| (k * RANGE_ALIGN).min(n))
        .collect();
    let mut want = Vec::new();
    for w in cuts.windows(2).chain(std::iter::once(&[0, n][..])) {
        let (a, b) = (w[0], w[1]);
        let mut part = vec![W::default(); b - a];
        tables.decode_range(secs, n, a, &mut part).unwrap();
        want.extend_from_slice(&part);
        let start = batch.push_range(tables, secs, n, a, b - a).unwrap();
        assert_eq!(start + part.len(), batch.count);
    }
    want
}

fn check<W: Word + host::Word + PartialEq + std::fmt::Debug>(
    layout: &Layout,
    bytes: &[u8],
    target: u32,
) {
    let mut batch = BatchPlan::new(layout.kind.size());
    let want = add_ranges::<W>(&mut batch, layout, bytes, target);
    let mut got = vec![W::default(); batch.count];
    run_kernels(&batch, &mut got).unwrap();
    assert!(
        got == want,
        "{:?} p={} target {target}: the batch differs from the CPU decoder",
        layout.kind,
        layout.prime
    );
}

#[test]
fn the_kernels_algorithm_on_the_plan_matches_the_cpu_decoder() {
    // Several segments and a short last one; every dtype; p = 2 (raw and
    // rANS planes), 3 and 257 (digit sections of other alphabets).
    let n = 2 * RANGE_ALIGN + 1234;
    for kind in [FloatKind::BF16, FloatKind::F16, FloatKind::F32] {
        let bytes = gaussian(kind, n, 7);
        for prime in [2u32, 3, 257] {
            let layout = Layout::new(kind, prime, None, false).unwrap();
            for target in [layout.precision, 1] {
                match kind {
                    FloatKind::F32 => check::<u32>(&layout, &bytes, target),
                    _ => check::<u16>(&layout, &bytes, target),
                }
            }
        }
    }
    // Every bf16 and f16 bit pattern (specials, subnormals, NaN payloads).
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
    for kind in [FloatKind::BF16, FloatKind::F16] {
        let layout = Layout::new(kind, 2, None, false).unwrap();
        check::<u16>(&layout, &all, layout.precision);
    }
}

/// rANS streams of other lane counts (the format allows 1..=64, the
/// writer uses 32, a warp takes up to 32): the idle lanes of the warp
/// decode nothing but take part in every vote, and the words still
/// match the CPU decoder's.
#[test]
fn the_kernels_decode_streams_of_fewer_lanes() {
    let n = 2 * RANGE_ALIGN + 4321;
    for (kind, prime) in [(FloatKind::BF16, 2u32), (FloatKind::F32, 3)] {
        let layout = Layout::new(kind, prime, None, false).unwrap();
        let enc = chunk::encode(&layout, &gaussian(kind, n, 11));
        let tables = Tables::new(&layout, layout.precision);
        for lanes in [1usize, 7, 31] {
            // Each rANS section re-encoded with `lanes` states.
            let mut secs = enc.sections.clone();
            let mut rewritten = 0;
            for (s, sec) in secs.iter_mut().enumerate() {
                if sec[0] != symbols::KIND_RANS {
                    continue;
                }
                let alphabet = tables.lut(s).len();
                let identity: Vec<u32> = (0..alphabet as u32).collect();
                let mut syms = vec![0u32; n];
                symbols::decode(sec, &identity, &mut syms, true).unwrap();
                let syms: Vec<u16> = syms.iter().map(|&v| v as u16).collect();
                let mut counts = vec![0u64; alphabet];
                syms.iter().for_each(|&v| counts[v as usize] += 1);
                let mut coded = vec![symbols::KIND_RANS];
                rans::encode_lanes(&syms, &counts, lanes, &mut coded);
                *sec = coded;
                rewritten += 1;
            }
            assert!(rewritten > 0, "{kind:?} has no rANS section");
            let refs: Vec<&[u8]> = secs.iter().map(Vec::as_slice).collect();
            let mut batch = BatchPlan::new(kind.size());
            let lanes_planned = |b: &BatchPlan| {
                b.passes
                    .iter()
                    .flat_map(|p| &p.segments)
                    .all(|g| g.lanes == lanes as u32)
            };
            let same = match kind {
                FloatKind::F32 => {
                    let want = add_sections::<u32>(&mut batch, &tables, &refs, n);
                    let mut got = vec![0u32; batch.count];
                    run_kernels(&batch, &mut got).unwrap();
                    got == want
                }
                _ => {
                    let want = add_sections::<u16>(&mut batch, &tables, &refs, n);
                    let mut got = vec![0u16; batch.count];
                    run_kernels(&batch, &mut got).unwrap();
                    got == want
                }
            };
            assert!(lanes_planned(&batch), "the plan keeps {lanes} lanes");
            assert!(
                same,
                "{kind:?} p={prime}, {lanes} lanes: differs from the CPU"
            );
        }
    }
}

#[test]
fn one_batch_mixes_dtypes_primes_and_section_kinds() {
    // bf16 and f16 share 16-bit words: p = 2 (rANS head, raw plane),
    // p = 3 and p = 257 (other alphabets), a constant chunk, and a
    // target of one digit, all in one batch and one set of passes.
    let mut batch = BatchPlan::new(2);
    let mut want: Vec<u16> = Vec::new();
    for (k, kind) in [FloatKind::BF16, FloatKind::F16].into_iter().enumerate() {
        for prime in [2u32, 3, 257] {
            let layout = Layout::new(kind, prime, None, false).unwrap();
            let bytes = gaussian(kind, RANGE_ALIGN + 777 * (k + 1), prime as u64);
            want.extend(add_ranges::<u16>(
                &mut batch,
                &layout,
                &bytes,
                layout.precision,
            ));
            want.extend(add_ranges::<u16>(&mut batch, &layout, &bytes, 1));
        }
        let layout = Layout::new(kind, 2, None, false).unwrap();
        let same: Vec<u8> = std::iter::repeat_n([0x3c, 0x40], 5000).flatten().collect();
        want.extend(add_ranges::<u16>(
            &mut batch,
            &layout,
            &same,
            layout.precision,
        ));
    }
    let kinds = |p: &Pass| {
        (
            p.pieces.iter().any(|x| x.kind == PIECE_CONST),
            p.pieces.iter().any(|x| x.kind == PIECE_RAW),
            !p.segments.is_empty(),
        )
    };
    assert_eq!(kinds(&batch.passes[0]), (true, false, true));
    assert!(kinds(&batch.passes[1]).1);
    let mut got = vec![0u16; batch.count];
    run_kernels(&batch, &mut got).unwrap();
    assert!(got == want, "the mixed batch differs from the CPU decoder");
    // A range of another word size is refused.
    let layout = Layout::new(FloatKind::F32, 2, None, false).unwrap();
    let bytes = gaussian(FloatKind::F32, 100, 1);
    let enc = chunk::encode(&layout, &bytes);
    let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
    let before = batch.clone();
    let f32_tables = Tables::new(&layout, layout.precision);
    assert!(batch.push_range(&f32_tables, &secs, 100, 0, 100).is_err());
    assert_eq!(batch, before);
}

/// Damaged sections never lead the kernels out of bounds: whatever the
/// host's checks let through to a plan, the kernels (run on the host,
/// every buffer between guard pages, so a read past one faults) keep the
/// warp rules and agree with the CPU decoder on the same damaged sections:
/// both decode, to the same values, or both report damage.
#[test]
fn damaged_sections_never_take_the_kernels_out_of_bounds() {
    let mut rng = Rng::new(77);
    let (mut planned, mut refused) = (0, 0);
    for (kind, prime) in [
        (FloatKind::BF16, 2u32),
        (FloatKind::F16, 3),
        (FloatKind::F32, 2),
        (FloatKind::BF16, 257),
    ] {
        let layout = Layout::new(kind, prime, None, false).unwrap();
        let n = RANGE_ALIGN + 999;
        let bytes = gaussian(kind, n, prime as u64);
        let enc = chunk::encode(&layout, &bytes);
        let tables = Tables::new(&layout, layout.precision);
        for case in 0..300 {
            let mut secs = enc.sections.clone();
            let s = (rng.next_u64() % secs.len() as u64) as usize;
            let sec = &mut secs[s];
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = (rng.next_u64() % sec.len() as u64) as usize;
                match rng.next_u64() % 3 {
                    0 => sec[at] ^= 1 << (rng.next_u64() % 8),
                    1 => sec[at] = rng.next_u64() as u8,
                    _ => sec.truncate(at.max(1)),
                }
            }
            let refs: Vec<&[u8]> = secs.iter().map(Vec::as_slice).collect();
            let mut batch = BatchPlan::new(kind.size());
            if batch.push_range(&tables, &refs, n, 0, n).is_err() {
                continue;
            }
            planned += 1;
            let (cpu_ok, gpu_ok, same) = match kind {
                FloatKind::F32 => agree::<u32>(&tables, &refs, n, &batch),
                _ => agree::<u16>(&tables, &refs, n, &batch),
            };
            assert_eq!(
                cpu_ok, gpu_ok,
                "{kind:?} p={prime} case {case}: the CPU decoder says {cpu_ok}, the kernels {gpu_ok}"
            );
            assert!(
                same,
                "{kind:?} p={prime} case {case}: both decode, differently"
            );
            refused += !cpu_ok as usize;
        }
    }
    eprintln!("{planned} damaged chunks planned; CPU and kernels both refused {refused}");
    assert!(
        planned > 100 && refused > 50,
        "only {planned} damaged chunks got past the host's checks, {refused} of them refused"
    );
}

/// Decodes `refs` with the CPU decoder and `batch` with the kernels:
/// (the CPU decoded, the kernels decoded, equal where both did).
fn agree<W: Word + host::Word + PartialEq>(
    tables: &Tables,
    refs: &[&[u8]],
    n: usize,
    batch: &BatchPlan,
) -> (bool, bool, bool) {
    let mut cpu = vec![W::default(); n];
    let cpu_ok = tables.decode_range(refs, n, 0, &mut cpu).is_ok();
    let mut gpu = vec![W::default(); batch.count];
    let gpu_ok = run_kernels(batch, &mut gpu).is_ok();
    (cpu_ok, gpu_ok, !(cpu_ok && gpu_ok) || cpu == gpu)
}

#[test]
fn the_kernels_report_damage_rather_than_decode_it() {
    let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
    let bytes = gaussian(FloatKind::BF16, RANGE_ALIGN, 5);
    let mut batch = BatchPlan::new(2);
    add_ranges::<u16>(&mut batch, &layout, &bytes, layout.precision);
    let mut out = vec![0u16; batch.count];
    // A word count one short: the segment ends with words unread.
    let mut short = batch.clone();
    short.passes[0].segments[0].words -= 1;
    assert!(matches!(run_kernels(&short, &mut out), Err(e) if e & 4 != 0 || e & 8 != 0));
    // A raw lookup table claimed shorter than the values in the plane.
    let mut lut = batch.clone();
    let raw = lut.passes[1]
        .pieces
        .iter_mut()
        .find(|p| p.kind == PIECE_RAW)
        .unwrap();
    raw.value = 1;
    assert_eq!(run_kernels(&lut, &mut out).unwrap_err() & 16, 16);
}

/// The real test weights, compressed, then decoded in GPU_ONLY by the
/// pipeline with the host-run kernels as its GPU: every chunk through the
/// CUDA engine's planning, sub-batches of 1 MiB (several a batch, both word
/// sizes), the launch list and the scatter. The file comes back byte for
/// byte.
#[test]
fn real_weights_decode_bit_exact_through_the_gpu_path() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["bf16", "f16", "f32"] {
        let Some((original, packed)) = common::compress_real_weights(dir.path(), dtype) else {
            continue;
        };
        let gpu = Arc::new(HostKernelGpu::new(1 << 20));
        let mut o = RunOptions::new(Mode::GpuOnly, Config::default());
        o.timely_args = vec!["-w".into(), "2".into()];
        o.gpu = Some(gpu.clone());
        let out = dir.path().join(format!("{dtype}.safetensors"));
        let c = Arc::new(Container::open(&packed).unwrap());
        let s = decompress_file(c.clone(), &out, &o).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == original,
            "{dtype}: the GPU path's file differs"
        );
        let float_chunks: usize = c
            .header()
            .tensors
            .iter()
            .filter(|t| FloatKind::from_name(&t.dtype).is_some())
            .map(|t| t.chunks.len())
            .sum();
        let all_chunks: usize = c.header().tensors.iter().map(|t| t.chunks.len()).sum();
        assert_eq!(
            (s.chunks.routed_gpu, s.chunks.routed_cpu),
            (all_chunks as u64, 0),
            "{dtype}: every chunk routed to the GPU"
        );
        assert_eq!(
            (s.chunks.gpu_decompressions, s.chunks.cpu_decompressions),
            (float_chunks as u64, (all_chunks - float_chunks) as u64),
            "{dtype}: float chunks ran on the GPU, passthrough chunks on the CPU"
        );
        let subs = gpu.sub_batches.lock().unwrap();
        let ranges: usize = subs.iter().map(|s| s.1).sum();
        assert_eq!(
            ranges, float_chunks,
            "{dtype}: each float chunk decoded once, whole"
        );
        assert!(subs.len() > 4, "{dtype}: {} sub-batches", subs.len());
    }
}

/// HYBRID hands the GPU ranges that are parts of chunks, and AutoSwap's
/// `load` decodes tensors into "device" memory by `tensor_batches`: both
/// through the host-run kernels, bit-exact.
#[test]
fn hybrid_parts_and_device_tensors_are_bit_exact_through_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = common::gaussian_model(
        dir.path(),
        "m",
        5,
        &[
            ("a", safetensors::Dtype::BF16, vec![900, 1000], 0.04),
            ("b", safetensors::Dtype::F32, vec![300_000], 0.02),
            ("c", safetensors::Dtype::F16, vec![3, 1000], 0.1),
            ("ids", safetensors::Dtype::I64, vec![300], 0.0),
        ],
        512,
    );
    let gpu = Arc::new(HostKernelGpu::new(300_000));
    let mut o = RunOptions::new(Mode::Hybrid, Config::default());
    o.timely_args = vec!["-w".into(), "2".into()];
    o.gpu = Some(gpu.clone());
    let out = dir.path().join("h.safetensors");
    let c = Arc::new(Container::open(&packed).unwrap());
    let s = decompress_file(c.clone(), &out, &o).unwrap();
    assert!(std::fs::read(&out).unwrap() == original, "HYBRID differs");
    assert!(s.chunks.hybrid_decompressions > 0, "some chunk was split");
    let sizes: Vec<usize> = gpu
        .sub_batches
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0)
        .collect();
    assert!(
        sizes.contains(&2) && sizes.contains(&4),
        "16- and 32-bit sub-batches: {sizes:?}"
    );

    let p = Pipeline::new(Config::default()).with_gpu(gpu.clone());
    let (tensors, info) = p.load(&c, None, |_| Residence::Device).unwrap();
    assert_eq!(info.device_tensors, 4);
    let data = common::data_region(&original);
    for t in &tensors {
        let want = common::tensor_bytes(&c, data, &t.name);
        assert!(t.on_device(), "{}", t.name);
        assert!(*t.to_host().unwrap() == *want, "{}: values differ", t.name);
    }
}

/// A stream damaged in a way the host's parse cannot see (one
/// renormalisation word changed: the plan is well formed) reaches the
/// kernels, which report it rather than decode it.
#[test]
fn damage_the_host_cannot_see_is_reported_by_the_kernels() {
    let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
    let bytes = gaussian(FloatKind::BF16, RANGE_ALIGN, 9);
    let mut batch = BatchPlan::new(2);
    let enc = chunk::encode(&layout, &bytes);
    let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
    let tables = Tables::new(&layout, layout.precision);
    batch
        .push_range(&tables, &secs, RANGE_ALIGN, 0, RANGE_ALIGN)
        .unwrap();
    let seg = batch.passes[0].segments[0];
    let at = (seg.words_off + 2 * (seg.words / 2)) as usize;
    batch.data[at] ^= 0x5a;
    let err = common::run_kernels_bytes(&batch).unwrap_err();
    assert!(err & (2 | 4 | 8) != 0, "error bits {err:#x}");
}

/// `whole_chunk_ranges` gives each float chunk its own bytes of the data
/// region, once, and leaves the rest alone: one `decode_batch` over them
/// through the host-run kernels rebuilds every float tensor, and the
/// passthrough bytes keep what was there.
#[test]
fn whole_chunk_ranges_decode_every_float_chunk_in_one_call() {
    use padic_burst::engine::gpu::GpuEngine;
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = common::gaussian_model(
        dir.path(),
        "w",
        8,
        &[
            ("x", safetensors::Dtype::F16, vec![700, 900], 0.05),
            ("ids", safetensors::Dtype::I64, vec![100], 0.0),
            ("y", safetensors::Dtype::F32, vec![200_000], 0.02),
        ],
        256,
    );
    let c = Container::open(&packed).unwrap();
    let tables = padic_burst::engine::tables_for(&c, None).unwrap();
    let jobs = padic_burst::engine::chunk_jobs(&c);
    let data = common::data_region(&original);
    let mut out = vec![0xa5u8; data.len()];
    let gpu = HostKernelGpu::new(1 << 20);
    let mut ranges = padic_burst::engine::batch::whole_chunk_ranges(&c, &tables, &jobs, &mut out);
    assert_eq!(ranges.len(), common::float_chunks(&c));
    for r in gpu.decode_batch(&c, &mut ranges) {
        r.unwrap();
    }
    for name in ["x", "y"] {
        let t = c.header().tensors.iter().find(|t| t.name == name).unwrap();
        let at = t.data_offset as usize..(t.data_offset + t.byte_len) as usize;
        assert!(out[at] == *common::tensor_bytes(&c, data, name), "{name}");
    }
    let ids = c.header().tensors.iter().find(|t| t.name == "ids").unwrap();
    let at = ids.data_offset as usize..(ids.data_offset + ids.byte_len) as usize;
    assert!(
        out[at].iter().all(|&b| b == 0xa5),
        "passthrough bytes untouched"
    );
}
