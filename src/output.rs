//! Output files appear only when complete: written under a temporary name in
//! the same folder, renamed over the final name by [`TempOutput::commit`], and
//! removed if dropped before that (an error, a panic unwinding, an early return).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written under a temporary name.
#[derive(Debug)]
pub struct TempOutput {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl TempOutput {
    /// Creates `.<name>.tmp-<pid>` beside `target`.
    pub fn create(target: &Path) -> Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} is not a file path", target.display()))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp = target.with_file_name(temp_name);
        let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        Ok(TempOutput {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    pub fn file(&self) -> &File {
        self.file.as_ref().expect("file is present until commit")
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flushes to disk and renames to the final name.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("commit runs once");
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` through a temporary name: the file appears whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temp = TempOutput::create(path)?;
    temp.file()
        .write_all(bytes)
        .map_err(|e| Error::io(temp.temp_path(), e))?;
    temp.commit()
}

/// A safetensors file's preamble: the header's length (u64, little-endian)
/// and the header; the data region follows it.
pub fn safetensors_preamble(header: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + header.len());
    v.extend_from_slice(&(header.len() as u64).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v
}

/// Sizes `file` for a safetensors file with `header` and `data_len` bytes of
/// data and writes its preamble; returns where the data region starts.
pub fn write_safetensors_preamble(
    file: &File,
    header: &str,
    data_len: u64,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let preamble = safetensors_preamble(header);
    let base = preamble.len() as u64;
    file.set_len(base + data_len)?;
    file.write_all_at(&preamble, 0)?;
    Ok(base)
}
