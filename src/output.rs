//! Where outputs go, and how they appear: never half-written, never over
//! something the user did not mean to replace.
//!
//! [`TempOutput::create`] looks at what the target path is:
//!
//! * a regular file, or nothing yet: the bytes are written to a new hidden
//!   `.<name>.tmp-<pid>-<n>` beside it (created with `O_EXCL | O_NOFOLLOW`, so
//!   a planted symlink or an old file is never written through) and renamed
//!   over the target by [`TempOutput::commit`];
//! * a symlink: written through to the file it points at, as `cp` does (the
//!   link stays, its target is replaced the same way);
//! * a FIFO, a character device (`/dev/null`, a terminal), a socket, or `-`
//!   (standard output): nothing is renamed; [`open_stream`] opens it, and
//!   `decompress` writes the bytes to it in order as the chunks decode (see
//!   `graph::placement::StreamPlacement`); other writers assemble the bytes
//!   in an unlinked temporary file and stream them to it in order at commit;
//! * a directory: an error.
//!
//! A temporary file is removed if the output is dropped before commit (an
//! error, a panic unwinding, an early return), and on SIGINT or SIGTERM once
//! [`install_signal_cleanup`] runs (the process then exits with 130 or 143).
//! [`TempOutput::create_from`] refuses an output that is the input itself
//! (the same inode, however it is spelled) and gives the output the input's
//! permission bits, as `zstd` does, so private weights stay private.
//! Commit does not `fsync` unless [`set_durable`] asked for it (`--fsync`):
//! like `cp`, `zstd -d` and safetensors' `save_file`, a crash right after a
//! run may lose the file, but never leaves a torn one under the final name.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

static DURABLE: AtomicBool = AtomicBool::new(false);
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Temporary files not yet committed, for the signal handler.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Whether [`TempOutput::commit`] flushes the file to disk (`fsync`) before
/// the rename. Off by default.
pub fn set_durable(on: bool) {
    DURABLE.store(on, Ordering::Relaxed);
}

/// What the output path names.
#[derive(Debug)]
enum Destination {
    /// Renamed over `target` at commit.
    Replace,
    /// Streamed, in order, to this already open file at commit.
    Stream(File),
}

/// A file being written under a temporary name.
#[derive(Debug)]
pub struct TempOutput {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    destination: Destination,
}

/// Opens `target` for writing in order when it takes a stream: `-`
/// (standard output), a FIFO, a character device or a socket, a symlink to
/// one followed; `None` for any other path. Returns the path it names.
pub fn open_stream(target: &Path) -> Result<Option<(PathBuf, File)>> {
    if target.as_os_str() == "-" {
        // A duplicate of standard output's descriptor, owned by this File.
        let stdout = std::io::stdout();
        let fd = std::os::fd::AsFd::as_fd(&stdout)
            .try_clone_to_owned()
            .map_err(|e| Error::io("<stdout>", e))?;
        return Ok(Some((target.to_path_buf(), File::from(fd))));
    }
    if !is_stream(target) {
        return Ok(None);
    }
    // Opened as given: the kernel follows the links, `/dev/stdout`'s among
    // them, whose text (`pipe:[N]`) is no path to follow by hand.
    let dest = OpenOptions::new()
        .write(true)
        .open(target)
        .map_err(|e| Error::io(target, e))?;
    Ok(Some((target.to_path_buf(), dest)))
}

/// The permission bits of `source`, which an output made from it takes (as
/// `zstd` gives them), so private weights stay private.
pub fn permission_bits(source: &Path) -> Result<u32> {
    Ok(std::fs::metadata(source)
        .map_err(|e| Error::io(source, e))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Whether `target` takes a stream rather than a file: `-`, a FIFO, a
/// character device or a socket (a symlink to one followed).
pub fn is_stream(target: &Path) -> bool {
    target.as_os_str() == "-"
        || std::fs::metadata(target).is_ok_and(|m| {
            let t = m.file_type();
            t.is_fifo() || t.is_char_device() || t.is_socket()
        })
}

/// The path an output at `target` is written to: what a symlink there
/// leads to (followed to the end, as `cp` writes through one), or `target`.
pub fn written_through(target: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => resolve_link(target),
        _ => Ok(target.to_path_buf()),
    }
}

/// Refuses `output` when it is `input` (the same device and inode, however
/// spelled: [`place`]).
pub fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    refuse_input_place(place(input), input, output)
}

/// [`refuse_same_file`], the input being at `input_place`.
fn refuse_input_place(input_place: Option<Place>, input: &Path, output: &Path) -> Result<()> {
    match place(output) {
        Some(at @ Place::Inode(..)) if input_place.as_ref() == Some(&at) => {
            Err(Error::InvalidArgument(format!(
                "{} is the input {} itself: refusing to write over it",
                output.display(),
                input.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Where a path leads, to tell two spellings of one file apart.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// `-`.
    Stdout,
    /// Something that exists: its device and inode (symlinks followed).
    Inode(u64, u64),
    /// Nothing yet: where it would be made ([`located`]).
    Path(PathBuf),
}

/// `path` made absolute through its deepest existing ancestor, that one
/// canonical (symlinks resolved) and the rest as given; a symlink that
/// leads to nothing yet is followed to where it leads, as a write through
/// it would go.
fn located(path: &Path) -> PathBuf {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut at = absolute(path);
    for _ in 0..64 {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Ok(next) = resolve_link(&at) {
                at = absolute(&next);
                continue;
            }
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent.to_path_buf();
            }
            _ => break,
        }
    }
    rest.iter().rev().fold(at, |p, name| p.join(name))
}

/// Where `path` leads; `None` for the null device, which any number of
/// outputs may share.
fn place(path: &Path) -> Option<Place> {
    if path.as_os_str() == "-" {
        // What standard output is (a pipe, a file, a terminal, the null
        // device), so that `/dev/stdout` or that file's own name is the same.
        return match Path::new("/dev/stdout").exists() {
            true => place(Path::new("/dev/stdout")),
            false => Some(Place::Stdout),
        };
    }
    if is_null_device(path) {
        return None;
    }
    Some(match std::fs::metadata(path) {
        Ok(m) => Place::Inode(m.dev(), m.ino()),
        Err(_) => Place::Path(located(path)),
    })
}

/// A path a command reads or writes, with the flag that named it (`-o`,
/// `--stats-json`, `the input`).
pub type Named<'a> = (&'a str, &'a Path);

/// Refuses, before any work, an output that would land on something the
/// command reads or on another of its outputs, however each is spelled:
/// each of `writes` must not be one of `reads`, nor lie inside one of
/// `trees` (a model directory read or written whole), nor be another of
/// `writes`. The null device is never a clash.
pub fn refuse_clashes(reads: &[Named], trees: &[Named], writes: &[Named]) -> Result<()> {
    let refuse = |what: String| Err(Error::InvalidArgument(what));
    // Each path looked up once.
    let read_places: Vec<Option<Place>> = reads.iter().map(|&(_, p)| place(p)).collect();
    let write_places: Vec<Option<Place>> = writes.iter().map(|&(_, p)| place(p)).collect();
    let tree_places: Vec<PathBuf> = trees.iter().map(|&(_, p)| located(p)).collect();
    for (i, &(flag, path)) in writes.iter().enumerate() {
        let Some(at) = &write_places[i] else { continue };
        for (&(read_flag, read), read_at) in reads.iter().zip(&read_places) {
            if read_at.as_ref() == Some(at) {
                return refuse(format!(
                    "{flag} {} is {read_flag} {} itself, which this command reads: \
                     refusing to write over it",
                    path.display(),
                    read.display()
                ));
            }
        }
        let here = located(path);
        for (&(tree_flag, tree), tree_at) in trees.iter().zip(&tree_places) {
            if here.starts_with(tree_at) {
                return refuse(format!(
                    "{flag} {}: that lies inside {tree_flag} {}, a model directory: \
                     give a path outside it",
                    path.display(),
                    tree.display()
                ));
            }
        }
        for (&(other_flag, other), other_at) in writes[..i].iter().zip(&write_places) {
            if other_at.as_ref() == Some(at) {
                return refuse(format!(
                    "{flag} {} is {other_flag} {} itself: give each output a path of its own",
                    path.display(),
                    other.display()
                ));
            }
        }
    }
    Ok(())
}

/// Whether `path` is the null device (`/dev/null`, however reached): a
/// character device with its device number.
pub fn is_null_device(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (std::fs::metadata(path), std::fs::metadata("/dev/null")) {
        (Ok(m), Ok(null)) => m.file_type().is_char_device() && m.rdev() == null.rdev(),
        _ => false,
    }
}

impl TempOutput {
    /// An output at `target` (see the module's doc for what each kind of path gets).
    pub fn create(target: &Path) -> Result<Self> {
        Self::create_with_mode(target, None)
    }

    /// An output at `target` made from `source`: refused when it is `source`
    /// itself, and given `source`'s permission bits.
    pub fn create_from(target: &Path, source: &Path) -> Result<Self> {
        refuse_same_file(source, target)?;
        let mode = permission_bits(source)?;
        Self::create_with_mode(target, Some(mode))
    }

    /// [`TempOutput::create_from`] for a source already open as `file`: the
    /// file compared with the output and its permission bits are the open
    /// file's, not those of whatever `source` names by now.
    pub fn create_from_open(target: &Path, source: &Path, file: &std::fs::File) -> Result<Self> {
        let meta = file.metadata().map_err(|e| Error::io(source, e))?;
        refuse_input_place(Some(Place::Inode(meta.dev(), meta.ino())), source, target)?;
        Self::create_with_mode(target, Some(meta.permissions().mode() & 0o7777))
    }

    fn create_with_mode(target: &Path, mode: Option<u32>) -> Result<Self> {
        if let Some((target, dest)) = open_stream(target)? {
            return Self::streamed(&target, dest);
        }
        // A symlink is written through to what it points at (followed to the end).
        let target = written_through(target)?;
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(Error::InvalidArgument(format!(
                    "{} is a directory: give a file path for the output",
                    target.display()
                )))
            }
            Ok(m) if m.file_type().is_block_device() => {
                return Err(Error::InvalidArgument(format!(
                    "{} is a block device: refusing to write a model over it",
                    target.display()
                )))
            }
            _ => {}
        }
        let name = target.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} is not a file path", target.display()))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = target.with_file_name(temp_name);
        // Errors name the output as given, not the hidden temporary name, and
        // keep the system's error (its errno reaches Python's OSError).
        let file = create_pending(&temp, || create_new(&temp, mode.unwrap_or(0o666)))
            .map_err(|e| Error::io(&target, e))?;
        if let Some(mode) = mode {
            // Exactly the source's bits (the umask may only have narrowed them).
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(&target, e))?;
        }
        Ok(TempOutput {
            temp,
            target,
            file: Some(file),
            destination: Destination::Replace,
        })
    }

    /// The bytes go to an unlinked temporary file, streamed to `dest` at commit.
    fn streamed(target: &Path, dest: File) -> Result<Self> {
        let dir = std::env::temp_dir();
        let temp = dir.join(format!(
            ".padic-burst.stream-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = create_new(&temp, 0o600).map_err(|e| Error::io(&dir, e))?;
        // Unlinked at once: nothing is left behind, whatever happens next.
        std::fs::remove_file(&temp).map_err(|e| Error::io(&temp, e))?;
        Ok(TempOutput {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
            destination: Destination::Stream(dest),
        })
    }

    /// The file to write (at any offset) until commit.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("file is present until commit")
    }

    /// The temporary file's path (for messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The path an error writing the temporary file names: the output it
    /// is to become (its hidden name is removed on the way out), or for a
    /// stream the folder of its temporary copy.
    pub fn shown_path(&self) -> PathBuf {
        match self.destination {
            Destination::Replace => self.target.clone(),
            Destination::Stream(_) => self
                .temp
                .parent()
                .map_or_else(std::env::temp_dir, Path::to_path_buf),
        }
    }

    /// An error writing the temporary file, at [`shown_path`](Self::shown_path).
    pub fn write_error(&self, e: std::io::Error) -> Error {
        Error::io(self.shown_path(), e)
    }

    /// The final path (a symlink's target, where the output was a symlink).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames to the final name (after an `fsync` when [`set_durable`] is
    /// on), or streams the bytes to the FIFO, device or standard output.
    pub fn commit(mut self) -> Result<()> {
        let mut file = self.file.take().expect("commit runs once");
        match &mut self.destination {
            Destination::Replace => {
                let result = (|| {
                    if DURABLE.load(Ordering::Relaxed) {
                        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
                    }
                    drop(file);
                    std::fs::rename(&self.temp, &self.target)
                        .map_err(|e| Error::io(&self.target, e))
                })();
                pending(|p| p.retain(|t| t != &self.temp));
                if result.is_err() {
                    let _ = std::fs::remove_file(&self.temp);
                }
                result
            }
            Destination::Stream(dest) => {
                use std::io::{Seek, SeekFrom};
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::io(&self.temp, e))?;
                std::io::copy(&mut file, dest).map_err(|e| Error::io(&self.target, e))?;
                Ok(())
            }
        }
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() && matches!(self.destination, Destination::Replace) {
            let _ = std::fs::remove_file(&self.temp);
            pending(|p| p.retain(|t| t != &self.temp));
        }
    }
}

fn pending(f: impl FnOnce(&mut Vec<PathBuf>)) {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut p);
}

/// Registers a temporary path (a file or a directory) made outside
/// [`TempOutput`], so that SIGINT or SIGTERM removes it too.
pub fn register_pending(path: &Path) {
    pending(|p| p.push(path.to_path_buf()));
}

/// Makes `path` with `create` and lists it for removal on a signal, the
/// list locked throughout: a signal's clean-up either runs first (and holds
/// the list until the process exits, so nothing is made after it) or finds
/// `path` listed. Nothing is listed when `create` fails.
pub fn create_pending<T, E>(
    path: &Path,
    create: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let made = create()?;
    p.push(path.to_path_buf());
    Ok(made)
}

/// Forgets a path given to [`register_pending`] (it was renamed or removed).
pub fn unregister_pending(path: &Path) {
    pending(|p| p.retain(|t| t != path));
}

/// Creates `path`, which must not exist, without following a symlink there.
fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Follows `link` to the path it finally names (which may not exist yet).
pub(crate) fn resolve_link(link: &Path) -> Result<PathBuf> {
    let mut path = link.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(next) => {
                path = match path.parent() {
                    Some(parent) if next.is_relative() => parent.join(next),
                    _ => next,
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::InvalidArgument(format!(
        "{}: too many levels of symbolic links",
        link.display()
    )))
}

/// What a SIGBUS handler sends the clean-up thread: a mapped input was cut
/// short under the process (the one way a SIGBUS arises here).
const INPUT_CUT: libc::c_int = libc::SIGUSR1;
/// Set by the SIGBUS handler before it sends [`INPUT_CUT`]: a SIGUSR1 from
/// outside is not a cut input.
static INPUT_WAS_CUT: AtomicBool = AtomicBool::new(false);

/// SIGBUS: a read of a mapped input past its end, after another process cut
/// the file short. The faulting thread cannot go on; it asks the clean-up
/// thread (async-signal-safe `kill`) to remove the temporaries and exit, and
/// sleeps until it does.
extern "C" fn on_input_cut(_: libc::c_int) {
    // A lock-free store: async-signal-safe.
    INPUT_WAS_CUT.store(true, Ordering::SeqCst);
    // SAFETY: `kill`, `getpid` and `pause` are async-signal-safe.
    unsafe {
        libc::kill(libc::getpid(), INPUT_CUT);
        loop {
            libc::pause();
        }
    }
}

/// On SIGINT or SIGTERM, removes every temporary file not yet committed and
/// exits with 130 or 143; on SIGBUS (a mapped input cut short by another
/// process), the same with a message and exit 1. Call it first thing in
/// `main`, before any thread starts: the signals are blocked in every thread
/// and taken by one thread that waits for them, so the clean-up never runs
/// inside a signal handler.
pub fn install_signal_cleanup() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only edit it and this
    // thread's mask (inherited by every thread started after).
    let blocked = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, INPUT_CUT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if blocked != 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds the blocked signals; `sig` receives one.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            // Held until the process exits: no temporary file is made after
            // the clean-up (see `create_pending`).
            let paths = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            for p in paths.iter() {
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(p);
                } else {
                    let _ = std::fs::remove_file(p);
                }
            }
            let code = match sig {
                libc::SIGINT => 130,
                INPUT_CUT if INPUT_WAS_CUT.load(Ordering::SeqCst) => {
                    eprintln!(
                        "error: an input file was cut short by another process while it was \
                         read (SIGBUS); no output written"
                    );
                    1
                }
                // A SIGUSR1 from outside: the signal's own end, temporaries removed.
                INPUT_CUT => 128 + libc::SIGUSR1,
                _ => 143,
            };
            // SAFETY: ends the process at once, without running destructors
            // of threads that are mid-write into files just removed.
            unsafe { libc::_exit(code) };
        });
    if spawned.is_err() {
        // No watcher: let the signals kill the process as before.
        // SAFETY: as above, on the same valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        return;
    }
    // SAFETY: installs a handler that only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_input_cut as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// Writes `bytes` to `path` through a temporary name: the file appears whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temp = TempOutput::create(path)?;
    temp.file()
        .write_all(bytes)
        .map_err(|e| temp.write_error(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_output_made_from_an_open_file_is_that_files_not_what_its_path_names_now() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        std::fs::write(&input, b"private").unwrap();
        std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = std::fs::File::open(&input).unwrap();
        // The path now names another file, open to all.
        let other = dir.path().join("other");
        std::fs::write(&other, b"public").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::rename(&other, &input).unwrap();
        let out = dir.path().join("out.padic");
        TempOutput::create_from_open(&out, &input, &file)
            .unwrap()
            .commit()
            .unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the bits of the file read, not of the one now at its path"
        );
        // The open file itself as the output is refused, whatever the path names.
        let read = dir.path().join("read.safetensors");
        std::fs::write(&read, b"weights").unwrap();
        let file = std::fs::File::open(&read).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&read, &link).unwrap();
        let err = TempOutput::create_from_open(&link, Path::new("elsewhere"), &file).unwrap_err();
        assert!(
            err.to_string().contains("refusing to write over it"),
            "{err}"
        );
        assert_eq!(std::fs::read(&read).unwrap(), b"weights");
    }
}
