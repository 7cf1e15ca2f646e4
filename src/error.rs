//! The crate's error type.
//!
//! Every error says what was expected, what was found and where: the file, and
//! where it applies the tensor, the chunk, the section and the byte offset.
//! [`Error::exit_code`] maps an error to the command line's exit status: 2 for
//! bad input (a file that is not what it claims, a bad argument), 1 for I/O
//! and the environment (the disk, the operating system, the GPU), 3 for an
//! internal fault (a timely error, a dead worker, a broken invariant).
//!
//! Errors are data: they travel through the dataflow graph as records (an
//! operator's error output), between processes too, so they are `Clone` and
//! serializable; an I/O error keeps its OS error code, and with it its kind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::gpu::GpuError;

/// Exit status for bad input or arguments.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status for I/O and environment failures.
pub const EXIT_ENVIRONMENT: i32 = 1;
/// Exit status for an internal fault.
pub const EXIT_INTERNAL: i32 = 3;

/// Where in a container a problem was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The tensor's name, when the problem belongs to one tensor.
    pub tensor: Option<String>,
    /// The chunk's index within its tensor.
    pub chunk: Option<usize>,
    /// The section within the chunk (0 = exponent channel, 1.. = digit planes).
    pub section: Option<usize>,
    /// Byte offset in the file.
    pub offset: Option<u64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.tensor {
            parts.push(format!("tensor '{t}'"));
        }
        if let Some(c) = self.chunk {
            parts.push(format!("chunk {c}"));
        }
        if let Some(s) = self.section {
            if s == 0 {
                parts.push("exponent section".to_string());
            } else {
                parts.push(format!("digit plane {}", s - 1));
            }
        }
        if let Some(o) = self.offset {
            parts.push(format!("byte offset {o}"));
        }
        if parts.is_empty() {
            write!(f, "header")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

/// Errors of the codec, the container and the engines.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or directory) the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        #[serde(with = "io_error")]
        source: std::io::Error,
    },
    /// The file does not start with the container's magic bytes.
    #[error("{}: not a padic-burst container (expected magic \"{expected}\", found \"{found}\"){hint}", path.display())]
    NotContainer {
        /// The file that was opened.
        path: PathBuf,
        /// The magic a container starts with (`PADICBST`), as text.
        expected: String,
        /// The file's first (up to 8) bytes, as shown text.
        found: String,
        /// What the file looks like instead, where that is known (an
        /// uncompressed safetensors file), as a sentence after "; ", or "".
        hint: String,
    },
    /// The container's version is not one this build reads.
    #[error("{}: unsupported container version {found} (this build reads versions {} to {supported})", path.display(), crate::format::OLDEST_VERSION)]
    Version {
        /// The container file.
        path: PathBuf,
        /// The version the file's header states.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The container is damaged or hostile: a size, an offset or a checksum is wrong.
    #[error("{}: corrupt container at {at}: {what}", path.display())]
    Corrupt {
        /// The container file.
        path: PathBuf,
        /// Tensor, chunk, section and byte offset of the fault, as far as known.
        at: Location,
        /// What is wrong there.
        what: String,
    },
    /// The safetensors input does not parse.
    #[error("{}: not a valid safetensors file: {what}", path.display())]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// Why it does not parse.
        what: String,
    },
    /// A sharded checkpoint (a directory, or its index) is not what it should be.
    #[error("{}: {what}", path.display())]
    Checkpoint {
        /// The checkpoint directory, index file or shard at fault.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// An argument or a setting is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A chunk's bytes do not decode (the chunk codec speaks without a file name;
    /// the container lifts this into [`Error::Corrupt`] with the file and place).
    #[error("{0}")]
    Decode(String),
    /// The GPU failed on a decode (an out-of-memory the CPU took over is no
    /// error); `doing` says what it was asked.
    #[error("{}{doing}: {source}", .at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Gpu {
        /// Where in the container the failing decode was, when it was one chunk's.
        at: Option<Box<Location>>,
        /// What the GPU was asked to do, e.g. "the GPU failed on 1048576 bytes".
        doing: String,
        /// Why the GPU failed (out of memory, or what the device reported).
        #[source]
        source: GpuError,
    },
    /// A fault of padic-burst itself, not of its input or its environment:
    /// a timely error, a dead worker, a part placed twice or lost.
    #[error("internal fault: {0}")]
    Internal(String),
}

impl From<GpuError> for Error {
    fn from(source: GpuError) -> Self {
        Error::Gpu {
            at: None,
            doing: "the GPU failed".into(),
            source,
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: io_error::copy(source),
            },
            Error::NotContainer {
                path,
                expected,
                found,
                hint,
            } => Error::NotContainer {
                path: path.clone(),
                expected: expected.clone(),
                found: found.clone(),
                hint: hint.clone(),
            },
            Error::Version {
                path,
                found,
                supported,
            } => Error::Version {
                path: path.clone(),
                found: *found,
                supported: *supported,
            },
            Error::Corrupt { path, at, what } => Error::Corrupt {
                path: path.clone(),
                at: at.clone(),
                what: what.clone(),
            },
            Error::Safetensors { path, what } => Error::Safetensors {
                path: path.clone(),
                what: what.clone(),
            },
            Error::Checkpoint { path, what } => Error::Checkpoint {
                path: path.clone(),
                what: what.clone(),
            },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::Decode(s) => Error::Decode(s.clone()),
            Error::Gpu { at, doing, source } => Error::Gpu {
                at: at.clone(),
                doing: doing.clone(),
                source: source.clone(),
            },
            Error::Internal(s) => Error::Internal(s.clone()),
        }
    }
}

/// An I/O error as data: its OS error code where it has one (which restores
/// its kind and message), else its message.
mod io_error {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        os: Option<i32>,
        message: String,
    }

    pub(super) fn copy(e: &std::io::Error) -> std::io::Error {
        match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        }
    }

    pub(super) fn serialize<S: Serializer>(e: &std::io::Error, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            os: e.raw_os_error(),
            message: e.to_string(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::io::Error, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(match w.os {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::other(w.message),
        })
    }
}

impl Error {
    /// The command line's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } | Error::Gpu { .. } => EXIT_ENVIRONMENT,
            Error::Internal(_) => EXIT_INTERNAL,
            Error::NotContainer { .. }
            | Error::Version { .. }
            | Error::Corrupt { .. }
            | Error::Safetensors { .. }
            | Error::Checkpoint { .. }
            | Error::InvalidArgument(_)
            | Error::Decode(_) => EXIT_BAD_INPUT,
        }
    }

    /// This error, said of `what` (a tensor, a file): an invalid argument or
    /// an undecodable chunk keeps its kind and gains the prefix once; errors
    /// that already name their file and place stay as they are.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            Error::InvalidArgument(s) => Error::InvalidArgument(format!("{what}: {s}")),
            Error::Decode(s) => Error::Decode(format!("{what}: {s}")),
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message a panic carried (`panic!`'s text), or "no message": how a
/// caught panic is named in the error that replaces it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

/// `text` on one line for a terminal: each control character (a newline, an
/// escape sequence's ESC in a tensor name) and each character that reorders
/// text (the bidirectional marks, embeddings, overrides and isolates) shown
/// as its escape (`\n`, `\u{1b}`, `\u{202e}`), so a message stays one line,
/// in its order, and sends the terminal no control sequence.
pub fn one_line(text: &str) -> String {
    let reorders = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    text.chars()
        .map(|c| match c.is_control() || reorders(c) {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_what_breaks_a_line_or_reorders_it() {
        assert_eq!(
            one_line("a\nb\u{1b}[31m\tc\u{202e}d é"),
            "a\\nb\\u{1b}[31m\\tc\\u{202e}d é"
        );
    }

    #[test]
    fn exit_codes_mean_one_thing_each() {
        let bad_input = [
            Error::InvalidArgument("x".into()),
            Error::Decode("x".into()),
            Error::Corrupt {
                path: "f".into(),
                at: Location::default(),
                what: "x".into(),
            },
            Error::Safetensors {
                path: "f".into(),
                what: "x".into(),
            },
        ];
        for e in &bad_input {
            assert_eq!(e.exit_code(), 2, "{e}");
        }
        let environment = [
            Error::io("f", std::io::Error::from_raw_os_error(28)),
            Error::from(GpuError::Failed("x".into())),
        ];
        for e in &environment {
            assert_eq!(e.exit_code(), 1, "{e}");
        }
        assert_eq!(Error::Internal("x".into()).exit_code(), 3);
    }

    #[test]
    fn errors_cross_processes_with_their_kind() {
        let e = Error::io("out.safetensors", std::io::Error::from_raw_os_error(28));
        let wire = serde_json::to_string(&e).unwrap();
        let back: Error = serde_json::from_str(&wire).unwrap();
        match (&back, e.clone()) {
            (Error::Io { path, source }, Error::Io { source: copy, .. }) => {
                assert_eq!(path, std::path::Path::new("out.safetensors"));
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
                assert_eq!(copy.raw_os_error(), Some(28));
            }
            other => panic!("{other:?}"),
        }
        let gpu = Error::Gpu {
            at: Some(Box::new(Location {
                tensor: Some("w".into()),
                chunk: Some(3),
                ..Location::default()
            })),
            doing: "the GPU failed on 8 bytes".into(),
            source: GpuError::OutOfMemory {
                requested: 8,
                free: 0,
            },
        };
        let back: Error = serde_json::from_str(&serde_json::to_string(&gpu).unwrap()).unwrap();
        assert_eq!(back.to_string(), gpu.to_string());
        assert!(
            back.to_string().starts_with("tensor 'w', chunk 3: "),
            "{back}"
        );
        assert_eq!(
            Error::InvalidArgument("b".into()).context("a").to_string(),
            "invalid argument: a: b"
        );
    }

    #[test]
    fn a_caught_panic_is_named_by_its_message() {
        let text = std::panic::catch_unwind(|| panic!("lost {}", 3)).unwrap_err();
        assert_eq!(panic_message(text.as_ref()), "lost 3");
        let fixed = std::panic::catch_unwind(|| std::panic::panic_any("fixed")).unwrap_err();
        assert_eq!(panic_message(fixed.as_ref()), "fixed");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "no message");
    }
}
