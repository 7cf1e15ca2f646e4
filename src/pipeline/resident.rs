//! AutoSwap, the design's other half: each tensor loaded where the caller
//! wants it. A tensor destined for host memory decodes on the CPU (through
//! the graph, in CPU_ONLY); one destined for the device decodes on the GPU
//! into device memory that stays there, while the GPU has room. When it has
//! none (the AUTO rules say CPU, or the allocation runs out of memory, which
//! counts as a memory-pressure event) the tensor is decoded into host memory
//! instead, and says why. GPU_ONLY makes every such failure an error naming
//! the tensor; CPU_ONLY keeps everything in host memory. A small tensor that
//! shares its chunk with others (biases, norms) is decoded by the CPU, in
//! the load's one graph run with the host tensors, and then uploaded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{decompress_tensors, Pipeline, RunOptions, TargetPrecision};
use crate::codec::Tables;
use crate::engine::gpu::{DeviceBuffer, GpuError};
use crate::error::{Error, Location, Result};
use crate::format::{Container, TensorEntry};
use crate::policy::{Mode, Policy, Route};

/// Where a caller wants a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residence {
    /// In host memory, decoded on the CPU.
    Host,
    /// In GPU memory, decoded on the GPU (host memory when the GPU has no room).
    Device,
}

/// A tensor's values, where they are.
#[derive(Debug, Clone)]
pub enum Values {
    /// Little-endian values in host memory, as in a safetensors file.
    Host(HostBytes),
    /// The same bytes in device memory.
    Device(Arc<dyn DeviceBuffer>),
}

/// A tensor's bytes in host memory: its range of a decoded region, which the
/// other host tensors of its shard share (no copy each).
#[derive(Debug, Clone)]
pub struct HostBytes {
    region: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl HostBytes {
    /// All of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        HostBytes {
            region: Arc::new(bytes),
            range,
        }
    }

    /// The region these bytes are part of, and where in it they are.
    pub fn region(&self) -> (&Arc<Vec<u8>>, std::ops::Range<usize>) {
        (&self.region, self.range.clone())
    }

    /// The region and the range, taken apart.
    pub fn into_parts(self) -> (Arc<Vec<u8>>, std::ops::Range<usize>) {
        (self.region, self.range)
    }
}

impl std::ops::Deref for HostBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.region[self.range.clone()]
    }
}

/// A loaded tensor.
#[derive(Debug, Clone)]
pub struct ResidentTensor {
    /// The tensor's name in the safetensors header.
    pub name: String,
    /// The safetensors dtype, e.g. `BF16`, `F32`, `I64`.
    pub dtype: String,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// The decoded bytes, in host or device memory.
    pub values: Values,
    /// Why a tensor wanted on the device is in host memory.
    pub fallback: Option<String>,
}

impl ResidentTensor {
    /// Whether the values are in device memory.
    pub fn on_device(&self) -> bool {
        matches!(self.values, Values::Device(_))
    }

    /// The values in host memory (copied back from the device if there).
    pub fn to_host(&self) -> Result<HostBytes> {
        match &self.values {
            Values::Host(v) => Ok(v.clone()),
            Values::Device(d) => d
                .to_host()
                .map(HostBytes::new)
                .map_err(|source| Error::Gpu {
                    at: Some(Box::new(Location {
                        tensor: Some(self.name.clone()),
                        ..Location::default()
                    })),
                    doing: "copying it back".into(),
                    source,
                }),
        }
    }
}

/// What one [`Pipeline::load`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadInfo {
    /// Tensors loaded into device memory.
    pub device_tensors: usize,
    /// Tensors loaded into host memory (fallbacks included).
    pub host_tensors: usize,
    /// Bytes loaded into device memory.
    pub device_bytes: u64,
    /// Bytes loaded into host memory.
    pub host_bytes: u64,
    /// Tensors wanted on the device that went to host memory.
    pub fallbacks: usize,
    /// Rises of the pressure level into HIGH or CRITICAL, and GPU
    /// out-of-memory failures.
    pub memory_pressure_events: u64,
    /// Wall-clock time of the load.
    pub wall: Duration,
}

impl LoadInfo {
    /// `t` with its values in device memory, counted.
    fn on_device(&mut self, t: &TensorEntry, buf: Arc<dyn DeviceBuffer>) -> ResidentTensor {
        self.device_tensors += 1;
        self.device_bytes += buf.len() as u64;
        resident(t, Values::Device(buf), None)
    }
}

impl Pipeline {
    /// Loads every tensor of `container` where `want` (given its name) says:
    /// see the module documentation for who decodes what.
    pub fn load(
        &self,
        container: &Arc<Container>,
        target: Option<u32>,
        want: impl Fn(&str) -> Residence,
    ) -> Result<(Vec<ResidentTensor>, LoadInfo)> {
        let (mut shards, info) = self.load_shards(std::slice::from_ref(container), target, want)?;
        Ok((shards.pop().unwrap_or_default(), info))
    }

    /// Loads every tensor of every container of `shards` (a packed
    /// directory, in index order) where `want` says, as one load: one
    /// policy and one clock decide every tensor, so a switch to the CPU made
    /// in one shard holds into the next as the AUTO rules say (hysteresis,
    /// switch delay), and every tensor that goes to host memory, of any
    /// shard, decodes in one graph run. One list of tensors per shard.
    pub fn load_shards(
        &self,
        shards: &[Arc<Container>],
        target: Option<u32>,
        want: impl Fn(&str) -> Residence,
    ) -> Result<(Vec<Vec<ResidentTensor>>, LoadInfo)> {
        let started = Instant::now();
        let opts = self.options(target);
        let mode = opts.mode;
        let mut policy = Policy::new(self.config.policy(), mode, self.gpu.is_some());
        let mut info = LoadInfo::default();
        let mut placed: Vec<Vec<Option<ResidentTensor>>> = Vec::with_capacity(shards.len());
        // Tensors to decode into host memory, (shard, tensor), with the
        // reason when the device was wanted.
        let mut host: Vec<(usize, usize, Option<String>)> = Vec::new();
        // Small tensors bound for the device that share a chunk with others:
        // decoded in the host run, then uploaded.
        let mut staged: Vec<(usize, usize)> = Vec::new();
        for (s, container) in shards.iter().enumerate() {
            let tables = TargetPrecision::of(&opts).tables(container, |_| true)?;
            let tensors = &container.header().tensors;
            placed.push((0..tensors.len()).map(|_| None).collect());
            for (i, t) in tensors.iter().enumerate() {
                if want(&t.name) == Residence::Host {
                    host.push((s, i, None));
                    continue;
                }
                match self.onto_device(container, &tables, i, &opts, &mut policy, started)? {
                    Destination::Device(buf) => placed[s][i] = Some(info.on_device(t, buf)),
                    Destination::Host(why) => host.push((s, i, Some(why))),
                    Destination::Staged => staged.push((s, i)),
                }
            }
        }
        // Host memory: the CPU decodes every such tensor of every shard,
        // and every staged one, in one graph run (its statistics are the
        // load's).
        let mut cpu = opts.clone();
        cpu.mode = Mode::CpuOnly;
        let wanted: Vec<(usize, usize)> = host
            .iter()
            .map(|&(s, i, _)| (s, i))
            .chain(staged.iter().copied())
            .collect();
        // Each shard's region, shared by its host tensors.
        let regions: Vec<Arc<Vec<u8>>> = match wanted.is_empty() {
            true => Vec::new(),
            false => (decompress_tensors(shards, &wanted, &cpu)?.0)
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let host_bytes = |s: usize, t: &TensorEntry| {
            let at = t.data_offset as usize;
            HostBytes {
                region: regions[s].clone(),
                range: at..at + t.byte_len as usize,
            }
        };
        for (s, i) in staged {
            let t = &shards[s].header().tensors[i];
            let uploaded = match &self.gpu {
                Some(gpu) => landed(gpu.upload(&host_bytes(s, t)), t, mode, &mut policy)?,
                None => Err("no GPU".into()),
            };
            match uploaded {
                Ok(buf) => placed[s][i] = Some(info.on_device(t, buf)),
                Err(why) => host.push((s, i, Some(why))),
            }
        }
        for (s, i, fallback) in host {
            let t = &shards[s].header().tensors[i];
            let data = host_bytes(s, t);
            info.host_tensors += 1;
            info.host_bytes += data.len() as u64;
            info.fallbacks += fallback.is_some() as usize;
            placed[s][i] = Some(resident(t, Values::Host(data), fallback));
        }
        info.memory_pressure_events = policy.memory_pressure_events();
        info.wall = started.elapsed();
        let placed = placed
            .into_iter()
            .map(|shard| shard.into_iter().flatten().collect())
            .collect();
        Ok((placed, info))
    }
}

/// Where a tensor wanted on the device goes.
enum Destination {
    /// Device memory, decoded (or uploaded) there.
    Device(Arc<dyn DeviceBuffer>),
    /// Host memory, and why.
    Host(String),
    /// The device, once the CPU has decoded it: a small tensor that shares
    /// its chunk with others (the load's one CPU run decodes it; see
    /// [`Pipeline::load_shards`]).
    Staged,
}

impl Pipeline {
    /// Places tensor `i` of `container` on the device, or says why it goes
    /// to host memory: the mode, no GPU, the AUTO rules on the latest memory
    /// reading (at `started`'s clock), or the device running out of memory
    /// (a memory-pressure event). In GPU_ONLY, and on any other GPU failure,
    /// an error naming the tensor.
    fn onto_device(
        &self,
        container: &Arc<Container>,
        tables: &[Option<Arc<Tables>>],
        i: usize,
        opts: &RunOptions,
        policy: &mut Policy,
        started: Instant,
    ) -> Result<Destination> {
        let c = &**container;
        let t = &c.header().tensors[i];
        let mode = opts.mode;
        let gpu = match (&self.gpu, mode) {
            (_, Mode::CpuOnly) => {
                return Ok(Destination::Host(
                    "CPU_ONLY keeps every tensor in host memory".into(),
                ))
            }
            (None, Mode::GpuOnly) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor '{}': GPU_ONLY cannot place it on the device: no GPU: {}",
                    c.path().display(),
                    t.name,
                    self.gpu_absent.as_deref().unwrap_or("none was given")
                )))
            }
            (None, _) => {
                let why = self.gpu_absent.as_deref().unwrap_or("none was given");
                return Ok(Destination::Host(format!("no GPU: {why}")));
            }
            (Some(g), _) => g,
        };
        if mode != Mode::GpuOnly {
            let now = started.elapsed().as_millis() as u64;
            let sample = self.pressure.as_ref().and_then(|p| p.sample_at(now));
            let d = policy.decide(now, sample);
            if d.route == Route::Cpu {
                let at = d.sample.map_or(String::new(), |s| {
                    format!(" (GPU memory {:.0}% used)", 100.0 * s.utilization())
                });
                return Ok(Destination::Host(format!(
                    "memory pressure{at}: the AUTO rules say CPU"
                )));
            }
        }
        let attempt = match &tables[i] {
            Some(_) if c.header().shares_chunks(i) => return Ok(Destination::Staged),
            Some(tab) => gpu.decode_to_device(c, tab, i),
            // A damaged stored tensor is the container's error, not the GPU's.
            None => gpu.upload(&passthrough_bytes(c, i)?),
        };
        Ok(match landed(attempt, t, mode, policy)? {
            Ok(buf) => Destination::Device(buf),
            Err(why) => Destination::Host(why),
        })
    }
}

/// Where tensor `t` goes after an attempt to put it on the device: there
/// (`Ok(buffer)`), or host memory (`Err(why)`: out of device memory, a
/// memory-pressure event); in GPU_ONLY, and on any other GPU failure, an
/// error naming the tensor.
fn landed(
    attempt: std::result::Result<Arc<dyn DeviceBuffer>, GpuError>,
    t: &TensorEntry,
    mode: Mode,
    policy: &mut Policy,
) -> Result<std::result::Result<Arc<dyn DeviceBuffer>, String>> {
    let at = || {
        Some(Box::new(Location {
            tensor: Some(t.name.clone()),
            ..Location::default()
        }))
    };
    match attempt {
        Ok(buf) => Ok(Ok(buf)),
        Err(source) if mode == Mode::GpuOnly => Err(Error::Gpu {
            at: at(),
            doing: format!(
                "GPU_ONLY cannot place its {} bytes on the device",
                t.byte_len
            ),
            source,
        }),
        // Out of device memory: the tensor goes to host memory, the
        // reason with it, counted as memory pressure.
        Err(e @ GpuError::OutOfMemory { .. }) => {
            policy.record_oom();
            Ok(Err(e.to_string()))
        }
        // Any other failure is no reason to decode elsewhere.
        Err(source) => Err(Error::Gpu {
            at: at(),
            doing: format!("the GPU failed on its {} bytes", t.byte_len),
            source,
        }),
    }
}

/// A loaded tensor: `t`'s name, dtype and shape with `values`.
fn resident(t: &TensorEntry, values: Values, fallback: Option<String>) -> ResidentTensor {
    ResidentTensor {
        name: t.name.clone(),
        dtype: t.dtype.clone(),
        shape: t.shape.clone(),
        values,
        fallback,
    }
}

/// The bytes of a tensor stored as it was (not a float).
fn passthrough_bytes(c: &Container, tensor: usize) -> Result<Vec<u8>> {
    let t = &c.header().tensors[tensor];
    let mut v = Vec::with_capacity(t.byte_len as usize);
    for k in 0..t.chunks.len() {
        v.extend_from_slice(c.sections(tensor, k, 1)?[0]);
    }
    Ok(v)
}
