//! The output file: parts written at their offsets, from one queue kept in
//! file order, by a writer thread of its own (with a core to spare) or by
//! the workers in turn, a run of adjacent parts with one `pwritev`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::super::pool::BufferPool;
use super::Placement;
use crate::error::{Error, Result};
use crate::format::Container;

/// Whether a file's parts go to a writer thread of their own: when the
/// workers of this process leave a core free for it. Where they do not, the
/// thread would only take turns with them (two workers and a writer on two
/// cores decode a 256 MB model slower than the two workers writing).
pub(crate) fn write_behind(local_workers: usize) -> bool {
    crate::config::cores() > local_workers
}

/// Parts waiting to be written at most; a merge that finds the queue full
/// waits (the decoders are ahead of the file), or writes.
const WRITE_QUEUE: usize = 8;

/// A run of parts that follow one another in the file is written once it
/// holds this many bytes (or the queue is full, or the run is over): one
/// `pwritev` for several parts. A file system with large folios (ext4)
/// allocates its page cache in large pieces only for a long write: a 256 MB
/// model written 281 KB part by part took 76 ms, four parts at a time 65,
/// eight 61. On tmpfs (4 KiB pages) a long write saves nothing, and parts
/// held back cost buffers: there a part is written as soon as it can be
/// (see [`holds_runs`]).
const WRITE_RUN: usize = 1 << 20;

/// Whether parts wait for a run of [`WRITE_RUN`] bytes before they are
/// written to `file`: everywhere but on tmpfs.
fn holds_runs(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fstatfs fills the zeroed struct it is given.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let known = unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0;
        !(known && fs.f_type == libc::TMPFS_MAGIC)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        true
    }
}

/// Bytes still to come below which parts are written as they come.
const ENDGAME: u64 = 2 * WRITE_RUN as u64;

/// Buffers one `pwritev` takes at most (Linux's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 256;

/// A part waiting to be written: its place in the file, its bytes, and the
/// pool its buffer goes back to.
type Pending = (u64, Vec<u8>, Arc<BufferPool>);

/// The output file: the data region starts at `base`. Writes to one file
/// take the file's lock in turn, so the workers never write themselves:
/// their parts wait in one queue ([`Outbox`]), written out
///
/// * with a core to spare ([`write_behind`]), by a writer thread of the
///   placement's own, so each worker goes on decoding while its last part is
///   copied into the page cache;
/// * otherwise by whichever worker finds nobody writing, its own part and
///   the others' (where workers each wrote their own, two of them spent a
///   tenth of a 256 MB decode spinning on the file's lock);
///
/// either way a run of parts that follow one another in the file at a time
/// ([`Queue::find_run`]): once it holds [`WRITE_RUN`] bytes, or at once on
/// tmpfs, when the queue is full, or when the last parts are coming.
pub(crate) struct FilePlacement {
    out: Arc<Outbox>,
    base: u64,
    path: PathBuf,
    /// The writer thread, while it runs (with a core to spare).
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writers share: the file, the first failure, and the queue.
struct Outbox {
    file: File,
    /// The first write that failed (its kind and message); after it, parts
    /// are not written (the run stops).
    failed: Mutex<Option<(std::io::ErrorKind, String)>>,
    queue: Mutex<Queue>,
    /// Signalled when the queue has room.
    room: std::sync::Condvar,
    /// Signalled, for the writer thread, when a part comes or the queue closes.
    ready: std::sync::Condvar,
    /// Set while a worker writes the queue out (no writer thread).
    writing: std::sync::atomic::AtomicBool,
    /// A writer thread takes the parts (else the workers take turns).
    behind: std::sync::atomic::AtomicBool,
}

/// The parts waiting, and whether the writer thread is to stop.
struct Queue {
    parts: std::collections::VecDeque<Pending>,
    closed: bool,
    /// Bytes still to come ([`Placement::expect`], less every part put).
    coming: u64,
    /// The bytes a run waits for: [`WRITE_RUN`], or 0 (written as they come).
    run: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            parts: Default::default(),
            closed: false,
            coming: u64::MAX,
            run: WRITE_RUN,
        }
    }
}

impl Queue {
    /// A run of waiting parts to write now (index and length, in file
    /// order, after sorting the queue): the first that holds `run` bytes;
    /// when the queue is full or closed (the decode is over), or the last
    /// parts are coming ([`ENDGAME`]), the longest. `None`: nothing to write
    /// yet.
    fn find_run(&mut self) -> Option<(usize, usize)> {
        // The last parts are coming: none waits for a run to grow, since
        // what still waits when the workers stop is written by one thread
        // after them.
        let force = self.closed || self.parts.len() >= WRITE_QUEUE || self.coming <= ENDGAME;
        let parts = self.parts.make_contiguous();
        parts.sort_unstable_by_key(|p| p.0);
        let follows = |a: &Pending, b: &Pending| a.0 + a.1.len() as u64 == b.0;
        let mut longest: Option<(usize, usize, usize)> = None; // start, len, bytes
        let mut i = 0;
        while i < parts.len() {
            let (mut len, mut bytes) = (1, parts[i].1.len());
            while i + len < parts.len()
                && len < MAX_IOVECS
                && follows(&parts[i + len - 1], &parts[i + len])
            {
                bytes += parts[i + len].1.len();
                len += 1;
            }
            if bytes >= self.run || len == MAX_IOVECS {
                return Some((i, len));
            }
            if longest.is_none_or(|(_, _, b)| bytes > b) {
                longest = Some((i, len, bytes));
            }
            i += len;
        }
        longest.filter(|_| force).map(|(i, len, _)| (i, len))
    }

    /// Takes the run [`Queue::find_run`] finds; empty when there is none.
    fn take_run(&mut self) -> Vec<Pending> {
        match self.find_run() {
            Some((i, len)) => self.parts.drain(i..i + len).collect(),
            None => Vec::new(),
        }
    }
}

/// Writes every byte of `parts`, one after another, at `at` of `file`.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut at: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (mut first, mut skip) = (0, 0);
    while first < parts.len() {
        let iov: Vec<libc::iovec> = parts[first..]
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let p = if k == 0 { &p[skip..] } else { p };
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a slice borrowed for the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                at as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += n as u64;
        (first, skip) = past(parts, (first, skip), n as usize);
    }
    Ok(())
}

/// Where writing `parts` from part `first`, byte `skip` of it, stands after
/// `n` more bytes: whole parts, then into the next one.
fn past(parts: &[&[u8]], (mut first, mut skip): (usize, usize), mut n: usize) -> (usize, usize) {
    while first < parts.len() && n >= parts[first].len() - skip {
        n -= parts[first].len() - skip;
        first += 1;
        skip = 0;
    }
    (first, skip + n)
}

impl Outbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `run`, parts that follow one another in the file, with one
    /// call (unless an earlier write failed), and gives their buffers back.
    fn write(&self, run: Vec<Pending>) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_none() {
            drop(failed);
            let at = run.first().map_or(0, |p| p.0);
            let parts: Vec<&[u8]> = run.iter().map(|p| p.1.as_slice()).collect();
            if let Err(e) = write_all_vectored_at(&self.file, &parts, at) {
                failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                failed.get_or_insert((e.kind(), e.to_string()));
            }
        }
        for (_, data, pool) in run {
            pool.give(data);
        }
    }

    /// The first write that failed, as an error.
    fn failure(&self) -> std::io::Result<()> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((kind, message)) => Err(std::io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Queues `part`, then wakes the writer thread, or writes what is ready
    /// unless another worker is writing already (that worker then finds it).
    /// A full queue waits for room, or (no writer thread) is written out.
    fn put(&self, part: Pending) {
        use std::sync::atomic::Ordering;
        let behind = self.behind.load(Ordering::Acquire);
        let mut queue = self.queue();
        while queue.parts.len() >= WRITE_QUEUE {
            if !behind {
                drop(queue);
                self.drain();
                queue = self.queue();
            }
            if queue.parts.len() >= WRITE_QUEUE {
                // Whoever writes makes room; the timeout only guards against
                // a wake-up that came between the two locks.
                let wait = std::time::Duration::from_millis(1);
                queue = self
                    .room
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        queue.coming = queue.coming.saturating_sub(part.1.len() as u64);
        queue.parts.push_back(part);
        drop(queue);
        if behind {
            self.ready.notify_one();
        } else {
            self.drain();
        }
    }

    /// The writer thread: writes runs as they are ready, until the queue
    /// closes; then the rest.
    fn write_behind(&self) {
        loop {
            let run = {
                let mut queue = self.queue();
                loop {
                    let run = queue.take_run();
                    if !run.is_empty() || queue.closed {
                        break run;
                    }
                    queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.room.notify_all();
            if run.is_empty() {
                return;
            }
            self.write(run);
        }
    }

    /// Writes the runs that are ready, unless another thread is writing;
    /// returns once this thread found nothing more ready. Whoever queues a
    /// part calls this after: either it writes, or the writer of the moment
    /// looks at the queue again after it stops writing.
    fn drain(&self) {
        use std::sync::atomic::Ordering;
        while self
            .writing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            loop {
                let run = self.queue().take_run();
                self.room.notify_all();
                if run.is_empty() {
                    break;
                }
                self.write(run);
            }
            self.writing.store(false, Ordering::Release);
            if self.queue().find_run().is_none() {
                break;
            }
        }
    }
}

impl FilePlacement {
    /// The safetensors file `c` decodes to, in `file` (at `path`): sized,
    /// its preamble written, the data region left for the merges; with a
    /// writer thread when `write_behind` (see [`write_behind`]).
    pub(crate) fn prepare(
        file: File,
        path: PathBuf,
        c: &Container,
        write_behind: bool,
    ) -> Result<Self> {
        let head = &c.header().source_header;
        let base = crate::output::write_safetensors_preamble(&file, head, c.header().data_len)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self::new(file, base, path, write_behind))
    }

    /// Parts at `base + offset` of `file` (at `path`).
    fn new(file: File, base: u64, path: PathBuf, write_behind: bool) -> Self {
        let queue = Queue {
            run: if holds_runs(&file) { WRITE_RUN } else { 0 },
            ..Queue::default()
        };
        let out = Arc::new(Outbox {
            file,
            failed: Default::default(),
            queue: Mutex::new(queue),
            room: Default::default(),
            ready: Default::default(),
            writing: Default::default(),
            behind: Default::default(),
        });
        let thread_out = out.clone();
        // Where no thread starts, the workers write in turn.
        let writer = write_behind
            .then(|| {
                std::thread::Builder::new()
                    .name("writer".into())
                    .spawn(move || thread_out.write_behind())
            })
            .and_then(|spawned| spawned.ok());
        out.behind
            .store(writer.is_some(), std::sync::atomic::Ordering::Release);
        FilePlacement {
            out,
            base,
            path,
            writer: Mutex::new(writer),
        }
    }
}

impl Placement for FilePlacement {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.out.file.write_all_at(bytes, self.base + offset)
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn put(&self, offset: u64, data: Vec<u8>, pool: &Arc<BufferPool>) -> std::io::Result<()> {
        self.out.failure()?;
        self.out.put((self.base + offset, data, pool.clone()));
        Ok(())
    }
    fn expect(&self, bytes: u64) {
        self.out.queue().coming = bytes;
    }
    fn flush(&self) -> std::io::Result<()> {
        // No part is coming: every run is written, however short.
        self.out.queue().closed = true;
        if let Some(thread) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.out.ready.notify_all();
            thread
                .join()
                .map_err(|_| std::io::Error::other("the writer thread panicked"))?;
            // Parts put from now on are written by whoever puts them.
            self.out
                .behind
                .store(false, std::sync::atomic::Ordering::Release);
        }
        // Parts still queued: a worker still writing them out finishes
        // first (the run is over, so none is coming).
        while !self.out.queue().parts.is_empty()
            || self.out.writing.load(std::sync::atomic::Ordering::Acquire)
        {
            self.out.drain();
            std::thread::yield_now();
        }
        self.out.failure()
    }
}

impl Drop for FilePlacement {
    fn drop(&mut self) {
        // The thread ends once its queue closes; a run that failed leaves
        // no write going on behind it.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_write_goes_on_from_the_byte_it_stopped_at() {
        let parts: [&[u8]; 3] = [&[0; 10], &[0; 5], &[0; 7]];
        assert_eq!(past(&parts, (0, 0), 22), (3, 0), "all");
        assert_eq!(past(&parts, (0, 0), 10), (1, 0), "a whole part");
        assert_eq!(past(&parts, (0, 0), 12), (1, 2), "into the second");
        assert_eq!(past(&parts, (1, 2), 3), (2, 0), "the rest of it");
        assert_eq!(past(&parts, (1, 2), 4), (2, 1));
        assert_eq!(past(&parts, (0, 4), 0), (0, 4), "nothing");
    }

    #[test]
    fn parts_that_follow_one_another_are_written_as_one_run() {
        let pool = Arc::new(BufferPool::default());
        let part = |at: u64, len: usize| (at, vec![0u8; len], pool.clone());
        let mut q = Queue::default();
        let quarter = WRITE_RUN / 4;
        // Two runs, out of order: [0, 3 quarters) and one part far away.
        for at in [2, 0, 1] {
            q.parts.push_back(part((at * quarter) as u64, quarter));
        }
        q.parts.push_back(part(1 << 40, 10));
        assert!(q.take_run().is_empty(), "no run holds WRITE_RUN bytes yet");
        q.parts.push_back(part((3 * quarter) as u64, quarter));
        let run = q.take_run();
        let at: Vec<u64> = run.iter().map(|p| p.0).collect();
        assert_eq!(
            at,
            [0, 1, 2, 3].map(|k| (k * quarter) as u64),
            "in file order"
        );
        assert_eq!(q.parts.len(), 1);
        assert!(q.take_run().is_empty(), "the far part waits");
        q.coming = ENDGAME;
        q.parts.push_back(part(1 << 41, 10));
        assert_eq!(
            q.take_run().len(),
            1,
            "the last parts are coming: no waiting"
        );
        q.coming = u64::MAX;
        q.closed = true;
        assert_eq!(q.take_run().len(), 1, "closed: whatever waits is written");
        // A full queue writes its longest run, however short.
        let mut q = Queue::default();
        for k in 1..WRITE_QUEUE as u64 {
            q.parts.push_back(part(k * 100, 10));
        }
        q.parts.push_back(part(310, 10));
        assert!(q.parts.len() >= WRITE_QUEUE);
        let at: Vec<u64> = q.take_run().iter().map(|p| p.0).collect();
        assert_eq!(at, [300, 310]);
        // Where runs are not waited for (tmpfs), the first part goes at once.
        let mut q = Queue {
            run: 0,
            ..Queue::default()
        };
        q.parts.push_back(part(1 << 30, 10));
        assert_eq!(q.take_run().len(), 1);
    }

    #[test]
    fn file_placement_writes_behind_and_reports_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let n = (3 << 20) + 77;
        let pool = Arc::new(BufferPool::default());
        for behind in [true, false] {
            let file = File::create(&path).unwrap();
            let out = FilePlacement::new(file, 10, path.clone(), behind);
            assert_eq!(out.writer.lock().unwrap().is_some(), behind);
            // Parts out of order, more than the queue holds.
            let cuts: Vec<usize> = (0..=50).map(|i| i * n / 50).collect();
            for w in cuts.windows(2).rev() {
                let bytes: Vec<u8> = (w[0]..w[1]).map(|i| (i % 253) as u8).collect();
                out.put(w[0] as u64, bytes, &pool).unwrap();
            }
            out.flush().unwrap();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(data.len(), 10 + n);
            assert!(data[10..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 253) as u8));
            // A file open only for reading: the write fails, and the failure
            // comes back by the flush at the latest.
            let out = FilePlacement::new(File::open(&path).unwrap(), 0, path.clone(), behind);
            let put = out.put(0, vec![1; 100], &pool);
            let failed = put.and_then(|()| out.flush()).unwrap_err();
            assert!(
                failed.to_string().contains("Bad file descriptor"),
                "{failed}"
            );
            assert!(
                out.put(0, vec![1; 100], &pool).is_err(),
                "a later part after a failure"
            );
            if behind {
                assert!(out.flush().is_err(), "flushed again, the failure stays");
            }
        }
    }
}
