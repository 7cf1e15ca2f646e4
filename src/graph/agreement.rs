//! A cluster's processes agree before any byte is written, and learn how
//! the write ended before any of them reports success.
//!
//! Two short rounds over TCP, around the decode's timely run, on process 0's
//! address from the hosts list (process 0 listens there only until every
//! process has connected, before timely binds it):
//!
//! - **before**: every process sends process 0 its [`Fingerprint`] (the
//!   container's header hash, the output path, the format and program
//!   version, the mode, the target precision, the cluster's shape); process
//!   0 sends every process all of them, and each compares them the same way.
//!   When any field differs, every process stops with exit 2 and a message
//!   naming the field and each process's value, before a file is created.
//! - **during**: the connections of the first round stay open, so a
//!   process that goes away is noticed at once, wherever the others are.
//! - **after**: process 0, which renames the shared file into place, tells
//!   every other process on that connection whether it did; a process whose
//!   peer failed reports that failure, never success.
//!
//! Frames are `PADICAGR`, a little-endian `u32` length and a JSON
//! [`Message`]; a connection that does not start so (a stray timely
//! connection, anything else) is dropped unread.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cluster::{Cluster, Timely};
use super::RunOptions;
use crate::error::{Error, Result};
use crate::format::Container;

/// The frame's first bytes.
const MAGIC: &[u8; 8] = b"PADICAGR";

/// The largest frame accepted (a fingerprint is well under 1 KiB per process).
const MAX_FRAME: u32 = 16 << 20;

/// How often a process retries reaching process 0, and process 0 polls for
/// connections.
const POLL: Duration = Duration::from_millis(10);

/// How often a link's watch looks whether the decode has ended.
const WATCH: Duration = Duration::from_millis(100);

/// One thing the processes must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Field {
    /// What it is, as the message names it ("output path").
    name: String,
    /// What is compared.
    key: String,
    /// What the message shows.
    shown: String,
}

/// Everything a process's output depends on that its peers must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint(Vec<Field>);

impl Fingerprint {
    /// This process's fingerprint for decompressing `containers` (one file,
    /// or a directory's shards in order) into `output`.
    pub(crate) fn of(
        containers: &[Arc<Container>],
        output: &Path,
        opts: &RunOptions,
        timely: &Timely,
    ) -> Self {
        let field = |name: &str, key: String, shown: String| Field {
            name: name.into(),
            key,
            shown,
        };
        let same = |name: &str, v: String| field(name, v.clone(), v);
        let output = resolved(output);
        let precision = match (opts.target_precision, opts.config.progressive_precision) {
            (Some(k), _) => format!("exactly {k} digits"),
            (None, true) => format!("at most {} digits", opts.config.mantissa_bits),
            (None, false) => "every stored digit".into(),
        };
        let (threads, addresses) = match &timely.config.communication {
            timely::CommunicationConfig::Cluster {
                threads, addresses, ..
            } => (*threads, addresses.clone()),
            _ => (1, Vec::new()),
        };
        Fingerprint(vec![
            same(
                "version",
                format!(
                    "padic-burst {}, container format {}",
                    env!("CARGO_PKG_VERSION"),
                    crate::format::VERSION
                ),
            ),
            field(
                "container",
                containers
                    .iter()
                    .map(|c| format!("{:016x}", c.identity()))
                    .collect::<Vec<_>>()
                    .join(","),
                containers
                    .iter()
                    .map(|c| format!("{} (header hash {:016x})", c.path().display(), c.identity()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            same("output path", output.display().to_string()),
            same("mode", opts.mode.name().into()),
            same("target precision", precision),
            same(
                "exponent_bits",
                opts.config
                    .exponent_bits
                    .map_or_else(|| "unset".into(), |b| b.to_string()),
            ),
            same("workers per process", threads.to_string()),
            same("hosts", addresses.join(" ")),
        ])
    }
}

/// `output` as one absolute path: its folder resolved (links, `..`) where it
/// exists, so two names of one file compare equal.
fn resolved(output: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => dir.canonicalize().map_or(abs.clone(), |d| d.join(name)),
        _ => abs,
    }
}

/// What differs among `all` (process `i`'s at `i`): `None` when they agree.
pub(crate) fn disagreement(all: &[Fingerprint]) -> Option<String> {
    let first = all.first()?;
    let mut differ = Vec::new();
    for (k, f) in first.0.iter().enumerate() {
        let value = |p: &Fingerprint| p.0.get(k).cloned();
        if all.iter().all(|p| value(p).is_some_and(|v| v.key == f.key)) {
            continue;
        }
        let each: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let shown = value(p).map_or_else(|| "nothing".into(), |v| v.shown);
                format!("process {i} has {shown}")
            })
            .collect();
        differ.push(format!("{}: {}", f.name, each.join(", ")));
    }
    if first.0.len() != all.iter().map(|p| p.0.len()).max().unwrap_or(0) {
        differ.push("fingerprint fields: the processes run different builds".into());
    }
    (!differ.is_empty()).then(|| {
        format!(
            "cluster processes disagree: {}; stopping, no output written",
            differ.join("; ")
        )
    })
}

/// What travels between the processes.
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// A process's fingerprint, to process 0.
    Fingerprint { process: usize, of: Fingerprint },
    /// Every process's fingerprint, from process 0.
    All(Vec<Fingerprint>),
    /// Process 0's outcome: its error, or `None` when the file is in place.
    Outcome(Option<Error>),
}

/// Where and how long a cluster's processes meet.
pub(crate) struct Meeting {
    cluster: Cluster,
    /// Process 0's address, as the hosts list gives it.
    address: String,
    timeout: Duration,
}

/// Processes that agreed: the connections of the first round stay open
/// (process 0 to each other process), to notice a process that goes away
/// at once and to carry process 0's outcome.
pub(crate) struct Agreed {
    cluster: Cluster,
    /// (process at the other end, connection).
    links: Vec<(usize, TcpStream)>,
    /// Set when the decode has ended: the links are no longer watched.
    done: Arc<AtomicBool>,
}

impl Meeting {
    /// The meeting of the cluster `timely` describes; each round waits at
    /// most `timeout` for the processes to connect.
    pub(crate) fn of(timely: &Timely, timeout: Duration) -> Result<Self> {
        let address = match &timely.config.communication {
            timely::CommunicationConfig::Cluster { addresses, .. } => addresses.first().cloned(),
            _ => None,
        }
        .ok_or_else(|| Error::Internal("a cluster without addresses".into()))?;
        Ok(Meeting {
            cluster: timely.cluster,
            address,
            timeout,
        })
    }

    /// The first round: the processes' links when every process has the
    /// same fingerprint, else the error naming what differs (on every
    /// process alike).
    pub(crate) fn agree(&self, mine: &Fingerprint) -> Result<Agreed> {
        let (all, links) = if self.cluster.process == 0 {
            let peers = self.gather()?;
            let mut all = vec![mine.clone()];
            let mut links = Vec::new();
            for (p, of, stream) in peers {
                all.push(of);
                links.push((p, stream));
            }
            // Every listener is closed by now: a process that hears back
            // next connects to timely's listener, never to this one.
            for (_, s) in &mut links {
                let _ = send(s, &Message::All(all.clone()));
            }
            (all, links)
        } else {
            let mut s = self.reach()?;
            let hello = Message::Fingerprint {
                process: self.cluster.process,
                of: mine.clone(),
            };
            send(&mut s, &hello).map_err(|e| self.lost(e))?;
            let _ = s.set_read_timeout(Some(self.timeout + Duration::from_secs(5)));
            match receive(&mut s).map_err(|e| self.lost(e))? {
                Message::All(all) => (all, vec![(0, s)]),
                other => return Err(self.unexpected(&other)),
            }
        };
        match disagreement(&all) {
            Some(why) => Err(Error::InvalidArgument(why)),
            None => Ok(Agreed {
                cluster: self.cluster,
                links,
                done: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// Process 0: every other process's fingerprint and connection, by
    /// process, within the timeout.
    fn gather(&self) -> Result<Vec<(usize, Fingerprint, TcpStream)>> {
        let listeners = super::mesh::listen(&self.address)?;
        let deadline = Instant::now() + self.timeout;
        let mut got: Vec<Option<(Fingerprint, TcpStream)>> =
            (0..self.cluster.processes).map(|_| None).collect();
        while got.iter().skip(1).any(Option::is_none) {
            if Instant::now() > deadline {
                return Err(self.timed_out());
            }
            let mut accepted = false;
            for l in &listeners {
                let Ok((mut s, _)) = l.accept() else { continue };
                accepted = true;
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                // Not a frame of ours, or not a process we wait for: dropped.
                if let Ok(Message::Fingerprint { process: p, of }) = receive(&mut s) {
                    if (1..got.len()).contains(&p) && got[p].is_none() {
                        let _ = s.set_read_timeout(None);
                        let _ = s.set_nodelay(true);
                        got[p] = Some((of, s));
                    }
                }
            }
            if !accepted {
                std::thread::sleep(POLL);
            }
        }
        drop(listeners);
        Ok(got
            .into_iter()
            .enumerate()
            .skip(1)
            .filter_map(|(p, g)| g.map(|(of, s)| (p, of, s)))
            .collect())
    }

    /// Another process: a connection to process 0, retried within the timeout.
    fn reach(&self) -> Result<TcpStream> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Ok(s) = TcpStream::connect(self.address.as_str()) {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(self.timed_out());
            }
            std::thread::sleep(POLL);
        }
    }

    fn timed_out(&self) -> Error {
        Error::InvalidArgument(format!(
            "cluster process {}: the other processes did not connect within {:.1} s \
             (PADIC_CLUSTER_CONNECT_TIMEOUT_S); check the hosts file and that every process \
             was started; no output written",
            self.cluster.process,
            self.timeout.as_secs_f64()
        ))
    }

    fn lost(&self, e: std::io::Error) -> Error {
        Error::InvalidArgument(format!(
            "cluster process {}: lost process 0 at {} before the processes agreed ({e}); \
             no output written",
            self.cluster.process, self.address
        ))
    }

    fn unexpected(&self, m: &Message) -> Error {
        unexpected(self.cluster, m)
    }
}

impl Drop for Agreed {
    fn drop(&mut self) {
        self.decoded();
    }
}

fn unexpected(cluster: Cluster, m: &Message) -> Error {
    Error::Internal(format!(
        "cluster process {}: unexpected message from process 0: {m:?}",
        cluster.process
    ))
}

impl Agreed {
    /// Watches the links while the decode runs: `lost` is called (once,
    /// from a thread of its own) with why, when the process at the other
    /// end goes away or process 0 stops before the others finished.
    pub(crate) fn watch(&self, lost: Arc<dyn Fn(String) + Send + Sync>) {
        for (p, s) in &self.links {
            let Ok(s) = s.try_clone() else { continue };
            let (p, done, lost) = (*p, self.done.clone(), lost.clone());
            let _ = s.set_read_timeout(Some(WATCH));
            std::thread::spawn(move || {
                let mut one = [0u8; 1];
                while !done.load(Ordering::SeqCst) {
                    match s.peek(&mut one) {
                        // Process 0's outcome arrived: nothing more to watch.
                        Ok(n) if n > 0 => return,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        _ if done.load(Ordering::SeqCst) => return,
                        end => {
                            let how = end.err().map_or("it closed".into(), |e| e.to_string());
                            return lost(format!("lost the connection to process {p} ({how})"));
                        }
                    }
                }
            });
        }
    }

    /// The decode has ended here: a process that goes away now no longer
    /// matters to this one's output.
    pub(crate) fn decoded(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The last round, once the decode has ended on every process: process
    /// 0 tells every process `result`'s outcome and returns it; another
    /// process returns process 0's failure when there was one, else its own
    /// `result`. `output` is the file the cluster writes (named in an I/O
    /// failure).
    pub(crate) fn settle<T>(mut self, result: Result<T>, output: &Path) -> Result<T> {
        self.decoded();
        let links = std::mem::take(&mut self.links);
        if self.cluster.process == 0 {
            let outcome = Message::Outcome(result.as_ref().err().cloned());
            for (_, mut s) in links {
                // A process gone by now cannot change the outcome.
                let _ = send(&mut s, &outcome);
            }
            return result;
        }
        let heard = links.into_iter().next().map(|(_, mut s)| {
            // No time limit: process 0 may be flushing a large file; if it
            // dies, the connection closes.
            let _ = s.set_read_timeout(None);
            receive(&mut s)
        });
        let heard = match heard {
            Some(Ok(Message::Outcome(e))) => Ok(e),
            Some(Ok(other)) => Err(unexpected(self.cluster, &other)),
            Some(Err(e)) => Err(Error::InvalidArgument(format!(
                "cluster process {}: lost process 0 before it said whether the file is in \
                 place ({e}); treat {} as not written",
                self.cluster.process,
                output.display()
            ))),
            None => Err(Error::Internal("a cluster process without a link".into())),
        };
        match (result, heard) {
            (Err(mine), _) => Err(mine),
            (Ok(_), Err(e)) => Err(e),
            (Ok(_), Ok(Some(e))) => Err(of_process_0(e, output)),
            (Ok(v), Ok(None)) => Ok(v),
        }
    }
}

/// Process 0's failure, as another process reports it: the same exit
/// status, its message after one saying whose it is.
fn of_process_0(e: Error, output: &Path) -> Error {
    let why = format!("cluster process 0 failed, so no output was written: {e}");
    match e.exit_code() {
        crate::error::EXIT_ENVIRONMENT => Error::io(output, std::io::Error::other(why)),
        crate::error::EXIT_INTERNAL => Error::Internal(why),
        _ => Error::InvalidArgument(why),
    }
}

fn send(s: &mut TcpStream, m: &Message) -> std::io::Result<()> {
    let body = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    let mut frame = MAGIC.to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    s.write_all(&frame)?;
    s.flush()
}

fn receive(s: &mut TcpStream) -> std::io::Result<Message> {
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if &head[..8] != MAGIC {
        return Err(bad("not an agreement frame"));
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if len > MAX_FRAME {
        return Err(bad("frame too large"));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(fields: &[(&str, &str)]) -> Fingerprint {
        Fingerprint(
            fields
                .iter()
                .map(|(n, v)| Field {
                    name: n.to_string(),
                    key: v.to_string(),
                    shown: v.to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn equal_fingerprints_agree_and_each_difference_is_named() {
        let a = print(&[("output path", "/x/a.out"), ("mode", "auto")]);
        assert_eq!(disagreement(&[a.clone(), a.clone()]), None);
        let b = print(&[("output path", "/x/b.out"), ("mode", "auto")]);
        let why = disagreement(&[a.clone(), b]).unwrap();
        assert!(
            why.contains("output path: process 0 has /x/a.out, process 1 has /x/b.out"),
            "{why}"
        );
        assert!(!why.contains("mode"), "{why}");
        let short = print(&[("output path", "/x/a.out")]);
        let why = disagreement(&[a, short]).unwrap();
        assert!(why.contains("process 1 has nothing"), "{why}");
    }
}
