//! Where each chunk goes: decided up front (a replayed pressure trace, or no
//! GPU to choose) or live, by the switching policy on the latest sample.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::{RouteTag, Router};

use super::records::ChunkTask;
use super::RunOptions;
use crate::policy::{EngineState, Mode, Policy, Route};
use crate::pressure::PressureSource;

/// Routes from a decision list made up front (replay, or no GPU); a
/// HYBRID chunk's GPU share comes from the speeds the shared policy has
/// measured so far ([`Policy::measured_split`]), not from the replay.
pub(crate) struct PlannedRouter {
    pub(crate) decisions: Arc<Vec<Route>>,
    pub(crate) policy: Arc<Mutex<Policy>>,
}

impl Router<ChunkTask> for PlannedRouter {
    fn route(&self, c: &ChunkTask) -> RouteTag {
        let planned = self.decisions[c.global];
        match planned {
            Route::Hybrid { .. } => self
                .policy
                .lock()
                .expect("policy lock")
                .measured_split(planned),
            other => other,
        }
    }
}

/// Routes live: the shared policy on the latest sample.
pub(crate) struct LiveRouter {
    pub(crate) policy: Arc<Mutex<Policy>>,
    pub(crate) source: Arc<dyn PressureSource>,
    pub(crate) started: Instant,
}

impl Router<ChunkTask> for LiveRouter {
    fn route(&self, _c: &ChunkTask) -> RouteTag {
        let now = self.started.elapsed().as_millis() as u64;
        let sample = self.source.sample_at(now);
        let mut p = self.policy.lock().expect("policy lock");
        p.decide(now, sample).route
    }
}

/// The replay's policy right after it decided a chunk: what a snapshot
/// taken while the run goes reports (the shared policy holds the state
/// after the last chunk from the start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayMark {
    pub(crate) state: EngineState,
    pub(crate) mode_switches: u64,
    pub(crate) memory_pressure_events: u64,
}

/// Routes decided up front, and for a replay, the policy after each chunk.
pub(crate) struct Planned {
    pub(crate) routes: Arc<Vec<Route>>,
    pub(crate) marks: Option<Arc<Vec<ReplayMark>>>,
}

/// Every chunk's route decided up front, when it can be: replayed from a
/// pressure trace (the shared policy then holds the replay's state), or all
/// CPU (GPU for GPU_ONLY, which then fails saying why) without a GPU. `None`:
/// route live.
pub(crate) fn planned(opts: &RunOptions, policy: &Mutex<Policy>, chunks: usize) -> Option<Planned> {
    match (&opts.trace, opts.gpu.is_some()) {
        (Some(trace), _) => {
            let mut replay = Policy::new(opts.config.policy(), opts.mode, true);
            let mut routes = Vec::with_capacity(chunks);
            let mut marks = Vec::with_capacity(chunks);
            for k in 0..chunks {
                let now = crate::plan::replay_time(k, opts.replay_step_ms);
                routes.push(replay.decide(now, trace.sample_at(now)).route);
                marks.push(ReplayMark {
                    state: replay.state(),
                    mode_switches: replay.mode_switches(),
                    memory_pressure_events: replay.memory_pressure_events(),
                });
            }
            *policy.lock().expect("policy lock") = replay;
            Some(Planned {
                routes: Arc::new(routes),
                marks: Some(Arc::new(marks)),
            })
        }
        (None, false) => Some(Planned {
            routes: Arc::new(vec![
                if opts.mode == Mode::GpuOnly {
                    Route::Gpu
                } else {
                    Route::Cpu
                };
                chunks
            ]),
            marks: None,
        }),
        (None, true) => None,
    }
}
