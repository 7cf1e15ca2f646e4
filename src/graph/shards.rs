//! A run over several shards (a packed checkpoint directory) in one graph:
//! one work queue holds every shard's chunks, numbered on across shards in
//! index order, so the workers stay busy across shard boundaries. Each chunk
//! task carries its shard; each shard has its own container, tables and
//! output placement; the ledger checks every shard's chunks exactly once.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::cluster::Timely;
use super::placement::{write_behind, Discard, FilePlacement, MemoryPlacement, Placement};
use super::records::{ChunkTask, MergeReceipt};
use super::RunOptions;
use crate::codec::Tables;
use crate::engine::{chunk_jobs, DecodedModel};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::output::TempOutput;
use crate::stats::{ChunkCounts, ChunkTally, Statistics};

/// One shard of a run: its container, its tables at the run's precision,
/// and where its decoded bytes land.
pub(crate) struct ShardRun {
    pub(crate) container: Arc<Container>,
    pub(crate) tables: Vec<Option<Arc<Tables>>>,
    pub(crate) out: Arc<dyn Placement>,
}

/// One shard's share of a run's figures (the chunk counts and bytes of
/// [`Statistics`], for this shard's chunks); over all shards they add up to
/// the run's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShardFigures {
    /// The shard's index in the run (index order).
    pub index: usize,
    /// The global index of the shard's first chunk.
    pub first_chunk: usize,
    /// The shard's chunks by where they ran and how they were routed.
    #[serde(flatten)]
    pub chunks: ChunkCounts,
    /// Container bytes read.
    pub bytes_in: u64,
    /// Decoded bytes written.
    pub bytes_out: u64,
}

/// The chunks a run decodes: those of every tensor, or of the (shard,
/// tensor) pairs `tensors` lists (sorted); and of those, where `bytes` is
/// given, only the chunks whose output meets that range of the data region
/// (a part of one tensor, read alone).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Only<'a> {
    pub tensors: Option<&'a [(usize, usize)]>,
    pub bytes: Option<(u64, u64)>,
}

impl<'a> Only<'a> {
    /// Every chunk.
    pub const ALL: Only<'static> = Only {
        tensors: None,
        bytes: None,
    };

    /// The chunks of the (shard, tensor) pairs `tensors` (sorted), or all.
    pub fn tensors(tensors: Option<&'a [(usize, usize)]>) -> Self {
        Only {
            tensors,
            bytes: None,
        }
    }

    /// Whether tensor `tensor` of shard `shard` is selected.
    pub fn selected(&self, shard: usize, tensor: usize) -> bool {
        self.tensors
            .is_none_or(|o| o.binary_search(&(shard, tensor)).is_ok())
    }

    /// Whether the `len` output bytes at `offset` meet the byte range.
    fn meets(&self, offset: u64, len: u64) -> bool {
        self.bytes
            .is_none_or(|(start, end)| offset < end && offset + len > start)
    }
}

/// Every chunk of `shards` that `only` selects, in global order: shards in
/// order, tensors in file order, chunks in order. Chunks keep their global
/// numbers when `only` leaves others out.
pub(crate) fn chunk_tasks(shards: &[ShardRun], only: Only<'_>) -> Vec<ChunkTask> {
    let mut tasks = Vec::new();
    let mut global = 0;
    for (shard, s) in shards.iter().enumerate() {
        let c = &s.container;
        for j in chunk_jobs(c) {
            let k = global;
            global += 1;
            if !only.selected(shard, j.tensor) || !only.meets(j.out_offset, j.out_len) {
                continue;
            }
            tasks.push(ChunkTask {
                global: k,
                shard,
                tensor: j.tensor,
                chunk: j.chunk,
                elements: c.header().tensors[j.tensor].chunks[j.chunk].elements,
                out_offset: j.out_offset,
                out_len: j.out_len,
                sent_us: 0,
            });
        }
    }
    tasks
}

/// Each shard's figures, from the merges' receipts.
pub(crate) fn figures(shards: &[ShardRun], receipts: &[MergeReceipt]) -> Vec<ShardFigures> {
    let mut first_chunk = 0;
    let mut out: Vec<ShardFigures> = shards
        .iter()
        .enumerate()
        .map(|(shard, s)| {
            let f = ShardFigures {
                index: shard,
                first_chunk,
                ..ShardFigures::default()
            };
            first_chunk += s.container.header().chunk_count();
            f
        })
        .collect();
    let mut tallies: Vec<ChunkTally> = shards.iter().map(|_| ChunkTally::default()).collect();
    for r in receipts {
        tallies[r.shard].part(r.global, r.route, r.engine);
        let f = &mut out[r.shard];
        f.bytes_in += r.bytes_in;
        f.bytes_out += r.bytes;
    }
    for (f, tally) in out.iter_mut().zip(&tallies) {
        f.chunks = tally.counts();
    }
    out
}

/// What a run over several shards did: the whole run's statistics, and each
/// shard's share.
#[derive(Debug, Clone)]
pub struct ShardedRun {
    /// The one graph run's statistics, over every shard.
    pub statistics: Statistics,
    /// Each shard's share, in the order given.
    pub shards: Vec<ShardFigures>,
}

/// The timely arguments of a run into memory, or into files of this
/// process's own: one process. In a cluster each process holds only the
/// parts it decoded, so only a shared file or directory can be its output
/// ([`super::decompress_files_in_cluster`]).
pub(super) fn one_process(opts: &RunOptions) -> Result<Timely> {
    let timely = Timely::parse(opts)?;
    if timely.cluster.processes > 1 {
        return Err(Error::InvalidArgument(format!(
            "a cluster run (timely's -n {}) writes a file or a packed directory (the \
             command line's decompress); a decode into memory or into files of one \
             process's own runs in one process",
            timely.cluster.processes
        )));
    }
    Ok(timely)
}

/// Decompresses every container of `shards` into its safetensors file in
/// one graph run. Each file is written under a temporary name and renamed
/// only once the whole run has succeeded; a failure leaves none of them.
/// An output that is the null device gets nothing: its chunks are decoded
/// (so checked) and dropped.
pub fn decompress_files(
    shards: &[(Arc<Container>, PathBuf)],
    opts: &RunOptions,
) -> Result<ShardedRun> {
    let timely = one_process(opts)?;
    let behind = write_behind(timely.local_workers());
    let mut temps = Vec::with_capacity(shards.len());
    let mut runs = Vec::with_capacity(shards.len());
    for (c, output) in shards {
        if crate::output::is_null_device(output) {
            // Decoded (so checked) and dropped, in no order: nothing to
            // write or rename.
            runs.push((c.clone(), Arc::new(Discard) as Arc<dyn Placement>));
            continue;
        }
        let temp = TempOutput::create_from(output, c.path())?;
        let file = temp.file().try_clone().map_err(|e| temp.write_error(e))?;
        let out = FilePlacement::prepare(file, temp.shown_path(), c, behind)?;
        runs.push((c.clone(), Arc::new(out) as Arc<dyn Placement>));
        temps.push(temp);
    }
    let (statistics, figures) = super::run(runs, opts, timely, Only::ALL, None)?;
    for temp in temps {
        temp.commit()?;
    }
    Ok(ShardedRun {
        statistics,
        shards: figures,
    })
}

/// Decompresses every container of `shards` into memory in one graph run:
/// each one's safetensors data region, in the order given.
pub fn decompress_to_memory_all(
    shards: &[Arc<Container>],
    opts: &RunOptions,
) -> Result<(Vec<DecodedModel>, ShardedRun)> {
    to_memory(shards, opts, one_process(opts)?, None)
}

/// [`decompress_to_memory_all`] under timely's parsed arguments, of the
/// tensors `only` lists ((shard, chunk owner) pairs, sorted) or all.
pub(super) fn to_memory(
    shards: &[Arc<Container>],
    opts: &RunOptions,
    timely: Timely,
    only: Option<&[(usize, usize)]>,
) -> Result<(Vec<DecodedModel>, ShardedRun)> {
    // A shard with nothing to decode (`only` names none of its tensors)
    // gets no region: its data comes back empty.
    let outs: Vec<Arc<MemoryPlacement>> = shards
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let wanted = only.is_none_or(|o| o.iter().any(|&(s, _)| s == k));
            let len = if wanted {
                c.header().data_len as usize
            } else {
                0
            };
            Arc::new(MemoryPlacement::new(
                crate::engine::cpu::output_buffer(len),
                0,
            ))
        })
        .collect();
    let runs = shards
        .iter()
        .zip(&outs)
        .map(|(c, o)| (c.clone(), o.clone() as Arc<dyn Placement>))
        .collect();
    let (statistics, figures) = super::run(runs, opts, timely, Only::tensors(only), None)?;
    let models = shards
        .iter()
        .zip(outs)
        .map(|(c, o)| {
            Ok(DecodedModel {
                source_header: c.header().source_header.clone(),
                data: MemoryPlacement::into_inner(o)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((
        models,
        ShardedRun {
            statistics,
            shards: figures,
        },
    ))
}

/// Decodes the tensors `tensors` ((shard, tensor) pairs) of `shards` into
/// memory in one graph run: each shard's data region at full length, the
/// listed tensors' bytes in place (with the rest of any chunk they share
/// with small tensors), every other byte zero; a shard none of whose
/// tensors is listed, empty. The buffers are mapped lazily, so bytes never
/// written take no memory.
pub fn decompress_tensors(
    shards: &[Arc<Container>],
    tensors: &[(usize, usize)],
    opts: &RunOptions,
) -> Result<(Vec<Vec<u8>>, Statistics)> {
    let timely = one_process(opts)?;
    let mut owners = Vec::with_capacity(tensors.len());
    for &(shard, tensor) in tensors {
        let c = shards.get(shard).ok_or_else(|| {
            Error::InvalidArgument(format!("shard {shard} of a run over {}", shards.len()))
        })?;
        if tensor >= c.header().tensors.len() {
            return Err(Error::InvalidArgument(format!(
                "{}: no tensor {tensor} (it has {})",
                c.path().display(),
                c.header().tensors.len()
            )));
        }
        owners.push((shard, c.header().chunk_owner(tensor)));
    }
    owners.sort_unstable();
    owners.dedup();
    let (models, run) = to_memory(shards, opts, timely, Some(&owners))?;
    Ok((models.into_iter().map(|m| m.data).collect(), run.statistics))
}
