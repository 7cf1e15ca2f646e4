//! Tensors that stay on the device: a whole tensor decoded into one
//! allocation, and [`CudaBuffer`], the handle the caller keeps.
#![forbid(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DriverError};

use super::CudaEngine;
use crate::codec::Tables;
use crate::engine::batch;
use crate::engine::gpu::{DeviceBuffer, GpuError};
use crate::format::Container;

impl CudaEngine {
    /// [`GpuEngine::decode_to_device`]: every chunk of the tensor, in
    /// sub-batches on one stream, straight into one allocation that stays.
    pub(super) fn tensor_to_device(
        &self,
        container: &Container,
        tables: &Tables,
        tensor: usize,
    ) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        let t = &container.header().tensors[tensor];
        let size = tables.kind.size();
        let bytes = t.byte_len;
        let e = |what: &str, x| self.error(what, x, bytes);
        self.check_reserve(bytes)?;
        self.ctx
            .bind_to_thread()
            .map_err(|x| e("binding the context", x))?;
        let mut lanes = self.take_lanes(1)?;
        let lane = &mut lanes[0];
        let stream = lane.stream.clone();
        let done = (|| {
            let mut buf: CudaSlice<u8> = stream
                .alloc_zeros((bytes as usize).max(4))
                .map_err(|x| e("allocating the tensor", x))?;
            let mut err: CudaSlice<u32> = stream
                .alloc_zeros(1)
                .map_err(|x| e("allocating the error flag", x))?;
            let target = self
                .batch_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1);
            let mut start = 0usize; // the batch's first byte in the tensor
            for batch in batch::tensor_batches(container, tables, tensor, target, &self.spares) {
                let batch = batch?;
                let len = batch.count * size;
                self.check_reserve(batch.device_bytes())?;
                let up = self.upload(lane, &batch)?;
                self.run_passes(
                    &stream,
                    &up,
                    &mut buf.slice_mut(start..start + len),
                    &mut err,
                )?;
                start += len;
                // Uploaded: the kernels read the device's copy.
                self.spares.give(batch);
            }
            let flag = stream
                .clone_dtoh(&err)
                .map_err(|x| e("running the kernels", x))?;
            if flag[0] != 0 {
                return Err(GpuError::Failed(format!(
                    "tensor '{}': the decode kernels reported a damaged stream (error bits {:#x})",
                    t.name, flag[0]
                )));
            }
            self.ctx
                .check_err()
                .map_err(|x| e("a stream operation", x))?;
            Ok(Arc::new(CudaBuffer {
                buf,
                len: bytes as usize,
                stream: stream.clone(),
                device: self.name.clone(),
            }) as Arc<dyn DeviceBuffer>)
        })();
        self.give_lanes(lanes);
        done
    }
}

/// A tensor in device memory (the first `len` bytes of `buf`).
pub struct CudaBuffer {
    pub(super) buf: CudaSlice<u8>,
    pub(super) len: usize,
    pub(super) stream: Arc<CudaStream>,
    pub(super) device: String,
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer({} bytes on {})", self.len, self.device)
    }
}

impl DeviceBuffer for CudaBuffer {
    fn len(&self) -> usize {
        self.len
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn device_ptr(&self) -> u64 {
        let (ptr, _sync) = self.buf.device_ptr(&self.stream);
        ptr
    }

    fn to_host(&self) -> Result<Vec<u8>, GpuError> {
        let fail = |e: DriverError| GpuError::Failed(format!("copying a tensor back: {e}"));
        self.stream.context().bind_to_thread().map_err(fail)?;
        let mut v = self.stream.clone_dtoh(&self.buf).map_err(fail)?;
        v.truncate(self.len);
        Ok(v)
    }
}
