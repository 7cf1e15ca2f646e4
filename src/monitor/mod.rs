//! Watching a run while it goes: a [`Monitor`] holds the run in progress
//! (the latest one begun), takes [`Snapshot`]s of its statistics from any
//! thread, and calls a function with one every interval ([`Monitor::watch`]).
//!
//! A snapshot's statistics are computed the way the run's final ones are,
//! from the same counters (the merge's [`crate::stats::Recorder`], read under
//! the lock each merged part takes anyway, and the policy's counts): the keys
//! are `--stats-json`'s, and the counters only grow during a run. No second
//! set of counters exists that could drift from the final statistics.
//!
//! Who watches: the progress bar's status line ([`crate::progress`]), the
//! `--stats-interval` JSON stream ([`stream`]), a library caller
//! ([`crate::pipeline::Pipeline::with_monitor`]), and the Python package's
//! `Pipeline.statistics()` polled from another thread.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::policy::EngineState;
use crate::stats::Statistics;

pub mod status;
pub mod stream;

/// The statistics of a run at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Which run of this monitor (1 for the first begun).
    pub run: u64,
    /// Whether the run has ended (these are then its final statistics).
    pub finished: bool,
    /// Chunks the run decodes in all.
    pub chunks_total: u64,
    /// The AUTO state when the snapshot was taken (in the other modes: where
    /// the mode sends chunks, CPU without a GPU).
    pub engine_state: EngineState,
    /// The run's statistics so far, with `--stats-json`'s keys.
    pub statistics: Statistics,
}

/// Computes a run's snapshot now (given by the graph, which knows how).
pub(crate) type Probe = Box<dyn Fn() -> (EngineState, Statistics) + Send + Sync>;

/// The run a monitor follows.
struct Current {
    run: u64,
    chunks_total: u64,
    /// Set while the run goes.
    live: Option<Arc<Probe>>,
    /// Set when the run ended with statistics.
    last: Option<Snapshot>,
}

/// Follows the runs it is given (the latest one begun), for any thread to
/// read. Cloning gives another handle on the same runs.
#[derive(Clone, Default)]
pub struct Monitor {
    current: Arc<Mutex<Option<Current>>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor with no run yet.
    pub fn new() -> Self {
        Monitor::default()
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts following a run of `chunks_total` chunks whose statistics
    /// `probe` computes; the run ends when the returned handle finishes or drops.
    pub(crate) fn begin(&self, chunks_total: u64, probe: Probe) -> LiveRun {
        let mut current = self.current();
        let run = current.as_ref().map_or(0, |c| c.run) + 1;
        *current = Some(Current {
            run,
            chunks_total,
            live: Some(Arc::new(probe)),
            last: None,
        });
        LiveRun {
            monitor: self.clone(),
            run,
        }
    }

    /// The run in progress now, or the last one to end (`None` before any
    /// run, and after a run that failed until the next begins).
    pub fn snapshot(&self) -> Option<Snapshot> {
        let (run, chunks_total, probe) = {
            let current = self.current();
            let c = current.as_ref()?;
            match &c.live {
                Some(probe) => (c.run, c.chunks_total, probe.clone()),
                None => return c.last.clone(),
            }
        };
        // Outside the monitor's lock: the probe takes the merge's.
        let (engine_state, statistics) = probe();
        Some(Snapshot {
            run,
            finished: false,
            chunks_total,
            engine_state,
            statistics,
        })
    }

    /// The statistics of the run in progress, or of the last one to end.
    pub fn statistics(&self) -> Option<Statistics> {
        self.snapshot().map(|s| s.statistics)
    }

    /// Whether a run is in progress.
    pub fn running(&self) -> bool {
        self.current().as_ref().is_some_and(|c| c.live.is_some())
    }

    /// Calls `f` on a thread of its own every `every` with a snapshot of the
    /// run in progress, and once with each run's final statistics (at the
    /// first tick after it ends, or when the watcher stops). Runs that begin
    /// and end between two ticks while another follows are not seen. Fails
    /// only when the system cannot start a thread.
    pub fn watch(
        &self,
        every: Duration,
        f: impl FnMut(&Snapshot) + Send + 'static,
    ) -> Result<Watcher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let monitor = self.clone();
        let thread = std::thread::Builder::new()
            .name("padic-monitor".into())
            .spawn(move || watch_loop(&monitor, every, &stopped, f))
            .map_err(|e| Error::io("the monitor's thread", e))?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn watch_loop(
    monitor: &Monitor,
    every: Duration,
    stopped: &mpsc::Receiver<()>,
    mut f: impl FnMut(&Snapshot),
) {
    let mut final_seen: Option<u64> = None;
    let mut tick = |f: &mut dyn FnMut(&Snapshot)| {
        let Some(s) = monitor.snapshot() else { return };
        if !s.finished {
            f(&s);
        } else if final_seen != Some(s.run) {
            final_seen = Some(s.run);
            f(&s);
        }
    };
    // Until told to stop (or the watcher is gone).
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        tick(&mut f);
    }
    tick(&mut f);
}

/// A monitor's watching thread; stops (after a last call with a run's final
/// statistics, if one ended unseen) on [`Watcher::stop`] or when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Stops watching and waits for the last call to return.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the caller's function ended the thread: nothing to report here.
            let _ = thread.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A run a monitor follows; ends the following when finished or dropped.
pub(crate) struct LiveRun {
    monitor: Monitor,
    run: u64,
}

impl LiveRun {
    /// The run ended with `statistics` (its final ones) in `engine_state`.
    pub(crate) fn finish(self, engine_state: EngineState, statistics: &Statistics) {
        let mut current = self.monitor.current();
        if let Some(c) = current.as_mut().filter(|c| c.run == self.run) {
            c.live = None;
            c.last = Some(Snapshot {
                run: c.run,
                finished: true,
                chunks_total: c.chunks_total,
                engine_state,
                statistics: statistics.clone(),
            });
        }
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        // A run that failed (or finished: then `live` is already gone).
        let mut current = self.monitor.current();
        if let Some(c) = current.as_mut().filter(|c| c.run == self.run) {
            c.live = None;
        }
    }
}
