//! After the run, on process 0: every chunk's values arrived in full and
//! every part once, over all processes' merges; and the placement log.

use std::path::Path;

use padic_burst_operators::{Ledger, LedgerError};

use super::records::{ChunkTask, MergeReceipt};
use super::shards::ShardRun;
use crate::error::{Error, Result};
use crate::stats::Engine;

/// Checks `receipts` against `tasks`: each part once, each chunk of each
/// shard covered. A failure here is the graph's fault, never the input's.
pub(crate) fn check_exactly_once(
    shards: &[ShardRun],
    tasks: &[ChunkTask],
    receipts: &[MergeReceipt],
) -> Result<()> {
    let name = |(shard, tensor): (usize, usize)| {
        let c = &shards[shard].container;
        format!(
            "{}: tensor '{}'",
            c.path().display(),
            c.header().tensors[tensor].name
        )
    };
    let mut ledger = Ledger::default();
    let found = receipts
        .iter()
        .try_for_each(|r| ledger.record(((r.shard, r.tensor), r.chunk), r.first, r.bytes))
        .and_then(|()| {
            ledger.check(
                tasks
                    .iter()
                    .map(|t| (((t.shard, t.tensor), t.chunk), t.out_len)),
            )
        });
    found.map_err(|e| {
        Error::Internal(match e {
            LedgerError::Twice {
                key: (tensor, chunk),
                first,
            } => format!(
                "{} chunk {chunk}: the part from value {first} arrived twice",
                name(tensor)
            ),
            LedgerError::Short {
                key: (tensor, chunk),
                got,
                want,
            } => format!(
                "{} chunk {chunk}: {got} of {want} bytes arrived",
                name(tensor)
            ),
        })
    })
}

/// Writes, per part, which engine decoded which byte range of which shard
/// (CSV), under the route the chunk was given and the GPU's share of it (for
/// HYBRID, the share the run used: from measured speed). `chunk` is the
/// global index, `shard` the shard's index in the run, `out_offset` within
/// that shard's data region.
pub(crate) fn write_placement_log(path: &Path, receipts: &[MergeReceipt]) -> Result<()> {
    let mut rows: Vec<&MergeReceipt> = receipts.iter().collect();
    rows.sort_by_key(|r| (r.global, r.first));
    let mut text = String::from(
        "chunk,tensor,chunk_in_tensor,route,engine,out_offset,bytes,gpu_fraction,shard\n",
    );
    for r in rows {
        text += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.global,
            r.tensor,
            r.chunk,
            r.route.name(),
            engine_name(r.engine),
            r.out_offset,
            r.bytes,
            r.route.gpu_fraction(),
            r.shard
        );
    }
    crate::output::write_atomic(path, text.as_bytes())
}

fn engine_name(e: Engine) -> &'static str {
    match e {
        Engine::Gpu => "gpu",
        Engine::Cpu => "cpu",
    }
}

/// The run's switching timeline: each chunk at the (virtual) time it was
/// routed, in its route's row, marked with the engines that ran its parts.
pub(crate) fn timeline(
    name: &str,
    receipts: &[MergeReceipt],
    samples: Vec<crate::pressure::Sample>,
    settings: &crate::policy::PolicySettings,
    replay_step_ms: Option<u64>,
    no_gpu: bool,
) -> crate::timeline::Timeline {
    use std::collections::BTreeMap;
    let mut by_chunk: BTreeMap<usize, (&MergeReceipt, bool, bool)> = BTreeMap::new();
    for r in receipts {
        let e = by_chunk.entry(r.global).or_insert((r, false, false));
        match r.engine {
            Engine::Gpu => e.1 = true,
            Engine::Cpu => e.2 = true,
        }
        if r.routed_us < e.0.routed_us {
            e.0 = r;
        }
    }
    let chunks = by_chunk
        .into_iter()
        .map(|(global, (r, gpu, cpu))| crate::timeline::TimelineChunk {
            chunk: global,
            t_ms: match replay_step_ms {
                Some(step) => crate::plan::replay_time(global, step) as f64,
                None => r.routed_us as f64 / 1000.0,
            },
            route: r.route.name(),
            engine: Some(match (gpu, cpu) {
                (true, true) => "gpu+cpu",
                (true, false) => "gpu",
                _ => "cpu",
            }),
        })
        .collect();
    crate::timeline::Timeline {
        title: format!(
            "decompress {name}: {} chunks, {}",
            receipts.iter().map(|r| r.global).max().map_or(0, |m| m + 1),
            if replay_step_ms.is_some() { "replayed trace (virtual time)" } else { "live run" }
        ),
        samples,
        threshold: settings.memory_pressure_threshold,
        hysteresis: settings.hysteresis_factor,
        free_threshold_mb: settings.gpu_memory_threshold_mb,
        chunks,
        note: no_gpu.then(|| {
            "no GPU here: chunks routed to the GPU were decoded on the CPU (the fill says which engine ran each)"
                .to_string()
        }),
    }
}
