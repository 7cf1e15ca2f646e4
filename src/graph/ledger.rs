//! After the run, on process 0: every chunk's values arrived in full and
//! every part once, over all processes' merges; and the placement log.

use std::path::Path;

use padic_burst_operators::{Ledger, LedgerError};

use super::records::{ChunkTask, MergeReceipt};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::stats::Engine;

/// Checks `receipts` against `tasks`: each part once, each chunk covered.
/// A failure here is the graph's fault, never the input's.
pub(crate) fn check_exactly_once(
    c: &Container,
    tasks: &[ChunkTask],
    receipts: &[MergeReceipt],
) -> Result<()> {
    let name = |tensor: usize| &c.header().tensors[tensor].name;
    let mut ledger = Ledger::default();
    let found = receipts
        .iter()
        .try_for_each(|r| ledger.record((r.tensor, r.chunk), r.first, r.bytes))
        .and_then(|()| ledger.check(tasks.iter().map(|t| ((t.tensor, t.chunk), t.out_len))));
    found.map_err(|e| {
        Error::Internal(match e {
            LedgerError::Twice {
                key: (tensor, chunk),
                first,
            } => format!(
                "tensor '{}' chunk {chunk}: the part from value {first} arrived twice",
                name(tensor)
            ),
            LedgerError::Short {
                key: (tensor, chunk),
                got,
                want,
            } => format!(
                "tensor '{}' chunk {chunk}: {got} of {want} bytes arrived",
                name(tensor)
            ),
        })
    })
}

/// Writes, per part, which engine decoded which byte range (CSV).
pub(crate) fn write_placement_log(path: &Path, receipts: &[MergeReceipt]) -> Result<()> {
    let mut rows: Vec<&MergeReceipt> = receipts.iter().collect();
    rows.sort_by_key(|r| (r.global, r.first));
    let mut text = String::from("chunk,tensor,chunk_in_tensor,engine,out_offset,bytes\n");
    for r in rows {
        let engine = match r.engine {
            Engine::Gpu => "gpu",
            Engine::Cpu => "cpu",
        };
        text += &format!(
            "{},{},{},{engine},{},{}\n",
            r.global, r.tensor, r.chunk, r.out_offset, r.bytes
        );
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
