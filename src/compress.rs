//! safetensors -> container.
//!
//! Tensors are cut into chunks of about `chunk_kib` KiB of decoded output
//! (never spanning tensors). `workers` threads take the chunks of every
//! tensor from one queue and code them; this thread writes them in order.
//! A worker runs at most a window of chunks ahead of the writer, so memory
//! stays bounded whatever the model's size.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard};

use crate::codec::layout::PlaneZero;
use crate::codec::{chunk, FloatKind, Layout};
use crate::error::{Error, Result};
use crate::format::{CodecEntry, Header, TensorEntry, Writer, FORMAT_NAME, MAX_CHUNK_BYTES};
use crate::output::TempOutput;
use crate::progress::Progress;

/// How to compress.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Base of the digit expansion.
    pub prime: u32,
    /// Digits kept per value; `None` keeps every digit (exact).
    pub precision: Option<u32>,
    /// Allow dropping digits when `precision` cannot hold a fraction.
    pub lossy: bool,
    /// Decoded bytes per chunk, in KiB.
    pub chunk_kib: u32,
    /// Threads that code chunks (at least 1; the writer is one more).
    pub workers: usize,
}

/// One coding thread per core.
pub fn default_workers() -> usize {
    crate::config::cores()
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            prime: 2,
            precision: None,
            lossy: false,
            chunk_kib: 1024,
            workers: default_workers(),
        }
    }
}

/// What a compression did.
#[derive(Debug, Clone)]
pub struct CompressSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Bytes of the safetensors input.
    pub original_bytes: u64,
    /// Bytes of the container.
    pub compressed_bytes: u64,
}

/// One unit of coding work.
struct Job {
    tensor: usize,
    /// Byte range within the safetensors data region.
    start: usize,
    end: usize,
    /// For a run of small tensors that may share a chunk (`tensor` the
    /// first): each tensor's index and byte range; empty otherwise.
    run: Vec<(usize, usize, usize)>,
}

/// One coded chunk: the tensor it is listed under, its values, its
/// sections and their largest error.
struct Piece {
    tensor: usize,
    bytes: usize,
    sections: Vec<Vec<u8>>,
    /// Each section's xxh3, once the piece is kept (see [`Piece::summed`]).
    sums: Vec<u64>,
    err: f64,
}

impl Piece {
    /// The piece with its sections' checksums, computed on the coding
    /// thread rather than by the one thread that writes the file.
    fn summed(mut self) -> Self {
        self.sums = crate::format::section_sums(&self.sections);
        self
    }
}

/// What coding a job gave: its chunks, and whether a run's tensors share
/// the one chunk.
struct Coded {
    pieces: Vec<Piece>,
    /// Each tensor's own largest error where the run shares one chunk
    /// (the run's tensors in order); empty otherwise.
    shared: Vec<f64>,
}

/// Bytes a chunk costs in the header beyond its sections, about: a
/// section's length and checksum, compressed.
const HEADER_BYTES_PER_SECTION: usize = 16;

/// What `compress` says of an input that is a container already.
pub(crate) const ALREADY_A_CONTAINER: &str = "it is a padic-burst container already (decompress \
     it, or compress the safetensors file it came from)";

/// A parsed safetensors input.
struct Source<'a> {
    header_text: &'a str,
    data: &'a [u8],
    /// (name, dtype, shape, start, end) in data order.
    tensors: Vec<(String, String, Vec<u64>, usize, usize)>,
}

fn parse_source<'a>(path: &Path, bytes: &'a [u8]) -> Result<Source<'a>> {
    let fail = |what: String| Error::Safetensors {
        path: path.to_path_buf(),
        what,
    };
    if bytes.starts_with(crate::format::MAGIC) {
        return Err(fail(ALREADY_A_CONTAINER.into()));
    }
    let (n, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fail(e.to_string()))?;
    let header_text = std::str::from_utf8(&bytes[8..8 + n])
        .map_err(|e| fail(format!("header is not UTF-8: {e}")))?;
    let data = &bytes[8 + n..];
    let mut tensors: Vec<_> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let dtype = serde_json::to_value(info.dtype)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let shape = info.shape.iter().map(|&d| d as u64).collect();
            (name, dtype, shape, info.data_offsets.0, info.data_offsets.1)
        })
        .collect();
    tensors.sort_by(|a, b| (a.3, a.4, &a.0).cmp(&(b.3, b.4, &b.0)));
    Ok(Source {
        header_text,
        data,
        tensors,
    })
}

/// Refuses a bad chunk size, prime or precision before any input is read.
fn check_options(opts: &CompressOptions) -> Result<()> {
    if opts.chunk_kib == 0 || (opts.chunk_kib as u64) * 1024 > MAX_CHUNK_BYTES {
        return Err(Error::InvalidArgument(format!(
            "--chunk-kib {} outside 1..={}",
            opts.chunk_kib,
            MAX_CHUNK_BYTES / 1024
        )));
    }
    for kind in [FloatKind::F32, FloatKind::BF16, FloatKind::F16] {
        Layout::new(kind, opts.prime, opts.precision, true)?;
    }
    Ok(())
}

/// Compresses the safetensors file `input` into the container `output`,
/// which takes `input`'s permission bits.
pub fn compress_file(
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    progress: &Progress,
) -> Result<CompressSummary> {
    check_options(opts)?;
    let (file, map) = crate::input::open(input)?;
    compress_source(input, &map, Some((input, &file)), output, opts, progress)
}

/// Where a chunk's input bytes are read from: memory, or the input file.
/// From the file each chunk is read once, with `pread`, into the worker's
/// own buffer, and coded from that copy: the coder reads its input several
/// times (a pass a section, and the counts), so a file rewritten while it
/// runs would otherwise give passes that disagree and a container that does
/// not decode, and a file cut short would end the process with SIGBUS. A
/// short read is an error naming the file.
enum Data<'a> {
    Memory(&'a [u8]),
    File(DataFile<'a>),
}

/// The input file whose data region a [`Data::File`] reads.
struct DataFile<'a> {
    path: &'a Path,
    file: &'a std::fs::File,
    /// Where the data region starts in the file.
    base: u64,
}

impl DataFile<'_> {
    /// Fills `buf` from the data region at `start`; a short read is the
    /// input changed under the run.
    fn read_into(&self, buf: &mut [u8], start: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.base + start as u64;
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::io(
                    self.path,
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "the input changed while it was read: it ends before byte {}; \
                         compress it once it is written",
                            at + buf.len() as u64
                        ),
                    ),
                ),
                _ => Error::io(self.path, e),
            })
    }
}

impl Data<'_> {
    /// Runs `f` on the data region's bytes `start..end` (from the file, in
    /// this thread's buffer).
    fn with<R>(&self, start: usize, end: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let file = match self {
            Data::Memory(data) => return Ok(f(&data[start..end])),
            Data::File(file) => file,
        };
        thread_local! {
            static CHUNK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        CHUNK.with_borrow_mut(|buf| {
            buf.resize(end - start, 0);
            file.read_into(buf, start)?;
            Ok(f(buf))
        })
    }

    /// The data region's bytes `start..end`, owned (a passthrough tensor's
    /// one section): read from the file straight into it.
    fn owned(&self, start: usize, end: usize) -> Result<Vec<u8>> {
        match self {
            Data::Memory(data) => Ok(data[start..end].to_vec()),
            Data::File(file) => {
                let mut bytes = vec![0; end - start];
                file.read_into(&mut bytes, start)?;
                Ok(bytes)
            }
        }
    }
}

/// Compresses a safetensors file held in memory (`bytes`, named `name` in
/// errors) into the container `output`.
pub fn compress_bytes(
    name: &Path,
    bytes: &[u8],
    output: &Path,
    opts: &CompressOptions,
    progress: &Progress,
) -> Result<CompressSummary> {
    check_options(opts)?;
    compress_source(name, bytes, None, output, opts, progress)
}

/// The compression of the safetensors bytes `bytes` (named `input` in
/// errors; mapped from the file `file`, whose chunks are read from it) into
/// `output`.
fn compress_source(
    input: &Path,
    bytes: &[u8],
    file: Option<(&Path, &std::fs::File)>,
    output: &Path,
    opts: &CompressOptions,
    progress: &Progress,
) -> Result<CompressSummary> {
    let src = parse_source(input, bytes)?;
    let data = match file {
        Some((path, file)) => Data::File(DataFile {
            path,
            file,
            base: (bytes.len() - src.data.len()) as u64,
        }),
        None => Data::Memory(src.data),
    };

    let mut layouts: Vec<Option<Layout>> = Vec::with_capacity(src.tensors.len());
    for (name, dtype, ..) in &src.tensors {
        layouts.push(match FloatKind::from_name(dtype) {
            Some(kind) => Some(
                Layout::new(kind, opts.prime, opts.precision, opts.lossy)
                    .map_err(|e| e.context(format_args!("tensor '{name}' ({dtype})")))?,
            ),
            None => None,
        });
    }

    let chunk_bytes = opts.chunk_kib as usize * 1024;
    let owners = share_chunks(&src.tensors, &layouts, chunk_bytes);
    let mut jobs = Vec::new();
    for (ti, (_, _, _, start, _)) in src.tensors.iter().enumerate() {
        if owners[ti] != ti {
            continue;
        }
        let run: Vec<(usize, usize, usize)> = (ti..src.tensors.len())
            .take_while(|&j| owners[j] == ti)
            .map(|j| (j, src.tensors[j].3, src.tensors[j].4))
            .collect();
        // The run's end: its last tensor's (the data is contiguous).
        let end = run.last().map_or(*start, |r| r.2);
        if run.len() > 1 {
            jobs.push(Job {
                tensor: ti,
                start: *start,
                end,
                run,
            });
            continue;
        }
        let unit = layouts[ti].as_ref().map_or(1, |l| l.kind.size());
        let step = (chunk_bytes / unit).max(1) * unit;
        let mut s = *start;
        while s < end {
            let e = (s + step).min(end);
            jobs.push(Job {
                tensor: ti,
                start: s,
                end: e,
                run: Vec::new(),
            });
            s = e;
        }
    }

    let temp = match file {
        Some((path, file)) => TempOutput::create_from_open(output, path, file)?,
        None => TempOutput::create(output)?,
    };
    let io = |e| temp.write_error(e);
    // Sections of 64 KiB and more go straight to the file (`BufWriter`
    // writes what does not fit its buffer without copying it); the small
    // ones, and the prefix, are gathered into fewer writes.
    let mut writer = Writer::new(BufWriter::with_capacity(64 << 10, temp.file())).map_err(io)?;
    let mut entries: Vec<TensorEntry> = src
        .tensors
        .iter()
        .zip(&layouts)
        .map(|((name, dtype, shape, start, end), layout)| TensorEntry {
            name: name.clone(),
            dtype: dtype.clone(),
            shape: shape.clone(),
            data_offset: *start as u64,
            byte_len: (end - start) as u64,
            codec: layout.as_ref().map(|l| CodecEntry {
                prime: l.prime,
                precision: l.precision,
                head_digits: l.head_digits,
                planes: l.planes.clone(),
                nan_flag: l.plane_zero == PlaneZero::SignAndNanFlag,
                max_abs_error: Some(0.0),
            }),
            chunks: Vec::new(),
            chunks_of: None,
        })
        .collect();

    progress.start(src.data.len() as u64, "compress");
    let workers = opts.workers.max(1);
    let piece = |tensor: usize, start: usize, end: usize| -> Result<Piece> {
        let (sections, err) = match &layouts[tensor] {
            Some(layout) => data.with(start, end, |bytes| {
                let c = chunk::encode(layout, bytes);
                (c.sections, c.max_abs_error)
            })?,
            None => (vec![data.owned(start, end)?], 0.0),
        };
        Ok(Piece {
            tensor,
            bytes: end - start,
            sections,
            sums: Vec::new(),
            err,
        })
    };
    // A run shares one chunk where that is the smaller: one chunk's tables
    // and states against one a tensor, and one table for values of several
    // distributions against a table fitted to each.
    let code = |job: &Job| -> Result<Coded> {
        let layout = match (&layouts[job.tensor], job.run.is_empty()) {
            (Some(layout), false) => layout,
            _ => {
                return Ok(Coded {
                    pieces: vec![piece(job.tensor, job.start, job.end)?.summed()],
                    shared: Vec::new(),
                })
            }
        };
        let lens: Vec<usize> = job.run.iter().map(|&(_, a, b)| b - a).collect();
        let (coded, errors) = data.with(job.start, job.end, |bytes| {
            chunk::encode_whole_or_parts(layout, bytes, &lens, HEADER_BYTES_PER_SECTION)
        })?;
        let shared = coded.len() == 1;
        let pieces = coded
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (tensor, a, b) = if shared {
                    (job.tensor, job.start, job.end)
                } else {
                    job.run[i]
                };
                Piece {
                    tensor,
                    bytes: b - a,
                    sections: c.sections,
                    sums: Vec::new(),
                    err: c.max_abs_error,
                }
                .summed()
            })
            .collect();
        let shared = if shared { errors } else { Vec::new() };
        Ok(Coded { pieces, shared })
    };
    let mut chunks = 0;
    let write = |i: usize, coded: Result<Coded>| {
        let coded = coded?;
        let job = &jobs[i];
        if !coded.shared.is_empty() {
            for &(t, ..) in &job.run[1..] {
                entries[t].chunks_of = Some(job.tensor);
            }
        }
        for p in coded.pieces {
            let entry = &mut entries[p.tensor];
            let elements = p.bytes as u64 / entry.unit();
            let refs: Vec<&[u8]> = p.sections.iter().map(Vec::as_slice).collect();
            entry
                .chunks
                .push(writer.chunk_summed(elements, &refs, &p.sums).map_err(io)?);
            chunks += 1;
            if coded.shared.is_empty() {
                worst(entry, p.err);
            }
        }
        // The tensors of a shared chunk each have their own error.
        for (&(t, ..), &err) in job.run.iter().zip(&coded.shared) {
            worst(&mut entries[t], err);
        }
        progress.advance((job.end - job.start) as u64);
        Ok(())
    };
    in_order(&jobs, workers, 4 * workers, code, write)?;
    let header = Header {
        format: FORMAT_NAME.to_string(),
        version: Some(crate::format::VERSION),
        source_header: src.header_text.to_string(),
        data_len: src.data.len() as u64,
        tensors: entries,
    };
    let (_, len) = writer.finish(&header).map_err(io)?;
    temp.commit()?;
    progress.finish();
    Ok(CompressSummary {
        tensors: header.tensors.len(),
        chunks,
        original_bytes: bytes.len() as u64,
        compressed_bytes: len,
    })
}

/// A tensor is small, and may share a chunk, at up to this fraction of a
/// chunk's bytes (64 KiB of the default 1 MiB): there a chunk's tables and
/// rANS states (a few hundred bytes) weigh. Whether a run is coded whole or
/// a tensor a chunk is `chunk::encode_whole_or_parts`'s choice.
const SMALL_PER_CHUNK: usize = 16;

/// Takes `err`, the largest error of some of a tensor's values, into the
/// tensor's (none once a NaN would not come back as a NaN).
fn worst(entry: &mut TensorEntry, err: f64) {
    if let Some(c) = entry.codec.as_mut() {
        c.max_abs_error = match c.max_abs_error {
            Some(m) if err.is_finite() => Some(m.max(err)),
            _ => None,
        };
    }
}

/// For each tensor, the tensor whose chunks hold its values: itself, or
/// the first of a run of small split tensors of one layout that share
/// chunks. A small tensor joins the run before it while the run stays
/// within a chunk's bytes; a model of many small tensors then pays one
/// chunk's tables and rANS states for a run rather than for each.
fn share_chunks(
    tensors: &[(String, String, Vec<u64>, usize, usize)],
    layouts: &[Option<Layout>],
    chunk_bytes: usize,
) -> Vec<usize> {
    let mut owners: Vec<usize> = (0..tensors.len()).collect();
    // The open run: its first tensor, its bytes so far and where it ends.
    let mut run: Option<(usize, usize, usize)> = None;
    for (ti, (_, _, _, start, end)) in tensors.iter().enumerate() {
        let len = end - start;
        let small = layouts[ti].is_some() && len > 0 && len <= chunk_bytes / SMALL_PER_CHUNK;
        run = match run {
            Some((o, bytes, at))
                if small
                    && at == *start
                    && layouts[o] == layouts[ti]
                    && bytes + len <= chunk_bytes =>
            {
                owners[ti] = o;
                Some((o, bytes + len, *end))
            }
            _ => small.then_some((ti, len, *end)),
        };
    }
    owners
}

/// Runs `code` on every job on `workers` threads, taking them from one
/// queue in order, and hands each result to `write` on this thread in job
/// order. A worker starts job `i` only once `write` has taken job
/// `i - window`, so at most `window` results wait in memory. The first
/// error `write` returns stops the workers and is returned.
fn in_order<J: Sync, T: Send>(
    jobs: &[J],
    workers: usize,
    window: usize,
    code: impl Fn(&J) -> T + Sync,
    mut write: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let written = Mutex::new(0usize);
    let room = Condvar::new();
    let stop = AtomicBool::new(false);
    let lock = || written.lock().unwrap_or_else(|e| e.into_inner());
    let halt = || {
        let _held = lock();
        stop.store(true, Ordering::SeqCst);
        room.notify_all();
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, T)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, room, stop, code) = (&next, &room, &stop, &code);
            scope.spawn(move || {
                // A panicking worker stops the others (none waits for room
                // its chunk would have made); the scope passes the panic on.
                let _halt_on_panic = OnPanic(&halt);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= jobs.len() {
                        break;
                    }
                    let mut done: MutexGuard<usize> = lock();
                    while i >= *done + window && !stop.load(Ordering::SeqCst) {
                        done = room.wait(done).unwrap_or_else(|e| e.into_inner());
                    }
                    drop(done);
                    if stop.load(Ordering::SeqCst) || tx.send((i, code(&jobs[i]))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0;
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&want) {
                if let Err(e) = write(want, result) {
                    halt();
                    return Err(e);
                }
                want += 1;
                *lock() = want;
                room.notify_all();
            }
        }
        Ok(())
    })
}

/// Runs its function when dropped during a panic.
struct OnPanic<'a, F: Fn()>(&'a F);

impl<F: Fn()> Drop for OnPanic<'_, F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_in_job_order_within_the_window() {
        let jobs: Vec<usize> = (0..40).collect();
        let ahead = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut seen = Vec::new();
        in_order(
            &jobs,
            3,
            5,
            |&j| {
                // Early jobs take longest, so later ones finish first.
                std::thread::sleep(Duration::from_millis(((40 - j) % 7) as u64));
                let now = ahead.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                j * 10
            },
            |i, v| {
                ahead.fetch_sub(1, Ordering::SeqCst);
                seen.push((i, v));
                Ok(())
            },
        )
        .unwrap();
        let want: Vec<(usize, usize)> = (0..40).map(|j| (j, j * 10)).collect();
        assert_eq!(seen, want);
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=5).contains(&most),
            "{most} results waited at once, the window is 5"
        );
    }

    #[test]
    fn a_write_error_stops_the_workers_and_is_returned() {
        let jobs: Vec<usize> = (0..1000).collect();
        let coded = AtomicUsize::new(0);
        let err = in_order(
            &jobs,
            2,
            4,
            |&j| {
                coded.fetch_add(1, Ordering::SeqCst);
                j
            },
            |i, _| match i {
                3 => Err(Error::InvalidArgument("disk full".into())),
                _ => Ok(()),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let coded = coded.load(Ordering::SeqCst);
        assert!(coded < 1000, "{coded} jobs coded after the writer failed");
    }

    #[test]
    fn any_worker_count_writes_the_same_container() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("m.safetensors");
        let model = crate::demo::synthetic_model(3, 200_000, safetensors::Dtype::BF16);
        std::fs::write(&input, model).unwrap();
        let mut files = Vec::new();
        for workers in [1, 2, 5] {
            let out = dir.path().join(format!("m{workers}.padic"));
            let opts = CompressOptions {
                chunk_kib: 16,
                workers,
                ..CompressOptions::default()
            };
            let s = compress_file(&input, &out, &opts, &Progress::new(false)).unwrap();
            assert!(s.chunks > 10, "{} chunks", s.chunks);
            files.push(std::fs::read(&out).unwrap());
        }
        assert!(files[0] == files[1] && files[1] == files[2]);
    }
}
