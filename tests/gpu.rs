//! The GPU side that this machine can check: live memory readings (NVML with
//! the `cuda` feature) and their recording, and the clear refusal where there
//! is no GPU. Checks that need a GPU skip, saying why, when there is none.

mod common;

use padic_burst::pressure::{self, PressureSource, Sample, Trace};

/// A live source stand-in with a history (tests only).
struct Recorded(Vec<Sample>);

impl PressureSource for Recorded {
    fn sample_at(&self, _t_ms: u64) -> Option<Sample> {
        self.0.last().copied()
    }
    fn has_gpu(&self) -> bool {
        true
    }
    fn history(&self) -> Option<Vec<Sample>> {
        Some(self.0.clone())
    }
}

#[test]
fn recorded_samples_replay_as_the_same_trace() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<Sample> = (0..50)
        .map(|i| Sample {
            t_ms: i * 100,
            used_mb: 1000.0 + 37.5 * i as f64,
            total_mb: 81559.0,
        })
        .collect();
    let path = dir.path().join("recorded.csv");
    let n = pressure::record(&Recorded(samples.clone()), &path).unwrap();
    assert_eq!(n, 50);
    let back = Trace::load(&path).unwrap();
    assert_eq!(back.samples(), &samples[..]);
    // A source that is not live has nothing to record, and says so.
    let err = pressure::record(&pressure::NoGpu, &dir.path().join("none.csv")).unwrap_err();
    assert!(err.to_string().contains("not live"), "{err}");
    assert!(!dir.path().join("none.csv").exists());
}

/// An engine stand-in that reports device memory (tests only).
struct Reports(u64, u64);

impl padic_burst::engine::gpu::GpuEngine for Reports {
    fn describe(&self) -> String {
        "stand-in".into()
    }
    fn decode_range(
        &self,
        _: &padic_burst::format::Container,
        _: &mut padic_burst::engine::gpu::GpuRange<'_>,
    ) -> Result<(), padic_burst::engine::gpu::GpuError> {
        Err(padic_burst::engine::gpu::GpuError::Failed(
            "stand-in".into(),
        ))
    }
    fn memory(&self) -> Option<(u64, u64)> {
        Some((self.0, self.1))
    }
}

#[test]
fn without_nvml_a_gpu_run_reads_the_engine_s_memory_and_says_so() {
    if pressure::live(0, 100).is_ok() {
        eprintln!("SKIPPED: NVML is here, so the engine's readings are not used");
        return;
    }
    let engine = std::sync::Arc::new(Reports(3 << 30, 8 << 30));
    let (source, note) = pressure::for_engine(engine, 0, 100);
    let note = note.expect("the fallback is said");
    assert!(note.contains("CUDA driver instead"), "{note}");
    let s = source.sample_at(0).unwrap();
    assert_eq!((s.used_mb, s.total_mb), (5120.0, 8192.0));
    assert!(source.has_gpu());
}

#[test]
fn live_readings_come_from_nvml_or_say_why_not() {
    match pressure::live(0, 20) {
        Ok(source) => {
            // A GPU is here: readings are real and keep coming.
            let first = source.sample_at(0).expect("a first sample");
            assert!(first.total_mb > 0.0 && first.used_mb <= first.total_mb);
            std::thread::sleep(std::time::Duration::from_millis(100));
            let h = source.history().unwrap();
            assert!(h.len() >= 3, "sampled every 20 ms: {} samples", h.len());
            assert!(h.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        }
        Err(e) => {
            let msg = e.to_string();
            if cfg!(feature = "cuda") {
                assert!(msg.contains("NVML"), "{msg}");
            } else {
                assert!(msg.contains("`cuda` feature"), "{msg}");
            }
            eprintln!("SKIPPED live NVML readings: {msg}");
        }
    }
}

#[test]
fn record_pressure_without_a_live_source_fails_clearly_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    if pressure::live(0, 100).is_ok() {
        eprintln!("SKIPPED: this machine has NVML, so --record-pressure works here");
        return;
    }
    let mut rng = padic_burst::demo::Rng::new(1);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 1000, 0.1, safetensors::Dtype::BF16);
    let file = common::safetensors_bytes(&[("w", safetensors::Dtype::BF16, vec![1000], w)]);
    let packed = common::compress_bytes(dir.path(), "m", &file, &Default::default());
    let out = dir.path().join("out.safetensors");
    let trace = dir.path().join("rec.csv");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&out)
        .arg("--record-pressure")
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no live GPU memory readings") || err.contains("NVML"),
        "{err}"
    );
    assert!(!out.exists() && !trace.exists());
}

/// The kernels compile with NVRTC (no GPU needed, only libnvrtc: CI installs
/// the `nvidia-cuda-nvrtc` wheel and sets `PADIC_REQUIRE_NVRTC=1`).
#[cfg(feature = "cuda")]
#[test]
fn the_kernels_compile_with_nvrtc_for_hopper_and_ampere() {
    use padic_burst::engine::cuda;
    if let Err(why) = cuda::nvrtc_present() {
        assert!(
            std::env::var("PADIC_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "PADIC_REQUIRE_NVRTC=1 but {why}"
        );
        eprintln!("SKIPPED the NVRTC compile: {why}");
        return;
    }
    for arch in ["compute_90", "compute_80"] {
        let ptx = cuda::compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let src = ptx.to_src();
        for k in ["pieces_u16", "rans_u16", "pieces_u32", "rans_u32"] {
            assert!(
                src.contains(&format!(".entry {k}")),
                "{arch}: no kernel {k}"
            );
        }
    }
    // What the engine loads: machine code for the card, which a driver older
    // than this NVRTC still takes (its PTX it would refuse).
    for arch in ["sm_90", "sm_80"] {
        let cubin = cuda::compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        // An ELF image: 0x7f 'E' 'L' 'F'.
        let dbg = format!("{cubin:?}");
        assert!(
            dbg.starts_with("Ptx(Binary([127, 69, 76, 70,"),
            "{arch}: not a CUBIN: {}",
            &dbg[..dbg.len().min(80)]
        );
    }
    let err = cuda::compile("sm_1").unwrap_err();
    assert!(
        err.contains("could not compile") && err.contains("sm_1"),
        "{err}"
    );
}

/// Without a driver the engine says so, and never panics.
#[cfg(feature = "cuda")]
#[test]
fn without_a_driver_the_engine_says_so() {
    use padic_burst::engine::cuda;
    match cuda::CudaEngine::shared(0) {
        Ok(e) => eprintln!(
            "SKIPPED: a GPU is here ({})",
            padic_burst::engine::gpu::GpuEngine::describe(&*e)
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("libcuda.so.1") || msg.contains("NVRTC") || msg.contains("GPU 0"),
                "{msg}"
            );
        }
    }
}

/// Checks that need a real GPU (`scripts/gpu-check.sh` runs them there);
/// each skips, saying why, where there is none.
#[cfg(feature = "cuda")]
mod on_a_gpu {
    use std::sync::{Arc, Mutex};

    use padic_burst::compress::CompressOptions;
    use padic_burst::config::Config;
    use padic_burst::engine::cuda::CudaEngine;
    use padic_burst::engine::gpu::GpuEngine;
    use padic_burst::format::Container;
    use padic_burst::pipeline::{decompress_file, decompress_to_memory, RunOptions};
    use padic_burst::policy::Mode;
    use padic_burst::pressure;
    use safetensors::Dtype;

    use super::common;

    /// One GPU check at a time: one fills the card.
    static GPU: Mutex<()> = Mutex::new(());

    /// The engine, or `None` (said) without a GPU; with
    /// `PADIC_REQUIRE_GPU=1` (`scripts/gpu-check.sh run` sets it) a missing
    /// engine fails the test: on the GPU machine a skip would hide that
    /// nothing ran on the card.
    /// Fills the card with a plain allocation, leaving a few MiB (fewer
    /// where the allocator allows): held until dropped.
    fn fill_card(gpu: &CudaEngine) -> cudarc::driver::CudaSlice<u8> {
        let (free, total) = gpu.memory().unwrap();
        let mut leave = 4u64 << 20;
        while leave < free {
            if let Ok(hold) = gpu.hold((free - leave) as usize) {
                println!("holding {} of {} MiB", (free - leave) >> 20, total >> 20);
                return hold;
            }
            leave *= 2;
        }
        panic!("the card cannot be filled: {free} bytes free");
    }

    fn engine() -> Option<Arc<CudaEngine>> {
        match CudaEngine::shared(0) {
            Ok(e) => Some(e),
            Err(e) => {
                assert!(
                    std::env::var("PADIC_REQUIRE_GPU").as_deref() != Ok("1"),
                    "PADIC_REQUIRE_GPU=1 but the engine did not start: {e}"
                );
                eprintln!("SKIPPED (no GPU here): {e}");
                None
            }
        }
    }

    fn run(
        c: &Arc<Container>,
        mode: Mode,
        gpu: Option<Arc<CudaEngine>>,
    ) -> padic_burst::Result<(Vec<u8>, padic_burst::stats::Statistics)> {
        let mut o = RunOptions::new(mode, Config::default());
        o.gpu = gpu.map(|g| g as Arc<dyn padic_burst::engine::gpu::GpuEngine>);
        o.timely_args = vec!["-w".into(), "2".into()];
        decompress_to_memory(c.clone(), &o).map(|(m, s)| (m.data, s))
    }

    /// The inputs: the real weights when installed, every bf16 and f16
    /// pattern, random f32 patterns with the specials; primes 2, 3 and 257.
    fn inputs() -> Vec<(String, Vec<u8>, u32)> {
        let mut v = Vec::new();
        for dtype in ["bf16", "f16", "f32"] {
            if let Some(p) = common::real_weights(dtype) {
                v.push((format!("minilm-{dtype}"), std::fs::read(p).unwrap(), 2));
            }
        }
        let all = common::all_u16_patterns();
        let mut rng = padic_burst::demo::Rng::new(99);
        let f32s: Vec<u8> = (0..1_000_000)
            .flat_map(|i| match i % 1000 {
                0 => f32::NAN.to_bits().to_le_bytes(),
                1 => 0x7fc0_1234u32.to_le_bytes(),
                2 => f32::INFINITY.to_bits().to_le_bytes(),
                3 => (-0.0f32).to_bits().to_le_bytes(),
                4 => 1u32.to_le_bytes(),
                _ => (rng.next_u64() as u32).to_le_bytes(),
            })
            .collect();
        for prime in [2, 3, 257] {
            v.push((
                format!("patterns p={prime}"),
                common::safetensors_bytes(&[
                    ("bf16", Dtype::BF16, vec![65536], all.clone()),
                    ("f16", Dtype::F16, vec![65536], all.clone()),
                    ("f32", Dtype::F32, vec![1_000_000], f32s.clone()),
                ]),
                prime,
            ));
        }
        v
    }

    /// The data region as `decode_batch` gives it, every float chunk in one
    /// call (the passthrough bytes copied from `cpu`).
    fn batch_decode(gpu: &CudaEngine, c: &Container, cpu: &[u8]) -> Vec<u8> {
        use padic_burst::engine::gpu::GpuEngine;
        let tables = padic_burst::engine::tables_for(c, None).unwrap();
        let mut out = cpu.to_vec();
        let jobs = padic_burst::engine::chunk_jobs(c);
        for j in &jobs {
            if tables[j.tensor].is_some() {
                out[j.out_offset as usize..(j.out_offset + j.out_len) as usize].fill(0xa5);
            }
        }
        let mut ranges =
            padic_burst::engine::batch::whole_chunk_ranges(c, &tables, &jobs, &mut out);
        for r in gpu.decode_batch(c, &mut ranges) {
            r.unwrap();
        }
        out
    }

    #[test]
    fn gpu_decodes_bit_exact_with_the_cpu() {
        let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = engine() else { return };
        let dir = tempfile::tempdir().unwrap();
        for (name, file, prime) in inputs() {
            let packed = common::compress_bytes(
                dir.path(),
                "in",
                &file,
                &CompressOptions {
                    prime,
                    ..CompressOptions::default()
                },
            );
            let c = Arc::new(Container::open(&packed).unwrap());
            let (cpu, _) = run(&c, Mode::CpuOnly, None).unwrap();
            assert!(
                cpu == common::data_region(&file),
                "{name}: the CPU round trip"
            );
            // Every float chunk in one call, in sub-batches of 256 KiB and
            // of 1 GiB: round the streams, and all at once.
            for batch in [256 << 10, 1 << 30] {
                gpu.set_batch_bytes(batch);
                let got = batch_decode(&gpu, &c, &cpu);
                assert!(
                    got == cpu,
                    "{name}: decode_batch ({batch} B sub-batches) differs"
                );
            }
            gpu.set_batch_bytes(256 << 20);
            for mode in [Mode::GpuOnly, Mode::Hybrid] {
                let (out, stats) = run(&c, mode, Some(gpu.clone())).unwrap();
                assert!(out == cpu, "{name}: {mode:?} differs from the CPU engine");
                println!(
                    "{name}: {mode:?} bit-exact, {} chunks ({} gpu-routed, {} ran on the GPU, {} split)",
                    stats.chunks.total_decompressions,
                    stats.chunks.routed_gpu,
                    stats.chunks.gpu_decompressions,
                    stats.chunks.hybrid_decompressions
                );
            }
        }
    }

    #[test]
    fn a_full_card_stops_gpu_only_clearly_and_auto_finishes_on_the_cpu() {
        let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = engine() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = padic_burst::demo::synthetic_model(5, 8_000_000, Dtype::BF16);
        let packed = common::compress_bytes(dir.path(), "m", &file, &CompressOptions::default());
        let c = Arc::new(Container::open(&packed).unwrap());
        let (cpu, _) = run(&c, Mode::CpuOnly, None).unwrap();
        let hold = fill_card(&gpu);
        let out = dir.path().join("gpu-only.safetensors");
        let mut o = RunOptions::new(Mode::GpuOnly, Config::default());
        o.gpu = Some(gpu.clone());
        let err = decompress_file(c.clone(), &out, &o)
            .unwrap_err()
            .to_string();
        println!("GPU_ONLY on a full card: {err}");
        assert!(
            err.contains("out of memory") && err.contains("chunk"),
            "{err}"
        );
        assert!(!out.exists());
        common::assert_no_temp_files(dir.path());
        let (auto, stats) = run(&c, Mode::Auto, Some(gpu.clone())).unwrap();
        assert!(auto == cpu, "AUTO on a full card differs");
        assert!(stats.gpu_oom_reroutes > 0, "the chunks met the full card");
        println!(
            "AUTO on a full card: bit-exact, {} of {} chunks rerouted to the CPU, {} pressure events",
            stats.gpu_oom_reroutes, stats.chunks.total_decompressions, stats.memory_pressure_events
        );
        drop(hold);
    }

    /// AutoSwap on the card: every tensor wanted on the device decodes into
    /// device memory, bit-exact; with the card full, AUTO keeps them in host
    /// memory, counting each out-of-memory, and GPU_ONLY stops.
    #[test]
    fn load_keeps_tensors_on_the_device_bit_exact() {
        use padic_burst::pipeline::{Pipeline, Residence};
        let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = engine() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = padic_burst::demo::synthetic_model(11, 4_000_000, Dtype::F16);
        let packed = common::compress_bytes(dir.path(), "d", &file, &CompressOptions::default());
        let c = Arc::new(Container::open(&packed).unwrap());
        let data = common::data_region(&file);
        let p = Pipeline::new(Config::default()).with_gpu(gpu.clone());
        let (tensors, info) = p.load(&c, None, |_| Residence::Device).unwrap();
        assert_eq!(info.host_tensors, 0, "{info:?}");
        let mut whole = Vec::new();
        for t in &tensors {
            assert!(t.on_device(), "{}: {:?}", t.name, t.fallback);
            whole.extend_from_slice(&t.to_host().unwrap());
        }
        assert!(whole == data, "the device copies differ from the input");
        println!(
            "load: {} tensors, {} bytes on the device in {:?}",
            info.device_tensors, info.device_bytes, info.wall
        );
        drop(tensors);
        let hold = fill_card(&gpu);
        let (tensors, info) = p.load(&c, None, |_| Residence::Device).unwrap();
        assert_eq!(info.device_tensors, 0, "{info:?}");
        assert!(info.memory_pressure_events > 0);
        assert!(tensors.iter().all(|t| t.fallback.is_some()));
        p.force_mode(Mode::GpuOnly);
        let err = p
            .load(&c, None, |_| Residence::Device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GPU_ONLY") && err.contains("tensor '"),
            "{err}"
        );
        drop(hold);
        println!("load on a full card: AUTO kept every tensor in host memory; GPU_ONLY: {err}");
    }

    #[test]
    fn a_reserve_larger_than_the_card_refuses_before_allocating() {
        let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = engine() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = padic_burst::demo::synthetic_model(6, 1_000_000, Dtype::F16);
        let packed = common::compress_bytes(dir.path(), "m", &file, &CompressOptions::default());
        let c = Arc::new(Container::open(&packed).unwrap());
        let (_, total) = gpu.memory().unwrap();
        gpu.set_reserve_mb(total as f64 / 1048576.0 + 1.0);
        let r = run(&c, Mode::GpuOnly, Some(gpu.clone()));
        gpu.set_reserve_mb(0.0);
        let err = r.unwrap_err().to_string();
        println!("GPU_ONLY with a reserve above the card: {err}");
        assert!(err.contains("out of memory"), "{err}");
        let (out, _) = run(&c, Mode::GpuOnly, Some(gpu)).unwrap();
        assert!(out == common::data_region(&file));
    }

    #[test]
    fn nvml_readings_move_when_memory_is_allocated() {
        let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = engine() else { return };
        let source = pressure::live(0, 20).expect("NVML on a GPU machine");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = source.sample_at(0).unwrap();
        let hold = gpu.hold(2 << 30).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = source.sample_at(0).unwrap();
        drop(hold);
        println!(
            "NVML: {:.0} MiB used before, {:.0} MiB after allocating 2048 MiB ({:.0} MiB total)",
            before.used_mb, after.used_mb, after.total_mb
        );
        assert!(after.used_mb - before.used_mb >= 1800.0);
    }
}
