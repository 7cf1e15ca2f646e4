//! The container: bytes on disk.
//!
//! ```text
//! offset 0          magic "PADICBST" (8 bytes), version u32 LE, reserved u32 (0)
//! offset 16         chunk payloads: per chunk its sections, back to back
//! end - 24 - H      header: UTF-8 JSON compressed with zstd, H bytes (see `Header`)
//! end - 24          H as u64 LE, xxh3-64 of the header's H stored bytes as u64 LE
//! end - 8           end magic "PADICEND"
//! ```
//!
//! Version 2 stores the header JSON compressed with zstd (a frame that states
//! its decompressed size, at most [`MAX_HEADER_LEN`]); version 1 stored it
//! plain, and is still read. Version 3 adds the NaN flag to plane 0 and
//! gives the sign a plane of its own where the digits after the head fit
//! one plane (see `codec::layout`); a tensor's `nan_flag` says so. Version 4
//! states the version again in the header, under its checksum (the prefix's
//! copy is under none), and is otherwise version 3. The header is mostly decimal lengths,
//! checksums and the source header: on a model of many small tensors it was
//! 3% of the file, and compressed it is a sixth of that.
//!
//! The header comes last so that `compress` streams: chunks are written as
//! they are coded and the index follows. Every section has its own xxh3-64 in
//! the header, and the header has one in the footer, so every byte of the file
//! is covered. A reader checks every size and offset against the file and
//! against the caps below before it allocates anything, and verifies a
//! section's checksum before it decodes it (and only the sections it reads).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::layout::PlaneZero;
use crate::codec::{FloatKind, Layout};
use crate::error::{Error, Location, Result};

mod validate;

/// First eight bytes of a container.
pub const MAGIC: &[u8; 8] = b"PADICBST";
/// Last eight bytes of a container.
pub const END_MAGIC: &[u8; 8] = b"PADICEND";
/// The container version this build writes; it reads this one and
/// [`OLDEST_VERSION`] onward.
pub const VERSION: u32 = 4;
/// The oldest container version this build reads (version 1: a plain JSON header).
pub const OLDEST_VERSION: u32 = 1;
/// The zstd level of a header that is a small part of its file. Level 3
/// compresses a 490-tensor model's 165 KB of JSON in a fifth of a
/// millisecond to 15.9 KB; level 12 took 3.4 ms, on the writer's last step,
/// for 1.6 KB less (0.02% of that file): most of a header is checksums,
/// which no level shrinks.
const HEADER_ZSTD_LEVEL: i32 = 3;
/// The level of a header whose JSON is at least a sixteenth of the chunks'
/// bytes (models of tiny tensors, where the header is much of the file):
/// there level 12's few percent of the header are a percent of the file,
/// and its time is small beside the run's.
const BIG_HEADER_ZSTD_LEVEL: i32 = 12;
/// Bytes before the first payload.
pub const PREFIX_LEN: u64 = 16;
/// Bytes of the footer.
pub const FOOTER_LEN: u64 = 24;
/// Largest header accepted (its JSON, and its stored bytes), 256 MiB.
pub const MAX_HEADER_LEN: u64 = 256 << 20;
/// Largest decoded chunk accepted, 256 MiB: a chunk's output is allocated whole.
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// Largest tensor data region accepted, 2^48 bytes.
pub const MAX_DATA_LEN: u64 = 1 << 48;
/// The value of `Header::format`.
pub const FORMAT_NAME: &str = "padic-burst";
/// Containers up to this size stay mapped while they decode (see
/// [`Container::release`]); larger ones give back their chunks' pages once
/// decoded, so streaming a large model keeps its resident memory bounded.
pub const RELEASE_ABOVE: usize = 64 << 20;

/// The container's index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `"padic-burst"`.
    pub format: String,
    /// The container's version again, under the header's checksum (the
    /// prefix's copy is under none): required from version 4 on, absent
    /// before. A reader refuses a prefix that disagrees with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The source safetensors header, verbatim (its JSON text, padding
    /// included): a full decode writes it back unchanged, `__metadata__` and all.
    pub source_header: String,
    /// Bytes of the safetensors data region.
    pub data_len: u64,
    /// Tensors in data order.
    pub tensors: Vec<TensorEntry>,
}

impl Header {
    /// Chunks in the container, over every tensor.
    pub fn chunk_count(&self) -> usize {
        self.tensors.iter().map(|t| t.chunks.len()).sum()
    }

    /// The tensor whose chunks hold tensor `t`'s values: `t` itself, or the
    /// first of the run of small tensors it is coded with (see
    /// [`TensorEntry::chunks_of`]).
    pub fn chunk_owner(&self, t: usize) -> usize {
        self.tensors[t].chunks_of.unwrap_or(t)
    }

    /// The data-region bytes the chunks of tensor `owner` decode to: its own
    /// and those of every tensor that shares them, which follow it.
    pub fn chunked_range(&self, owner: usize) -> std::ops::Range<u64> {
        let t = &self.tensors[owner];
        let len: u64 = t.chunks.iter().map(|c| c.elements * t.unit()).sum();
        t.data_offset..t.data_offset + len
    }

    /// Whether tensor `t`'s values lie in a run of small tensors that share
    /// chunks (as its first tensor or a later one): decoding it decodes the
    /// run, [`Header::chunked_range`] of its [`Header::chunk_owner`].
    pub fn shares_chunks(&self, t: usize) -> bool {
        let e = &self.tensors[t];
        self.chunked_range(self.chunk_owner(t)) != (e.data_offset..e.data_offset + e.byte_len)
    }
}

/// One tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// The tensor's name in the safetensors file.
    pub name: String,
    /// The safetensors dtype name (`F32`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Offset of the tensor's bytes in the safetensors data region.
    pub data_offset: u64,
    /// Bytes of the tensor.
    pub byte_len: u64,
    /// How the values are split; `None` for a tensor passed through byte for byte.
    pub codec: Option<CodecEntry>,
    /// For a small tensor coded together with the ones before it (from
    /// container version 3): the index of the first tensor of the run,
    /// whose chunks hold this tensor's values after its own. Its own
    /// `chunks` are then empty. Small tensors of one layout share chunks so
    /// that a model of many of them does not pay a chunk's tables and rANS
    /// states for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_of: Option<usize>,
    /// Its chunks, in value order.
    pub chunks: Vec<ChunkEntry>,
}

/// The p-adic split of a float tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodecEntry {
    /// The digits' base `p`.
    pub prime: u32,
    /// Digits stored per value.
    pub precision: u32,
    /// Leading digits carried in the exponent channel's symbol.
    pub head_digits: u32,
    /// Digits per plane (plane 0 also carries the sign).
    pub planes: Vec<u32>,
    /// Whether plane 0 carries the NaN flag (container version 3 on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nan_flag: bool,
    /// Largest absolute error of a finite value (0 when exact); `None` when
    /// the dropped digits turn some NaN into a non-NaN.
    pub max_abs_error: Option<f64>,
}

impl CodecEntry {
    /// What plane 0 carries beside its digits.
    pub fn plane_zero(&self) -> PlaneZero {
        if self.nan_flag {
            PlaneZero::SignAndNanFlag
        } else {
            PlaneZero::Sign
        }
    }
}

/// One chunk: elements (bytes for a passthrough tensor) and its sections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    /// Values in this chunk (bytes for a passthrough tensor).
    pub elements: u64,
    /// File offset of the chunk's first section; the others follow it.
    pub offset: u64,
    /// Its sections, in order: the exponent channel, then the digit planes (one for a passthrough chunk).
    pub sections: Vec<SectionEntry>,
}

/// One section of a chunk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SectionEntry {
    /// Bytes of the section.
    pub len: u64,
    /// XXH3-64 of those bytes.
    pub xxh3: u64,
}

impl TensorEntry {
    /// The float kind, for a split tensor.
    pub fn float_kind(&self) -> Option<FloatKind> {
        self.codec.as_ref().and(FloatKind::from_name(&self.dtype))
    }

    /// The layout of a split tensor.
    pub fn layout(&self) -> Option<Layout> {
        let c = self.codec.as_ref()?;
        Layout::with_plane_zero(self.float_kind()?, c.prime, c.precision, c.plane_zero()).ok()
    }

    /// Bytes of a value (1 for a passthrough tensor, whose chunks count bytes).
    pub fn unit(&self) -> u64 {
        self.float_kind().map_or(1, |k| k.size() as u64)
    }

    /// Coded bytes of the tensor.
    pub fn compressed_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .flat_map(|c| c.sections.iter())
            .map(|s| s.len)
            .sum()
    }
}

/// Bits of a safetensors dtype.
pub fn dtype_bits(name: &str) -> Option<u64> {
    serde_json::from_value::<safetensors::Dtype>(serde_json::Value::String(name.into()))
        .ok()
        .map(|d| d.bitsize() as u64)
}

/// Writes a container: prefix, then chunks in order, then the header.
pub struct Writer<W: std::io::Write> {
    out: W,
    pos: u64,
}

/// Each section's xxh3, as the index stores it.
pub fn section_sums<S: AsRef<[u8]>>(sections: &[S]) -> Vec<u64> {
    sections
        .iter()
        .map(|s| xxhash_rust::xxh3::xxh3_64(s.as_ref()))
        .collect()
}

impl<W: std::io::Write> Writer<W> {
    /// Starts a container on `out`.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(Writer {
            out,
            pos: PREFIX_LEN,
        })
    }

    /// Appends one chunk's sections and returns its index entry.
    pub fn chunk(&mut self, elements: u64, sections: &[&[u8]]) -> std::io::Result<ChunkEntry> {
        self.chunk_summed(elements, sections, &section_sums(sections))
    }

    /// [`Writer::chunk`] with each section's xxh3 already computed (the
    /// compressor's coding threads compute them, in parallel, while the
    /// sections are still in their caches).
    pub fn chunk_summed(
        &mut self,
        elements: u64,
        sections: &[&[u8]],
        xxh3: &[u64],
    ) -> std::io::Result<ChunkEntry> {
        if sections.len() != xxh3.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} sections with {} checksums", sections.len(), xxh3.len()),
            ));
        }
        let offset = self.pos;
        let mut entries = Vec::with_capacity(sections.len());
        for (s, &sum) in sections.iter().zip(xxh3) {
            self.out.write_all(s)?;
            self.pos += s.len() as u64;
            entries.push(SectionEntry {
                len: s.len() as u64,
                xxh3: sum,
            });
        }
        Ok(ChunkEntry {
            elements,
            offset,
            sections: entries,
        })
    }

    /// Writes the header and footer; returns the sink and the file's length.
    pub fn finish(mut self, header: &Header) -> std::io::Result<(W, u64)> {
        // The header states the version the prefix does.
        let stamped;
        let header = match header.version {
            Some(VERSION) => header,
            _ => {
                stamped = Header {
                    version: Some(VERSION),
                    ..header.clone()
                };
                &stamped
            }
        };
        let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        if json.len() as u64 > MAX_HEADER_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the container's header would be {} bytes of JSON, over the {MAX_HEADER_LEN} \
                     a reader accepts (the source's own header is {} bytes)",
                    json.len(),
                    header.source_header.len()
                ),
            ));
        }
        let stored = seal_header(&json, self.pos.saturating_sub(PREFIX_LEN))?;
        self.out.write_all(&stored)?;
        self.out.write_all(&(stored.len() as u64).to_le_bytes())?;
        self.out
            .write_all(&xxhash_rust::xxh3::xxh3_64(&stored).to_le_bytes())?;
        self.out.write_all(END_MAGIC)?;
        self.out.flush()?;
        let len = self.pos + stored.len() as u64 + FOOTER_LEN;
        Ok((self.out, len))
    }
}

/// A container opened for reading: memory-mapped, its header checked.
pub struct Container {
    path: PathBuf,
    map: memmap2::Mmap,
    header: Header,
    /// Identity of the file's contents (its header checksum and length).
    identity: u64,
    /// `identity` and the opened file's device, inode, modification and change times.
    read_identity: u64,
    /// Per tensor, its layout (split tensors only).
    layouts: Vec<Option<Layout>>,
    /// Section bytes checksummed so far ([`Container::bytes_checksummed`]).
    checksummed: std::sync::atomic::AtomicU64,
    /// Tensor names to their index, made at the first lookup by name.
    by_name: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl Container {
    /// Opens and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (file, map) = crate::input::open(&path)?;
        let (header, layouts) = parse(&path, &map)?;
        let n = map.len();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&map[n - 16..n - 8]);
        id[8..].copy_from_slice(&(n as u64).to_le_bytes());
        let identity = xxhash_rust::xxh3::xxh3_64(&id);
        let read_identity = {
            use std::os::unix::fs::MetadataExt;
            let m = file.metadata().map_err(|e| Error::io(&path, e))?;
            let mut k = Vec::with_capacity(56);
            for v in [
                identity,
                m.dev(),
                m.ino(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ] {
                k.extend_from_slice(&v.to_le_bytes());
            }
            xxhash_rust::xxh3::xxh3_64(&k)
        };
        Ok(Container {
            path,
            map,
            header,
            identity,
            read_identity,
            layouts,
            checksummed: Default::default(),
            by_name: Default::default(),
        })
    }

    /// The file opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes when the container's contents do (every byte
    /// is under the header checksum, directly or through a section checksum).
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// [`identity`](Self::identity) and the opened file's device, inode,
    /// modification and change times: what the library's cache keys decoded
    /// tensors by.
    /// A copy of the file, or the file rewritten in place (a damaged chunk
    /// keeps the header and so the identity), is another key, so a tensor
    /// comes from the cache only for the file it was decoded from.
    pub fn read_identity(&self) -> u64 {
        self.read_identity
    }

    /// The index of the tensor named `name` (a safetensors header holds a
    /// name once): one hash lookup, where a scan of a shard of 100,000
    /// tensors made each `get_tensor` take milliseconds.
    pub fn tensor_named(&self, name: &str) -> Option<usize> {
        self.by_name
            .get_or_init(|| {
                let tensors = &self.header.tensors;
                tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect()
            })
            .get(name)
            .copied()
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes of the container file.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Section bytes read and checksummed since the container was opened,
    /// over every decode of it: a decode that reads each byte once adds the
    /// sections of every chunk it decodes, once.
    pub fn bytes_checksummed(&self) -> u64 {
        self.checksummed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The layout of tensor `t` (split tensors only).
    pub fn layout(&self, t: usize) -> Option<&Layout> {
        self.layouts[t].as_ref()
    }

    fn corrupt(&self, t: usize, c: usize, s: usize, offset: u64, what: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            at: Location {
                tensor: Some(self.header.tensors[t].name.clone()),
                chunk: Some(c),
                section: if self.layouts[t].is_some() {
                    Some(s)
                } else {
                    None
                },
                offset: Some(offset),
            },
            what,
        }
    }

    /// The first `count` sections of chunk `c` of tensor `t`, checksums verified.
    pub fn sections(&self, t: usize, c: usize, count: usize) -> Result<Vec<&[u8]>> {
        let secs = self.unchecked_sections(t, c, count);
        self.verify(t, c, &secs)?;
        Ok(secs)
    }

    /// `read` on the first `count` sections of chunk `c` of tensor `t`, then
    /// their checksums: the read brings the bytes into the CPU's caches, and
    /// the checks run from there instead of fetching them from memory first
    /// (a tenth of a bf16 decode). `read` gets unverified bytes, so it must
    /// treat them as hostile (the decoders check every length and index); a
    /// checksum mismatch is reported in place of whatever it returned, since
    /// a decoder given damaged bytes may fail on them first and the mismatch
    /// says more.
    pub fn read_sections<R>(
        &self,
        t: usize,
        c: usize,
        count: usize,
        read: impl FnOnce(&[&[u8]]) -> Result<R>,
    ) -> Result<R> {
        let secs = self.unchecked_sections(t, c, count);
        let result = read(&secs);
        self.verify(t, c, &secs)?;
        result
    }

    fn unchecked_sections(&self, t: usize, c: usize, count: usize) -> Vec<&[u8]> {
        let chunk = &self.header.tensors[t].chunks[c];
        let mut off = chunk.offset;
        let mut out = Vec::with_capacity(count);
        for sec in chunk.sections.iter().take(count) {
            // Offsets were checked against the payload region when the header was parsed.
            out.push(&self.map[off as usize..(off + sec.len) as usize]);
            off += sec.len;
        }
        out
    }

    /// Checks the checksums of `secs`, the leading sections of chunk `c` of tensor `t`.
    fn verify(&self, t: usize, c: usize, secs: &[&[u8]]) -> Result<()> {
        let chunk = &self.header.tensors[t].chunks[c];
        let read: usize = secs.iter().map(|s| s.len()).sum();
        self.checksummed
            .fetch_add(read as u64, std::sync::atomic::Ordering::Relaxed);
        let mut off = chunk.offset;
        for (s, (sec, bytes)) in chunk.sections.iter().zip(secs).enumerate() {
            let sum = xxhash_rust::xxh3::xxh3_64(bytes);
            if sum != sec.xxh3 {
                return Err(self.corrupt(
                    t,
                    c,
                    s,
                    off,
                    format!(
                        "checksum mismatch over {} bytes (expected {:016x}, found {sum:016x})",
                        sec.len, sec.xxh3
                    ),
                ));
            }
            off += sec.len;
        }
        Ok(())
    }

    /// The bytes of chunk `c` of tensor `t` in the file, when their pages
    /// are to be given back once decoded ([`Container::release`]): only for
    /// a file over [`RELEASE_ABOVE`]. Below it, the pages mapped cost less
    /// than the `madvise` (a TLB shootdown on every core that runs a worker)
    /// and the faults of mapping them again at the next decode.
    pub fn releasable(&self, t: usize, c: usize) -> Option<std::ops::Range<usize>> {
        if self.map.len() <= RELEASE_ABOVE {
            return None;
        }
        let chunk = &self.header.tensors[t].chunks[c];
        let start = chunk.offset as usize;
        Some(start..start + chunk.sections.iter().map(|s| s.len).sum::<u64>() as usize)
    }

    /// Lets the kernel drop this process's mapping of `bytes` of the file
    /// (the whole pages within them; the pages stay in the page cache): a
    /// stream over a model larger than memory keeps only the chunks in
    /// flight resident. Best effort. A decoder gathers its chunks' ranges
    /// ([`Container::releasable`]) and gives back a few MiB at a time, one
    /// shootdown for many chunks.
    pub fn release(&self, bytes: std::ops::Range<usize>) {
        const PAGE: usize = 4096;
        let start = bytes.start.next_multiple_of(PAGE);
        let end = bytes.end.min(self.map.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: the map is read-only and shared; dropping its pages only
            // makes the next access fault them in again from the file.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }

    /// Lifts a chunk codec error into a located [`Error::Corrupt`].
    pub fn decode_error(&self, t: usize, c: usize, e: Error) -> Error {
        match e {
            Error::Decode(what) => {
                let offset = self.header.tensors[t].chunks[c].offset;
                Error::Corrupt {
                    path: self.path.clone(),
                    at: Location {
                        tensor: Some(self.header.tensors[t].name.clone()),
                        chunk: Some(c),
                        section: None,
                        offset: Some(offset),
                    },
                    what,
                }
            }
            other => other,
        }
    }
}

fn bad(path: &Path, at: Location, what: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        at,
        what: what.into(),
    }
}

fn at_tensor(name: &str, chunk: Option<usize>) -> Location {
    Location {
        tensor: Some(name.to_string()),
        chunk,
        ..Location::default()
    }
}

/// The header's stored bytes (version [`VERSION`]) in a file of
/// `chunk_bytes` of chunks: its JSON, compressed, or stored in raw blocks
/// where compressed it would expand more than [`open_header`] accepts.
pub fn seal_header(json: &[u8], chunk_bytes: u64) -> std::io::Result<Vec<u8>> {
    let level = match json.len() as u64 >= chunk_bytes / 16 {
        true => BIG_HEADER_ZSTD_LEVEL,
        false => HEADER_ZSTD_LEVEL,
    };
    let packed = zstd::bulk::compress(json, level)?;
    if json.len() as u64 <= header_cap(packed.len()) {
        return Ok(packed);
    }
    Ok(raw_zstd_frame(json))
}

/// The header's JSON is at most this many times its stored bytes (and at
/// least 1 MiB is allowed): what a header may ask of memory stays in
/// proportion to the file, as it did when headers were stored plain. Real
/// headers expand about six times; one that zstd shrinks further (megabytes
/// of one repeated note in the source's metadata) is stored as it is by
/// [`seal_header`].
pub const HEADER_MAX_EXPANSION: u64 = 64;

/// The most JSON a header of `stored` bytes may hold.
fn header_cap(stored: usize) -> u64 {
    (stored as u64)
        .saturating_mul(HEADER_MAX_EXPANSION)
        .clamp(1 << 20, MAX_HEADER_LEN)
}

/// The header's JSON from its stored bytes, as container `version` stores
/// them: plain (1), or one zstd frame (2 and on) whose stated size is
/// checked against [`MAX_HEADER_LEN`] and [`HEADER_MAX_EXPANSION`] before
/// anything is allocated.
pub fn open_header(version: u32, stored: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if version == 1 {
        return Ok(stored.to_vec());
    }
    let cap = header_cap(stored.len());
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n <= cap => {}
        Ok(Some(n)) => {
            return Err(format!(
                "header states {n} bytes of JSON from {} stored bytes, over the cap of {cap} \
                 ({HEADER_MAX_EXPANSION} times the stored bytes, at least 1 MiB, at most {MAX_HEADER_LEN})",
                stored.len()
            ))
        }
        _ => return Err("header is not a zstd frame that states its size".into()),
    }
    zstd::bulk::decompress(stored, cap as usize)
        .map_err(|e| format!("header does not decompress: {e}"))
}

/// `bytes` as one zstd frame of raw (stored) blocks that states its size.
fn raw_zstd_frame(bytes: &[u8]) -> Vec<u8> {
    // Frame header: the magic; a descriptor of an 8-byte content size and a
    // single segment (no window descriptor); the size.
    let mut frame = Vec::with_capacity(bytes.len() + bytes.len() / (128 << 10) * 3 + 16);
    frame.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    frame.push(0xE0);
    frame.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    // Blocks of at most 128 KiB: a 3-byte header (last flag, type 0 = raw,
    // size), then the bytes.
    let blocks: Vec<&[u8]> = match bytes.len() {
        0 => vec![&[]],
        _ => bytes.chunks(128 << 10).collect(),
    };
    for (i, block) in blocks.iter().enumerate() {
        let last = (i + 1 == blocks.len()) as u32;
        let head = (block.len() as u32) << 3 | last;
        frame.extend_from_slice(&head.to_le_bytes()[..3]);
        frame.extend_from_slice(block);
    }
    frame
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Whether `b` starts as a safetensors file does: a little-endian u64 header
/// length that fits the file, then a JSON object.
fn looks_like_safetensors(b: &[u8]) -> bool {
    b.len() > 9 && u64_at(b, 0) <= b.len() as u64 - 8 && b[8] == b'{'
}

/// Parses and checks the container's framing and header.
fn parse(path: &Path, b: &[u8]) -> Result<(Header, Vec<Option<Layout>>)> {
    let len = b.len() as u64;
    let shown = |s: &[u8]| String::from_utf8_lossy(s).escape_debug().to_string();
    if len < 8 || &b[..8] != MAGIC {
        return Err(Error::NotContainer {
            path: path.to_path_buf(),
            expected: String::from_utf8_lossy(MAGIC).into(),
            found: shown(&b[..b.len().min(8)]),
            hint: if looks_like_safetensors(b) {
                "; it looks like an uncompressed safetensors file: compress it first (padic-burst compress, or padic_burst.compress_file)".into()
            } else {
                String::new()
            },
        });
    }
    if len < PREFIX_LEN + FOOTER_LEN {
        return Err(bad(
            path,
            Location::default(),
            format!(
                "file is {len} bytes, shorter than the {} bytes of framing",
                PREFIX_LEN + FOOTER_LEN
            ),
        ));
    }
    // Checked against the header, under its checksum, once that is read.
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let reserved = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if reserved != 0 {
        return Err(bad(
            path,
            Location {
                offset: Some(12),
                ..Location::default()
            },
            format!("reserved prefix field is {reserved:#x}, expected 0"),
        ));
    }
    let foot = (len - FOOTER_LEN) as usize;
    if &b[foot + 16..] != END_MAGIC {
        return Err(bad(
            path,
            Location {
                offset: Some(foot as u64 + 16),
                ..Location::default()
            },
            format!(
                "end magic \"{}\" missing (found \"{}\"): the file is truncated or damaged",
                String::from_utf8_lossy(END_MAGIC),
                shown(&b[foot + 16..])
            ),
        ));
    }
    let header_len = u64_at(b, foot);
    let header_sum = u64_at(b, foot + 8);
    let room = len - PREFIX_LEN - FOOTER_LEN;
    if header_len > room || header_len > MAX_HEADER_LEN {
        return Err(bad(
            path,
            Location {
                offset: Some(foot as u64),
                ..Location::default()
            },
            format!("header length {header_len} exceeds the {room} bytes available (cap {MAX_HEADER_LEN})"),
        ));
    }
    let header_start = len - FOOTER_LEN - header_len;
    let stored = &b[header_start as usize..foot];
    let sum = xxhash_rust::xxh3::xxh3_64(stored);
    if sum != header_sum {
        return Err(bad(
            path,
            Location {
                offset: Some(header_start),
                ..Location::default()
            },
            format!(
                "header checksum mismatch over bytes {header_start}..{foot} (expected \
                 {header_sum:016x}, found {sum:016x}): the header, its length (offset {foot}) \
                 or its checksum (offset {}) is damaged",
                foot + 8
            ),
        ));
    }
    let at_header = || Location {
        offset: Some(header_start),
        ..Location::default()
    };
    let at_version = || Location {
        offset: Some(8),
        ..Location::default()
    };
    // The version the header states (under its checksum) against the
    // prefix's, which no checksum covers.
    let disagrees = |stated: u32| {
        let what = match (OLDEST_VERSION..=VERSION).contains(&stated) {
            true => "the version field is damaged".to_string(),
            false => format!(
                "a version this build does not read (it reads {OLDEST_VERSION} to {VERSION})"
            ),
        };
        bad(
            path,
            at_version(),
            format!(
                "the version field says {version}, the header (under its checksum) says \
                 {stated}: {what}"
            ),
        )
    };
    // The header read as the prefix says (as this version where the prefix
    // names none this build reads): once, on every good file.
    let readable = (OLDEST_VERSION..=VERSION).contains(&version);
    let read_as = |v: u32| {
        let json = open_header(v, stored)?;
        serde_json::from_slice::<Header>(&json).map_err(|e| format!("header does not parse: {e}"))
    };
    let header = match read_as(if readable { version } else { VERSION }) {
        Ok(header) => header,
        Err(e) => {
            // A prefix that misreads the header (version 1, plain JSON, for
            // a compressed one): what the header states as this version's.
            let stated = (readable && version != VERSION)
                .then(|| read_as(VERSION).ok().and_then(|h| h.version))
                .flatten();
            return Err(match (stated, readable) {
                (Some(stated), _) => disagrees(stated),
                (None, false) => Error::Version {
                    path: path.to_path_buf(),
                    found: version,
                    supported: VERSION,
                },
                (None, true) => bad(path, at_header(), e),
            });
        }
    };
    match header.version {
        Some(stated) if stated != version => return Err(disagrees(stated)),
        None if !readable => {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            })
        }
        None if version >= 4 => {
            return Err(bad(
                path,
                at_version(),
                format!(
                    "the version field says {version}, but the header states no version, as \
                     headers before version 4 do: the version field is damaged"
                ),
            ))
        }
        _ => {}
    }
    let layouts = validate::validate(path, &header, header_start, version)?;
    Ok((header, layouts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_frame_opens_to_its_bytes_at_every_block_boundary() {
        for n in [0, 1, 128 << 10, (128 << 10) + 1, 300_000] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let frame = raw_zstd_frame(&bytes);
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&frame).ok(),
                Some(Some(n as u64))
            );
            assert_eq!(zstd::bulk::decompress(&frame, n.max(1)).unwrap(), bytes);
        }
    }

    #[test]
    fn a_header_that_shrinks_past_the_cap_is_stored_raw_and_opens() {
        // 2 MB of one note: zstd would store it in about a hundred bytes,
        // which the reader's cap (64 times the stored bytes) refuses.
        let json = format!("{{\"notes\":\"{}\"}}", "a".repeat(2_000_000)).into_bytes();
        let stored = seal_header(&json, 0).unwrap();
        assert!(stored.len() >= json.len(), "{}", stored.len());
        assert_eq!(open_header(VERSION, &stored).unwrap(), json);
        // A header within the cap is compressed as before.
        let small = format!("{{\"notes\":\"{}\"}}", "a".repeat(500_000)).into_bytes();
        let stored = seal_header(&small, 0).unwrap();
        assert!(stored.len() < 1000, "{}", stored.len());
        assert_eq!(open_header(VERSION, &stored).unwrap(), small);
    }
}
