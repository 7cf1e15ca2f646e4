//! After the run, on process 0: every chunk's values arrived in full and
//! every part once, over all processes' merges; and the placement log.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::records::{ChunkTask, MergeReceipt};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::stats::Engine;

/// Checks `receipts` against `tasks`: each part once, each chunk covered.
pub(crate) fn check_exactly_once(
    c: &Container,
    tasks: &[ChunkTask],
    receipts: &[MergeReceipt],
) -> Result<()> {
    let mut seen: HashSet<(usize, usize, u64)> = HashSet::new();
    let mut covered: HashMap<(usize, usize), u64> = HashMap::new();
    for r in receipts {
        if !seen.insert((r.tensor, r.chunk, r.first)) {
            return Err(Error::InvalidArgument(format!(
                "tensor '{}' chunk {}: the part from value {} arrived twice",
                c.header().tensors[r.tensor].name,
                r.chunk,
                r.first
            )));
        }
        *covered.entry((r.tensor, r.chunk)).or_default() += r.bytes;
    }
    for t in tasks {
        let got = covered.get(&(t.tensor, t.chunk)).copied().unwrap_or(0);
        if got != t.out_len {
            return Err(Error::InvalidArgument(format!(
                "tensor '{}' chunk {}: {got} of {} bytes arrived",
                c.header().tensors[t.tensor].name,
                t.chunk,
                t.out_len
            )));
        }
    }
    Ok(())
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
