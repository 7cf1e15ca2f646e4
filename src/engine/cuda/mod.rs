//! The CUDA engine (the `cuda` feature): the kernels of `kernels/decode.cu`,
//! compiled once per process by NVRTC for the device's architecture, run
//! through cudarc on a small pool of streams.
//!
//! cudarc loads libcuda and libnvrtc at run time and panics when they are
//! missing; [`CudaEngine::shared`] looks for both first and turns their
//! absence into a clear [`GpuError`].
//!
//! A decode takes a batch of chunk ranges ([`GpuEngine::decode_batch`]):
//! each is planned on the host, straight into a sub-batch
//! (`engine::batch`, `BatchPlan::push_range`: the CPU decoder's own parse
//! and checks; a sub-batch is a [`BatchPlan`](crate::codec::plan::BatchPlan) of about
//! `PADIC_GPU_BATCH_MB` MiB of output, default 256, at most 1024: see
//! [`crate::config::gpu_batch_mb`]), and the
//! sub-batches go round a few streams: each stream stages its sections in
//! pinned host memory, copies them up asynchronously, runs one launch per
//! section index and kind over every range at once, and copies the values
//! down into pinned memory, while the other streams copy or compute. An
//! out-of-memory from any allocation, copy or launch comes back as
//! [`GpuError::OutOfMemory`] with the bytes asked for and free, for the
//! ranges of the sub-batch it hit.
//!
//! The modules follow the work: `nvrtc` (finding the libraries, compiling
//! the kernels), `staging` (streams, pinned memory, uploads), `launch` (the
//! kernels and the sub-batches in flight) and `buffer` (tensors kept on the
//! device).

mod buffer;
mod launch;
mod nvrtc;
mod staging;

pub use buffer::CudaBuffer;
pub use nvrtc::{compile, libraries_present, nvrtc_present, nvrtc_version, KERNELS};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, DriverError};

use super::batch;
use super::gpu::{DeviceBuffer, GpuEngine, GpuError, GpuRange};
use crate::codec::Tables;
use crate::format::Container;
use nvrtc::driver_version;
use staging::Lane;

struct Kernels {
    pieces: CudaFunction,
    rans: CudaFunction,
}

/// Streams a batch goes round: while one computes, the others copy.
const STREAMS: usize = 3;

/// Output bytes per sub-batch ([`crate::config::gpu_batch_mb`]).
fn sub_batch_bytes() -> Result<usize, GpuError> {
    crate::config::gpu_batch_mb()
        .map(|mb| mb << 20)
        .map_err(|e| GpuError::Failed(e.to_string()))
}

/// Seconds a timed batch spent, for `examples/gpu_throughput.rs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTiming {
    /// Kernel launches alone, over `repeats` runs of every sub-batch.
    pub kernel_secs: f64,
    /// The whole decode: planning, staging, copies both ways, kernels.
    pub total_secs: f64,
    /// Values' bytes decoded (once).
    pub bytes: u64,
    /// Sub-batches decoded.
    pub sub_batches: usize,
}

/// A GPU with the decode kernels loaded.
pub struct CudaEngine {
    ctx: Arc<CudaContext>,
    /// Device bytes a decode must leave free (`gpu_memory_threshold_mb`):
    /// a decode that would eat into them is refused as out of memory before
    /// anything is allocated.
    reserve: std::sync::atomic::AtomicU64,
    lanes: Mutex<Vec<Lane>>,
    /// Output bytes a sub-batch aims at.
    batch_bytes: std::sync::atomic::AtomicUsize,
    /// Host memory of finished sub-batches, planned into again.
    spares: batch::Spares,
    k16: Kernels,
    k32: Kernels,
    name: String,
}

impl CudaEngine {
    /// The engine of GPU `device`, created (and its kernels compiled) once
    /// per process.
    pub fn shared(device: usize) -> Result<Arc<CudaEngine>, GpuError> {
        static ENGINES: OnceLock<Mutex<HashMap<usize, Arc<CudaEngine>>>> = OnceLock::new();
        let mut map = ENGINES
            .get_or_init(Default::default)
            .lock()
            .expect("engine lock");
        if let Some(e) = map.get(&device) {
            return Ok(e.clone());
        }
        let e = Arc::new(CudaEngine::new(device)?);
        map.insert(device, e.clone());
        Ok(e)
    }

    fn new(device: usize) -> Result<Self, GpuError> {
        let batch_bytes = sub_batch_bytes()?;
        libraries_present().map_err(GpuError::Failed)?;
        let fail = |what: &str, e: DriverError| GpuError::Failed(format!("{what}: {e}"));
        let ctx =
            CudaContext::new(device).map_err(|e| fail(&format!("opening GPU {device}"), e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| fail("reading the compute capability", e))?;
        let cubin = compile(&format!("sm_{major}{minor}")).map_err(GpuError::Failed)?;
        let module = ctx.load_module(cubin).map_err(|e| {
            fail(
                &format!(
                    "loading the kernels (driver CUDA {}, NVRTC {})",
                    driver_version(),
                    nvrtc_version()
                ),
                e,
            )
        })?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| fail(&format!("kernel {name}"), e))
        };
        let k16 = Kernels {
            pieces: load("pieces_u16")?,
            rans: load("rans_u16")?,
        };
        let k32 = Kernels {
            pieces: load("pieces_u32")?,
            rans: load("rans_u32")?,
        };
        let name = format!(
            "GPU {device}: {} (sm_{major}{minor}; driver CUDA {}, NVRTC {})",
            ctx.name().unwrap_or_else(|_| "unknown".into()),
            driver_version(),
            nvrtc_version()
        );
        Ok(CudaEngine {
            ctx,
            reserve: std::sync::atomic::AtomicU64::new(0),
            lanes: Mutex::new(Vec::new()),
            batch_bytes: std::sync::atomic::AtomicUsize::new(batch_bytes),
            spares: batch::Spares::default(),
            k16,
            k32,
            name,
        })
    }

    fn error(&self, what: &str, e: DriverError, requested: u64) -> GpuError {
        if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            GpuError::OutOfMemory {
                requested,
                free: GpuEngine::memory(self).map_or(0, |m| m.0),
            }
        } else {
            GpuError::Failed(format!("{what}: {e}"))
        }
    }

    /// Refuses `bytes` more of device memory when that would eat into the reserve.
    fn check_reserve(&self, bytes: u64) -> Result<(), GpuError> {
        let reserve = self.reserve.load(std::sync::atomic::Ordering::Relaxed);
        if reserve > 0 {
            if let Some((free, _)) = GpuEngine::memory(self) {
                if free < bytes.saturating_add(reserve) {
                    return Err(GpuError::OutOfMemory {
                        requested: bytes,
                        free,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets the output bytes a sub-batch aims at (the checks make them small,
    /// so that a small model goes round every stream).
    pub fn set_batch_bytes(&self, bytes: usize) {
        self.batch_bytes
            .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Allocates `bytes` of device memory and holds it until dropped (the
    /// checks fill the card this way).
    pub fn hold(&self, bytes: usize) -> Result<CudaSlice<u8>, GpuError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.error("binding the context", e, 0))?;
        let stream = self.ctx.default_stream();
        // SAFETY: the memory is never read; it only takes room.
        unsafe { stream.alloc::<u8>(bytes) }
            .map_err(|e| self.error("holding memory", e, bytes as u64))
    }
}

impl GpuEngine for CudaEngine {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn decode_range(
        &self,
        container: &Container,
        range: &mut GpuRange<'_>,
    ) -> Result<(), GpuError> {
        let (mut results, _) = self.run_batch(container, std::slice::from_mut(range), None);
        results.pop().expect("one result a range")
    }

    fn decode_batch(
        &self,
        container: &Container,
        ranges: &mut [GpuRange<'_>],
    ) -> Vec<Result<(), GpuError>> {
        self.run_batch(container, ranges, None).0
    }

    fn decode_to_device(
        &self,
        container: &Container,
        tables: &Tables,
        tensor: usize,
    ) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        self.tensor_to_device(container, tables, tensor)
    }

    fn upload(&self, bytes: &[u8]) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        let e = |what: &str, x| self.error(what, x, bytes.len() as u64);
        self.check_reserve(bytes.len() as u64)?;
        self.ctx
            .bind_to_thread()
            .map_err(|x| e("binding the context", x))?;
        let stream = self.ctx.default_stream();
        let buf = stream
            .clone_htod(if bytes.is_empty() { &[0u8][..] } else { bytes })
            .map_err(|x| e("copying a tensor up", x))?;
        stream
            .synchronize()
            .map_err(|x| e("copying a tensor up", x))?;
        Ok(Arc::new(CudaBuffer {
            buf,
            len: bytes.len(),
            stream,
            device: self.name.clone(),
        }))
    }

    fn memory(&self) -> Option<(u64, u64)> {
        self.ctx
            .mem_get_info()
            .ok()
            .map(|(f, t)| (f as u64, t as u64))
    }

    fn set_reserve_mb(&self, mb: f64) {
        self.reserve.store(
            (mb.max(0.0) * 1024.0 * 1024.0) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
