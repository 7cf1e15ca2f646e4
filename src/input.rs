//! Input files: every file padic-burst reads (a safetensors file or shard, a
//! container) is mapped read-only, and only a regular file can be. A FIFO
//! would block at `open` until a writer came, and a device fails `mmap` with
//! "No such device"; both are refused first, by name.

use std::path::Path;

use crate::error::{Error, Result};

/// Maps `path` read-only, after checking that it is a regular file (a
/// symlink to one is).
pub fn map(path: &Path) -> Result<memmap2::Mmap> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
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
        return Err(Error::InvalidArgument(format!(
            "{}: {kind}; the input must be a regular file (it is read by mapping it)",
            path.display()
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: a read-only map. A file changed underneath it by another
    // process can give wrong bytes: a container's checksums catch that, and a
    // safetensors input is read once, as the tools that write it expect.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}
