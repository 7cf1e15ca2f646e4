//! The merge's sink: places each part at its offset, records its timings,
//! and gives a receipt that the exactly-once check reads.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::Sink;

use super::pool::BufferPool;
use super::records::{DecodedPart, Failure, MergeReceipt};
use super::shards::ShardRun;
use crate::error::{Error, Result};
use crate::pressure::PressureSource as _;
use crate::stats::Recorder;

/// Places parts at their offsets, in their shard's output, and checks each
/// chunk's coverage.
pub(crate) struct PartSink {
    /// Every shard's output; a part names its shard.
    pub(crate) shards: Arc<Vec<ShardRun>>,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) state: Arc<Mutex<MergeState>>,
    pub(crate) started: Instant,
    /// Where merged bytes are counted (a bar on a terminal).
    pub(crate) progress: Option<Arc<crate::progress::Progress>>,
}

/// What the merges saw, across workers.
#[derive(Default)]
pub(crate) struct MergeState {
    /// The first failure by place (global chunk order).
    pub(crate) first_error: Option<Failure>,
    /// Set on the first error: the sources stop sending.
    pub(crate) abort: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) recorder: Recorder,
    /// Every merge receipt (worker 0 of process 0 only).
    pub(crate) receipts: Vec<MergeReceipt>,
}

impl MergeState {
    pub(crate) fn fail(&mut self, failure: Failure) {
        self.abort.store(true, std::sync::atomic::Ordering::Relaxed);
        match &self.first_error {
            Some(first) if first.global <= failure.global => {}
            _ => self.first_error = Some(failure),
        }
    }

    /// The run's first failure, as the error it ends with.
    pub(crate) fn take_error(&mut self) -> Result<()> {
        match self.first_error.take() {
            Some(f) => Err(*f.error),
            None => Ok(()),
        }
    }
}

impl Sink<DecodedPart> for PartSink {
    type Receipt = MergeReceipt;
    type Error = Failure;
    fn accept(&mut self, p: DecodedPart) -> Result<MergeReceipt, Failure> {
        let merged_at = self.started.elapsed().as_micros() as u64;
        let receipt = MergeReceipt {
            global: p.global,
            shard: p.shard,
            tensor: p.tensor,
            chunk: p.chunk,
            first: p.first,
            route: p.route,
            engine: p.engine,
            out_offset: p.out_offset,
            bytes: p.bytes(),
            bytes_in: p.bytes_in,
            routed_us: p.done_us.saturating_sub(p.decode_us + p.queue_us),
        };
        // The write happens outside the merge lock: merges of other workers
        // go on meanwhile.
        let out = &self.shards[p.shard].out;
        let placed = if p.placed > 0 {
            self.pool.give(p.data);
            Ok(())
        } else {
            out.put(p.out_offset, p.data, &self.pool)
        };
        if let Err(e) = placed {
            let error = match out.path() {
                Some(path) => Error::io(path, e),
                // Memory refuses only a part outside it or placed twice.
                None => Error::Internal(format!(
                    "placing {} bytes at {}: {e}",
                    receipt.bytes, p.out_offset
                )),
            };
            return Err(Failure {
                global: p.global,
                error: Box::new(error),
            });
        }
        if let Some(progress) = &self.progress {
            progress.advance(receipt.bytes);
        }
        let merge_us = merged_at.saturating_sub(p.done_us);
        self.state.lock().expect("merge lock").recorder.part(
            p.global,
            p.route,
            p.engine,
            receipt.bytes,
            p.bytes_in,
            p.queue_us,
            p.decode_us,
            merge_us,
            p.rerouted_oom,
        );
        Ok(receipt)
    }
}

/// What a run's statistics are computed from: the merges' counters, the
/// policy's, and the run's fixed facts. The same computation gives the final
/// statistics and each live snapshot ([`crate::monitor`]).
pub(crate) struct StatsSource {
    pub(crate) state: Arc<Mutex<MergeState>>,
    pub(crate) policy: Arc<Mutex<crate::policy::Policy>>,
    pub(crate) mode: crate::policy::Mode,
    pub(crate) started: Instant,
    pub(crate) notes: Vec<String>,
    pub(crate) gpu: Option<String>,
    /// The replayed trace and its step (virtual ms per chunk).
    pub(crate) trace: Option<(crate::pressure::Trace, u64)>,
    pub(crate) pressure: Option<Arc<dyn crate::pressure::PressureSource>>,
    /// The live source's failed reads when the run began.
    pub(crate) failed_reads_before: u64,
    /// Chunks of the run.
    pub(crate) chunks: usize,
    /// A replay's policy after each chunk: a snapshot while the run goes
    /// reports the AUTO state and counts as of the chunks merged so far.
    pub(crate) replayed: Option<Arc<Vec<super::routers::ReplayMark>>>,
    /// The final statistics, once computed: later snapshots are these, so
    /// none reads a later wall time than the final one.
    pub(crate) last: std::sync::OnceLock<(crate::policy::EngineState, crate::stats::Statistics)>,
}

impl StatsSource {
    /// The run's notes, and one for the live readings that failed since it
    /// began (the policy routed on the latest good one meanwhile).
    fn notes_now(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if let (None, Some(source)) = (&self.trace, &self.pressure) {
            let (failed, last) = source.failed_reads();
            if failed > self.failed_reads_before {
                notes.push(format!(
                    "{} readings of GPU memory failed during the run (the last: {}); the \
                     policy routed on the latest good reading meanwhile",
                    failed - self.failed_reads_before,
                    last.as_deref().unwrap_or("no reason given")
                ));
            }
        }
        notes
    }

    /// The statistics now; `finished`: the run has ended (every chunk is
    /// decided, so a replay's latest sample is the last chunk's).
    pub(crate) fn statistics(
        &self,
        finished: bool,
    ) -> (crate::policy::EngineState, crate::stats::Statistics) {
        // Under the merge lock throughout: snapshots and the final
        // statistics are computed one at a time, in the order of their clocks.
        let st = self.state.lock().expect("merge lock");
        let p = self.policy.lock().expect("policy lock");
        if let Some(last) = self.last.get() {
            return last.clone();
        }
        let elapsed = self.started.elapsed();
        // The latest pressure reading: the trace's at the virtual time of the
        // furthest chunk merged (the highest-numbered: several workers merge
        // their shares out of order; the run's last chunk, once it ended), or
        // the live source's now.
        let furthest = match finished {
            true => self.chunks.saturating_sub(1),
            false => st.recorder.furthest_chunk().unwrap_or(0),
        };
        let last_sample = match (&self.trace, &self.pressure) {
            (Some((t, step)), _) => t.sample_at(crate::plan::replay_time(furthest, *step)),
            (None, Some(source)) => source.sample_at(elapsed.as_millis() as u64),
            (None, None) => None,
        };
        let mut s = st.recorder.statistics(
            &p,
            self.mode,
            elapsed,
            self.notes_now(),
            self.gpu.clone(),
            last_sample,
        );
        let mut state = p.state();
        // A replay decided every chunk up front, and the shared policy holds
        // the state after the last one: while the run goes, the state and
        // counts are those after the furthest chunk merged, so that they
        // account for every chunk merged (one routed to the CPU comes with
        // the switch that sent it there).
        if let (false, Some(marks)) = (finished, &self.replayed) {
            if let Some(m) = marks.get(furthest) {
                state = m.state;
                s.mode_switches = m.mode_switches;
                s.memory_pressure_events = m.memory_pressure_events;
            }
        }
        if s.current_engine.is_some() {
            s.current_engine = Some(state.name().to_string());
        }
        if finished {
            let _ = self.last.set((state, s.clone()));
        }
        (state, s)
    }
}
