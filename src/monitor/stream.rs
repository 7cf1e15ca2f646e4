//! The statistics as a stream of JSON lines (`--stats-interval`): one line
//! with `--stats-json`'s keys every interval while a run goes, and a last
//! line with the run's final statistics.
//!
//! Where the lines go:
//! * standard error (no `--stats-stream`), above the progress bar when one shows;
//! * `-` (standard output), a FIFO, a character device or a socket: each
//!   line as it comes, so a reader follows the run live;
//! * a regular file: written as every output is ([`crate::output`]), under a
//!   temporary name renamed over the file when the run ends, so the file is
//!   whole or absent (to follow a run live, give a FIFO).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::output::TempOutput;
use crate::progress::Progress;
use crate::stats::Statistics;

use super::{Monitor, Watcher};

/// Where the lines go.
enum Destination {
    /// Standard error, through the bar when there is one.
    Stderr(Option<Arc<Progress>>),
    /// Standard output.
    Stdout,
    /// A FIFO, device or socket, written line by line.
    Live(File, PathBuf),
    /// A regular file, renamed into place at the end.
    Replace(TempOutput),
}

/// A stream of statistics lines, open on its destination.
pub struct StatsStream {
    destination: Destination,
    /// The first write that failed: no line is written after it.
    failed: Option<Error>,
    lines: u64,
}

impl StatsStream {
    /// Opens `path` for the lines (see the module's doc), or standard error
    /// without one, writing through `progress`'s bar when it shows.
    pub fn open(path: Option<&Path>, progress: Option<Arc<Progress>>) -> Result<Self> {
        let destination = match path {
            None => Destination::Stderr(progress),
            Some(p) if p.as_os_str() == "-" => Destination::Stdout,
            Some(p) => match std::fs::metadata(p) {
                Ok(m)
                    if m.file_type().is_fifo()
                        || m.file_type().is_char_device()
                        || m.file_type().is_socket() =>
                {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(p)
                        .map_err(|e| Error::io(p, e))?;
                    Destination::Live(file, p.to_path_buf())
                }
                // A regular file, a symlink, nothing yet, or what the output
                // module refuses (a directory, a block device).
                _ => Destination::Replace(TempOutput::create(p)?),
            },
        };
        Ok(StatsStream {
            destination,
            failed: None,
            lines: 0,
        })
    }

    /// Writes `statistics` (a [`Statistics`], or a report that holds one) as
    /// one JSON line; a failed write is reported by [`StatsStream::finish`],
    /// and ends the stream.
    pub fn write(&mut self, statistics: &impl serde::Serialize) {
        if self.failed.is_some() {
            return;
        }
        let line = match serde_json::to_string(statistics) {
            Ok(line) => line,
            Err(e) => {
                self.failed = Some(Error::Internal(format!("statistics as JSON: {e}")));
                return;
            }
        };
        let written = match &mut self.destination {
            Destination::Stderr(Some(bar)) if bar.visible() => {
                bar.println(&line);
                Ok(())
            }
            Destination::Stderr(_) => {
                writeln!(std::io::stderr().lock(), "{line}").map_err(|e| Error::io("<stderr>", e))
            }
            Destination::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(|e| Error::io("<stdout>", e))
            }
            Destination::Live(file, path) => {
                writeln!(file, "{line}").map_err(|e| Error::io(path.as_path(), e))
            }
            Destination::Replace(temp) => {
                let mut file = temp.file();
                writeln!(file, "{line}").map_err(|e| temp.write_error(e))
            }
        };
        match written {
            Ok(()) => self.lines += 1,
            Err(e) => self.failed = Some(e),
        }
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Ends the stream: a regular file is renamed into place; the first
    /// failed write, if any, is the error.
    pub fn finish(self) -> Result<()> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.destination {
            Destination::Replace(temp) => temp.commit(),
            _ => Ok(()),
        }
    }

    /// Writes a line of `monitor`'s run every `every`, and its final line
    /// when the run ends, except where `last` says the caller writes that
    /// one itself ([`StreamWatch::finish_with`]: a packed directory's
    /// statistics add its shards to the run's); [`StreamWatch::finish`]
    /// stops and ends the stream.
    pub fn follow(self, monitor: &Monitor, every: Duration, last: Last) -> Result<StreamWatch> {
        let stream = Arc::new(Mutex::new(self));
        let lines = stream.clone();
        let watcher = monitor.watch(every, move |s| {
            if s.finished && last == Last::FromCaller {
                return;
            }
            lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(&s.statistics)
        })?;
        Ok(StreamWatch { watcher, stream })
    }
}

/// Who writes a stream's last line, the run's final statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// The stream, from the run's statistics.
    FromRun,
    /// The caller, from what its `--stats-json` writes.
    FromCaller,
}

/// A stream following a monitor's runs.
pub struct StreamWatch {
    watcher: Watcher,
    stream: Arc<Mutex<StatsStream>>,
}

impl StreamWatch {
    /// Stops following (after the final line of a run that ended) and ends
    /// the stream (see [`StatsStream::finish`]).
    pub fn finish(self) -> Result<()> {
        self.finish_with(None::<&Statistics>)
    }

    /// [`StreamWatch::finish`], with `last` as the last line (that of a
    /// stream that follows with [`Last::FromCaller`]).
    pub fn finish_with(self, last: Option<&impl serde::Serialize>) -> Result<()> {
        self.watcher.stop();
        let stream = Arc::try_unwrap(self.stream)
            .map_err(|_| Error::Internal("the statistics stream is still shared".into()))?;
        let mut stream = stream.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = last {
            stream.write(last);
        }
        stream.finish()
    }
}
