//! Peers measured on the same file in the same run: zstd (levels 1, 3, 19)
//! and lz4 through their Rust crates, ZipNN through
//! `scripts/peers/zipnn_bench.py` when a Python with `zipnn` is found.
//!
//! zstd and lz4 compress the file in independent 1 MiB blocks (as our chunks
//! and ZipNN's are), so they decode in parallel on the same thread count; each
//! decode writes into a freshly allocated buffer, as ours does.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::Stat;
use crate::error::{Error, Result};

/// The ZipNN driver, shipped inside the binary so `bench` runs from anywhere.
pub const ZIPNN_SCRIPT: &str = include_str!("../../scripts/peers/zipnn_bench.py");

const BLOCK: usize = 1 << 20;

/// One peer's figures, or why it is missing.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// The peer and its setting: `zstd-3`, `lz4`, `zipnn`.
    pub name: String,
    /// `ok`, or `missing: <why>`.
    pub status: String,
    /// Compressed bytes over original bytes (lower is better).
    pub ratio: Option<f64>,
    /// Bytes the peer compressed the file to.
    pub compressed_bytes: Option<u64>,
    /// Compress throughput (input GB/s); `threads` threads.
    pub compress_gb_per_s: Option<Stat>,
    /// Decode throughput (output GB/s) per thread count.
    pub decompress_gb_per_s: Vec<(usize, Stat)>,
    /// Decode and write to a file (output GB/s) per thread count, where
    /// the peer was run so (ZipNN: `decompress`, then the bytes written).
    pub decompress_write_gb_per_s: Vec<(usize, Stat)>,
}

impl PeerResult {
    fn missing(name: &str, why: String) -> Self {
        PeerResult {
            name: name.into(),
            status: format!("missing: {why}"),
            ratio: None,
            compressed_bytes: None,
            compress_gb_per_s: None,
            decompress_gb_per_s: Vec::new(),
            decompress_write_gb_per_s: Vec::new(),
        }
    }
}

#[derive(Clone, Copy)]
enum Block {
    Zstd(i32),
    Lz4,
}

impl Block {
    fn name(self) -> String {
        match self {
            Block::Zstd(l) => format!("zstd-{l}"),
            Block::Lz4 => "lz4".into(),
        }
    }

    fn compress(self, src: &[u8]) -> Result<Vec<u8>> {
        match self {
            Block::Zstd(l) => zstd::bulk::compress(src, l)
                .map_err(|e| Error::Decode(format!("zstd-{l} compress: {e}"))),
            Block::Lz4 => Ok(lz4_flex::block::compress(src)),
        }
    }

    fn decompress(self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        let n = match self {
            Block::Zstd(l) => zstd::bulk::decompress_to_buffer(src, dst)
                .map_err(|e| Error::Decode(format!("zstd-{l} decompress: {e}")))?,
            Block::Lz4 => lz4_flex::block::decompress_into(src, dst)
                .map_err(|e| Error::Decode(format!("lz4 decompress: {e}")))?,
        };
        if n != dst.len() {
            return Err(Error::Decode(format!(
                "{}: a block decoded to {n} bytes, not {}",
                self.name(),
                dst.len()
            )));
        }
        Ok(())
    }
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("thread pool: {e}")))
}

/// zstd at `level`, or lz4 (`level` None): ratio, compress and decode speed.
/// `compress_runs` compress repetitions (after a warm-up when above 1).
pub fn block_peer(
    data: &[u8],
    level: Option<i32>,
    workers: &[usize],
    repeat: usize,
    compress_runs: usize,
) -> Result<PeerResult> {
    let codec = level.map_or(Block::Lz4, Block::Zstd);
    let max = workers.iter().copied().max().unwrap_or(1);
    let cpool = pool(max)?;
    let compress_all = || -> Result<Vec<Vec<u8>>> {
        cpool.install(|| {
            data.par_chunks(BLOCK)
                .map(|b| codec.compress(b))
                .collect::<Result<Vec<_>>>()
        })
    };
    let mut blocks = Vec::new();
    let mut secs = Vec::new();
    let warm = compress_runs > 1;
    for i in 0..compress_runs + warm as usize {
        let t = Instant::now();
        blocks = compress_all()?;
        if i > 0 || !warm {
            secs.push(t.elapsed().as_secs_f64());
        }
    }
    let packed: u64 = blocks.iter().map(|b| b.len() as u64).sum();
    let mut decode = Vec::new();
    for &w in workers {
        let p = pool(w)?;
        let mut times = Vec::new();
        for i in 0..=repeat {
            let mut out = crate::engine::cpu::output_buffer(data.len());
            let t = Instant::now();
            p.install(|| {
                out.par_chunks_mut(BLOCK)
                    .zip(blocks.par_iter())
                    .try_for_each(|(dst, src)| codec.decompress(src, dst))
            })?;
            let s = t.elapsed().as_secs_f64();
            if out != data {
                return Err(Error::Decode(format!(
                    "{}: decoded bytes differ from the input",
                    codec.name()
                )));
            }
            if i > 0 {
                times.push(s);
            }
        }
        decode.push((w, Stat::of_throughput(data.len() as u64, &times)));
    }
    Ok(PeerResult {
        name: codec.name(),
        status: "ok".into(),
        ratio: Some(packed as f64 / data.len().max(1) as f64),
        compressed_bytes: Some(packed),
        compress_gb_per_s: Some(Stat::of_throughput(data.len() as u64, &secs)),
        decompress_gb_per_s: decode,
        decompress_write_gb_per_s: Vec::new(),
    })
}

/// The Python to run ZipNN with: `explicit`, else `PADIC_ZIPNN_PYTHON`, else
/// `.venv-peers/bin/python` (what `scripts/compare-peers.sh` sets up), else
/// `python3`.
pub fn zipnn_python(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = crate::config::zipnn_python()? {
        return Ok(p);
    }
    let venv = PathBuf::from(".venv-peers/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    Ok(PathBuf::from("python3"))
}

#[derive(serde::Deserialize)]
struct ZipnnOut {
    version: String,
    compressed_bytes: u64,
    ratio: f64,
    compress_s: Vec<f64>,
    decompress_s: Vec<f64>,
    #[serde(default)]
    decompress_write_s: Vec<f64>,
}

/// ZipNN on `file` (dtype `dtype`), through the shipped script, its
/// decodes also written to a file in `dir` (the figure beside the whole
/// decompression to a file); missing (with the reason) when the Python or
/// its `zipnn` is absent.
pub fn zipnn(
    python: &Path,
    dir: &Path,
    file: &Path,
    dtype: &str,
    workers: &[usize],
    repeat: usize,
) -> PeerResult {
    let name = "zipnn";
    let probe = std::process::Command::new(python)
        .args(["-c", "import zipnn"])
        .output();
    match probe {
        Err(e) => {
            return PeerResult::missing(
                name,
                format!(
                    "no Python at {} ({e}); run scripts/compare-peers.sh or pass --zipnn-python",
                    python.display()
                ),
            )
        }
        Ok(o) if !o.status.success() => {
            return PeerResult::missing(
                name,
                format!(
                    "{} cannot import zipnn; run scripts/compare-peers.sh (it sets up .venv-peers) or pass --zipnn-python",
                    python.display()
                ),
            )
        }
        Ok(_) => {}
    }
    let script = dir.join("zipnn_bench.py");
    if let Err(e) = std::fs::write(&script, ZIPNN_SCRIPT) {
        return PeerResult::missing(name, format!("{}: {e}", script.display()));
    }
    let bytes = std::fs::metadata(file).map_or(0, |m| m.len());
    let mut result = PeerResult::missing(name, String::new());
    for &w in workers {
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(file)
            .args([dtype, &w.to_string(), &repeat.max(1).to_string()])
            .arg(dir.join("zipnn-out.safetensors"))
            .output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                return PeerResult::missing(
                    name,
                    format!(
                        "zipnn_bench.py failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                )
            }
            Err(e) => return PeerResult::missing(name, e.to_string()),
        };
        let parsed: ZipnnOut = match serde_json::from_slice(&out.stdout) {
            Ok(p) => p,
            Err(e) => {
                return PeerResult::missing(name, format!("unreadable zipnn_bench.py output: {e}"))
            }
        };
        result.name = format!("zipnn-{}", parsed.version);
        result.status = "ok".into();
        result.ratio = Some(parsed.ratio);
        result.compressed_bytes = Some(parsed.compressed_bytes);
        if w == workers.iter().copied().max().unwrap_or(w) {
            result.compress_gb_per_s = Some(Stat::of_throughput(bytes, &parsed.compress_s));
        }
        result
            .decompress_gb_per_s
            .push((w, Stat::of_throughput(bytes, &parsed.decompress_s)));
        if !parsed.decompress_write_s.is_empty() {
            result
                .decompress_write_gb_per_s
                .push((w, Stat::of_throughput(bytes, &parsed.decompress_write_s)));
        }
    }
    result
}

/// Every peer on `original` (the file at `input`): zstd at levels 1, 3 and
/// 19, lz4, then ZipNN working in `dir`; one bar step each.
pub(super) fn run_all(
    opts: &super::BenchOptions,
    original: &[u8],
    dir: &Path,
    input: &Path,
    bar: &crate::progress::Progress,
) -> Result<Vec<PeerResult>> {
    let mut out = Vec::new();
    for level in [Some(1), Some(3), Some(19), None] {
        let runs = if level == Some(19) {
            opts.slow_compress_runs.max(1)
        } else {
            opts.repeat
        };
        out.push(block_peer(
            original,
            level,
            &opts.workers,
            opts.repeat,
            runs,
        )?);
        bar.advance(1);
    }
    let python = zipnn_python(opts.zipnn_python.as_deref())?;
    out.push(zipnn(
        &python,
        dir,
        input,
        &opts.dtype,
        &opts.workers,
        opts.repeat,
    ));
    bar.advance(1);
    Ok(out)
}
