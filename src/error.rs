//! The crate's error type.
//!
//! Every error says what was expected, what was found and where: the file, and
//! where it applies the tensor, the chunk, the section and the byte offset.
//! [`Error::exit_code`] maps an error to the command line's exit status: 2 for
//! bad input (a file that is not what it claims, a bad argument), 1 for the
//! rest (the disk, the operating system).

use std::path::PathBuf;

/// Where in a container a problem was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the container's magic bytes.
    #[error("{}: not a padic-burst container (expected magic {expected:?}, found {found:?})", path.display())]
    NotContainer {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The container's version is not one this build reads.
    #[error("{}: unsupported container version {found} (this build reads version {supported})", path.display())]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The container is damaged or hostile: a size, an offset or a checksum is wrong.
    #[error("{}: corrupt container at {at}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        at: Location,
        what: String,
    },
    /// The safetensors input does not parse.
    #[error("{}: not a valid safetensors file: {what}", path.display())]
    Safetensors { path: PathBuf, what: String },
    /// A sharded checkpoint (a directory, or its index) is not what it should be.
    #[error("{}: {what}", path.display())]
    Checkpoint { path: PathBuf, what: String },
    /// An argument or a setting is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A chunk's bytes do not decode (the chunk codec speaks without a file name;
    /// the container lifts this into [`Error::Corrupt`] with the file and place).
    #[error("{0}")]
    Decode(String),
}

impl Error {
    /// The command line's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => 1,
            _ => 2,
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
