//! The library API: [`Pipeline`] decodes containers through the graph, with
//! a mode that can be forced at run time, an LRU cache of tensors, and
//! statistics; [`Pipeline::load`] loads tensors where the caller wants them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::engine::gpu::GpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::graph::TargetPrecision;
pub use crate::graph::{
    cluster_of, current_affinity, decompress_file, decompress_files, decompress_files_in_cluster,
    decompress_tensor, decompress_tensor_bytes, decompress_tensors, decompress_to_memory,
    decompress_to_memory_all, pin_current_thread, Cluster, RunOptions, ShardFigures, ShardedRun,
};
use crate::monitor::{Monitor, Snapshot, Watcher};
use crate::policy::Mode;
use crate::pressure::{PressureSource, Trace};
use crate::progress::Progress;
use crate::stats::Statistics;

mod resident;
pub use resident::{HostBytes, LoadInfo, Residence, ResidentTensor, Values};

/// A decoded tensor.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// The tensor's name in the safetensors header.
    pub name: String,
    /// The safetensors dtype, e.g. `BF16`, `F32`, `I64`.
    pub dtype: String,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Little-endian values, as in a safetensors file.
    pub data: Arc<Vec<u8>>,
}

/// What one `decompress` did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The mode the run routed chunks under.
    pub mode: Mode,
    /// Chunks the GPU engine decoded whole.
    pub gpu_chunks: u64,
    /// Chunks the CPU engine decoded whole.
    pub cpu_chunks: u64,
    /// Chunks split between the GPU and the CPU (HYBRID).
    pub hybrid_chunks: u64,
    /// Wall-clock time of the graph run.
    pub wall: std::time::Duration,
    /// Each shard's share of the run, in the order given, where the run
    /// reports it ([`Pipeline::decompress_models`]); empty elsewhere.
    pub shards: Vec<ShardFigures>,
}

impl RunInfo {
    /// A run in `mode` that ended with statistics `s`.
    fn of(mode: Mode, s: &Statistics) -> Self {
        RunInfo {
            mode,
            gpu_chunks: s.chunks.gpu_decompressions,
            cpu_chunks: s.chunks.cpu_decompressions,
            hybrid_chunks: s.chunks.hybrid_decompressions,
            wall: std::time::Duration::from_secs_f64(s.wall_time_s),
            shards: Vec::new(),
        }
    }
}

/// The GPU a pipeline decodes on, opened once, and the memory-pressure
/// readings that go with it: the one GPU/pressure setup of the library and
/// the command line.
struct GpuSetup {
    gpu: Option<Arc<dyn GpuEngine>>,
    /// Why there is none.
    absent: Option<String>,
    pressure: Option<Arc<dyn PressureSource>>,
    /// What the setup has to say (which readings stand in for NVML).
    notes: Vec<String>,
}

impl GpuSetup {
    /// GPU `gpu_device` where this build and this machine have one (the
    /// `cuda` feature and a driver), its reserve set, with live readings
    /// (NVML, else the engine's own); none in CPU_ONLY.
    fn open(config: &Config, mode: Mode) -> Self {
        let mut setup = GpuSetup {
            gpu: None,
            absent: None,
            pressure: None,
            notes: Vec::new(),
        };
        if mode == Mode::CpuOnly {
            return setup;
        }
        match crate::engine::gpu::open(config.gpu_device) {
            Ok(g) => {
                g.set_reserve_mb(config.gpu_memory_threshold_mb);
                let (source, note) = crate::pressure::for_engine(
                    g.clone(),
                    config.gpu_device,
                    config.sample_interval_ms,
                );
                setup.pressure = Some(source);
                setup.notes.extend(note);
                setup.gpu = Some(g);
            }
            Err(why) => setup.absent = Some(why),
        }
        setup
    }
}

/// Settings of a pipeline's runs beyond the mode and the configuration.
#[derive(Clone, Default)]
struct RunSettings {
    trace: Option<(Trace, u64)>,
    timely_args: Vec<String>,
    placement_log: Option<PathBuf>,
    timeline: Option<PathBuf>,
    progress: Option<Arc<Progress>>,
}

/// A decoded run of small tensors: (container identity, its first tensor,
/// digits decoded).
type SharedRunKey = (u64, usize, Option<u32>);

/// The library API: decode containers through the graph, with a mode that
/// can be forced at run time, an LRU cache of tensors, and statistics. All
/// methods take `&self` and are safe to call from several threads.
pub struct Pipeline {
    config: Config,
    mode: Mutex<Mode>,
    gpu: Option<Arc<dyn GpuEngine>>,
    gpu_absent: Option<String>,
    pressure: Option<Arc<dyn PressureSource>>,
    notes: Vec<String>,
    settings: RunSettings,
    cache: Option<crate::cache::TensorCache>,
    /// The last run of small tensors that share chunks to be decoded (at
    /// most a chunk's bytes), so that with the cache off reading its tensors
    /// one by one decodes it once ([`Pipeline::shared_run`]).
    last_shared_run: Mutex<Option<(SharedRunKey, Arc<Vec<u8>>)>>,
    last: Mutex<Option<Statistics>>,
    /// Follows each run, for [`Pipeline::statistics`] while one goes.
    monitor: Monitor,
    /// The watcher [`Pipeline::with_monitor`] started; stops with the pipeline.
    watcher: Option<Watcher>,
}

impl Pipeline {
    /// A pipeline in AUTO_SWITCH, on GPU `gpu_device` where this build and
    /// this machine have one (the `cuda` feature and a driver), else on the
    /// CPU, with the reason kept for the statistics' notes.
    pub fn new(config: Config) -> Self {
        Pipeline::with_mode(config, Mode::Auto)
    }

    /// A pipeline in `mode`; in CPU_ONLY it opens no GPU.
    pub fn with_mode(config: Config, mode: Mode) -> Self {
        let cache = config.enable_caching.then(|| {
            crate::cache::TensorCache::new((config.cache_size_mb * (1 << 20) as f64) as usize)
        });
        let setup = GpuSetup::open(&config, mode);
        Pipeline {
            config,
            mode: Mutex::new(mode),
            gpu: setup.gpu,
            gpu_absent: setup.absent,
            pressure: setup.pressure,
            notes: setup.notes,
            settings: RunSettings::default(),
            cache,
            last_shared_run: Mutex::new(None),
            last: Mutex::new(None),
            monitor: Monitor::new(),
            watcher: None,
        }
    }

    /// Uses `gpu` for chunks routed to the GPU.
    pub fn with_gpu(mut self, gpu: Arc<dyn GpuEngine>) -> Self {
        self.gpu = Some(gpu);
        self.gpu_absent = None;
        self
    }

    /// Routes by replaying `trace` (chunk `k` at virtual time `k * step_ms`)
    /// rather than by live readings.
    pub fn with_trace(mut self, trace: Trace, step_ms: u64) -> Self {
        self.settings.trace = Some((trace, step_ms));
        self
    }

    /// Routes by the readings of `source` (a monitor of the caller's own, or
    /// a scripted one in tests) rather than NVML's.
    pub fn with_pressure(mut self, source: Arc<dyn PressureSource>) -> Self {
        self.pressure = Some(source);
        self
    }

    /// Samples GPU memory live (NVML) for routing, keeping the samples for
    /// [`Pipeline::pressure`]'s `history` (what `--record-pressure` writes).
    pub fn with_live_pressure(mut self) -> Result<Self> {
        self.pressure = Some(crate::pressure::live(
            self.config.gpu_device,
            self.config.sample_interval_ms,
        )?);
        Ok(self)
    }

    /// Runs on timely's own arguments (`-w 2`, or a cluster's `-n 2 -p 0 -h hosts`).
    pub fn with_timely_args(mut self, args: Vec<String>) -> Self {
        self.settings.timely_args = args;
        self
    }

    /// Writes, per part, which engine decoded which byte range (CSV).
    pub fn with_placement_log(mut self, path: Option<PathBuf>) -> Self {
        self.settings.placement_log = path;
        self
    }

    /// Draws each run's switching timeline (SVG, see [`crate::timeline`]) to `path`.
    pub fn with_timeline(mut self, path: Option<PathBuf>) -> Self {
        self.settings.timeline = path;
        self
    }

    /// Reports the decoded bytes on `progress`.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.settings.progress = Some(progress);
        self
    }

    /// Calls `f` every `every`, on a thread of its own, with a snapshot of the
    /// run in progress (statistics with `--stats-json`'s keys, counters that
    /// only grow), and once with each run's final statistics; the calls stop
    /// when the pipeline drops. See [`Monitor::watch`] (an error only when
    /// no thread can be started).
    pub fn with_monitor(
        mut self,
        every: std::time::Duration,
        f: impl FnMut(&Snapshot) + Send + 'static,
    ) -> Result<Self> {
        self.watcher = Some(self.monitor.watch(every, f)?);
        Ok(self)
    }

    /// The monitor that follows this pipeline's runs (the latest one begun):
    /// snapshots from any thread, or a watcher of one's own.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The GPU, in words, when there is one.
    pub fn gpu_description(&self) -> Option<String> {
        self.gpu.as_ref().map(|g| g.describe())
    }

    /// What setting up the GPU had to say.
    pub fn setup_notes(&self) -> &[String] {
        &self.notes
    }

    /// The memory-pressure readings the pipeline routes by, when live.
    pub fn pressure(&self) -> Option<&Arc<dyn PressureSource>> {
        self.pressure.as_ref()
    }

    /// Sets the mode for the following runs.
    pub fn force_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    /// The mode the next run routes chunks under.
    pub fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode lock")
    }

    fn options(&self, target: Option<u32>) -> RunOptions {
        let mut o = RunOptions::new(self.mode(), self.config.clone());
        o.target_precision = target;
        o.gpu = self.gpu.clone();
        o.gpu_absent = self.gpu_absent.clone();
        o.pressure = self.pressure.clone();
        if let Some((trace, step)) = &self.settings.trace {
            o.trace = Some(trace.clone());
            o.replay_step_ms = *step;
        }
        o.timely_args = self.settings.timely_args.clone();
        o.placement_log = self.settings.placement_log.clone();
        o.timeline = self.settings.timeline.clone();
        o.progress = self.settings.progress.clone();
        o.monitor = Some(self.monitor.clone());
        o
    }

    /// Decodes every tensor of `container` into the safetensors file `path`
    /// (written under a temporary name, renamed when complete).
    pub fn decompress_to_file(
        &self,
        container: &Arc<Container>,
        path: &Path,
        target: Option<u32>,
    ) -> Result<Statistics> {
        let s = decompress_file(container.clone(), path, &self.options(target))?;
        self.remember(&s);
        Ok(s)
    }

    /// Decodes every container of `shards` into its safetensors file, all in
    /// one graph run (the workers stay busy across shard boundaries; chunks
    /// are numbered on across shards in the order given). Each file is
    /// written under a temporary name, and all are renamed once the run has
    /// succeeded.
    pub fn decompress_shards_to_files(
        &self,
        shards: &[(Arc<Container>, PathBuf)],
        target: Option<u32>,
    ) -> Result<ShardedRun> {
        let r = decompress_files(shards, &self.options(target))?;
        self.remember(&r.statistics);
        Ok(r)
    }

    /// This pipeline's place in a cluster: one process unless its timely
    /// arguments (`-n`, `-p`, `-h`) name several.
    pub fn cluster(&self) -> Result<Cluster> {
        cluster_of(&self.options(None))
    }

    /// Decodes every container of `files` into its file inside the
    /// directory `temp`, as one process of this pipeline's cluster, in one
    /// graph run; process 0 runs `complete` and renames `temp` to `target`
    /// once all is well (see [`decompress_files_in_cluster`]).
    pub fn decompress_shards_in_cluster(
        &self,
        files: Vec<(Arc<Container>, PathBuf)>,
        temp: &Path,
        target: &Path,
        complete: &dyn Fn() -> Result<()>,
        target_precision: Option<u32>,
    ) -> Result<ShardedRun> {
        let opts = self.options(target_precision);
        let r = decompress_files_in_cluster(files, temp, target, complete, &opts)?;
        self.remember(&r.statistics);
        Ok(r)
    }

    /// Decodes every container of `shards` into memory in one graph run:
    /// each one's safetensors data region (as [`Pipeline::decompress_model`]
    /// gives one), in the order given.
    pub fn decompress_models(
        &self,
        shards: &[Arc<Container>],
        target: Option<u32>,
    ) -> Result<(Vec<Vec<u8>>, RunInfo)> {
        let opts = self.options(target);
        let (models, r) = decompress_to_memory_all(shards, &opts)?;
        self.remember(&r.statistics);
        let info = RunInfo {
            shards: r.shards,
            ..RunInfo::of(opts.mode, &r.statistics)
        };
        Ok((models.into_iter().map(|m| m.data).collect(), info))
    }

    /// Decodes the tensors `tensors` ((shard, tensor) pairs) of `shards` in
    /// one graph run, with every worker: each shard's data region at full
    /// length, the listed tensors' bytes in place and only their pages
    /// touched ([`decompress_tensors`]). For a caller that reads a few
    /// tensors at a time (a layer) and hands the memory on without a copy;
    /// the cache is not used.
    pub fn decompress_selected(
        &self,
        shards: &[Arc<Container>],
        tensors: &[(usize, usize)],
        target: Option<u32>,
    ) -> Result<(Vec<Vec<u8>>, RunInfo)> {
        let opts = self.options(target);
        let (regions, s) = decompress_tensors(shards, tensors, &opts)?;
        self.remember(&s);
        Ok((regions, RunInfo::of(opts.mode, &s)))
    }

    fn remember(&self, s: &Statistics) {
        *self.last.lock().expect("stats lock") = Some(s.clone());
    }

    /// Decodes every tensor of `container`.
    pub fn decompress(
        &self,
        container: &Arc<Container>,
        target: Option<u32>,
    ) -> Result<(Vec<Tensor>, RunInfo)> {
        let (data, info) = self.decompress_model(container, target)?;
        let tensors = container
            .header()
            .tensors
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                data: Arc::new(
                    data[t.data_offset as usize..(t.data_offset + t.byte_len) as usize].to_vec(),
                ),
            })
            .collect();
        Ok((tensors, info))
    }

    /// Decodes every tensor of `container` into one buffer, the safetensors
    /// data region: tensor `t`'s bytes are at `t.data_offset..t.data_offset +
    /// t.byte_len`. For callers that hand the memory on without copying it
    /// (the Python bindings wrap each tensor as a view of the buffer);
    /// [`Pipeline::decompress`] copies tensor by tensor instead.
    pub fn decompress_model(
        &self,
        container: &Arc<Container>,
        target: Option<u32>,
    ) -> Result<(Vec<u8>, RunInfo)> {
        let opts = self.options(target);
        let (model, s) = decompress_to_memory(container.clone(), &opts)?;
        self.remember(&s);
        Ok((model.data, RunInfo::of(opts.mode, &s)))
    }

    /// Why this pipeline decodes without a GPU; `None` when it has one.
    pub fn gpu_absent(&self) -> Option<&str> {
        match &self.gpu {
            Some(_) => None,
            None => Some(self.gpu_absent.as_deref().unwrap_or("none was given")),
        }
    }

    /// Decodes one tensor (reading only its chunks), from the cache when it
    /// holds it. A tensor that shares its chunks with other small ones is cut
    /// from their decoded run ([`Pipeline::shared_run`]), and with the cache
    /// on the run's other tensors are cached too, so reading every tensor in
    /// turn (`safe_open`) decodes each run once.
    pub fn decompress_tensor(
        &self,
        container: &Arc<Container>,
        name: &str,
        target: Option<u32>,
    ) -> Result<Tensor> {
        let index = tensor_index(container, name)?;
        let h = container.header();
        let t = &h.tensors[index];
        let key = |k: usize| cache_key(container, &h.tensors[k].name, target);
        let tensor = |data| Tensor {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            data,
        };
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key(index))) {
            return Ok(tensor(hit));
        }
        let data = if h.shares_chunks(index) {
            let owner = h.chunk_owner(index);
            let run = self.shared_run(container, owner, target)?;
            let part = |k| Arc::new(crate::graph::run_part(h, owner, k, &run).to_vec());
            if let Some(cache) = &self.cache {
                for k in (owner..h.tensors.len()).take_while(|&k| h.chunk_owner(k) == owner) {
                    if k != index {
                        cache.put(key(k), part(k));
                    }
                }
            }
            part(index)
        } else {
            // Its chunks hold it alone: their run is the tensor.
            let owner = h.chunk_owner(index);
            let (data, s) = crate::graph::decompress_chunk_run(
                container.clone(),
                owner,
                &self.options(target),
            )?;
            self.remember(&s);
            Arc::new(data)
        };
        if let Some(cache) = &self.cache {
            cache.put(key(index), data.clone());
        }
        Ok(tensor(data))
    }

    /// The decoded run of small tensors that starts at tensor `owner`: the
    /// last one decoded is kept (at most a chunk's bytes), so that with the
    /// cache off its tensors read one by one decode it once.
    fn shared_run(
        &self,
        container: &Arc<Container>,
        owner: usize,
        target: Option<u32>,
    ) -> Result<Arc<Vec<u8>>> {
        let run_key = (container.read_identity(), owner, target);
        if let Some((k, run)) = self
            .last_shared_run
            .lock()
            .expect("shared run lock")
            .as_ref()
        {
            if *k == run_key {
                return Ok(run.clone());
            }
        }
        let (run, s) =
            crate::graph::decompress_chunk_run(container.clone(), owner, &self.options(target))?;
        self.remember(&s);
        let run = Arc::new(run);
        *self.last_shared_run.lock().expect("shared run lock") = Some((run_key, run.clone()));
        Ok(run)
    }

    /// The bytes `bytes` (offsets within the tensor) of tensor `name`: only
    /// the chunks that hold them are decoded, or they are copied from the
    /// cache when it holds the whole tensor. A part is not cached; an empty
    /// one decodes nothing.
    pub fn decompress_tensor_bytes(
        &self,
        container: &Arc<Container>,
        name: &str,
        bytes: std::ops::Range<u64>,
        target: Option<u32>,
    ) -> Result<Vec<u8>> {
        let index = tensor_index(container, name)?;
        let len = container.header().tensors[index].byte_len;
        if bytes.start == bytes.end && bytes.end <= len {
            return Ok(Vec::new());
        }
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.get(&cache_key(container, name, target)) {
                let part = usize::try_from(bytes.start)
                    .ok()
                    .zip(usize::try_from(bytes.end).ok())
                    .and_then(|(a, b)| hit.get(a..b));
                if let Some(part) = part {
                    return Ok(part.to_vec());
                }
            }
        }
        let (data, s) = crate::graph::decompress_tensor_bytes(
            container.clone(),
            index,
            bytes,
            &self.options(target),
        )?;
        self.remember(&s);
        Ok(data)
    }

    /// The statistics of the run in progress (safe to call from another
    /// thread while it goes), else of the last run, with the cache's running
    /// counts; `None` before the first run.
    pub fn statistics(&self) -> Option<Statistics> {
        // The monitor holds the latest run (live or ended); `last`, the
        // latest that succeeded.
        let mut s = match self.monitor.statistics() {
            Some(s) => s,
            None => self.last.lock().expect("stats lock").clone()?,
        };
        if let Some(c) = &self.cache {
            (s.cache_hits, s.cache_misses) = c.counts();
        }
        // The mode is the pipeline's now (force_mode may have changed it
        // since the run), and the engine follows it: none in GPU_ONLY and
        // CPU_ONLY; in AUTO and HYBRID the run's, or where the next run
        // starts when the last had none.
        let mode = self.mode();
        s.current_mode = mode.name().to_string();
        s.current_engine = match mode {
            Mode::Auto | Mode::Hybrid => s
                .current_engine
                .or_else(|| Some(if self.gpu.is_some() { "gpu" } else { "cpu" }.to_string())),
            Mode::GpuOnly | Mode::CpuOnly => None,
        };
        Some(s)
    }
}

/// The index of tensor `name` in `container`, or an error naming both.
fn tensor_index(container: &Container, name: &str) -> Result<usize> {
    container.tensor_named(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no tensor named '{name}'",
            container.path().display()
        ))
    })
}

/// The cache's key for tensor `name` of `container` decoded to `target` digits.
fn cache_key(container: &Container, name: &str, target: Option<u32>) -> crate::cache::CacheKey {
    crate::cache::CacheKey {
        container: container.read_identity(),
        tensor: name.to_string(),
        target,
    }
}
