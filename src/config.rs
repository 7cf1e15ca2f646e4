//! Configuration: every field of the design's `CPUBurstingConfig`, plus the
//! pipeline's own, in layers: defaults < TOML file (`--config`) < environment
//! (`SARAPHIS_*`) < flags, validated once into a [`Config`] that cannot be
//! invalid.
//!
//! | variable | field | form |
//! |---|---|---|
//! | `SARAPHIS_CPU_WORKERS` | `num_cpu_workers` | integer, -1 = all cores |
//! | `SARAPHIS_GPU_THRESHOLD_MB` | `gpu_memory_threshold_mb` | number > 0 |
//! | `SARAPHIS_MEMORY_PRESSURE` | `memory_pressure_threshold` | number in (0, 1] |
//! | `SARAPHIS_ENABLE_CPU_CACHE` | `enable_caching` | 1/0, true/false, yes/no, on/off |
//!
//! Two fields mean something narrower than their names: `exponent_bits` is a
//! check, never a truncation (see `exponent`), and the command line refuses
//! the tensor cache it would never use (see `command_line`).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::policy::PolicySettings;

/// The settings as read from a file, the environment or flags: any field may
/// be missing, and nothing is checked yet.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Free GPU memory (MB) below which AUTO switches to the CPU; unset: 100.
    pub gpu_memory_threshold_mb: Option<f64>,
    /// GPU utilization (0..1) above which AUTO switches to the CPU; unset: 0.9.
    pub memory_pressure_threshold: Option<f64>,
    /// CPU decode threads; -1 (the default) means one per core.
    pub num_cpu_workers: Option<i64>,
    /// Chunks a CPU worker takes at a time; unset: 1, at most [`MAX_CPU_BATCH_SIZE`].
    pub cpu_batch_size: Option<i64>,
    /// Accepted for the design's configs; a run refuses `true` (start a cluster with timely's `-n`, `-p`, `-h` instead). Unset: false.
    pub use_multiprocessing: Option<bool>,
    /// Cores to pin CPU workers to, in order; unset: no pinning.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Record per-stage latency histograms; unset: false.
    pub enable_profiling: Option<bool>,
    /// Keep decoded tensors in the library's LRU cache; unset: true.
    pub enable_caching: Option<bool>,
    /// Size of the tensor cache in MB; unset: 1024.
    pub cache_size_mb: Option<f64>,
    /// Chunks read ahead per chunk a worker decodes; unset: 2, at most [`MAX_PREFETCH_FACTOR`].
    pub prefetch_factor: Option<i64>,
    /// Decode only `mantissa_bits` leading digits of each fraction; unset: false.
    pub progressive_precision: Option<bool>,
    /// Digits kept under `progressive_precision`, in 1..=23; unset: 23.
    pub mantissa_bits: Option<i64>,
    /// The exponent width, in 1..=8, a run requires of the float tensors it
    /// decodes (exponents are always decoded whole); unset: any.
    pub exponent_bits: Option<i64>,
    /// Least time between two AUTO switches, in ms (not negative); unset: 50.
    pub switch_delay_ms: Option<i64>,
    /// How far (0..1) utilization must fall below the threshold before AUTO goes back to the GPU; unset: 0.1.
    pub hysteresis_factor: Option<f64>,
    /// NVML sampling period in ms; unset: 100.
    pub sample_interval_ms: Option<i64>,
    /// HYBRID's GPU share (0..1) until both engines have been measured; unset: 0.5.
    pub hybrid_initial_gpu_fraction: Option<f64>,
    /// CUDA device index to decode on; unset: 0.
    pub gpu_device: Option<i64>,
    /// Chunks handed to the GPU engine at once; unset: 64.
    pub gpu_batch_chunks: Option<i64>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Switch to the CPU when the GPU's free memory falls below this (MB).
    pub gpu_memory_threshold_mb: f64,
    /// Switch to the CPU when GPU utilization rises above this.
    pub memory_pressure_threshold: f64,
    /// CPU decode threads (resolved: -1 became the core count).
    pub num_cpu_workers: usize,
    /// Chunks a CPU worker takes at a time.
    pub cpu_batch_size: usize,
    /// Accepted for the design's configs; a run refuses `true` (start a cluster
    /// with timely's `-n`, `-p`, `-h` instead).
    pub use_multiprocessing: bool,
    /// Cores to pin CPU workers to, in order.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Record per-stage latency histograms.
    pub enable_profiling: bool,
    /// Keep decoded tensors in an LRU cache (library API).
    pub enable_caching: bool,
    /// Size of the tensor cache in MB (0 only with caching off).
    pub cache_size_mb: f64,
    /// Chunks in flight per worker.
    pub prefetch_factor: usize,
    /// Decode only `mantissa_bits` leading digits of each fraction.
    pub progressive_precision: bool,
    /// Digits kept under `progressive_precision`, in 1..=23.
    pub mantissa_bits: u32,
    /// The exponent width, in 1..=8, a run requires of the float tensors it
    /// decodes (see [`Config::check_exponent_bits`]); `None`: any.
    pub exponent_bits: Option<u32>,
    /// Least time between two AUTO switches, in ms (the first switch is free).
    pub switch_delay_ms: u64,
    /// How far (0..1) utilization must fall below `memory_pressure_threshold` before AUTO goes back to the GPU.
    pub hysteresis_factor: f64,
    /// NVML sampling period.
    pub sample_interval_ms: u64,
    /// HYBRID's GPU share (0..1) until both engines have been measured.
    pub hybrid_initial_gpu_fraction: f64,
    /// CUDA device index to decode on.
    pub gpu_device: u32,
    /// Chunks the workers hand the GPU engine at once, between them, when a
    /// GPU takes work (a call a worker): a GPU needs many chunks in flight.
    pub gpu_batch_chunks: usize,
}

impl Default for Config {
    fn default() -> Self {
        ConfigLayer::default()
            .resolve()
            .expect("the defaults are valid")
    }
}

/// Decode workers a process may run per core: more only adds threads that
/// wait, each with its own buffers (100,000 workers once grew one process to
/// 23.7 GB). See [`max_workers`].
pub const MAX_WORKERS_PER_CORE: usize = 8;

/// The most chunks a CPU worker takes at a time (`cpu_batch_size`): each one
/// is about one chunk's output (1 MiB by default) held in flight per worker.
pub const MAX_CPU_BATCH_SIZE: usize = 64;

/// The most chunks a worker reads ahead per chunk it decodes
/// (`prefetch_factor`), at about one chunk's output each.
pub const MAX_PREFETCH_FACTOR: usize = 16;

/// The cores this process may run on (its CPU affinity and cgroup quota,
/// as `std::thread::available_parallelism` finds them; 1 when unknown),
/// found once a process: std reads the cgroup files at every call, and a
/// run asked four times (a `safe_open` load, one run a tensor, paid it at
/// every tensor).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The most decode workers one process may run:
/// [`MAX_WORKERS_PER_CORE`] times the machine's cores.
pub fn max_workers() -> usize {
    MAX_WORKERS_PER_CORE * cores()
}

fn invalid(field: &str, value: impl std::fmt::Display, allowed: &str) -> Error {
    Error::InvalidArgument(format!("{field} = {value}: {allowed}"))
}

/// A count of chunks in flight per worker (`field` = `value`), in 1..=`most`.
fn in_flight(field: &str, value: i64, most: usize) -> Result<i64> {
    if (1..=most as i64).contains(&value) {
        return Ok(value);
    }
    Err(invalid(
        field,
        value,
        &format!(
            "must lie in 1..={most} (each unit keeps about one chunk, 1 MiB by default, \
             in flight per worker)"
        ),
    ))
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl ConfigLayer {
    /// `other` over `self`: each field `other` sets wins.
    pub fn over(self, other: ConfigLayer) -> ConfigLayer {
        macro_rules! pick {
            ($($f:ident),*) => { ConfigLayer { $($f: other.$f.or(self.$f)),* } };
        }
        pick!(
            gpu_memory_threshold_mb,
            memory_pressure_threshold,
            num_cpu_workers,
            cpu_batch_size,
            use_multiprocessing,
            cpu_affinity,
            enable_profiling,
            enable_caching,
            cache_size_mb,
            prefetch_factor,
            progressive_precision,
            mantissa_bits,
            exponent_bits,
            switch_delay_ms,
            hysteresis_factor,
            sample_interval_ms,
            hybrid_initial_gpu_fraction,
            gpu_device,
            gpu_batch_chunks
        )
    }

    /// Reads a TOML file; an unknown key or a wrong type is an error naming the file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer> {
        let text = crate::input::read_text(path)?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let (line, column) = line_and_column(&text, span.start);
                    format!(" (line {line}, column {column})")
                })
                .unwrap_or_default();
            Error::InvalidArgument(format!("{}{at}: {}", path.display(), e.message()))
        })
    }

    /// Reads the `SARAPHIS_*` variables through `get` (the process
    /// environment in [`ConfigLayer::from_env`]).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<ConfigLayer> {
        let parse_num = |name: &str| -> Result<Option<f64>> {
            get(name)
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|_| {
                        Error::InvalidArgument(format!("{name}={v:?} is not a number"))
                    })
                })
                .transpose()
        };
        let workers = get("SARAPHIS_CPU_WORKERS")
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    Error::InvalidArgument(format!("SARAPHIS_CPU_WORKERS={v:?} is not an integer"))
                })
            })
            .transpose()?;
        let cache = get("SARAPHIS_ENABLE_CPU_CACHE")
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(Error::InvalidArgument(format!(
                    "SARAPHIS_ENABLE_CPU_CACHE={v:?} is not a boolean (1/0, true/false, yes/no, on/off)"
                ))),
            })
            .transpose()?;
        Ok(ConfigLayer {
            num_cpu_workers: workers,
            gpu_memory_threshold_mb: parse_num("SARAPHIS_GPU_THRESHOLD_MB")?,
            memory_pressure_threshold: parse_num("SARAPHIS_MEMORY_PRESSURE")?,
            enable_caching: cache,
            ..ConfigLayer::default()
        })
    }

    /// The process environment's `SARAPHIS_*` variables.
    pub fn from_env() -> Result<ConfigLayer> {
        // A value that is not UTF-8 is read lossily, so that it is refused
        // as the bad value it is rather than taken for no value.
        Self::from_vars(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }
}

/// The most `mantissa_bits` may be: an f32's fraction bits, the most digits
/// any float stores.
pub const MAX_MANTISSA_BITS: u32 = 23;

/// The `SARAPHIS_*` variables the configuration reads ([`ConfigLayer::from_vars`]).
pub const SARAPHIS_VARIABLES: [&str; 4] = [
    "SARAPHIS_CPU_WORKERS",
    "SARAPHIS_GPU_THRESHOLD_MB",
    "SARAPHIS_MEMORY_PRESSURE",
    "SARAPHIS_ENABLE_CPU_CACHE",
];

/// The names among `names` that look like a misspelling of one of
/// [`SARAPHIS_VARIABLES`] (the same name in another case, or one at most
/// two letters away), each with the variable it most likely stands for.
/// The design's loader ignores variables it does not read, and so does
/// [`ConfigLayer::from_env`]; the command line and the Python package warn
/// of these, since a misspelt variable otherwise changes nothing without a
/// word. Other `SARAPHIS_*` names are left alone: the prefix is the wider
/// Saraphis system's, whose other parts have variables of their own.
pub fn misspelt_variables<I, S>(names: I) -> Vec<(String, &'static str)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::os::unix::ffi::OsStrExt;
    let mut misspelt: Vec<(String, &'static str)> = names
        .into_iter()
        .filter_map(|n| {
            // Compared byte by byte, so a name that is not UTF-8 is as far
            // from a variable as its bytes are.
            let bytes = n.as_ref().as_bytes();
            if SARAPHIS_VARIABLES.iter().any(|k| k.as_bytes() == bytes) {
                return None;
            }
            let upper = bytes.to_ascii_uppercase();
            let meant = SARAPHIS_VARIABLES
                .iter()
                .map(|&known| (edits(&upper, known.as_bytes()), known))
                .filter(|&(d, _)| d <= 2)
                .min()?
                .1;
            Some((shown(bytes), meant))
        })
        .collect();
    misspelt.sort();
    misspelt
}

/// [`misspelt_variables`] of the process environment.
pub fn misspelt_env_variables() -> Vec<(String, &'static str)> {
    misspelt_variables(std::env::vars_os().map(|(k, _)| k))
}

/// A variable's name as a message may show it: what is not UTF-8 as
/// U+FFFD, control characters escaped (`\u{1}`), so that a name cannot
/// write to the terminal.
fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| match c.is_control() {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// The edit distance between `a` and `b` (insertions, deletions and
/// substitutions of one byte).
fn edits(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

impl ConfigLayer {
    /// Fills defaults and validates.
    pub fn resolve(self) -> Result<Config> {
        let cores = cores();
        let threshold_mb = self.gpu_memory_threshold_mb.unwrap_or(100.0);
        if !(threshold_mb > 0.0 && threshold_mb.is_finite()) {
            return Err(invalid(
                "gpu_memory_threshold_mb",
                threshold_mb,
                "must be a number above 0",
            ));
        }
        let pressure = self.memory_pressure_threshold.unwrap_or(0.9);
        if !(pressure > 0.0 && pressure <= 1.0) {
            return Err(invalid(
                "memory_pressure_threshold",
                pressure,
                "must lie in (0, 1]",
            ));
        }
        let workers = self.num_cpu_workers.unwrap_or(-1);
        let most_workers = max_workers();
        let num_cpu_workers = match workers {
            -1 => cores,
            w if (1..=most_workers as i64).contains(&w) => w as usize,
            w => {
                return Err(invalid(
                    "num_cpu_workers",
                    w,
                    &format!(
                        "must be -1 (all cores) or lie in 1..={most_workers} \
                         ({MAX_WORKERS_PER_CORE} per core on this machine's {cores})"
                    ),
                ))
            }
        };
        let batch = in_flight(
            "cpu_batch_size",
            self.cpu_batch_size.unwrap_or(1),
            MAX_CPU_BATCH_SIZE,
        )?;
        let hysteresis = self.hysteresis_factor.unwrap_or(0.1);
        if !(hysteresis >= 0.0 && hysteresis < pressure) {
            return Err(invalid(
                "hysteresis_factor",
                hysteresis,
                &format!(
                    "must lie in [0, memory_pressure_threshold = {pressure}){}",
                    match self.hysteresis_factor {
                        None => " (0.1 is its default: set it lower too)",
                        Some(_) => "",
                    }
                ),
            ));
        }
        let prefetch = in_flight(
            "prefetch_factor",
            self.prefetch_factor.unwrap_or(2),
            MAX_PREFETCH_FACTOR,
        )?;
        let enable_caching = self.enable_caching.unwrap_or(true);
        let cache_size_mb = self.cache_size_mb.unwrap_or(1024.0);
        if !(cache_size_mb >= 0.0 && cache_size_mb.is_finite())
            || (enable_caching && cache_size_mb == 0.0)
        {
            return Err(invalid(
                "cache_size_mb",
                cache_size_mb,
                "must be above 0 while enable_caching is on (and never negative)",
            ));
        }
        let mantissa = self.mantissa_bits.unwrap_or(MAX_MANTISSA_BITS as i64);
        if !(1..=MAX_MANTISSA_BITS as i64).contains(&mantissa) {
            return Err(invalid(
                "mantissa_bits",
                mantissa,
                &format!("must lie in 1..={MAX_MANTISSA_BITS}"),
            ));
        }
        if let Some(exponent) = self.exponent_bits.filter(|e| !(1..=8).contains(e)) {
            return Err(invalid("exponent_bits", exponent, "must lie in 1..=8"));
        }
        let delay = self.switch_delay_ms.unwrap_or(50);
        if delay < 0 {
            return Err(invalid("switch_delay_ms", delay, "must not be negative"));
        }
        let interval = self.sample_interval_ms.unwrap_or(100);
        if interval <= 0 {
            return Err(invalid(
                "sample_interval_ms",
                interval,
                "must be at least 1",
            ));
        }
        let fraction = self.hybrid_initial_gpu_fraction.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&fraction) {
            return Err(invalid(
                "hybrid_initial_gpu_fraction",
                fraction,
                "must lie in [0, 1]",
            ));
        }
        let device = self.gpu_device.unwrap_or(0);
        if !(0..=u32::MAX as i64).contains(&device) {
            return Err(invalid(
                "gpu_device",
                device,
                "must be a device index, 0 or more",
            ));
        }
        let gpu_batch = self.gpu_batch_chunks.unwrap_or(64);
        if !(1..=4096).contains(&gpu_batch) {
            return Err(invalid(
                "gpu_batch_chunks",
                gpu_batch,
                "must lie in 1..=4096",
            ));
        }
        if let Some(cores_asked) = &self.cpu_affinity {
            if cores_asked.is_empty() {
                return Err(invalid("cpu_affinity", "[]", "must list at least one core"));
            }
            if let Some(&c) = cores_asked.iter().find(|&&c| c >= cores) {
                return Err(invalid(
                    "cpu_affinity",
                    format!("{cores_asked:?}"),
                    &format!("core {c} does not exist (this machine has cores 0..{cores})"),
                ));
            }
        }
        Ok(Config {
            gpu_memory_threshold_mb: threshold_mb,
            memory_pressure_threshold: pressure,
            num_cpu_workers,
            cpu_batch_size: batch as usize,
            use_multiprocessing: self.use_multiprocessing.unwrap_or(false),
            cpu_affinity: self.cpu_affinity,
            enable_profiling: self.enable_profiling.unwrap_or(true),
            enable_caching,
            cache_size_mb,
            prefetch_factor: prefetch as usize,
            progressive_precision: self.progressive_precision.unwrap_or(false),
            mantissa_bits: mantissa as u32,
            exponent_bits: self.exponent_bits.map(|e| e as u32),
            switch_delay_ms: delay as u64,
            hysteresis_factor: hysteresis,
            sample_interval_ms: interval as u64,
            hybrid_initial_gpu_fraction: fraction,
            gpu_device: device as u32,
            gpu_batch_chunks: gpu_batch as usize,
        })
    }
}

// ---------------------------------------------------------------------------
// Environment knobs
// ---------------------------------------------------------------------------

/// The `PADIC_*` environment knobs: switches for measuring and debugging,
/// outside the layered [`Config`] because they change how the work is done,
/// never what comes out. Each is read by one function of this module, and
/// only there; a bad value is an [`EnvError`] naming the variable, the value
/// and what it accepts. A switch is on when set to `1`, `true`, `yes`, `on`
/// or nothing, off when unset or set to `0`, `false`, `no` or `off`.
///
/// | variable | effect | default |
/// |---|---|---|
/// | `PADIC_NO_SIMD` ([`no_simd`]) | switch: the CPU decoders leave their AVX2 paths unused | off |
/// | `PADIC_NO_HUGEPAGE` ([`no_hugepage`]) | switch: large output buffers are not marked for transparent huge pages | off |
/// | `PADIC_GPU_BATCH_MB` ([`gpu_batch_mb`]) | MiB of output a GPU sub-batch aims at, 1 to 1024 | 256 |
/// | `PADIC_REPORT_PEAK_MEMORY` ([`report_peak_memory`]) | switch: the CLI prints its peak resident memory (VmHWM) on exit | off |
/// | `PADIC_ZIPNN_PYTHON` ([`zipnn_python`]) | the Python `bench` runs ZipNN with, unless `--zipnn-python` is given | `.venv-peers/bin/python`, else `python3` |
/// | `PADIC_CLUSTER_CONNECT_TIMEOUT_S` (`cluster_connect_timeout`) | seconds a cluster process waits for the others to connect, above 0 | 60 |
///
/// The tests read their own variables (`PADIC_TEST_WEIGHTS`,
/// `PADIC_REQUIRE_*`, `PADIC_FUZZ_CASES`); the library never does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: expected {allowed}")]
#[non_exhaustive]
pub struct EnvError {
    /// The variable, `PADIC_...`.
    pub variable: &'static str,
    /// Its value, as set (lossily, when it is not UTF-8).
    pub value: String,
    /// What the variable accepts.
    pub allowed: &'static str,
}

impl From<EnvError> for Error {
    fn from(e: EnvError) -> Error {
        Error::InvalidArgument(e.to_string())
    }
}

/// What a switch accepts.
const SWITCH: &str = "a switch: 1, true, yes, on or empty; 0, false, no or off";

/// A switch's value: `None` when `name` is unset.
fn switch_of(name: &'static str, value: Option<std::ffi::OsString>) -> Result<bool, EnvError> {
    let Some(raw) = value else {
        return Ok(false);
    };
    let text = raw.to_string_lossy();
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(EnvError {
            variable: name,
            value: text.into_owned(),
            allowed: SWITCH,
        }),
    }
}

/// The switch `name` in the process environment.
fn switch(name: &'static str) -> Result<bool, EnvError> {
    switch_of(name, std::env::var_os(name))
}

/// `PADIC_NO_SIMD`: whether the CPU decoders must leave their AVX2 paths
/// unused (to measure or test the portable ones).
pub fn no_simd() -> Result<bool, EnvError> {
    switch("PADIC_NO_SIMD")
}

/// `PADIC_NO_HUGEPAGE`: whether large output buffers must not be marked for
/// transparent huge pages.
pub fn no_hugepage() -> Result<bool, EnvError> {
    switch("PADIC_NO_HUGEPAGE")
}

/// `PADIC_REPORT_PEAK_MEMORY`: whether the CLI prints its peak resident
/// memory on exit.
pub fn report_peak_memory() -> Result<bool, EnvError> {
    switch("PADIC_REPORT_PEAK_MEMORY")
}

/// Default of [`gpu_batch_mb`].
pub const GPU_BATCH_MB_DEFAULT: usize = 256;
/// Largest value of [`gpu_batch_mb`].
pub const GPU_BATCH_MB_MAX: usize = 1024;

/// `PADIC_GPU_BATCH_MB` as set (`None` when unset): MiB of output a GPU
/// sub-batch aims at.
fn gpu_batch_mb_of(value: Option<std::ffi::OsString>) -> Result<usize, EnvError> {
    let Some(raw) = value else {
        return Ok(GPU_BATCH_MB_DEFAULT);
    };
    let text = raw.to_string_lossy();
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|mb| (1..=GPU_BATCH_MB_MAX).contains(mb))
        .ok_or_else(|| EnvError {
            variable: "PADIC_GPU_BATCH_MB",
            value: text.into_owned(),
            allowed: "a whole number of MiB from 1 to 1024",
        })
}

/// `PADIC_GPU_BATCH_MB`: MiB of output a GPU sub-batch aims at (big enough
/// for thousands of warps, small enough that several fit in flight).
pub fn gpu_batch_mb() -> Result<usize, EnvError> {
    gpu_batch_mb_of(std::env::var_os("PADIC_GPU_BATCH_MB"))
}

/// `PADIC_ZIPNN_PYTHON`: the Python `bench` runs ZipNN with, or `None`
/// when unset.
pub fn zipnn_python() -> Result<Option<std::path::PathBuf>, EnvError> {
    match std::env::var_os("PADIC_ZIPNN_PYTHON") {
        None => Ok(None),
        Some(p) if p.is_empty() => Err(EnvError {
            variable: "PADIC_ZIPNN_PYTHON",
            value: String::new(),
            allowed: "the path of a Python with zipnn",
        }),
        Some(p) => Ok(Some(p.into())),
    }
}

/// Checks every knob of this section at once, so that the CLI refuses a bad
/// value before any work rather than where the knob is first read (some are
/// read deep in a decode, where a bad value falls back to the default).
pub fn check_env_knobs() -> Result<(), EnvError> {
    no_simd()?;
    no_hugepage()?;
    report_peak_memory()?;
    gpu_batch_mb()?;
    zipnn_python()?;
    cluster_connect_timeout()?;
    Ok(())
}

mod command_line;
#[cfg(test)]
mod env_knob_tests;
mod exponent;

impl Config {
    /// defaults < `file` < environment < `flags`, validated.
    pub fn load(file: Option<&Path>, flags: ConfigLayer) -> Result<Config> {
        let mut layer = ConfigLayer::default();
        if let Some(f) = file {
            layer = layer.over(ConfigLayer::from_file(f)?);
        }
        layer.over(ConfigLayer::from_env()?).over(flags).resolve()
    }

    /// The policy's slice.
    pub fn policy(&self) -> PolicySettings {
        PolicySettings {
            memory_pressure_threshold: self.memory_pressure_threshold,
            gpu_memory_threshold_mb: self.gpu_memory_threshold_mb,
            hysteresis_factor: self.hysteresis_factor,
            switch_delay_ms: self.switch_delay_ms,
            hybrid_initial_gpu_fraction: self.hybrid_initial_gpu_fraction,
        }
    }
}

// ---- PADIC_CLUSTER_CONNECT_TIMEOUT_S ----

/// A span of `text` seconds: a number above 0 that a `Duration` holds
/// (`1e20` is refused, not a panic); `None` otherwise.
pub fn seconds(text: &str) -> Option<std::time::Duration> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
}

/// How long a cluster process waits for the others to connect:
/// `PADIC_CLUSTER_CONNECT_TIMEOUT_S` seconds, 60 by default.
pub fn cluster_connect_timeout() -> Result<std::time::Duration, EnvError> {
    cluster_connect_timeout_of(std::env::var_os("PADIC_CLUSTER_CONNECT_TIMEOUT_S"))
}

/// [`cluster_connect_timeout`] of the variable's value (`None`: unset).
fn cluster_connect_timeout_of(
    value: Option<std::ffi::OsString>,
) -> Result<std::time::Duration, EnvError> {
    let Some(raw) = value else {
        return Ok(std::time::Duration::from_secs(60));
    };
    let text = raw.to_string_lossy();
    seconds(&text).ok_or_else(|| EnvError {
        variable: "PADIC_CLUSTER_CONNECT_TIMEOUT_S",
        value: text.into_owned(),
        allowed: "a number of seconds above 0",
    })
}

#[cfg(test)]
mod variable_tests {
    use super::*;

    #[test]
    fn a_misspelt_variable_is_named_with_the_one_it_stands_for() {
        let set = [
            "SARAPHIS_CPU_WORKER",
            "PATH",
            "saraphis_enable_cpu_cache",
            "SARAPHIS_GPU_THRESHOLD_MB",
            "SARAPHIS_HOME",
            "SARAPHIS_MEMORY_PRESURE",
            "SARAPHIS_GPU_THRESHOLD_GB",
        ];
        assert_eq!(
            misspelt_variables(set),
            vec![
                ("SARAPHIS_CPU_WORKER".to_string(), "SARAPHIS_CPU_WORKERS"),
                (
                    "SARAPHIS_GPU_THRESHOLD_GB".to_string(),
                    "SARAPHIS_GPU_THRESHOLD_MB"
                ),
                (
                    "SARAPHIS_MEMORY_PRESURE".to_string(),
                    "SARAPHIS_MEMORY_PRESSURE"
                ),
                (
                    "saraphis_enable_cpu_cache".to_string(),
                    "SARAPHIS_ENABLE_CPU_CACHE"
                ),
            ]
        );
        // A byte that is not UTF-8 is one edit, as any byte is; a control
        // character is shown escaped, never sent to the terminal.
        use std::os::unix::ffi::OsStrExt;
        let odd = [
            std::ffi::OsStr::from_bytes(b"SARAPHIS_CPU_WORKER\xff"),
            std::ffi::OsStr::from_bytes(b"SARAPHIS_CPU_WORKERS\x1b"),
        ];
        assert_eq!(
            misspelt_variables(odd),
            vec![
                (
                    "SARAPHIS_CPU_WORKERS\\u{1b}".to_string(),
                    "SARAPHIS_CPU_WORKERS"
                ),
                (
                    "SARAPHIS_CPU_WORKER\u{fffd}".to_string(),
                    "SARAPHIS_CPU_WORKERS"
                ),
            ]
        );
    }

    #[test]
    fn every_listed_variable_is_one_the_configuration_reads() {
        for name in SARAPHIS_VARIABLES {
            let err = ConfigLayer::from_vars(|k| (k == name).then(|| "not a value".to_string()))
                .expect_err(name);
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }
}

#[cfg(test)]
mod position_tests {
    use super::line_and_column;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 1), (1, 2));
        assert_eq!(line_and_column(text, 3), (2, 1));
        // 'é' is two bytes: the byte after it is the third character.
        assert_eq!(line_and_column(text, 7), (2, 4));
        // An offset inside 'é' counts as its start, not a panic.
        assert_eq!(line_and_column(text, 6), (2, 3));
        assert_eq!(line_and_column(text, 8), (3, 1));
        assert_eq!(line_and_column(text, 9), (3, 2));
        // Past the end: the end.
        assert_eq!(line_and_column(text, 100), (3, 2));
    }
}
