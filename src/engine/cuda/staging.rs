//! Staging: the pool of streams with their pinned host buffers, and a
//! sub-batch's upload (sections through pinned memory, then its tables,
//! pieces and segments) to the device.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DeviceRepr, DriverError, PinnedHostSlice};

use super::{CudaEngine, STREAMS};
use crate::codec::plan::{BatchPlan, Launch};
use crate::engine::gpu::GpuError;

/// A stream with its pinned staging buffers, kept from decode to decode.
pub(super) struct Lane {
    pub(super) stream: Arc<CudaStream>,
    /// Sections on their way up (write-combined: the host only writes it).
    pub(super) input: Option<PinnedHostSlice<u8>>,
    /// Recorded after the last copy out of `input`: the next staging waits
    /// for it (the copy reads only the staged bytes, through a plain slice,
    /// so the pinned buffer's own event does not cover it).
    pub(super) staged: Option<CudaEvent>,
    /// Values on their way down.
    pub(super) output: Option<PinnedHostSlice<u8>>,
}

/// A batch's input on the device.
pub(super) struct Uploaded {
    pub(super) word_size: usize,
    pub(super) device_bytes: u64,
    pub(super) data: CudaSlice<u8>,
    pub(super) tables: CudaSlice<u64>,
    pub(super) luts: CudaSlice<u32>,
    pub(super) passes: Vec<UploadedPass>,
    /// What to launch, in order ([`BatchPlan::launches`]).
    pub(super) launches: Vec<Launch>,
}

/// One pass's pieces and segments on the device.
pub(super) struct UploadedPass {
    pub(super) pieces: CudaSlice<u32>,
    pub(super) segments: CudaSlice<u32>,
}

impl CudaEngine {
    /// `n` lanes from the pool, new ones made as needed.
    pub(super) fn take_lanes(&self, n: usize) -> Result<Vec<Lane>, GpuError> {
        let mut pool = self.lanes.lock().expect("lane lock");
        let keep = pool.len().saturating_sub(n);
        let mut lanes: Vec<Lane> = pool.drain(keep..).collect();
        drop(pool);
        while lanes.len() < n {
            let stream = self
                .ctx
                .new_stream()
                .map_err(|e| self.error("creating a stream", e, 0))?;
            lanes.push(Lane {
                stream,
                input: None,
                staged: None,
                output: None,
            });
        }
        Ok(lanes)
    }

    /// Returns lanes to the pool, which keeps at most `2 * STREAMS` (their
    /// pinned buffers with them): pinned memory is taken from the host for
    /// good, so a burst of concurrent callers does not leave it all pinned.
    pub(super) fn give_lanes(&self, lanes: Vec<Lane>) {
        let mut pool = self.lanes.lock().expect("lane lock");
        pool.extend(lanes);
        pool.truncate(2 * STREAMS);
    }

    /// Pinned host memory of at least `bytes`, reusing `slot`'s.
    pub(super) fn pinned<'s>(
        &self,
        slot: &'s mut Option<PinnedHostSlice<u8>>,
        bytes: usize,
        write_combined: bool,
    ) -> Result<&'s mut PinnedHostSlice<u8>, GpuError> {
        if slot.as_ref().is_none_or(|p| p.len() < bytes) {
            *slot = None;
            let len = bytes.max(1).next_power_of_two();
            let flags = if write_combined {
                cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
            } else {
                0
            };
            // SAFETY: the memory is written (input) or copied into (output)
            // before anything reads it.
            // Out of pinned host memory is not the GPU's memory: no reroute
            // as a memory-pressure event, a failure that says what ran out.
            let p = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(len, flags) }.map_err(|e| {
                GpuError::Failed(format!("allocating {len} bytes of pinned host memory: {e}"))
            })?;
            *slot = Some(p);
        }
        Ok(slot.as_mut().expect("pinned buffer just made"))
    }

    /// Stages `batch`'s sections in the lane's pinned memory and copies them,
    /// its tables and its pieces and segments to the device, on the lane's stream.
    pub(super) fn upload(&self, lane: &mut Lane, batch: &BatchPlan) -> Result<Uploaded, GpuError> {
        let bytes = batch.device_bytes();
        let e = |what: &str, err| self.error(what, err, bytes);
        let stream = lane.stream.clone();
        let n = batch.data.len();
        if let Some(copied) = lane.staged.take() {
            copied
                .synchronize()
                .map_err(|x| e("waiting for the staging buffer", x))?;
        }
        let input = self.pinned(&mut lane.input, n, true)?;
        let staged = input
            .as_mut_slice()
            .map_err(|x| e("waiting for the staging buffer", x))?;
        staged[..n].copy_from_slice(&batch.data);
        let mut data: CudaSlice<u8> =
            // SAFETY: filled by the copy below before any kernel reads it.
            unsafe { stream.alloc(n.max(1)) }.map_err(|x| e("allocating the sections", x))?;
        if n > 0 {
            // Only the staged bytes go up, whatever the buffer's size.
            stream
                .memcpy_htod(&staged[..n], &mut data)
                .map_err(|x| e("copying the sections", x))?;
            lane.staged = Some(
                stream
                    .record_event(None)
                    .map_err(|x| e("recording the copy", x))?,
            );
        }
        // A copy of `v`, one zero element for an empty one (a device buffer
        // is never empty).
        fn up<T: DeviceRepr + Default + Copy>(
            stream: &Arc<CudaStream>,
            v: &[T],
        ) -> Result<CudaSlice<T>, DriverError> {
            let one = [T::default()];
            stream.clone_htod(if v.is_empty() { &one[..] } else { v })
        }
        let tables = up(&stream, &batch.tables).map_err(|x| e("copying the decode tables", x))?;
        let luts = up(&stream, &batch.luts).map_err(|x| e("copying the lookup tables", x))?;
        let mut passes = Vec::with_capacity(batch.passes.len());
        for p in &batch.passes {
            let pieces: &[u32] = bytemuck::cast_slice(&p.pieces);
            let segs: &[u32] = bytemuck::cast_slice(&p.segments);
            let up = |v: &[u32], what: &str| up(&stream, v).map_err(|x| e(what, x));
            passes.push(UploadedPass {
                pieces: up(pieces, "copying the pieces")?,
                segments: up(segs, "copying the segments")?,
            });
        }
        Ok(Uploaded {
            word_size: batch.word_size,
            device_bytes: bytes,
            data,
            tables,
            luts,
            passes,
            launches: batch.launches(),
        })
    }
}
