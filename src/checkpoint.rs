//! Sharded checkpoints: a Hugging Face model directory (`model-00001-of-00003.safetensors`
//! and so on, `model.safetensors.index.json`, `config.json`, tokenizer files).
//!
//! * [`compress_dir`] writes one `<stem>.padic` per `*.safetensors` shard and
//!   copies every other file unchanged;
//! * [`decompress_dir`] gives every file back byte-identical;
//! * [`inspect_dir`] reports per shard and in total.
//!
//! Every shard is checked before any work (named in the index but missing, a
//! header that does not parse, a container that fails its checks), and an
//! output directory that exists and is not empty is refused. The output is
//! written into a temporary directory beside the final name and renamed at
//! the end, so no partial directory is ever left under the final name.
//!
//! All shards decode in one graph run, their chunks numbered on across shards
//! in index order (the shards' names sorted, which for Hugging Face's
//! `model-00001-of-00003` numbering is the index's order).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::compress::{compress_file, CompressOptions, CompressSummary};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::inspect::{inspect, Report};
use crate::pipeline::{Pipeline, ShardFigures};
use crate::progress::Progress;
use crate::stats::Statistics;

/// The extension of an uncompressed shard.
pub const SAFETENSORS_EXT: &str = "safetensors";
/// The extension of a compressed shard.
pub const PADIC_EXT: &str = "padic";
/// How a sharded checkpoint's index ends (`model.safetensors.index.json`).
pub const INDEX_SUFFIX: &str = ".safetensors.index.json";

/// Whether `path` names a checkpoint: a directory, or an index file.
pub fn is_checkpoint(path: &Path) -> bool {
    path.is_dir() || is_index_json(path)
}

/// Whether `path` is a sharded checkpoint's index (`*.safetensors.index.json`).
pub fn is_index_json(path: &Path) -> bool {
    path.is_file()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(INDEX_SUFFIX))
}

/// The directory of the checkpoint `input` names: `input` itself, or the
/// directory its index is in.
pub fn root_of(input: &Path) -> PathBuf {
    if input.is_dir() {
        return input.to_path_buf();
    }
    match input.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The files of a checkpoint directory, relative to its root, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The checkpoint directory; `shards` and `others` are relative to it.
    pub root: PathBuf,
    /// Shards (files with the extension asked for), in index order.
    pub shards: Vec<PathBuf>,
    /// Every other file, copied unchanged.
    pub others: Vec<PathBuf>,
    /// Directories with nothing in them, made again in the output.
    pub empty_dirs: Vec<PathBuf>,
    /// Symlinks that lead nowhere (to nothing, or round in a loop), and why:
    /// refused where the directory is written out ([`Checkpoint::check_writable`]),
    /// no obstacle to reading its shards.
    pub unreadable: Vec<(PathBuf, String)>,
}

fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

impl Checkpoint {
    /// Lists the checkpoint at `input` (a directory, or an index file in
    /// one), with `shard_ext` files as shards, and checks that every shard its
    /// index names is there (as `<stem>.<shard_ext>`).
    pub fn discover(input: &Path, shard_ext: &str) -> Result<Checkpoint> {
        if !is_checkpoint(input) {
            return Err(bad(
                input,
                format!("neither a directory nor a `*{INDEX_SUFFIX}` file"),
            ));
        }
        let root = root_of(input);
        let mut listing = Listing::default();
        listing.walk(&root, Path::new(""))?;
        let Listing {
            mut files,
            mut empty_dirs,
            unreadable,
            ..
        } = listing;
        files.sort();
        empty_dirs.sort();
        let (shards, others): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|f| f.extension().is_some_and(|e| e == shard_ext));
        let ckpt = Checkpoint {
            root,
            shards,
            others,
            empty_dirs,
            unreadable,
        };
        for index in ckpt.indexes() {
            ckpt.check_index(&index, shard_ext)?;
        }
        if ckpt.shards.is_empty() {
            return Err(bad(input, format!("holds no `*.{shard_ext}` shard")));
        }
        Ok(ckpt)
    }

    fn indexes(&self) -> Vec<PathBuf> {
        self.others
            .iter()
            .filter(|f| f.to_str().is_some_and(|n| n.ends_with(INDEX_SUFFIX)))
            .map(|f| self.root.join(f))
            .collect()
    }

    /// Every shard named in `index`'s `weight_map` is here.
    fn check_index(&self, index: &Path, shard_ext: &str) -> Result<()> {
        for (name, shard) in self.index_shards(index, shard_ext)? {
            if !self.shards.contains(&shard) {
                let what = match shard_ext {
                    SAFETENSORS_EXT => format!("names shard '{name}', which is missing"),
                    _ => format!(
                        "names shard '{name}', but its container {} is missing",
                        self.root.join(&shard).display()
                    ),
                };
                return Err(bad(index, what));
            }
        }
        Ok(())
    }

    /// The shards `index`'s `weight_map` names, each as written there and as
    /// the path of its `shard_ext` file relative to the root. A name must be
    /// a `.safetensors` file inside the index's directory.
    fn index_shards(&self, index: &Path, shard_ext: &str) -> Result<Vec<(String, PathBuf)>> {
        // Bytes, not text: one that is not UTF-8 is a bad index (exit 2),
        // not a failed read.
        let bytes = std::fs::read(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(index, format!("not a JSON index: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(index, "no `weight_map` object"))?;
        let named = map
            .iter()
            .map(|(tensor, v)| {
                v.as_str().ok_or_else(|| {
                    bad(
                        index,
                        format!("`weight_map` of '{tensor}' is not a file name"),
                    )
                })
            })
            .collect::<Result<BTreeSet<&str>>>()?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let rel = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        named
            .into_iter()
            .map(|name| {
                use std::path::Component::{CurDir, Normal};
                // `./model-00001-of-00002.safetensors` is the same file.
                let path: PathBuf = Path::new(name)
                    .components()
                    .filter(|c| *c != CurDir)
                    .collect();
                let inside = path.components().all(|c| matches!(c, Normal(_)));
                if !inside {
                    return Err(bad(
                        index,
                        format!(
                            "names shard '{name}', which is not a file inside the index's \
                             directory: a shard is named by its path relative to the index"
                        ),
                    ));
                }
                if path.extension().is_none_or(|e| e != SAFETENSORS_EXT) {
                    return Err(bad(
                        index,
                        format!("names shard '{name}', which is not a `.safetensors` file"),
                    ));
                }
                Ok((name.to_string(), rel.join(path).with_extension(shard_ext)))
            })
            .collect()
    }

    /// Checks, before any work, that the directory can be written out with
    /// its shards as `out_ext` files: every other file can be read, and none
    /// has the name a shard's output takes (it would be written twice).
    pub fn check_writable(&self, out_ext: &str) -> Result<()> {
        if let Some((rel, why)) = self.unreadable.first() {
            return Err(bad(
                &self.root.join(rel),
                format!(
                    "{why}: every file of the directory is copied, and this one cannot be read"
                ),
            ));
        }
        for shard in &self.shards {
            let out = shard.with_extension(out_ext);
            // A file of that name, or a directory (with files, empty, or
            // holding another shard).
            let taken = |p: &PathBuf| p.starts_with(&out);
            if self.others.iter().any(taken)
                || self.empty_dirs.iter().any(taken)
                || self.shards.iter().any(|s| s != shard && taken(s))
            {
                return Err(bad(
                    &self.root.join(&out),
                    format!(
                        "{} {} takes this name too, so the output would hold two files of \
                         one name: move or rename one of them",
                        shard.display(),
                        if out_ext == PADIC_EXT {
                            "compressed"
                        } else {
                            "decoded"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The shards a model is loaded from: those the root's indexes name
    /// (or only `index`'s, when the checkpoint was given by its index), as
    /// `transformers` reads them; every shard where there is no index.
    fn model_shards(&self, index: Option<&Path>) -> Result<Vec<PathBuf>> {
        let indexes: Vec<PathBuf> = match index {
            Some(i) => vec![i.to_path_buf()],
            None => self
                .indexes()
                .into_iter()
                .filter(|i| i.parent() == Some(self.root.as_path()))
                .collect(),
        };
        if indexes.is_empty() {
            return Ok(self.shards.clone());
        }
        let mut named = BTreeSet::new();
        for i in &indexes {
            named.extend(self.index_shards(i, PADIC_EXT)?.into_iter().map(|(_, p)| p));
        }
        // In index order: the shards' order, kept.
        Ok(self
            .shards
            .iter()
            .filter(|s| named.contains(*s))
            .cloned()
            .collect())
    }
}

/// A checkpoint directory's files and empty directories, relative to its
/// root. Symlinks are followed (a Hugging Face cache's snapshot is symlinks
/// into its blobs), so the copy holds what they point at; a directory that
/// contains itself through one, and anything that is neither a file nor a
/// directory (a FIFO, a socket, a device), is refused.
#[derive(Default)]
struct Listing {
    files: Vec<PathBuf>,
    empty_dirs: Vec<PathBuf>,
    unreadable: Vec<(PathBuf, String)>,
    /// The directories being walked, by their canonical paths.
    open: Vec<PathBuf>,
}

impl Listing {
    fn walk(&mut self, root: &Path, rel: &Path) -> Result<()> {
        let dir = root.join(rel);
        let real = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
        if self.open.contains(&real) {
            return Err(bad(
                &dir,
                format!("a symlink loop: this directory is {} again", real.display()),
            ));
        }
        self.open.push(real);
        let mut empty = true;
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let name = rel.join(entry.file_name());
            empty = false;
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if entry.file_type().is_ok_and(|t| t.is_symlink()) => {
                    let why = match e.raw_os_error() {
                        Some(libc::ELOOP) => "a symlink loop".to_string(),
                        _ => match std::fs::read_link(&path) {
                            Ok(to) => {
                                format!("a symlink to {}, which does not exist", to.display())
                            }
                            Err(_) => format!("a symlink that leads nowhere ({e})"),
                        },
                    };
                    self.unreadable.push((name, why));
                    continue;
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            if meta.is_dir() {
                self.walk(root, &name)?;
            } else if meta.is_file() {
                self.files.push(name);
            } else {
                return Err(bad(
                    &path,
                    "neither a regular file nor a directory (a FIFO, a socket or a device): a checkpoint directory may hold only files and directories",
                ));
            }
        }
        self.open.pop();
        if empty && !rel.as_os_str().is_empty() {
            self.empty_dirs.push(rel.to_path_buf());
        }
        Ok(())
    }
}

/// A directory being written under a temporary name beside its final one,
/// removed if dropped before [`TempDir::commit`].
#[derive(Debug)]
struct TempDir {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// Refuses an output directory `target` inside the input directory `source`
/// (or holding it), or one that exists and is not an empty directory.
fn check_target(target: &Path, source: &Path) -> Result<()> {
    let absolute = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    if let (Some(t), Some(s)) = (absolute(target), absolute(source)) {
        if t.starts_with(&s) || s.starts_with(&t) {
            return Err(bad(
                target,
                format!(
                    "the output directory would lie inside the input {} (or hold it): \
                     give a directory outside it",
                    source.display()
                ),
            ));
        }
    }
    if target.exists() {
        let empty = target.is_dir()
            && std::fs::read_dir(target)
                .map_err(|e| Error::io(target, e))?
                .next()
                .is_none();
        if !empty {
            return Err(bad(
                target,
                "the output exists and is not an empty directory",
            ));
        }
    }
    Ok(())
}

/// `.<name>.<suffix>` beside `target`.
fn temp_beside(target: &Path, suffix: &str) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| bad(target, "the output is not a directory path"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{suffix}"));
    Ok(target.with_file_name(temp_name))
}

impl TempDir {
    /// Checks `target` ([`check_target`]), then creates `.<name>.tmp-<pid>`
    /// beside it. A symlink to an empty directory is written through: the
    /// directory it leads to is replaced, and the link stays.
    fn create(target: &Path, source: &Path) -> Result<TempDir> {
        let target = crate::output::written_through(target)?;
        check_target(&target, source)?;
        let temp = temp_beside(&target, &format!("tmp-{}", std::process::id()))?;
        // Errors name the output as given, not the hidden temporary name.
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(|e| Error::io(&target, e))?;
        }
        crate::output::create_pending(&temp, || std::fs::create_dir_all(&temp))
            .map_err(|e| Error::io(&target, e))?;
        Ok(TempDir {
            temp,
            target,
            committed: false,
        })
    }

    /// The path of `rel` inside the temporary directory, its parents created.
    fn file(&self, rel: &Path) -> Result<PathBuf> {
        let path = self.temp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        Ok(path)
    }

    /// `err` naming the path it would have under the final name rather than
    /// under the hidden temporary one (which is removed on the way out).
    fn shown(&self, err: Error) -> Error {
        match err {
            Error::Io { path, source } => match path.strip_prefix(&self.temp) {
                Ok(rel) => Error::Io {
                    path: self.target.join(rel),
                    source,
                },
                Err(_) => Error::Io { path, source },
            },
            other => other,
        }
    }

    /// Renames the directory to its final name (over an empty directory there).
    fn commit(mut self) -> Result<()> {
        if self.target.is_dir() {
            std::fs::remove_dir(&self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        crate::output::unregister_pending(&self.temp);
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
            crate::output::unregister_pending(&self.temp);
        }
    }
}

/// Copies every file of `ckpt` that is not a shard into `into`, at the same
/// relative path.
fn copy_others(ckpt: &Checkpoint, into: &Path) -> Result<()> {
    for rel in &ckpt.empty_dirs {
        let to = into.join(rel);
        std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
    }
    for rel in &ckpt.others {
        let (from, to) = (ckpt.root.join(rel), into.join(rel));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
    }
    Ok(())
}

/// What compressing a checkpoint did, per shard.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    /// Each shard's output (relative) and summary.
    pub shards: Vec<(PathBuf, CompressSummary)>,
    /// Files copied unchanged.
    pub copied: usize,
}

impl CheckpointSummary {
    /// The shards' summaries added up.
    pub fn total(&self) -> CompressSummary {
        self.shards.iter().fold(
            CompressSummary {
                tensors: 0,
                chunks: 0,
                original_bytes: 0,
                compressed_bytes: 0,
            },
            |a, (_, s)| CompressSummary {
                tensors: a.tensors + s.tensors,
                chunks: a.chunks + s.chunks,
                original_bytes: a.original_bytes + s.original_bytes,
                compressed_bytes: a.compressed_bytes + s.compressed_bytes,
            },
        )
    }
}

/// Compresses every `*.safetensors` of the checkpoint at `input` (a
/// directory or its index) into `<stem>.padic` under `output`, and copies
/// every other file.
pub fn compress_dir(
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    progress: &Progress,
) -> Result<CheckpointSummary> {
    let ckpt = Checkpoint::discover(input, SAFETENSORS_EXT)?;
    ckpt.check_writable(PADIC_EXT)?;
    for rel in &ckpt.shards {
        check_safetensors(&ckpt.root.join(rel))?;
    }
    let out = TempDir::create(output, &ckpt.root)?;
    let mut shards = Vec::with_capacity(ckpt.shards.len());
    let written = (|| {
        for rel in &ckpt.shards {
            let packed = rel.with_extension(PADIC_EXT);
            let s = compress_file(&ckpt.root.join(rel), &out.file(&packed)?, opts, progress)?;
            shards.push((packed, s));
        }
        copy_others(&ckpt, &out.temp)
    })();
    written.map_err(|e| out.shown(e))?;
    out.commit()?;
    Ok(CheckpointSummary {
        shards,
        copied: ckpt.others.len(),
    })
}

/// A shard's header parses (before any work is done).
fn check_safetensors(path: &Path) -> Result<()> {
    let map = crate::input::map(path)?;
    if map.starts_with(crate::format::MAGIC) {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            what: crate::compress::ALREADY_A_CONTAINER.into(),
        });
    }
    safetensors::SafeTensors::read_metadata(&map).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    Ok(())
}

/// Opens every shard of the packed checkpoint at `input` (a directory or its
/// index), in index order, each checked as [`Container::open`] checks it.
pub fn open_packed(input: &Path) -> Result<Vec<(PathBuf, Arc<Container>)>> {
    open_shards(&Checkpoint::discover(input, PADIC_EXT)?)
}

/// Opens the shards a model loads from, in the packed checkpoint at `input`
/// (a directory or its index): with an index, the shards it names (a
/// `consolidated.padic` or another copy beside them is not read), every
/// shard without one. A tensor name found in two of them is refused, naming
/// both: a dictionary of tensors can hold only one.
pub fn open_model(input: &Path) -> Result<Vec<(PathBuf, Arc<Container>)>> {
    let ckpt = Checkpoint::discover(input, PADIC_EXT)?;
    let index = is_index_json(input).then_some(input);
    let shards = ckpt.model_shards(index)?;
    let opened = open_these(&ckpt, &shards)?;
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for (rel, c) in &opened {
        for t in &c.header().tensors {
            if let Some(first) = seen.insert(&t.name, rel) {
                return Err(bad(
                    &ckpt.root,
                    format!(
                        "tensor '{}' is in two shards, {} and {}: a model's tensors need \
                         names of their own (an index naming the shards to load settles it)",
                        t.name,
                        first.display(),
                        rel.display()
                    ),
                ));
            }
        }
    }
    Ok(opened)
}

fn open_shards(ckpt: &Checkpoint) -> Result<Vec<(PathBuf, Arc<Container>)>> {
    open_these(ckpt, &ckpt.shards)
}

fn open_these(ckpt: &Checkpoint, shards: &[PathBuf]) -> Result<Vec<(PathBuf, Arc<Container>)>> {
    shards
        .iter()
        .map(|rel| Ok((rel.clone(), Arc::new(Container::open(ckpt.root.join(rel))?))))
        .collect()
}

/// One shard's share of a checkpoint's decompression.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatistics {
    /// The shard's path, relative to the checkpoint root.
    pub shard: PathBuf,
    /// Its chunk counts and bytes (they add up to the run's).
    #[serde(flatten)]
    pub figures: ShardFigures,
}

/// What decompressing a checkpoint did: the one graph run's statistics over
/// every shard (the keys of a single file's `--stats-json`), and each shard's
/// share.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointStatistics {
    /// The run over every shard.
    #[serde(flatten)]
    pub statistics: Statistics,
    /// One entry per shard, in index order.
    pub shards: Vec<ShardStatistics>,
    /// Seconds for the whole checkpoint, other files' copies included.
    pub checkpoint_wall_time_s: f64,
}

/// A packed checkpoint, checked and opened: its shards in index order.
pub struct PackedCheckpoint {
    ckpt: Checkpoint,
    shards: Vec<(PathBuf, Arc<Container>)>,
}

impl PackedCheckpoint {
    /// Opens the packed checkpoint at `input` (a directory or its index):
    /// every shard its index names is there, and each passes
    /// [`Container::open`]'s checks, before any work.
    pub fn open(input: &Path) -> Result<Self> {
        let ckpt = Checkpoint::discover(input, PADIC_EXT)?;
        let shards = open_shards(&ckpt)?;
        Ok(PackedCheckpoint { ckpt, shards })
    }

    /// The shards (paths relative to the checkpoint root), in index order.
    pub fn shards(&self) -> &[(PathBuf, Arc<Container>)] {
        &self.shards
    }

    /// Chunks over every shard (what a replay spreads a trace over).
    pub fn chunk_count(&self) -> usize {
        self.shards
            .iter()
            .map(|(_, c)| c.header().chunk_count())
            .sum()
    }

    /// Decompresses every shard back to `<stem>.safetensors` under `output`,
    /// all in one graph run, and copies every other file: the files come
    /// back byte-identical.
    pub fn decompress(
        &self,
        output: &Path,
        pipeline: &Pipeline,
        target_precision: Option<u32>,
    ) -> Result<CheckpointStatistics> {
        let started = std::time::Instant::now();
        let cluster = pipeline.cluster()?;
        let processes = cluster.processes;
        let discard = crate::output::is_null_device(output);
        if !discard {
            self.ckpt.check_writable(SAFETENSORS_EXT)?;
        }
        let run = if discard && processes == 1 {
            // `-o /dev/null`: every shard decoded into it, so every chunk
            // checked, and nothing kept.
            let targets: Vec<_> = self
                .shards
                .iter()
                .map(|(_, c)| (c.clone(), output.to_path_buf()))
                .collect();
            pipeline.decompress_shards_to_files(&targets, target_precision)?
        } else if processes > 1 {
            // Every process writes into one temporary directory of an
            // agreed name; process 0 copies the other files and renames it.
            // To the null device, every process decodes its chunks and
            // drops them (see `graph::cluster::decompress_shared`).
            let output = &crate::output::written_through(output)?;
            if !discard {
                check_target(output, &self.ckpt.root)?;
            }
            let temp = temp_beside(output, &cluster.temp_suffix())?;
            let files = self
                .shards
                .iter()
                .map(|(rel, c)| (c.clone(), temp.join(rel.with_extension(SAFETENSORS_EXT))))
                .collect();
            let complete = || copy_others(&self.ckpt, &temp);
            pipeline.decompress_shards_in_cluster(
                files,
                &temp,
                output,
                &complete,
                target_precision,
            )?
        } else {
            let out = TempDir::create(output, &self.ckpt.root)?;
            let run = (|| {
                let targets = self
                    .shards
                    .iter()
                    .map(|(rel, c)| {
                        Ok((c.clone(), out.file(&rel.with_extension(SAFETENSORS_EXT))?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let run = pipeline.decompress_shards_to_files(&targets, target_precision)?;
                copy_others(&self.ckpt, &out.temp)?;
                Ok(run)
            })()
            .map_err(|e| out.shown(e))?;
            out.commit()?;
            run
        };
        Ok(CheckpointStatistics {
            statistics: run.statistics,
            shards: self
                .shards
                .iter()
                .zip(run.shards)
                .map(|((shard, _), figures)| ShardStatistics {
                    shard: shard.clone(),
                    figures,
                })
                .collect(),
            checkpoint_wall_time_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// Decompresses every `*.padic` of the packed checkpoint at `input` back to
/// `<stem>.safetensors` under `output` (see [`PackedCheckpoint::decompress`]).
pub fn decompress_dir(
    input: &Path,
    output: &Path,
    pipeline: &Pipeline,
    target_precision: Option<u32>,
) -> Result<CheckpointStatistics> {
    PackedCheckpoint::open(input)?.decompress(output, pipeline, target_precision)
}

/// One shard's inspection.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    /// The shard's path, relative to the checkpoint root.
    pub shard: PathBuf,
    /// The global index of the shard's first chunk (as `plan` and a run
    /// number chunks across shards).
    pub first_chunk: usize,
    /// The shard's chunks.
    pub chunks: usize,
    #[serde(flatten)]
    /// The shard's per-tensor report (flattened into the JSON).
    pub report: Report,
}

/// A packed checkpoint's inspection: per shard, and in total.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// One entry per shard, in index order.
    pub shards: Vec<ShardReport>,
    /// Tensors over all shards.
    pub tensors: usize,
    /// Chunks over all shards.
    pub chunks: usize,
    /// Bytes of the safetensors shards, headers included.
    pub original_bytes: u64,
    /// Bytes of the container shards.
    pub compressed_bytes: u64,
    /// `compressed_bytes / original_bytes` (lower is better).
    pub ratio: f64,
}

/// Inspects every shard of the packed checkpoint at `input`.
pub fn inspect_dir(input: &Path) -> Result<CheckpointReport> {
    let mut first_chunk = 0;
    let shards: Vec<ShardReport> = open_packed(input)?
        .into_iter()
        .map(|(shard, c)| {
            let chunks = c.header().chunk_count();
            first_chunk += chunks;
            ShardReport {
                shard,
                first_chunk: first_chunk - chunks,
                chunks,
                report: inspect(&c),
            }
        })
        .collect();
    let original: u64 = shards.iter().map(|s| s.report.original_bytes).sum();
    let compressed: u64 = shards.iter().map(|s| s.report.compressed_bytes).sum();
    Ok(CheckpointReport {
        tensors: shards.iter().map(|s| s.report.tensors.len()).sum(),
        chunks: first_chunk,
        original_bytes: original,
        compressed_bytes: compressed,
        ratio: compressed as f64 / original.max(1) as f64,
        shards,
    })
}

/// The report as text: each shard's table, then the totals.
pub fn render(r: &CheckpointReport) -> String {
    let mut s = String::new();
    for shard in &r.shards {
        s += &format!(
            "shard {} (chunks {} to {})\n",
            crate::error::one_line(&shard.shard.display().to_string()),
            shard.first_chunk,
            (shard.first_chunk + shard.chunks).saturating_sub(1)
        );
        s += &crate::inspect::render(&shard.report);
        s.push('\n');
    }
    s += &format!(
        "checkpoint total: {} shard{}, {} tensors, {} chunks, {} -> {} bytes, ratio {:.4}\n",
        r.shards.len(),
        if r.shards.len() == 1 { "" } else { "s" },
        r.tensors,
        r.chunks,
        r.original_bytes,
        r.compressed_bytes,
        r.ratio
    );
    s
}
