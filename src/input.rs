//! Input files: every file padic-burst reads (a safetensors file or shard, a
//! container) is mapped read-only, and only a regular file can be. A FIFO
//! would block at `open` until a writer came, and a device fails `mmap` with
//! "No such device"; both are refused first, by name.

use std::path::Path;

use crate::error::{Error, Result};

/// Maps `path` read-only, after checking that it is a regular file (a
/// symlink to one is).
pub fn map(path: &Path) -> Result<memmap2::Mmap> {
    open(path).map(|(_, map)| map)
}

/// Opens `path` and maps it read-only, after checking that it is a regular
/// file (a symlink to one is). What is not is refused before it is opened
/// (opening some devices acts on them); what was opened is checked again,
/// so the file and the map are of one and the same regular file even if
/// the path is replaced meanwhile, and the open never waits on a FIFO
/// (`O_NONBLOCK`, which a regular file's reads ignore).
pub fn open(path: &Path) -> Result<(std::fs::File, memmap2::Mmap)> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    regular(path, &meta)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    regular(path, &file.metadata().map_err(|e| Error::io(path, e))?)?;
    // SAFETY: a read-only map. A file changed underneath it by another
    // process can give wrong bytes: a container's checksums catch that, and a
    // safetensors input is read once, as the tools that write it expect.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok((file, map))
}

/// The text of a small input the user wrote (a configuration, a trace):
/// bytes that are not UTF-8 are a bad input (exit 2), not a failed read.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: not UTF-8 text (byte {} is not)",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Refuses, by name, an input that is not a regular file.
fn regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if meta.is_file() {
        return Ok(());
    }
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(Error::InvalidArgument(format!(
        "{}: {kind}; the input must be a regular file (it is read by mapping it)",
        path.display()
    )))
}
