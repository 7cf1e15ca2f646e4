//! The switching policy: which engine decodes a chunk, from the mode and the
//! latest memory-pressure sample.
//!
//! AUTO_SWITCH keeps a state, GPU or CPU (GPU when a GPU is present). With
//! `T = memory_pressure_threshold`, `M = gpu_memory_threshold_mb`,
//! `h = hysteresis_factor` and `free = total - used`:
//!
//! * in GPU state, switch to CPU when `u > T` or `free < M`;
//! * in CPU state, switch back to GPU when `u < T - h` and `free > 2 M`;
//! * no switch within `switch_delay_ms` of the previous one; the first is free;
//! * a sample read before any chunk is routed sets the starting state (CPU
//!   when it already breaks the first rule): no chunk has moved, so it is not
//!   a switch, and every switch counted is a change of route a log shows.
//!
//! GPU_ONLY routes every chunk to the GPU, CPU_ONLY to the CPU. HYBRID splits
//! each chunk, the GPU's share in proportion to the engines' measured
//! throughputs (moving averages from `hybrid_initial_gpu_fraction`), and
//! routes whole chunks to the CPU whenever the AUTO rules are in CPU state
//! (so its switches show as changes of route); a run replayed from a trace
//! takes the route from the replay and the share from the speeds it
//! measures ([`Policy::measured_split`]). Without a GPU every mode but
//! GPU_ONLY routes to the CPU (GPU_ONLY is an error the executor raises).
//!
//! `memory_pressure_events` counts each rise of the level into HIGH or
//! CRITICAL (the level before the first sample counts as LOW) plus each GPU
//! out-of-memory. A level is left downward only once `u` falls `h` below its
//! lower bound, so a reading that wavers around a boundary is one event; `mode_switches` counts AUTO state changes once a chunk has been routed.

use serde::Serialize;

use crate::pressure::{Level, Sample};

/// How chunks are assigned to engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Switch between GPU and CPU by memory pressure.
    Auto,
    /// Every chunk on the GPU; no GPU or out of memory is an error.
    GpuOnly,
    /// Every chunk on the CPU.
    CpuOnly,
    /// Every chunk split between GPU and CPU by measured speed.
    Hybrid,
}

impl Mode {
    /// The mode's name on the command line and in JSON: `auto`, `gpu-only`, `cpu-only` or `hybrid`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::GpuOnly => "gpu-only",
            Mode::CpuOnly => "cpu-only",
            Mode::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" | "auto-switch" => Ok(Mode::Auto),
            "gpu-only" | "gpu" => Ok(Mode::GpuOnly),
            "cpu-only" | "cpu" => Ok(Mode::CpuOnly),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(format!(
                "unknown mode {other:?} (auto, gpu-only, cpu-only, hybrid)"
            )),
        }
    }
}

/// Where one chunk goes: the operators crate's route type, the only one.
pub use padic_burst_operators::RouteTag as Route;

/// The policy's settings (a slice of the validated configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicySettings {
    /// GPU utilization (used / total, 0..1) above which AUTO leaves the GPU.
    pub memory_pressure_threshold: f64,
    /// Free GPU memory (MB) below which AUTO leaves the GPU; it returns above twice this.
    pub gpu_memory_threshold_mb: f64,
    /// How far (0..1) utilization must fall below the threshold before AUTO returns to the GPU.
    pub hysteresis_factor: f64,
    /// Least virtual or real time between two AUTO switches, in ms (the first is free).
    pub switch_delay_ms: u64,
    /// HYBRID's GPU share (0..1) until both engines have been measured.
    pub hybrid_initial_gpu_fraction: f64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            memory_pressure_threshold: 0.9,
            gpu_memory_threshold_mb: 100.0,
            hysteresis_factor: 0.1,
            switch_delay_ms: 50,
            hybrid_initial_gpu_fraction: 0.5,
        }
    }
}

/// One decision, with what it was decided from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Where the chunk goes: GPU, CPU, or split (HYBRID, with the GPU's share).
    pub route: Route,
    /// `None` without a sample (no GPU).
    pub sample: Option<Sample>,
}

/// The AUTO state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Chunks go to the GPU.
    Gpu,
    /// Chunks go to the CPU (pressure is high, or there is no GPU).
    Cpu,
}

impl EngineState {
    /// `gpu` or `cpu`, as the statistics say it.
    pub fn name(self) -> &'static str {
        match self {
            EngineState::Gpu => "gpu",
            EngineState::Cpu => "cpu",
        }
    }
}

/// Weight of a new throughput measurement in the moving average.
const RATE_ALPHA: f64 = 0.2;

/// The switching state machine. Deterministic: the same samples at the same
/// times give the same decisions.
#[derive(Debug, Clone)]
pub struct Policy {
    settings: PolicySettings,
    mode: Mode,
    gpu_present: bool,
    state: EngineState,
    last_switch_ms: Option<u64>,
    /// Whether AUTO or HYBRID has routed a chunk: until then a sample sets
    /// the starting state rather than switching.
    routed: bool,
    last_level: Level,
    mode_switches: u64,
    memory_pressure_events: u64,
    /// Moving averages of bytes per second, GPU and CPU.
    gpu_rate: Option<f64>,
    cpu_rate: Option<f64>,
}

impl Policy {
    /// A policy in `mode`, in GPU state when `gpu_present` (else CPU), with no
    /// switch, event or throughput measured yet.
    pub fn new(settings: PolicySettings, mode: Mode, gpu_present: bool) -> Self {
        Policy {
            settings,
            mode,
            gpu_present,
            state: if gpu_present {
                EngineState::Gpu
            } else {
                EngineState::Cpu
            },
            last_switch_ms: None,
            routed: false,
            last_level: Level::Low,
            mode_switches: 0,
            memory_pressure_events: 0,
            gpu_rate: None,
            cpu_rate: None,
        }
    }

    /// The mode chunks are routed under now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Changes the mode at run time (the AUTO state and the counters stay).
    pub fn force_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The AUTO state: the engine AUTO (and HYBRID's split) currently favours.
    pub fn state(&self) -> EngineState {
        self.state
    }

    /// AUTO state changes so far.
    pub fn mode_switches(&self) -> u64 {
        self.mode_switches
    }

    /// Rises of the pressure level into HIGH or CRITICAL so far, plus GPU out-of-memory errors.
    pub fn memory_pressure_events(&self) -> u64 {
        self.memory_pressure_events
    }

    /// A GPU out-of-memory on a chunk: a memory-pressure event.
    pub fn record_oom(&mut self) {
        self.memory_pressure_events += 1;
    }

    /// A measured decode: `bytes` of output in `secs` on the GPU or the CPU.
    pub fn observe(&mut self, on_gpu: bool, bytes: u64, secs: f64) {
        if secs <= 0.0 || bytes == 0 {
            return;
        }
        let rate = bytes as f64 / secs;
        let slot = if on_gpu {
            &mut self.gpu_rate
        } else {
            &mut self.cpu_rate
        };
        *slot = Some(match *slot {
            None => rate,
            Some(r) => r + RATE_ALPHA * (rate - r),
        });
    }

    /// The GPU's share for HYBRID: proportional to the measured speeds, the
    /// initial fraction until both engines have been measured.
    pub fn hybrid_fraction(&self) -> f64 {
        match (self.gpu_rate, self.cpu_rate) {
            (Some(g), Some(c)) if g + c > 0.0 => g / (g + c),
            _ => self.settings.hybrid_initial_gpu_fraction,
        }
    }

    /// A decision made up front (replayed from a pressure trace), with
    /// HYBRID's GPU share from the speeds measured so far in this run: the
    /// replay decides the route, and whether the GPU takes a share at all
    /// (none while the AUTO rules are in CPU state); how large the share is
    /// follows the engines' measured throughputs, as in a live run.
    pub fn measured_split(&self, planned: Route) -> Route {
        match planned {
            Route::Hybrid { gpu_fraction } if gpu_fraction > 0.0 => Route::Hybrid {
                gpu_fraction: self.hybrid_fraction(),
            },
            other => other,
        }
    }

    /// Steps the AUTO state machine on `sample` at `now_ms`.
    fn step_auto(&mut self, now_ms: u64, sample: &Sample) {
        let s = &self.settings;
        let u = sample.utilization();
        let free = sample.free_mb();
        let want = match self.state {
            EngineState::Gpu
                if u > s.memory_pressure_threshold || free < s.gpu_memory_threshold_mb =>
            {
                Some(EngineState::Cpu)
            }
            EngineState::Cpu
                if u < s.memory_pressure_threshold - s.hysteresis_factor
                    && free > 2.0 * s.gpu_memory_threshold_mb =>
            {
                Some(EngineState::Gpu)
            }
            _ => None,
        };
        if let Some(next) = want {
            if !self.routed {
                self.state = next;
                return;
            }
            let allowed = self
                .last_switch_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= s.switch_delay_ms);
            if allowed {
                self.state = next;
                self.last_switch_ms = Some(now_ms);
                self.mode_switches += 1;
            }
        }
    }

    /// The level of `sample`, where a level is entered as soon as `u` reaches
    /// it but left downward only once `u` falls `h` below its lower bound:
    /// utilisation wavering around a boundary (76%, 74%, 76%, ...) is one
    /// level change, not one per sample.
    fn level_with_hysteresis(&self, sample: &Sample) -> Level {
        let u = sample.utilization();
        let now = Level::of(u);
        if now >= self.last_level {
            return now;
        }
        now.max(
            self.last_level
                .min(Level::of(u + self.settings.hysteresis_factor)),
        )
    }

    /// Decides one chunk at `now_ms` from the latest `sample` (`None`: no
    /// reading; without a GPU every mode but GPU_ONLY routes to the CPU).
    pub fn decide(&mut self, now_ms: u64, sample: Option<Sample>) -> Decision {
        if !self.gpu_present {
            let route = if self.mode == Mode::GpuOnly {
                Route::Gpu
            } else {
                Route::Cpu
            };
            return Decision {
                route,
                sample: None,
            };
        }
        if let Some(sample) = sample {
            let level = self.level_with_hysteresis(&sample);
            if level > self.last_level && level >= Level::High {
                self.memory_pressure_events += 1;
            }
            self.last_level = level;
            if matches!(self.mode, Mode::Auto | Mode::Hybrid) {
                self.step_auto(now_ms, &sample);
            }
        }
        let route = match self.mode {
            Mode::GpuOnly => Route::Gpu,
            Mode::CpuOnly => Route::Cpu,
            Mode::Auto => match self.state {
                EngineState::Gpu => Route::Gpu,
                EngineState::Cpu => Route::Cpu,
            },
            Mode::Hybrid => match self.state {
                EngineState::Gpu => Route::Hybrid {
                    gpu_fraction: self.hybrid_fraction(),
                },
                EngineState::Cpu => Route::Cpu,
            },
        };
        if matches!(self.mode, Mode::Auto | Mode::Hybrid) {
            self.routed = true;
        }
        Decision { route, sample }
    }
}
