//! The GPU engine's interface. The CUDA implementation comes with the `cuda`
//! feature (`engine::cuda`); without it, or without a driver, there is none,
//! and the run says so rather than pretend: every chunk routed to a GPU
//! decodes on the CPU in AUTO_SWITCH and HYBRID, and GPU_ONLY fails with a
//! clear error.

use crate::codec::Tables;
use crate::format::Container;

/// Why a GPU decode did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// An allocation or launch ran out of device memory.
    #[error("GPU out of memory: asked for {requested} bytes, {free} free")]
    OutOfMemory { requested: u64, free: u64 },
    /// Anything else the device reported.
    #[error("GPU error: {0}")]
    Failed(String),
}

/// A device that decodes chunk ranges.
pub trait GpuEngine: Send + Sync {
    /// The device, in words (for logs and statistics).
    fn describe(&self) -> String;

    /// Decodes values `[first, first + out.len() / size)` of chunk `chunk` of
    /// tensor `tensor` (a chunk of `total` values) into `out`, bit-exact with
    /// the CPU engine.
    #[allow(clippy::too_many_arguments)]
    fn decode_range(
        &self,
        container: &Container,
        tables: &Tables,
        tensor: usize,
        chunk: usize,
        total: usize,
        first: usize,
        out: &mut [u8],
    ) -> Result<(), GpuError>;
}

/// Why this build has no GPU engine, when it cannot have one.
pub fn unavailable_reason() -> &'static str {
    if cfg!(feature = "cuda") {
        "no GPU engine was started"
    } else {
        "this build has no GPU engine (it was built without the `cuda` feature)"
    }
}

/// The GPU engine of this build on GPU `device` (the `cuda` feature), or why
/// there is none: never a panic for want of a driver.
pub fn open(device: u32) -> Result<std::sync::Arc<dyn GpuEngine>, String> {
    #[cfg(feature = "cuda")]
    {
        crate::engine::cuda::CudaEngine::shared(device as usize)
            .map(|e| e as std::sync::Arc<dyn GpuEngine>)
            .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        Err(unavailable_reason().to_string())
    }
}

/// Makes this build's engine on GPU `device` leave `mb` MiB free (decodes
/// that would not are refused as out of memory); nothing without `cuda`.
pub fn set_reserve_mb(device: u32, mb: f64) {
    #[cfg(feature = "cuda")]
    if let Ok(e) = crate::engine::cuda::CudaEngine::shared(device as usize) {
        e.set_reserve_mb(mb);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = (device, mb);
}
