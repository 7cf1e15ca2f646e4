//! Where each chunk goes: decided up front (a replayed pressure trace, or no
//! GPU to choose) or live, by the switching policy on the latest sample.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::{RouteTag, Router};

use super::records::ChunkTask;
use super::RunOptions;
use crate::policy::{Mode, Policy, Route};
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

/// Every chunk's route decided up front, when it can be: replayed from a
/// pressure trace (the shared policy then holds the replay's state), or all
/// CPU (GPU for GPU_ONLY, which then fails saying why) without a GPU. `None`:
/// route live.
pub(crate) fn planned(
    opts: &RunOptions,
    policy: &Mutex<Policy>,
    chunks: usize,
) -> Option<Arc<Vec<Route>>> {
    match (&opts.trace, opts.gpu.is_some()) {
        (Some(trace), _) => {
            let mut replay = Policy::new(opts.config.policy(), opts.mode, true);
            let d = crate::plan::replay(&mut replay, trace, chunks, opts.replay_step_ms)
                .map(|d| d.route)
                .collect();
            *policy.lock().expect("policy lock") = replay;
            Some(Arc::new(d))
        }
        (None, false) => Some(Arc::new(vec![
            if opts.mode == Mode::GpuOnly {
                Route::Gpu
            } else {
                Route::Cpu
            };
            chunks
        ])),
        (None, true) => None,
    }
}
