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
        let ptx = cuda::compile(Some(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let src = ptx.to_src();
        for k in [
            "const_u16",
            "raw_u16",
            "rans_u16",
            "const_u32",
            "raw_u32",
            "rans_u32",
        ] {
            assert!(
                src.contains(&format!(".entry {k}")),
                "{arch}: no kernel {k}"
            );
        }
    }
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
