//! The CUDA engine (the `cuda` feature): the kernels of `kernels/decode.cu`,
//! compiled once per process by NVRTC for the device's architecture, run
//! through cudarc on a small pool of streams.
//!
//! cudarc loads libcuda and libnvrtc at run time and panics when they are
//! missing; [`CudaEngine::shared`] looks for both first and turns their
//! absence into a clear [`GpuError`]. A decode plans the chunk range on the
//! host ([`Tables::plan`]: the CPU decoder's own parse and checks), uploads
//! the sections and tables, runs one kernel per section, and copies the
//! values back. An out-of-memory from any allocation, copy or launch comes
//! back as [`GpuError::OutOfMemory`] with the bytes asked for and free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, DriverError, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};

use super::gpu::{GpuEngine, GpuError};
use crate::codec::plan::{ChunkPlan, SectionPlan};
use crate::codec::{FloatKind, Tables};
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

/// Compiles the kernels for `arch` (`compute_90`, ...): the PTX, or the NVRTC log.
pub fn compile(arch: Option<&str>) -> Result<cudarc::nvrtc::Ptx, String> {
    nvrtc_present()?;
    let mut opts = cudarc::nvrtc::CompileOptions::default();
    if let Some(a) = arch {
        opts.options.push(format!("--gpu-architecture={a}"));
    }
    opts.options.push("--std=c++14".into());
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!(
            "NVRTC could not compile kernels/decode.cu:\n{}",
            log.to_string_lossy()
        ),
        other => format!("NVRTC could not compile kernels/decode.cu: {other}"),
    })
}

struct Kernels {
    constant: CudaFunction,
    raw: CudaFunction,
    rans: CudaFunction,
}

/// A GPU with the decode kernels loaded.
pub struct CudaEngine {
    ctx: Arc<CudaContext>,
    /// Device bytes a decode must leave free (`gpu_memory_threshold_mb`):
    /// a decode that would eat into them is refused as out of memory before
    /// anything is allocated.
    reserve: std::sync::atomic::AtomicU64,
    streams: Mutex<Vec<Arc<CudaStream>>>,
    k16: Kernels,
    k32: Kernels,
    name: String,
}

/// Word types the kernels write.
trait DeviceWord: DeviceRepr + ValidAsZeroBits + Copy + Default + bytemuck::Pod {}
impl DeviceWord for u16 {}
impl DeviceWord for u32 {}

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
        let ptx = compile(Some(&format!("compute_{major}{minor}"))).map_err(GpuError::Failed)?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| fail("loading the kernels", e))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| fail(&format!("kernel {name}"), e))
        };
        let k16 = Kernels {
            constant: load("const_u16")?,
            raw: load("raw_u16")?,
            rans: load("rans_u16")?,
        };
        let k32 = Kernels {
            constant: load("const_u32")?,
            raw: load("raw_u32")?,
            rans: load("rans_u32")?,
        };
        let name = format!(
            "GPU {device}: {} (sm_{major}{minor})",
            ctx.name().unwrap_or_else(|_| "unknown".into())
        );
        Ok(CudaEngine {
            ctx,
            reserve: std::sync::atomic::AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
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

    fn stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        if let Some(s) = self.streams.lock().expect("stream lock").pop() {
            return Ok(s);
        }
        self.ctx
            .new_stream()
            .map_err(|e| self.error("creating a stream", e, 0))
    }

    /// Uploads `plan`, runs its kernels `repeats` times (1 for a decode),
    /// checks the error flag and copies the values into `out`; returns the
    /// seconds the kernel launches took, the uploads and copies apart.
    fn run<W: DeviceWord>(
        &self,
        stream: &Arc<CudaStream>,
        k: &Kernels,
        plan: &ChunkPlan,
        out: &mut [u8],
        repeats: usize,
    ) -> Result<f64, GpuError> {
        let n = plan.count;
        let bytes = (n * std::mem::size_of::<W>()) as u64 + plan.data.len() as u64;
        let e = |what: &str, err| self.error(what, err, bytes);
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
        let data = stream
            .clone_htod(&plan.data)
            .map_err(|x| e("copying the sections", x))?;
        let mut words: CudaSlice<W> = stream
            .alloc_zeros(n.max(1))
            .map_err(|x| e("allocating the output", x))?;
        let mut err: CudaSlice<u32> = stream
            .alloc_zeros(1)
            .map_err(|x| e("allocating the error flag", x))?;
        enum Aux {
            Const(u32),
            Raw(CudaSlice<u32>, u32, u32, u32),
            Rans(CudaSlice<u64>, CudaSlice<u32>, u32, u32, u32),
        }
        let mut aux = Vec::with_capacity(plan.sections.len());
        for sec in &plan.sections {
            aux.push(match sec {
                SectionPlan::Const { value } => Aux::Const(*value),
                SectionPlan::Raw {
                    offset,
                    len,
                    width,
                    lut,
                } => Aux::Raw(
                    stream
                        .clone_htod(lut)
                        .map_err(|x| e("copying a lookup table", x))?,
                    *offset,
                    *len,
                    *width,
                ),
                SectionPlan::Rans {
                    scale_bits,
                    lanes,
                    table,
                    segments,
                } => {
                    let flat: Vec<u32> = segments
                        .iter()
                        .flat_map(|g| [g.out_start, g.len, g.states_off, g.words_off, g.words])
                        .collect();
                    Aux::Rans(
                        stream
                            .clone_htod(table)
                            .map_err(|x| e("copying a decode table", x))?,
                        stream
                            .clone_htod(&flat)
                            .map_err(|x| e("copying the segments", x))?,
                        segments.len() as u32,
                        *scale_bits,
                        *lanes,
                    )
                }
            });
        }
        let count = n as u32;
        let grid = |threads: usize, block: u32| LaunchConfig {
            grid_dim: (threads.div_ceil(block as usize).max(1) as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        stream
            .synchronize()
            .map_err(|x| e("waiting for the uploads", x))?;
        let started = std::time::Instant::now();
        for _ in 0..repeats.max(1) {
            for (s, a) in aux.iter().enumerate() {
                let assign = (s == 0) as i32;
                match a {
                    Aux::Const(value) => {
                        let mut b = stream.launch_builder(&k.constant);
                        b.arg(&mut words).arg(&count).arg(value).arg(&assign);
                        // SAFETY: the arguments match `const_*` in kernels/decode.cu;
                        // the kernel writes only `words[0..count)`.
                        unsafe { b.launch(grid(n, 256)) }.map_err(|x| e("launching const", x))?;
                    }
                    Aux::Raw(lut, offset, len, width) => {
                        let packed = data.slice(*offset as usize..(*offset + *len) as usize);
                        let mut b = stream.launch_builder(&k.raw);
                        b.arg(&mut words)
                            .arg(&count)
                            .arg(&packed)
                            .arg(len)
                            .arg(width)
                            .arg(lut)
                            .arg(&assign)
                            .arg(&mut err);
                        // SAFETY: the arguments match `raw_*`; every read is
                        // checked against `len`, every write is below `count`.
                        unsafe { b.launch(grid(n, 256)) }.map_err(|x| e("launching raw", x))?;
                    }
                    Aux::Rans(table, segs, nsegs, scale_bits, lanes) => {
                        let mut b = stream.launch_builder(&k.rans);
                        b.arg(&mut words)
                            .arg(&data)
                            .arg(table)
                            .arg(segs)
                            .arg(nsegs)
                            .arg(scale_bits)
                            .arg(lanes)
                            .arg(&assign)
                            .arg(&mut err);
                        // SAFETY: the arguments match `rans_*` (segments as five
                        // u32 each); the host checked every segment's bytes lie
                        // in `data` and its outputs below `count`.
                        unsafe { b.launch(grid(*nsegs as usize * 32, 128)) }
                            .map_err(|x| e("launching rans", x))?;
                    }
                }
            }
        }
        stream
            .synchronize()
            .map_err(|x| e("running the kernels", x))?;
        let kernel_secs = started.elapsed().as_secs_f64();
        let flag = stream
            .clone_dtoh(&err)
            .map_err(|x| e("reading the error flag", x))?;
        if flag[0] != 0 {
            return Err(GpuError::Failed(format!(
                "the decode kernels reported a damaged stream (error bits {:#x})",
                flag[0]
            )));
        }
        let host: Vec<W> = stream
            .clone_dtoh(&words)
            .map_err(|x| e("copying the values back", x))?;
        let src: &[u8] = bytemuck::cast_slice(&host[..n]);
        if cfg!(target_endian = "little") {
            out.copy_from_slice(src);
        } else {
            for (d, s) in out
                .chunks_exact_mut(std::mem::size_of::<W>())
                .zip(src.chunks_exact(std::mem::size_of::<W>()))
            {
                d.iter_mut().zip(s.iter().rev()).for_each(|(a, b)| *a = *b);
            }
        }
        Ok(kernel_secs)
    }

    /// Decodes values `[first, first + out.len() / size)` of a chunk with its
    /// kernels run `repeats` times on the same uploaded input; returns the
    /// seconds of kernel time (for `examples/gpu_throughput.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn decode_timed(
        &self,
        container: &Container,
        tables: &Tables,
        tensor: usize,
        chunk: usize,
        total: usize,
        first: usize,
        out: &mut [u8],
        repeats: usize,
    ) -> Result<f64, GpuError> {
        let size = tables.kind.size();
        if out.len() % size != 0 {
            return Err(GpuError::Failed(
                "output is not a whole number of values".into(),
            ));
        }
        let secs = container
            .sections(tensor, chunk, tables.sections_used())
            .map_err(|e| GpuError::Failed(e.to_string()))?;
        let plan = tables
            .plan(&secs, total, first, out.len() / size)
            .map_err(|e| GpuError::Failed(e.to_string()))?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.error("binding the context", e, 0))?;
        let stream = self.stream()?;
        let r = match tables.kind {
            FloatKind::F32 => self.run::<u32>(&stream, &self.k32, &plan, out, repeats),
            FloatKind::BF16 | FloatKind::F16 => {
                self.run::<u16>(&stream, &self.k16, &plan, out, repeats)
            }
        };
        self.streams.lock().expect("stream lock").push(stream);
        r
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
        tables: &Tables,
        tensor: usize,
        chunk: usize,
        total: usize,
        first: usize,
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        self.decode_timed(container, tables, tensor, chunk, total, first, out, 1)
            .map(|_| ())
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
