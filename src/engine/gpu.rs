//! The GPU engine's interface. The CUDA implementation comes with the `cuda`
//! feature (`engine::cuda`); without it, or without a driver, there is none,
//! and the run says so rather than pretend: every chunk routed to a GPU
//! decodes on the CPU in AUTO_SWITCH and HYBRID, and GPU_ONLY fails with a
//! clear error.
#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::codec::Tables;
use crate::format::Container;

/// Why a GPU decode did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum GpuError {
    /// An allocation or launch ran out of device memory.
    #[error("GPU out of memory: asked for {requested} bytes, {free} free")]
    OutOfMemory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free on the device when it was asked.
        free: u64,
    },
    /// Anything else the device reported.
    #[error("GPU error: {0}")]
    Failed(String),
}

/// Values held in device memory, freed when the last handle goes.
pub trait DeviceBuffer: Send + Sync + std::fmt::Debug {
    /// Bytes held.
    fn len(&self) -> usize;
    /// Whether it holds no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device, in words.
    fn device(&self) -> String;
    /// The device address (a `CUdeviceptr` for CUDA), for handing to another
    /// framework; valid while this buffer lives.
    fn device_ptr(&self) -> u64;
    /// Copies the values back to host memory.
    fn to_host(&self) -> Result<Vec<u8>, GpuError>;
}

/// One range of a [`GpuEngine::decode_batch`]: values `[first, first +
/// out.len() / size)` of chunk `chunk` of tensor `tensor` (`total` values).
pub struct GpuRange<'a> {
    /// The decode tables of the tensor at the target precision.
    pub tables: &'a Tables,
    /// Index of the tensor in the container's header.
    pub tensor: usize,
    /// Index of the chunk in its tensor.
    pub chunk: usize,
    /// Values in the whole chunk.
    pub total: usize,
    /// The range's first value in the chunk.
    pub first: usize,
    /// Where the range's values go.
    pub out: &'a mut [u8],
    /// The chunk's sections (at least the `tables` use), when the caller
    /// has read and checksummed them already: a chunk split between the
    /// engines is read once, for both. `None`: the engine reads and checks
    /// them itself.
    pub sections: Option<&'a [&'a [u8]]>,
}

/// A device that decodes chunk ranges.
pub trait GpuEngine: Send + Sync {
    /// The device, in words (for logs and statistics).
    fn describe(&self) -> String;

    /// Decodes one range into its `out`, bit-exact with the CPU engine.
    fn decode_range(&self, container: &Container, range: &mut GpuRange<'_>)
        -> Result<(), GpuError>;

    /// Decodes several ranges (of any chunks and dtypes) together, one
    /// result a range: a GPU needs thousands of rANS segments in flight, and
    /// one chunk has a few. A range whose result is an error holds nothing
    /// to trust (the caller decodes it elsewhere or stops). The default
    /// decodes them one by one.
    fn decode_batch(
        &self,
        container: &Container,
        ranges: &mut [GpuRange<'_>],
    ) -> Vec<Result<(), GpuError>> {
        ranges
            .iter_mut()
            .map(|r| self.decode_range(container, r))
            .collect()
    }

    /// Decodes every chunk of float tensor `tensor` (to `tables`' digits)
    /// into a new allocation that stays on the device. The default: this
    /// engine keeps nothing on the device.
    fn decode_to_device(
        &self,
        _container: &Container,
        _tables: &Tables,
        _tensor: usize,
    ) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        Err(GpuError::Failed(format!(
            "{} keeps nothing in device memory",
            self.describe()
        )))
    }

    /// Copies `bytes` (a tensor that is not a float, passed through) into a
    /// new device allocation.
    fn upload(&self, _bytes: &[u8]) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        Err(GpuError::Failed(format!(
            "{} keeps nothing in device memory",
            self.describe()
        )))
    }

    /// Device memory, (free, total) bytes, where the engine can tell.
    fn memory(&self) -> Option<(u64, u64)> {
        None
    }

    /// Makes every decode leave `mb` MiB of device memory free: one that
    /// would not is refused as [`GpuError::OutOfMemory`] before allocating.
    fn set_reserve_mb(&self, _mb: f64) {}
}

/// Every engine reports its memory to the pressure monitor, which reads it
/// when NVML cannot ([`crate::pressure::for_engine`]).
impl<E: GpuEngine + ?Sized> crate::pressure::MemoryReport for E {
    fn free_and_total(&self) -> Option<(u64, u64)> {
        self.memory()
    }
}

/// Why this build has no GPU engine, when it cannot have one.
pub fn unavailable_reason() -> &'static str {
    if cfg!(feature = "cuda") {
        "no GPU engine was started"
    } else {
        "built without the `cuda` feature, this build has no GPU engine"
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
