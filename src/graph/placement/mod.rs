//! Where merged bytes land: a file written at offsets ([`mod@file`]: by a
//! writer thread of its own or by the workers in turn, a run of parts at a
//! time), a stream written in order, or memory that the decoders write into
//! directly.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::pool::BufferPool;
use crate::error::{Error, Result};
use crate::format::Container;

mod file;
pub(crate) use file::{write_behind, FilePlacement};

/// Where merged bytes land: `place(offset, bytes)` with `offset` in the
/// safetensors data region.
pub(crate) trait Placement: Send + Sync {
    /// Writes `bytes` at byte `offset` of the safetensors data region.
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// The file written, if it is one (named in write errors).
    fn path(&self) -> Option<&Path> {
        None
    }
    /// For output in memory: the `len` bytes at `offset`, for a decoder to
    /// write into directly, saving the merge a copy. Each byte is handed out
    /// once; a second claim on it is an error. `None`: use [`Placement::place`].
    fn claim(&self, _offset: u64, _len: usize) -> Option<std::io::Result<&mut [u8]>> {
        None
    }
    /// Like [`Placement::place`], but takes the buffer, which goes back to
    /// `pool` once its bytes are out (perhaps later, on another thread: see
    /// [`Placement::flush`]). An error may be one of an earlier part's.
    fn put(&self, offset: u64, data: Vec<u8>, pool: &Arc<BufferPool>) -> std::io::Result<()> {
        let placed = self.place(offset, &data);
        pool.give(data);
        placed
    }
    /// Waits until every byte put is out; the first error of any, if one failed.
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// The bytes this process will place (its share of the run), told once
    /// before the run, so that a writer holding parts back knows when the
    /// last are coming.
    fn expect(&self, _bytes: u64) {}
}

/// A stream (a FIFO, a character device, standard output) written in order:
/// the preamble first, then each part as soon as every byte before it is
/// written; a part that comes early waits in memory. The run hands chunks out
/// in order (one queue for all workers, see `RunOptions::ordered`), so what
/// waits is bounded by the chunks in flight: workers × `prefetch_factor` ×
/// `cpu_batch_size` at most.
pub(crate) struct StreamPlacement {
    path: PathBuf,
    state: std::sync::Mutex<StreamState>,
}

struct StreamState {
    out: File,
    /// Bytes of the data region written so far.
    next: u64,
    /// Parts that came before their turn, by offset.
    early: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl StreamPlacement {
    /// Writes `c`'s safetensors preamble to `out` (named `path`).
    pub(crate) fn prepare(mut out: File, path: PathBuf, c: &Container) -> Result<Self> {
        use std::io::Write;
        let preamble = crate::output::safetensors_preamble(&c.header().source_header);
        out.write_all(&preamble).map_err(|e| Error::io(&path, e))?;
        Ok(StreamPlacement {
            path,
            state: std::sync::Mutex::new(StreamState {
                out,
                next: 0,
                early: Default::default(),
            }),
        })
    }

    /// Checks that all `data_len` bytes went out, none left waiting.
    pub(crate) fn finish(&self, data_len: u64) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.next != data_len || !st.early.is_empty() {
            return Err(Error::Internal(format!(
                "{}: {} of {data_len} bytes streamed, {} parts still waiting",
                self.path.display(),
                st.next,
                st.early.len()
            )));
        }
        Ok(())
    }
}

impl Placement for StreamPlacement {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset < st.next || st.early.contains_key(&offset) {
            return Err(std::io::Error::other(format!(
                "bytes at offset {offset} placed twice"
            )));
        }
        if offset > st.next {
            st.early.insert(offset, bytes.to_vec());
            return Ok(());
        }
        let st = &mut *st;
        st.out.write_all(bytes)?;
        st.next += bytes.len() as u64;
        while let Some(part) = st.early.first_entry() {
            if *part.key() != st.next {
                break;
            }
            let part = part.remove();
            st.out.write_all(&part)?;
            st.next += part.len() as u64;
        }
        Ok(())
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// The null device: every part is dropped as it is placed. A run into it
/// decodes (and so checks) every chunk and keeps nothing; parts need no
/// order, so the chunks are handed out as for a file.
pub(crate) struct Discard;

impl Placement for Discard {
    fn place(&self, _offset: u64, _bytes: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// Memory holding the data region from `start` on. Byte ranges are handed
/// out once each, through [`Placement::claim`] (a decoder writes there
/// directly) or [`Placement::place`] (a copy): a second claim on any byte is
/// refused, so the writers of different parts never alias, and a part placed
/// twice is a hard error, not a silent overwrite.
pub(crate) struct MemoryPlacement {
    buf: Vec<u8>,
    /// `buf`'s data; written only through claimed, disjoint ranges.
    ptr: *mut u8,
    /// Claimed ranges, start -> end (relative to `buf`).
    claimed: Mutex<std::collections::BTreeMap<usize, usize>>,
    start: u64,
}

// SAFETY: `buf` is written only through `ptr`, in ranges that `claim` hands
// out at most once (checked under the `claimed` lock), so no two threads
// write the same byte; it is read only by `into_inner`, which owns it.
unsafe impl Sync for MemoryPlacement {}
// SAFETY: as above; the pointer refers to memory the placement owns.
unsafe impl Send for MemoryPlacement {}

impl MemoryPlacement {
    pub(crate) fn new(mut buf: Vec<u8>, start: u64) -> Self {
        let ptr = buf.as_mut_ptr();
        MemoryPlacement {
            buf,
            ptr,
            claimed: Mutex::new(Default::default()),
            start,
        }
    }

    /// The bytes, once the run that wrote them is over.
    pub(crate) fn into_inner(this: Arc<Self>) -> Result<Vec<u8>> {
        Arc::try_unwrap(this)
            .map(|p| p.buf)
            .map_err(|_| Error::Internal("the output is still shared after the run".into()))
    }

    #[allow(clippy::mut_from_ref)]
    fn take(&self, offset: u64, len: usize) -> std::io::Result<&mut [u8]> {
        let at = offset
            .checked_sub(self.start)
            .map(|a| a as usize)
            .filter(|&a| a.checked_add(len).is_some_and(|e| e <= self.buf.len()))
            .ok_or_else(|| std::io::Error::other(format!("part at {offset} outside the output")))?;
        if len == 0 {
            return Ok(&mut []);
        }
        let mut claimed = self.claimed.lock().expect("claim lock");
        // The claim starting last before our end must end at or before our start.
        if let Some((&s, &e)) = claimed.range(..at + len).next_back() {
            if e > at {
                return Err(std::io::Error::other(format!(
                    "bytes {}..{} placed twice (they overlap {}..{})",
                    offset,
                    offset + len as u64,
                    s as u64 + self.start,
                    e as u64 + self.start
                )));
            }
        }
        claimed.insert(at, at + len);
        drop(claimed);
        crate::engine::cpu::populate(self.ptr as usize + at, len);
        // SAFETY: `at..at + len` lies inside `buf` (checked above) and
        // overlaps no range handed out before (checked under the lock), so
        // this is the only live reference to these bytes.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) })
    }
}

impl Placement for MemoryPlacement {
    fn place(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.take(offset, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }
    fn claim(&self, offset: u64, len: usize) -> Option<std::io::Result<&mut [u8]>> {
        Some(self.take(offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_placement_takes_concurrent_parts_and_refuses_strays() {
        let n = (5 << 20) + 123;
        let out = Arc::new(MemoryPlacement::new(vec![0u8; n], 1000));
        // Parts of uneven sizes straddling stripe boundaries, from 4 threads.
        let cuts: Vec<usize> = (0..=40).map(|i| i * n / 40).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (out, cuts) = (out.clone(), &cuts);
                s.spawn(move || {
                    for w in cuts.windows(2).skip(t).step_by(4) {
                        let bytes: Vec<u8> = (w[0]..w[1]).map(|i| (i % 251) as u8).collect();
                        out.place(1000 + w[0] as u64, &bytes).unwrap();
                    }
                });
            }
        });
        assert!(out.place(999, &[1]).is_err(), "before the start");
        assert!(out.place(1000 + n as u64, &[1]).is_err(), "past the end");
        assert!(out.place(u64::MAX, &[1, 2]).is_err(), "overflowing");
        let twice = out
            .place(1000 + cuts[3] as u64, &[9])
            .unwrap_err()
            .to_string();
        assert!(twice.contains("placed twice"), "{twice}");
        assert!(
            out.claim(1000 + cuts[7] as u64 - 1, 2).unwrap().is_err(),
            "straddling two parts"
        );
        let data = MemoryPlacement::into_inner(out).unwrap();
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}
