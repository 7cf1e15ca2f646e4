//! The Rust layer of the `padic_burst` Python package: a thin wrapper of the
//! library's public API. Tensors leave as DLPack capsules over memory Rust
//! owns (`dlpack.rs`), so NumPy and PyTorch wrap them without a copy; the
//! framework modules (`padic_burst/numpy.py`, `torch.py`) only turn them into
//! arrays. Every decode runs with the GIL released and behind
//! `catch_unwind`: bad input is a `PadicError`, never a Rust panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use padic_burst::compress::{compress_file as compress_one, CompressOptions};
use padic_burst::config::{Config, ConfigLayer};
use padic_burst::format::Container;
use padic_burst::pipeline::{Pipeline as Inner, Residence, Values};
use padic_burst::policy::Mode;
use padic_burst::progress::Progress;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod dlpack;
use dlpack::{DlTensor, HostStorage};

pyo3::create_exception!(
    _padic_burst,
    PadicError,
    PyValueError,
    "Bad input: a file that is not what it claims, a damaged container, a bad argument. The message names the file, and the tensor, chunk and byte offset where they apply."
);

/// The library's error as a Python exception: the disk's errors as `OSError`
/// (`FileNotFoundError` for a missing file), everything else as `PadicError`.
/// An error the system gave comes as Python's own do, with `errno`,
/// `strerror` and `filename` (and `OSError` picks its subclass from the
/// errno: `PermissionError`, `FileNotFoundError`, ...).
fn to_py(e: padic_burst::Error) -> PyErr {
    match &e {
        padic_burst::Error::Io { path, source } => match source.raw_os_error() {
            Some(code) => {
                let text = source.to_string();
                let strerror = text
                    .strip_suffix(&format!(" (os error {code})"))
                    .unwrap_or(&text)
                    .to_string();
                PyOSError::new_err((code, strerror, path.display().to_string()))
            }
            None if source.kind() == std::io::ErrorKind::NotFound => {
                PyFileNotFoundError::new_err(e.to_string())
            }
            None => PyOSError::new_err(e.to_string()),
        },
        _ => PadicError::new_err(e.to_string()),
    }
}

/// Runs `work` without the GIL; a panic becomes a `PadicError` naming `what`.
fn unlocked<T: Send>(
    py: Python<'_>,
    what: &str,
    work: impl FnOnce() -> padic_burst::Result<T> + Send,
) -> PyResult<T> {
    let outcome = py.allow_threads(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    match outcome {
        Ok(result) => result.map_err(to_py),
        Err(panic) => {
            let why = padic_burst::error::panic_message(panic.as_ref());
            Err(PadicError::new_err(format!(
                "{what}: internal error (please report it): {why}"
            )))
        }
    }
}

/// The compression options `compress_file` and `compress_bytes` take.
fn options(prime: u32, precision: Option<u32>, lossy: bool, chunk_kib: u32) -> CompressOptions {
    CompressOptions {
        prime,
        precision,
        lossy,
        chunk_kib,
        ..CompressOptions::default()
    }
}

/// Compresses a safetensors file, or every shard of a model directory (or its
/// `*.safetensors.index.json`), copying the directory's other files.
#[pyfunction]
#[pyo3(signature = (src, dst, *, prime=2, precision=None, lossy=false, chunk_kib=1024))]
fn compress_file(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    prime: u32,
    precision: Option<u32>,
    lossy: bool,
    chunk_kib: u32,
) -> PyResult<Py<PyDict>> {
    let opts = options(prime, precision, lossy, chunk_kib);
    let what = format!("compressing {}", src.display());
    let (summary, shards) = unlocked(py, &what, || {
        let quiet = Progress::new(false);
        if padic_burst::checkpoint::is_checkpoint(&src) {
            let r = padic_burst::checkpoint::compress_dir(&src, &dst, &opts, &quiet)?;
            Ok((r.total(), Some(r.shards.len())))
        } else {
            Ok((compress_one(&src, &dst, &opts, &quiet)?, None))
        }
    })?;
    summary_dict(py, &summary, shards)
}

/// Compresses a safetensors file held in memory (`data`, as
/// `safetensors.torch.save` returns it) into the container `dst`.
#[pyfunction]
#[pyo3(signature = (data, dst, *, prime=2, precision=None, lossy=false, chunk_kib=1024))]
fn compress_bytes(
    py: Python<'_>,
    data: &[u8],
    dst: PathBuf,
    prime: u32,
    precision: Option<u32>,
    lossy: bool,
    chunk_kib: u32,
) -> PyResult<Py<PyDict>> {
    let opts = options(prime, precision, lossy, chunk_kib);
    let what = format!("compressing into {}", dst.display());
    let summary = unlocked(py, &what, || {
        padic_burst::compress::compress_bytes(
            Path::new("(tensors given)"),
            data,
            &dst,
            &opts,
            &Progress::new(false),
        )
    })?;
    summary_dict(py, &summary, None)
}

/// What `compress_file` and `compress_bytes` return.
fn summary_dict(
    py: Python<'_>,
    summary: &padic_burst::compress::CompressSummary,
    shards: Option<usize>,
) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("tensors", summary.tensors)?;
    d.set_item("chunks", summary.chunks)?;
    d.set_item("original_bytes", summary.original_bytes)?;
    d.set_item("compressed_bytes", summary.compressed_bytes)?;
    d.set_item("shards", shards)?;
    Ok(d.unbind())
}

/// One loaded tensor: `(name, dtype, shape, capsule holder)`.
type Loaded = (String, String, Vec<u64>, DlTensor);

/// What a load opened: a `.padic` file, or the shards of a packed model.
struct OpenedModel {
    containers: Vec<Arc<Container>>,
    /// Each shard's path relative to the packed directory; `None` for a file.
    shards: Option<Vec<PathBuf>>,
}

/// The containers of a `.padic` file, or of a packed model (the shards its
/// index names; see `checkpoint::open_model`), in index order.
fn open_all(path: &Path) -> padic_burst::Result<OpenedModel> {
    if padic_burst::checkpoint::is_checkpoint(path) {
        let (shards, containers) = padic_burst::checkpoint::open_model(path)?
            .into_iter()
            .unzip();
        Ok(OpenedModel {
            containers,
            shards: Some(shards),
        })
    } else {
        Ok(OpenedModel {
            containers: vec![Arc::new(Container::open(path)?)],
            shards: None,
        })
    }
}

/// The row of host tensor `t` of container `c`: a view of its bytes in
/// `storage`, the decoded data region they lie in.
fn host_row(
    storage: &Arc<HostStorage>,
    c: &Container,
    t: &padic_burst::format::TensorEntry,
    exact: bool,
) -> PyResult<Loaded> {
    let tensor = DlTensor::host(
        storage.clone(),
        t.data_offset as usize,
        t.byte_len as usize,
        &t.shape,
        &t.dtype,
        exact,
    )
    .map_err(|e| PadicError::new_err(format!("{}: {e}", c.path().display())))?;
    Ok((t.name.clone(), t.dtype.clone(), t.shape.clone(), tensor))
}

/// Where tensors go: host memory, or GPU `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Cpu,
    Cuda(u32),
}

/// A host tensor that owns `bytes` (a tensor, or a part of one, of `shape`).
fn owned_tensor(
    bytes: Vec<u8>,
    shape: &[u64],
    dtype: &str,
    exact: bool,
    what: &str,
) -> PyResult<DlTensor> {
    let len = bytes.len();
    DlTensor::host(
        Arc::new(HostStorage::new(bytes)),
        0,
        len,
        shape,
        dtype,
        exact,
    )
    .map_err(|e| PadicError::new_err(format!("{what}: {e}")))
}

fn parse_device(device: &str) -> PyResult<Device> {
    match device {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        d => d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                PadicError::new_err(format!(
                    "device {d:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""
                ))
            }),
    }
}

/// The decode pipeline: a mode that can be forced, an LRU cache of tensors
/// (`get_tensor`), and the last load's statistics. Safe to share between
/// threads.
#[pyclass(frozen, module = "padic_burst._padic_burst")]
struct Pipeline {
    inner: Inner,
    gpu_device: u32,
    /// The last load's statistics as JSON.
    last: Mutex<Option<serde_json::Value>>,
    /// The load in progress, for `statistics()` polled while it goes.
    loading: Mutex<Option<Loading>>,
}

/// A load in progress: where its graph run begins in the monitor's count.
struct Loading {
    /// The monitor's runs numbered above this one are the load's.
    after_run: u64,
}

impl Pipeline {
    fn record(&self, statistics: serde_json::Value) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(statistics);
    }

    /// A load begins: its graph run is the monitor's next one.
    fn begin_load(&self) {
        let after_run = self.inner.monitor().snapshot().map_or(0, |s| s.run);
        *self.loading.lock().unwrap_or_else(|p| p.into_inner()) = Some(Loading { after_run });
    }

    /// The statistics of the load in progress: its graph run's so far;
    /// `None` without a load in progress, or before its run starts.
    fn load_so_far(&self) -> Option<serde_json::Value> {
        let after_run = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .after_run;
        let now = self.inner.monitor().snapshot()?;
        (now.run > after_run)
            .then(|| serde_json::to_value(&now.statistics).ok())
            .flatten()
    }

    fn run_statistics(&self) -> Option<serde_json::Value> {
        self.inner
            .statistics()
            .and_then(|s| serde_json::to_value(s).ok())
    }

    fn load_host(
        &self,
        py: Python<'_>,
        containers: &[Arc<Container>],
        shards: Option<&[PathBuf]>,
        target: Option<u32>,
        exact: bool,
    ) -> PyResult<Vec<Loaded>> {
        // Every shard in one graph run: the workers stay busy across shards.
        let what = match containers {
            [c] => format!("loading {}", c.path().display()),
            _ => format!("loading {} shards", containers.len()),
        };
        let (regions, info) = unlocked(py, &what, || {
            self.inner.decompress_models(containers, target)
        })?;
        let mut out = Vec::new();
        for (c, data) in containers.iter().zip(regions) {
            let storage = Arc::new(HostStorage::new(data));
            for t in &c.header().tensors {
                out.push(host_row(&storage, c, t, exact)?);
            }
        }
        if let Some(mut run) = self.run_statistics() {
            // A packed directory's load: each shard's share, as the command
            // line's --stats-json gives it.
            if let (Some(names), Some(o)) = (shards, run.as_object_mut()) {
                let listed: Vec<serde_json::Value> = names
                    .iter()
                    .zip(&info.shards)
                    .map(|(shard, figures)| {
                        let mut v = serde_json::to_value(figures).unwrap_or_default();
                        if let Some(m) = v.as_object_mut() {
                            m.insert("shard".into(), shard.display().to_string().into());
                        }
                        v
                    })
                    .collect();
                o.insert("shards".into(), listed.into());
            }
            self.record(run);
        }
        Ok(out)
    }

    fn load_device(
        &self,
        py: Python<'_>,
        containers: &[Arc<Container>],
        target: Option<u32>,
        device: u32,
    ) -> PyResult<Vec<Loaded>> {
        if device != self.gpu_device {
            return Err(PadicError::new_err(format!(
                "device cuda:{device}: this pipeline decodes on GPU {} (config gpu_device)",
                self.gpu_device
            )));
        }
        if let Some(why) = self.inner.gpu_absent() {
            return Err(PadicError::new_err(format!(
                "device \"cuda:{device}\": no GPU to decode on: {why}"
            )));
        }
        // Every shard in one load: one policy decides them all, and every
        // tensor that goes to host memory decodes in one graph run.
        let what = match containers {
            [c] => format!("loading {} onto cuda:{device}", c.path().display()),
            _ => format!("loading {} shards onto cuda:{device}", containers.len()),
        };
        let (shards, info) = unlocked(py, &what, || {
            self.inner
                .load_shards(containers, target, |_| Residence::Device)
        })?;
        // The statistics of the load's graph run, when it made one (host
        // memory); the load's own counts on top.
        let mut run = self.load_so_far().unwrap_or_else(|| serde_json::json!({}));
        if let Some(o) = run.as_object_mut() {
            o.insert("device_tensors".into(), info.device_tensors.into());
            o.insert("host_tensors".into(), info.host_tensors.into());
            o.insert("fallbacks".into(), info.fallbacks.into());
            o.insert(
                "memory_pressure_events".into(),
                info.memory_pressure_events.into(),
            );
        }
        // A shard's host tensors share its decoded region: taken apart
        // first, so the region is then owned once and wrapped as one
        // storage, not copied.
        enum Place {
            Device(Arc<dyn padic_burst::engine::gpu::DeviceBuffer>),
            /// Region `k`, bytes `range` of it.
            Host(usize, std::ops::Range<usize>),
        }
        let mut parts = Vec::new();
        let mut regions: Vec<Arc<Vec<u8>>> = Vec::new();
        for (c, tensors) in containers.iter().zip(shards) {
            for t in tensors {
                let values = match t.values {
                    Values::Device(buf) => Place::Device(buf),
                    Values::Host(bytes) => {
                        let (region, range) = bytes.into_parts();
                        let k = match regions.iter().position(|r| Arc::ptr_eq(r, &region)) {
                            Some(k) => k,
                            None => {
                                regions.push(region);
                                regions.len() - 1
                            }
                        };
                        Place::Host(k, range)
                    }
                };
                parts.push((c, t.name, t.dtype, t.shape, values));
            }
        }
        let storages: Vec<Arc<HostStorage>> = regions
            .into_iter()
            .map(|r| Arc::new(HostStorage::new(Arc::unwrap_or_clone(r))))
            .collect();
        let mut out = Vec::new();
        for (c, name, dtype, shape, values) in parts {
            let dl = match values {
                Place::Device(buf) => DlTensor::device(buf, device, &shape, &dtype),
                Place::Host(k, range) => DlTensor::host(
                    storages[k].clone(),
                    range.start,
                    range.len(),
                    &shape,
                    &dtype,
                    true,
                ),
            }
            .map_err(|e| {
                PadicError::new_err(format!("{}: tensor '{name}': {e}", c.path().display()))
            })?;
            out.push((name, dtype, shape, dl));
        }
        self.record(run);
        Ok(out)
    }
}

#[pymethods]
impl Pipeline {
    /// `config_json`: a JSON object of configuration keys (the TOML file's);
    /// `config_path`: a TOML file. Layered as the command line layers them:
    /// defaults < file < `SARAPHIS_*` environment < these arguments.
    #[new]
    #[pyo3(signature = (config_json=None, config_path=None, workers=None, gpu_device=None))]
    fn new(
        config_json: Option<&str>,
        config_path: Option<PathBuf>,
        workers: Option<i64>,
        gpu_device: Option<i64>,
    ) -> PyResult<Self> {
        let mut layer: ConfigLayer = match config_json {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| PadicError::new_err(format!("invalid argument: config: {e}")))?,
            None => ConfigLayer::default(),
        };
        if workers == Some(0) {
            return Err(PadicError::new_err(
                "invalid argument: workers=0: at least one worker is needed",
            ));
        }
        layer.num_cpu_workers = workers.or(layer.num_cpu_workers);
        layer.gpu_device = gpu_device.or(layer.gpu_device);
        let config = Config::load(config_path.as_deref(), layer).map_err(to_py)?;
        let gpu_device = config.gpu_device;
        let inner = std::panic::catch_unwind(|| Inner::new(config))
            .map_err(|_| PadicError::new_err("starting the pipeline: internal error"))?;
        Ok(Pipeline {
            inner,
            gpu_device,
            last: Mutex::new(None),
            loading: Mutex::new(None),
        })
    }

    /// Sets the mode of the following loads: auto, gpu-only, cpu-only or hybrid.
    fn force_mode(&self, mode: &str) -> PyResult<()> {
        let m: Mode = mode
            .parse()
            .map_err(|e: String| PadicError::new_err(format!("invalid argument: {e}")))?;
        self.inner.force_mode(m);
        Ok(())
    }

    /// The current mode's name.
    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode().name()
    }

    /// Why this pipeline has no GPU, or `None` when it has one.
    #[getter]
    fn gpu_absent(&self) -> Option<String> {
        self.inner.gpu_absent().map(str::to_string)
    }

    /// The statistics as JSON (the `--stats-json` keys) of the load in
    /// progress (safe to poll from another thread while it goes: its
    /// counters only grow), else of the last load, with the cache's counts and
    /// the current mode; `None` before the first load.
    fn statistics_json(&self) -> Option<String> {
        let mut s = match self.load_so_far() {
            Some(now) => now,
            None => self
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()?,
        };
        if let (Some(o), Some(now)) = (s.as_object_mut(), self.inner.statistics()) {
            o.insert("cache_hits".into(), now.cache_hits.into());
            o.insert("cache_misses".into(), now.cache_misses.into());
            o.insert("current_mode".into(), now.current_mode.into());
            o.insert("current_engine".into(), now.current_engine.into());
        }
        Some(s.to_string())
    }

    /// Every tensor of a `.padic` file or a packed directory: `(name, dtype,
    /// shape, capsule holder)` in file order. `exact`: DLPack types as the
    /// dtype says (PyTorch); else unsigned integers of the dtype's width, for
    /// the caller to view (NumPy, which has no bfloat16).
    #[pyo3(signature = (path, device="cpu", target_precision=None, exact=true))]
    fn load(
        &self,
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        target_precision: Option<u32>,
        exact: bool,
    ) -> PyResult<Vec<Loaded>> {
        let device = parse_device(device)?;
        let started = std::time::Instant::now();
        let what = format!("opening {}", path.display());
        let opened = unlocked(py, &what, || open_all(&path))?;
        let containers = &opened.containers;
        self.begin_load();
        let loaded = match device {
            Device::Cpu => self.load_host(
                py,
                containers,
                opened.shards.as_deref(),
                target_precision,
                exact,
            ),
            Device::Cuda(n) => self.load_device(py, containers, target_precision, n),
        };
        if loaded.is_ok() && opened.shards.is_some() {
            // As --stats-json of a packed directory: the whole load's time.
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(o) = last.as_mut().and_then(|v| v.as_object_mut()) {
                o.insert(
                    "checkpoint_wall_time_s".into(),
                    started.elapsed().as_secs_f64().into(),
                );
            }
        }
        // The load is over: `last` has its statistics (or, when it failed,
        // still the previous load's).
        *self.loading.lock().unwrap_or_else(|p| p.into_inner()) = None;
        loaded
    }

    /// Opens a `.padic` file or a packed directory for `safe_open`.
    fn open(&self, py: Python<'_>, path: PathBuf) -> PyResult<Opened> {
        let what = format!("opening {}", path.display());
        let containers = unlocked(py, &what, || open_all(&path))?.containers;
        let mut index = HashMap::new();
        let mut names = Vec::new();
        let mut metadata: Option<HashMap<String, String>> = None;
        for (ci, c) in containers.iter().enumerate() {
            for t in &c.header().tensors {
                names.push(t.name.clone());
                index.insert(t.name.clone(), ci);
            }
            if let Some(m) = source_metadata(c) {
                metadata.get_or_insert_with(HashMap::new).extend(m);
            }
        }
        Ok(Opened {
            path,
            containers,
            index,
            names,
            metadata,
        })
    }
}

/// The safetensors header's `__metadata__`, as strings.
fn source_metadata(c: &Container) -> Option<HashMap<String, String>> {
    let header: serde_json::Value = serde_json::from_str(&c.header().source_header).ok()?;
    let m = header.get("__metadata__")?.as_object()?;
    Some(
        m.iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.clone(), v)
            })
            .collect(),
    )
}

/// An opened file or packed directory: tensors decoded one at a time.
#[pyclass(frozen, module = "padic_burst._padic_burst")]
struct Opened {
    path: PathBuf,
    containers: Vec<Arc<Container>>,
    /// Tensor name -> its container.
    index: HashMap<String, usize>,
    names: Vec<String>,
    metadata: Option<HashMap<String, String>>,
}

impl Opened {
    /// (container, tensor) of `name`, or an error naming the file.
    fn locate(&self, name: &str) -> PyResult<(usize, usize)> {
        self.index
            .get(name)
            .and_then(|&ci| self.containers[ci].tensor_named(name).map(|ti| (ci, ti)))
            .ok_or_else(|| {
                PadicError::new_err(format!("{}: no tensor named '{name}'", self.path.display()))
            })
    }
}

#[pymethods]
impl Opened {
    /// Tensor names, in file order (shard by shard).
    fn offset_keys(&self) -> Vec<String> {
        self.names.clone()
    }

    /// `(dtype, shape)` of one tensor, from the header: nothing is decoded.
    fn info(&self, name: &str) -> PyResult<(String, Vec<u64>)> {
        let (ci, ti) = self.locate(name)?;
        let t = &self.containers[ci].header().tensors[ti];
        Ok((t.dtype.clone(), t.shape.clone()))
    }

    /// The safetensors `__metadata__` (all shards'), or `None`.
    fn metadata(&self) -> Option<HashMap<String, String>> {
        self.metadata.clone()
    }

    /// `(name, dtype, shape, capsule holder)` of each tensor of `names`,
    /// decoded together in one graph run (only their chunks are read); the
    /// tensors of a shard are views of one region, without a copy. The
    /// cache is not used.
    #[pyo3(signature = (pipeline, names, target_precision=None, exact=true))]
    fn get_tensors(
        &self,
        py: Python<'_>,
        pipeline: &Pipeline,
        names: Vec<String>,
        target_precision: Option<u32>,
        exact: bool,
    ) -> PyResult<Vec<Loaded>> {
        let wanted = names
            .iter()
            .map(|name| self.locate(name))
            .collect::<PyResult<Vec<_>>>()?;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let what = format!("{}: {} tensors", self.path.display(), wanted.len());
        let regions = unlocked(py, &what, || {
            Ok(pipeline
                .inner
                .decompress_selected(&self.containers, &wanted, target_precision)?
                .0)
        })?;
        if let Some(run) = pipeline.run_statistics() {
            pipeline.record(run);
        }
        let mut storages: Vec<Option<Arc<HostStorage>>> = vec![None; regions.len()];
        let mut regions: Vec<Option<Vec<u8>>> = regions.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(wanted.len());
        for &(ci, ti) in &wanted {
            let storage = storages[ci].get_or_insert_with(|| {
                Arc::new(HostStorage::new(regions[ci].take().unwrap_or_default()))
            });
            let c = &self.containers[ci];
            out.push(host_row(storage, c, &c.header().tensors[ti], exact)?);
        }
        Ok(out)
    }

    /// `(dtype, shape, capsule holder)` of rows `first..last` of one tensor
    /// (along its first dimension): only the chunks that hold them are
    /// decoded (or they are copied from `pipeline`'s cache).
    #[pyo3(signature = (pipeline, name, first, last, target_precision=None, exact=true))]
    #[allow(clippy::too_many_arguments)]
    fn get_rows(
        &self,
        py: Python<'_>,
        pipeline: &Pipeline,
        name: &str,
        first: u64,
        last: u64,
        target_precision: Option<u32>,
        exact: bool,
    ) -> PyResult<(String, Vec<u64>, DlTensor)> {
        let (ci, ti) = self.locate(name)?;
        let c = &self.containers[ci];
        let t = &c.header().tensors[ti];
        let what = format!("{}: tensor '{name}'", c.path().display());
        let rows = t.shape.first().copied().unwrap_or(0);
        if rows == 0 || t.byte_len % rows != 0 || first > last || last > rows {
            return Err(PadicError::new_err(format!(
                "{what}: rows {first}..{last} of shape {:?}",
                t.shape
            )));
        }
        let row = t.byte_len / rows;
        let bytes = unlocked(py, &what, || {
            pipeline.inner.decompress_tensor_bytes(
                c,
                name,
                first * row..last * row,
                target_precision,
            )
        })?;
        if let Some(run) = pipeline.run_statistics() {
            pipeline.record(run);
        }
        let mut shape = t.shape.clone();
        shape[0] = last - first;
        let dl = owned_tensor(bytes, &shape, &t.dtype, exact, &what)?;
        Ok((t.dtype.clone(), shape, dl))
    }

    /// `(dtype, shape, capsule holder)` of one tensor: only its chunks are
    /// decoded, through `pipeline`'s LRU cache.
    #[pyo3(signature = (pipeline, name, target_precision=None, exact=true))]
    fn get_tensor(
        &self,
        py: Python<'_>,
        pipeline: &Pipeline,
        name: &str,
        target_precision: Option<u32>,
        exact: bool,
    ) -> PyResult<(String, Vec<u64>, DlTensor)> {
        let (ci, _) = self.locate(name)?;
        let c = &self.containers[ci];
        let what = format!("{}: tensor '{name}'", c.path().display());
        let (t, bytes) = unlocked(py, &what, || {
            let mut t = pipeline
                .inner
                .decompress_tensor(c, name, target_precision)?;
            // The cache keeps its copy immutable; the caller gets its own
            // (copied here, with the GIL released).
            let data = std::mem::take(&mut t.data);
            let bytes = Arc::try_unwrap(data).unwrap_or_else(|shared| shared.to_vec());
            Ok((t, bytes))
        })?;
        if let Some(run) = pipeline.run_statistics() {
            pipeline.record(run);
        }
        let dl = owned_tensor(bytes, &t.shape, &t.dtype, exact, &what)?;
        Ok((t.dtype, t.shape, dl))
    }
}

/// The environment's misspelt configuration variables, each with the one it
/// most likely stands for (`config::misspelt_variables`).
#[pyfunction]
fn misspelt_variables() -> Vec<(String, &'static str)> {
    padic_burst::config::misspelt_env_variables()
}

/// The `padic_burst._padic_burst` module.
#[pymodule]
fn _padic_burst(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PadicError", m.py().get_type::<PadicError>())?;
    m.add_function(wrap_pyfunction!(compress_file, m)?)?;
    m.add_function(wrap_pyfunction!(compress_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(misspelt_variables, m)?)?;
    m.add_class::<Pipeline>()?;
    m.add_class::<Opened>()?;
    m.add_class::<DlTensor>()?;
    m.add("CUDA_BUILD", cfg!(feature = "cuda"))?;
    // The package's version, which maturin takes from this crate's.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
