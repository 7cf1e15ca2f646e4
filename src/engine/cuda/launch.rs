//! Launches: a sub-batch's passes on a stream, sub-batches in flight round
//! the streams, and each one's values handed back to its ranges.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaViewMut, LaunchConfig, PushKernelArg};

use super::staging::{Lane, Uploaded};
use super::{BatchTiming, CudaEngine, STREAMS};
use crate::codec::plan::{Kernel, Piece};
use crate::engine::batch::{self, SubBatch};
use crate::engine::gpu::{GpuEngine, GpuError, GpuRange};
use crate::format::Container;

/// A sub-batch in flight on a lane: the device buffers it uses, and which
/// ranges it holds.
struct InFlight {
    sub: SubBatch,
    /// Held until the sub-batch is done: its input and output.
    _device: (Uploaded, CudaSlice<u8>),
    err: CudaSlice<u32>,
    kernel_secs: f64,
}

impl CudaEngine {
    /// Launches an uploaded batch's passes on `stream`, writing `out` (the
    /// batch's values, from its first).
    pub(super) fn run_passes(
        &self,
        stream: &Arc<CudaStream>,
        up: &Uploaded,
        out: &mut CudaViewMut<'_, u8>,
        err: &mut CudaSlice<u32>,
    ) -> Result<(), GpuError> {
        let e = |what: &str, x| self.error(what, x, up.device_bytes);
        let k = if up.word_size == 4 {
            &self.k32
        } else {
            &self.k16
        };
        for l in &up.launches {
            let pass = &up.passes[l.pass];
            let assign = l.assign() as i32;
            let cfg = LaunchConfig {
                grid_dim: l.grid,
                block_dim: l.block,
                shared_mem_bytes: 0,
            };
            match l.kernel {
                Kernel::Pieces => {
                    const PIECE_WORDS: usize = std::mem::size_of::<Piece>() / 4;
                    let view = pass
                        .pieces
                        .slice(l.first * PIECE_WORDS..(l.first + l.count) * PIECE_WORDS);
                    let mut b = stream.launch_builder(&k.pieces);
                    b.arg(&mut *out)
                        .arg(&up.data)
                        .arg(&up.luts)
                        .arg(&view)
                        .arg(&assign)
                        .arg(&mut *err);
                    // SAFETY: the arguments match `pieces_*` in kernels/decode.cu
                    // (a grid row per piece of `view`); the plan put every
                    // piece's output inside `out`, and the kernel checks its
                    // reads against the piece's bounds.
                    unsafe { b.launch(cfg) }.map_err(|x| e("launching pieces", x))?;
                }
                Kernel::Rans => {
                    let nsegs = l.count as u32;
                    let mut b = stream.launch_builder(&k.rans);
                    b.arg(&mut *out)
                        .arg(&up.data)
                        .arg(&up.tables)
                        .arg(&pass.segments)
                        .arg(&nsegs)
                        .arg(&assign)
                        .arg(&mut *err);
                    // SAFETY: the arguments match `rans_*` (segments as eight
                    // u32 each, `nsegs` of them); the host checked every
                    // segment's bytes lie in `data`, its table in `tables` and
                    // its outputs in `out`.
                    unsafe { b.launch(cfg) }.map_err(|x| e("launching rans", x))?;
                }
            }
        }
        Ok(())
    }

    /// Starts `batch` on `lane`: uploads it, launches its passes (`repeats`
    /// times when timing, waiting for the uploads first), and queues the copy
    /// of its values into the lane's pinned output.
    fn launch(
        &self,
        lane: &mut Lane,
        sub: SubBatch,
        repeats: Option<usize>,
    ) -> Result<InFlight, GpuError> {
        let batch = &sub.plan;
        let bytes = batch.device_bytes();
        let e = |what: &str, err| self.error(what, err, bytes);
        self.check_reserve(bytes)?;
        let stream = lane.stream.clone();
        let up = self.upload(lane, batch)?;
        let out_bytes = batch.count * batch.word_size;
        let mut out: CudaSlice<u8> = stream
            .alloc_zeros(out_bytes.max(4))
            .map_err(|x| e("allocating the output", x))?;
        let mut err: CudaSlice<u32> = stream
            .alloc_zeros(1)
            .map_err(|x| e("allocating the error flag", x))?;
        let mut kernel_secs = 0.0;
        let timed = repeats.is_some();
        if timed {
            stream
                .synchronize()
                .map_err(|x| e("waiting for the uploads", x))?;
        }
        let started = std::time::Instant::now();
        for _ in 0..repeats.unwrap_or(1).max(1) {
            self.run_passes(&stream, &up, &mut out.slice_mut(..), &mut err)?;
        }
        if timed {
            stream
                .synchronize()
                .map_err(|x| e("running the kernels", x))?;
            kernel_secs = started.elapsed().as_secs_f64();
        }
        let output = self.pinned(&mut lane.output, out_bytes.max(4), false)?;
        stream
            .memcpy_dtoh(&out, &mut *output)
            .map_err(|x| e("copying the values back", x))?;
        Ok(InFlight {
            sub,
            _device: (up, out),
            err,
            kernel_secs,
        })
    }

    /// Waits for a sub-batch, checks its error flag and hands each range its
    /// values.
    fn finish(
        &self,
        lane: &mut Lane,
        f: InFlight,
        ranges: &mut [GpuRange<'_>],
        results: &mut [Result<(), GpuError>],
        timing: &mut BatchTiming,
    ) {
        let bytes = f.sub.plan.device_bytes();
        let ws = f.sub.plan.word_size;
        let done = (|| {
            let flag = lane
                .stream
                .clone_dtoh(&f.err)
                .map_err(|x| self.error("running the kernels", x, bytes))?;
            if flag[0] != 0 {
                return Err(GpuError::Failed(format!(
                    "the decode kernels reported a damaged stream (error bits {:#x})",
                    flag[0]
                )));
            }
            let output = lane
                .output
                .as_ref()
                .expect("a launched lane has an output buffer")
                .as_slice()
                .map_err(|x| self.error("copying the values back", x, bytes))?;
            batch::scatter(&f.sub, output, ranges);
            // An error cudarc stored on the way (a failed event record or
            // asynchronous free) belongs to this sub-batch's work.
            self.ctx
                .check_err()
                .map_err(|x| self.error("a stream operation", x, bytes))
        })();
        match done {
            Ok(()) => {
                timing.kernel_secs += f.kernel_secs;
                timing.bytes += (f.sub.plan.count * ws) as u64;
                timing.sub_batches += 1;
            }
            Err(e) => {
                for &i in &f.sub.ranges {
                    results[i] = Err(e.clone());
                }
            }
        }
        self.spares.give(f.sub.plan);
    }

    /// Decodes `ranges` in sub-batches round the streams; `repeats`: time the
    /// kernels, run that many times on each sub-batch's uploaded input.
    pub(super) fn run_batch(
        &self,
        container: &Container,
        ranges: &mut [GpuRange<'_>],
        repeats: Option<usize>,
    ) -> (Vec<Result<(), GpuError>>, BatchTiming) {
        let started = std::time::Instant::now();
        let mut results: Vec<Result<(), GpuError>> = ranges.iter().map(|_| Ok(())).collect();
        let mut timing = BatchTiming::default();
        // A sub-batch takes about twice its output on the device (sections,
        // output, tables), and three are in flight: keep them all within an
        // eighth of what is free beyond the reserve each, so a tight card
        // still takes work a chunk or a few at a time.
        let reserve = self.reserve.load(std::sync::atomic::Ordering::Relaxed);
        let room =
            GpuEngine::memory(self).map_or(u64::MAX, |(free, _)| free.saturating_sub(reserve) / 8);
        let target = (self.batch_bytes.load(std::sync::atomic::Ordering::Relaxed) as u64)
            .min(room)
            .max(1) as usize;
        let batches = batch::sub_batches(container, ranges, target, &mut results, &self.spares);
        if batches.is_empty() {
            return (results, timing);
        }
        let lanes = self
            .ctx
            .bind_to_thread()
            .map_err(|e| self.error("binding the context", e, 0))
            .and_then(|()| self.take_lanes(STREAMS.min(batches.len())));
        let mut lanes = match lanes {
            Ok(l) => l,
            Err(e) => {
                for sub in &batches {
                    for &i in &sub.ranges {
                        results[i] = Err(e.clone());
                    }
                }
                return (results, timing);
            }
        };
        let mut flight: Vec<Option<InFlight>> = lanes.iter().map(|_| None).collect();
        for (k, sub) in batches.into_iter().enumerate() {
            let l = k % lanes.len();
            if let Some(f) = flight[l].take() {
                self.finish(&mut lanes[l], f, ranges, &mut results, &mut timing);
            }
            let idx = sub.ranges.clone();
            match self.launch(&mut lanes[l], sub, repeats) {
                Ok(f) => flight[l] = Some(f),
                Err(e) => {
                    for i in idx {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        for (l, f) in flight.into_iter().enumerate() {
            if let Some(f) = f {
                self.finish(&mut lanes[l], f, ranges, &mut results, &mut timing);
            }
        }
        self.give_lanes(lanes);
        timing.total_secs = started.elapsed().as_secs_f64();
        (results, timing)
    }

    /// Decodes `ranges` with each sub-batch's kernels run `repeats` times on
    /// its uploaded input: the kernel time alone and the whole decode's (for
    /// `examples/gpu_throughput.rs`). The first failure is the error.
    pub fn decode_timed(
        &self,
        container: &Container,
        ranges: &mut [GpuRange<'_>],
        repeats: usize,
    ) -> Result<BatchTiming, GpuError> {
        let (results, timing) = self.run_batch(container, ranges, Some(repeats.max(1)));
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(timing)
    }
}
