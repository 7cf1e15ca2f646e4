//! The merge's sink: places each part at its offset, records its timings,
//! and gives a receipt that the exactly-once check reads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use padic_burst_operators::Sink;

use super::placement::Placement;
use super::pool::BufferPool;
use super::records::{DecodedPart, MergeReceipt};
use crate::error::{Error, Result};
use crate::stats::Recorder;

/// Places parts at their offsets and checks each chunk's coverage.
pub(crate) struct PartSink {
    pub(crate) out: Arc<dyn Placement>,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) state: Arc<Mutex<MergeState>>,
    pub(crate) started: Instant,
}

/// What the merges saw, across workers.
#[derive(Default)]
pub(crate) struct MergeState {
    pub(crate) first_error: Option<(usize, String)>,
    /// The first write that failed: the file and the error's kind (the run
    /// then fails as an I/O error, exit status 1, naming the file).
    pub(crate) write_error: Option<(PathBuf, std::io::ErrorKind)>,
    /// Set on the first error: the sources stop sending.
    pub(crate) abort: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) recorder: Recorder,
    /// Every merge receipt (worker 0 of process 0 only).
    pub(crate) receipts: Vec<MergeReceipt>,
}

impl MergeState {
    pub(crate) fn fail(&mut self, global: usize, what: String) {
        self.abort.store(true, std::sync::atomic::Ordering::Relaxed);
        match &self.first_error {
            Some((g, _)) if *g <= global => {}
            _ => self.first_error = Some((global, what)),
        }
    }

    /// The run's first failure, as the error it ends with.
    pub(crate) fn take_error(&mut self) -> Result<()> {
        if let Some((path, kind)) = self.write_error.take() {
            let what = self.first_error.take().map_or_else(String::new, |(_, e)| e);
            return Err(Error::io(path, std::io::Error::new(kind, what)));
        }
        if let Some((_, e)) = self.first_error.take() {
            return Err(Error::Decode(e));
        }
        Ok(())
    }
}

impl Sink<DecodedPart> for PartSink {
    type Receipt = MergeReceipt;
    fn accept(&mut self, p: DecodedPart) -> MergeReceipt {
        let merged_at = self.started.elapsed().as_micros() as u64;
        let mut receipt = MergeReceipt {
            global: p.global,
            tensor: p.tensor,
            chunk: p.chunk,
            first: p.first,
            engine: p.engine,
            out_offset: p.out_offset,
            bytes: p.bytes(),
            error: p.error.clone(),
        };
        if let Some(e) = p.error {
            self.state.lock().expect("merge lock").fail(p.global, e);
            return receipt;
        }
        // The write happens outside the merge lock: merges of other workers
        // go on meanwhile.
        let bytes = p.bytes();
        let placed = if p.placed > 0 {
            Ok(())
        } else {
            self.out.place(p.out_offset, &p.data)
        };
        self.pool.give(p.data);
        let mut st = self.state.lock().expect("merge lock");
        if let Err(e) = placed {
            let what = format!("writing {bytes} bytes at {}: {e}", p.out_offset);
            if let (Some(path), None) = (self.out.path(), &st.write_error) {
                st.write_error = Some((path.to_path_buf(), e.kind()));
            }
            st.fail(p.global, what.clone());
            receipt.error = Some(what);
            return receipt;
        }
        let merge_us = merged_at.saturating_sub(p.done_us);
        st.recorder.part(
            p.global,
            p.route,
            p.engine,
            bytes,
            p.bytes_in,
            p.queue_us,
            p.decode_us,
            merge_us,
            p.rerouted_oom,
        );
        receipt
    }
}
