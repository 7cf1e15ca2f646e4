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
//! and checks; a sub-batch is a [`BatchPlan`] of about
//! `PADIC_GPU_BATCH_MB` MiB of output, default 256, at most 1024), and the
//! sub-batches go round a few streams: each stream stages its sections in
//! pinned host memory, copies them up asynchronously, runs one launch per
//! section index and kind over every range at once, and copies the values
//! down into pinned memory, while the other streams copy or compute. An
//! out-of-memory from any allocation, copy or launch comes back as
//! [`GpuError::OutOfMemory`] with the bytes asked for and free, for the
//! ranges of the sub-batch it hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, CudaViewMut, DevicePtr,
    DeviceRepr, DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};

use super::batch::{self, SubBatch};
use super::gpu::{DeviceBuffer, GpuEngine, GpuError, GpuRange};
use crate::codec::plan::{BatchPlan, Kernel, Launch, Piece};
use crate::codec::Tables;
use crate::format::Container;

/// The kernels' source, compiled at run time.
pub const KERNELS: &str = include_str!("../../kernels/decode.cu");

/// Why CUDA cannot run here, or `Ok` when libcuda and libnvrtc both load.
pub fn libraries_present() -> Result<(), String> {
    // SAFETY: this only tries to dlopen the library by name.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver found: libcuda.so.1 could not be loaded (is an NVIDIA driver installed?)".into());
    }
    nvrtc_present()
}

/// Why NVRTC cannot run here, or `Ok`.
pub fn nvrtc_present() -> Result<(), String> {
    // SAFETY: this only tries to dlopen the library by name.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC found: libnvrtc.so (CUDA 12 or 13) could not be loaded; install the CUDA toolkit or the nvidia-cuda-nvrtc wheel and add its lib folder to LD_LIBRARY_PATH".into());
    }
    Ok(())
}

/// Compiles the kernels for `arch`, or gives the NVRTC log. `sm_90` and such
/// give a CUBIN, machine code for that GPU, which the engine loads: PTX from
/// an NVRTC newer than the driver (a CUDA 13.5 wheel on a 13.0 driver) is
/// refused with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`, a CUBIN is not.
/// `compute_90` and such give PTX.
pub fn compile(arch: &str) -> Result<cudarc::nvrtc::Ptx, String> {
    use cudarc::nvrtc::{result, sys};
    use std::ffi::{c_char, CStr};
    nvrtc_present()?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++14".into()];
    let src = std::ffi::CString::new(KERNELS).map_err(|e| format!("kernels/decode.cu: {e}"))?;
    let prog = result::create_program(&src, Some(c"decode.cu"))
        .map_err(|e| format!("NVRTC {}: creating the program: {e}", nvrtc_version()))?;
    let fail = |what: &str, e: result::NvrtcError| {
        format!(
            "NVRTC {} could not {what} kernels/decode.cu for {arch}: {e}",
            nvrtc_version()
        )
    };
    // SAFETY: `prog` is live until the destroy below, and `src` outlives it;
    // every buffer handed to NVRTC has the size NVRTC gave for it.
    let built = unsafe {
        (|| {
            if result::compile_program(prog, &opts).is_err() {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "NVRTC {} could not compile kernels/decode.cu for {arch}:\n{log}",
                    nvrtc_version()
                ));
            }
            if !arch.starts_with("sm_") {
                let ptx = result::get_ptx(prog).map_err(|e| fail("get the PTX of", e))?;
                let text = CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned();
                return Ok(cudarc::nvrtc::Ptx::from_src(text));
            }
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("size the CUBIN of", e))?;
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| fail("get the CUBIN of", e))?;
            Ok(cudarc::nvrtc::Ptx::from_binary(cubin))
        })()
    };
    // SAFETY: `prog` came from `create_program` and is destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    built
}

/// NVRTC's version, `major.minor` (or `?` when it will not say).
pub fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two plain out-parameters.
    match unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result() {
        Ok(()) => format!("{major}.{minor}"),
        Err(_) => "?".into(),
    }
}

/// The CUDA version the driver supports, `major.minor` (or `?`).
fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: a plain out-parameter.
    match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result() {
        Ok(()) => format!("{}.{}", v / 1000, v % 1000 / 10),
        Err(_) => "?".into(),
    }
}

struct Kernels {
    pieces: CudaFunction,
    rans: CudaFunction,
}

/// Streams a batch goes round: while one computes, the others copy.
const STREAMS: usize = 3;

/// Output bytes per sub-batch (`PADIC_GPU_BATCH_MB`, default 256 MiB): big
/// enough for thousands of warps, small enough that several fit in flight.
fn sub_batch_bytes() -> usize {
    std::env::var("PADIC_GPU_BATCH_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&mb| mb > 0)
        .unwrap_or(256)
        .min(1024)
        << 20
}

/// A stream with its pinned staging buffers, kept from decode to decode.
struct Lane {
    stream: Arc<CudaStream>,
    /// Sections on their way up (write-combined: the host only writes it).
    input: Option<PinnedHostSlice<u8>>,
    /// Recorded after the last copy out of `input`: the next staging waits
    /// for it (the copy reads only the staged bytes, through a plain slice,
    /// so the pinned buffer's own event does not cover it).
    staged: Option<CudaEvent>,
    /// Values on their way down.
    output: Option<PinnedHostSlice<u8>>,
}

/// A sub-batch in flight on a lane: the device buffers it uses, and which
/// ranges it holds.
struct InFlight {
    sub: SubBatch,
    /// Held until the sub-batch is done: its input and output.
    _device: (Uploaded, CudaSlice<u8>),
    err: CudaSlice<u32>,
    kernel_secs: f64,
}

/// A batch's input on the device.
struct Uploaded {
    word_size: usize,
    device_bytes: u64,
    data: CudaSlice<u8>,
    tables: CudaSlice<u64>,
    luts: CudaSlice<u32>,
    passes: Vec<UploadedPass>,
    /// What to launch, in order ([`BatchPlan::launches`]).
    launches: Vec<Launch>,
}

/// One pass's pieces and segments on the device.
struct UploadedPass {
    pieces: CudaSlice<u32>,
    segments: CudaSlice<u32>,
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
            batch_bytes: std::sync::atomic::AtomicUsize::new(sub_batch_bytes()),
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

    /// `n` lanes from the pool, new ones made as needed.
    fn take_lanes(&self, n: usize) -> Result<Vec<Lane>, GpuError> {
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
    fn give_lanes(&self, lanes: Vec<Lane>) {
        let mut pool = self.lanes.lock().expect("lane lock");
        pool.extend(lanes);
        pool.truncate(2 * STREAMS);
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

    /// Pinned host memory of at least `bytes`, reusing `slot`'s.
    fn pinned<'s>(
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
    fn upload(&self, lane: &mut Lane, batch: &BatchPlan) -> Result<Uploaded, GpuError> {
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

    /// Launches an uploaded batch's passes on `stream`, writing `out` (the
    /// batch's values, from its first).
    fn run_passes(
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

    /// Sets the output bytes a sub-batch aims at (the checks make them small,
    /// so that a small model goes round every stream).
    pub fn set_batch_bytes(&self, bytes: usize) {
        self.batch_bytes
            .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
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
    fn run_batch(
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

    /// [`GpuEngine::decode_to_device`]: every chunk of the tensor, in
    /// sub-batches on one stream, straight into one allocation that stays.
    fn tensor_to_device(
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

/// A tensor in device memory (the first `len` bytes of `buf`).
pub struct CudaBuffer {
    buf: CudaSlice<u8>,
    len: usize,
    stream: Arc<CudaStream>,
    device: String,
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
