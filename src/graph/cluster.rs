//! Timely's arguments, parsed once, and the cluster they describe; the
//! cluster's output protocol and the watch that turns a lost peer into a
//! clear failure.
//!
//! In a cluster every process writes its merges into one temporary file of
//! an agreed name (`.<name>.tmp-cluster-<tag>` beside the output); process 0, which
//! sees every receipt, renames it when all is well and removes it otherwise.
//! Before the file is created the processes agree on what they write, and
//! after, process 0 tells the others whether it did ([`super::agreement`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::agreement::{Fingerprint, Meeting};
use super::placement::{write_behind, Discard, FilePlacement};
use super::records::ChunkTask;
use super::shards::ShardedRun;
use super::RunOptions;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::stats::Statistics;

/// Timely's configuration, parsed once from the caller's arguments (or
/// `-w num_cpu_workers`), and this process's place in the cluster it names.
#[derive(Clone, Debug)]
pub(crate) struct Timely {
    pub(crate) config: timely::Config,
    pub(crate) cluster: Cluster,
}

impl Timely {
    /// The workers of this process.
    pub(crate) fn local_workers(&self) -> usize {
        match &self.config.communication {
            timely::CommunicationConfig::Thread => 1,
            timely::CommunicationConfig::Process(n)
            | timely::CommunicationConfig::ProcessBinary(n) => *n,
            timely::CommunicationConfig::Cluster { threads, .. } => *threads,
        }
    }

    /// At most `tasks` workers (and at least one) in a run of one process:
    /// a worker left with no chunk only starts, polls until the others end,
    /// and stops. A `safe_open` tensor of one chunk ran two threads for it
    /// (0.46 against 0.23 ms a tensor beyond the decode, MiniLM). A
    /// cluster's processes keep what they agreed on.
    pub(crate) fn at_most(mut self, tasks: usize) -> Self {
        if self.cluster.processes == 1 && self.local_workers() > tasks.max(1) {
            use timely::CommunicationConfig::{Process, ProcessBinary, Thread};
            self.config.communication = match (self.config.communication, tasks) {
                (_, 0 | 1) => Thread,
                (ProcessBinary(_), n) => ProcessBinary(n),
                (_, n) => Process(n),
            };
        }
        self
    }

    /// Parses `opts.timely_args` (`-w 2 -n 2 -p 0 -h hosts`).
    pub(crate) fn parse(opts: &RunOptions) -> Result<Self> {
        let mut args = vec!["padic-burst".to_string()];
        if opts.timely_args.is_empty() {
            args.push("-w".into());
            args.push(opts.config.num_cpu_workers.to_string());
        } else {
            args.extend(opts.timely_args.iter().cloned());
        }
        let config = timely::Config::from_args(args.clone().into_iter()).map_err(|e| {
            Error::InvalidArgument(format!("timely arguments {:?}: {e}", &args[1..]))
        })?;
        if let timely::CommunicationConfig::Cluster {
            process, addresses, ..
        } = &config.communication
        {
            if *process >= addresses.len() {
                return Err(Error::InvalidArgument(format!(
                    "timely arguments {:?}: process {process} of {}: -p must be below -n",
                    &args[1..],
                    addresses.len()
                )));
            }
        }
        let cluster = Cluster::of(&config);
        Ok(Timely { config, cluster })
    }
}

/// This process's place in a timely cluster (`-n processes -p process`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// Processes in the cluster (1 when not a cluster).
    pub processes: usize,
    /// This process's index, in `0..processes`.
    pub process: usize,
    /// Names this cluster's shared temporary outputs (a hash of process 0's
    /// address, where no two clusters can listen at once), so that two
    /// clusters writing one output never write into each other's temporary.
    pub tag: u32,
}

impl Cluster {
    /// The cluster timely's parsed configuration describes: one process
    /// unless it is a `Cluster`.
    pub fn of(config: &timely::Config) -> Cluster {
        match &config.communication {
            timely::CommunicationConfig::Cluster {
                process, addresses, ..
            } => Cluster {
                processes: addresses.len().max(1),
                process: *process,
                tag: addresses
                    .first()
                    .map_or(0, |a| xxhash_rust::xxh3::xxh3_64(a.as_bytes()) as u32),
            },
            _ => Cluster {
                processes: 1,
                process: 0,
                tag: 0,
            },
        }
    }

    /// The suffix of the temporary every process of this cluster writes
    /// into (`.<name>.<suffix>` beside the output).
    pub fn temp_suffix(&self) -> String {
        format!("tmp-cluster-{:08x}", self.tag)
    }
}

/// The process each of `tasks` (in global order) goes to: runs of
/// consecutive chunks with about equal output bytes, one run a process, so
/// that a model of large weights and small biases in turn does not leave
/// one process the biases. Every process computes the same from the same
/// containers.
pub(crate) fn shares(tasks: &[ChunkTask], processes: usize) -> Vec<usize> {
    let total = tasks.iter().map(|t| t.out_len as u128).sum::<u128>().max(1);
    let mut before = 0u128;
    tasks
        .iter()
        .map(|t| {
            let middle = before + t.out_len as u128 / 2;
            before += t.out_len as u128;
            ((middle * processes as u128 / total) as usize).min(processes.max(1) - 1)
        })
        .collect()
}

/// The temporary file every process of a cluster writes into.
fn cluster_temp(output: &Path, cluster: &Cluster) -> Result<PathBuf> {
    let name = output.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!("{} is not a file path", output.display()))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}", cluster.temp_suffix()));
    Ok(output.with_file_name(temp_name))
}

/// Decompresses `c` into `output` as one process of a cluster: the processes
/// first agree on what they write (see [`super::agreement`]), and none
/// reports success unless process 0 put the file in place. A symlink is
/// written through; `/dev/null` takes every process's share and keeps
/// nothing (a check of the container); a FIFO, another device or `-` is
/// refused, since each process writes its share of one file in place.
pub(crate) fn decompress_file(
    c: Arc<Container>,
    output: &Path,
    opts: &RunOptions,
    timely: Timely,
) -> Result<Statistics> {
    if crate::output::is_stream(output) && !crate::output::is_null_device(output) {
        return Err(Error::InvalidArgument(format!(
            "-o {}: a FIFO, a device or standard output cannot take a cluster run, whose \
             processes each write their share of one file in place: give a file path \
             (or /dev/null to check the container)",
            output.display()
        )));
    }
    let output = &crate::output::written_through(output)?;
    let temp = cluster_temp(output, &timely.cluster)?;
    let shared = Shared {
        temp: temp.clone(),
        target: output.to_path_buf(),
        files: vec![(c, temp)],
    };
    decompress_shared(shared, &|| Ok(()), opts, timely).map(|r| r.statistics)
}

/// What a cluster's processes write together: the temporary every one of
/// them writes into (one file, or a directory of files), the name process 0
/// gives it once all is well, and each container's file (the temporary
/// itself, or a file inside it).
pub(crate) struct Shared {
    pub(crate) temp: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) files: Vec<(Arc<Container>, PathBuf)>,
}

/// Decodes every container of `out` into its file as one process of a
/// cluster, in one graph run: the processes first agree on what they write
/// (see [`super::agreement`]); process 0, when every chunk has arrived and
/// the files are flushed, gives each file its container's permission bits,
/// runs `complete` (a directory's other files) and renames the temporary
/// into place, or removes it on any failure; none reports success unless
/// process 0 did. A target that is the null device takes nothing: every
/// process decodes (so checks) its chunks and drops them, and no file is
/// made, renamed or removed.
pub(crate) fn decompress_shared(
    out: Shared,
    complete: &dyn Fn() -> Result<()>,
    opts: &RunOptions,
    timely: Timely,
) -> Result<ShardedRun> {
    let cluster = timely.cluster;
    let timeout = crate::config::cluster_connect_timeout()?;
    let meeting = Meeting::of(&timely, timeout)?;
    if cluster.process == 0 {
        // What a failed run left behind: nobody writes before process 0
        // has heard every process and answered.
        remove(&out.temp);
    }
    let containers: Vec<Arc<Container>> = out.files.iter().map(|(c, _)| c.clone()).collect();
    let agreed = meeting.agree(&Fingerprint::of(&containers, &out.target, opts, &timely))?;
    let temp = out.temp.clone();
    // A signal ends the run: the shared temporary goes with it.
    crate::output::register_pending(&temp);
    let watch = ClusterWatch::install(cluster.process, temp.clone(), timeout);
    let lost_temp = temp.clone();
    agreed.watch(Arc::new(move |why: String| {
        cluster_exit(cluster.process, &lost_temp, &why)
    }));
    let behind = write_behind(timely.local_workers());
    let mut syncs = Vec::with_capacity(out.files.len());
    let mut runs = Vec::with_capacity(out.files.len());
    let discard = crate::output::is_null_device(&out.target);
    let opened = out.files.iter().try_for_each(|(c, path)| {
        if discard {
            runs.push((c.clone(), Arc::new(Discard) as Arc<dyn super::Placement>));
            return Ok(());
        }
        if let Some(dir) = path.parent().filter(|_| *path != temp) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        syncs.push((
            file.try_clone().map_err(|e| Error::io(path, e))?,
            path.clone(),
        ));
        let placed = FilePlacement::prepare(file, path.clone(), c, behind)?;
        runs.push((c.clone(), Arc::new(placed) as Arc<dyn super::Placement>));
        Ok(())
    });
    let result = opened.and_then(|()| {
        super::run(
            runs,
            opts,
            timely,
            super::shards::Only::ALL,
            Some(watch.formed.clone()),
        )
        .map(|(statistics, shards)| ShardedRun { statistics, shards })
    });
    agreed.decoded();
    let formed = watch.formed.load(Ordering::SeqCst);
    drop(watch);
    let result = match result {
        Ok(run) if discard => Ok(run),
        Ok(run) if cluster.process == 0 => {
            let placed = syncs
                .iter()
                .try_for_each(|(f, path)| f.sync_all().map_err(|e| Error::io(path, e)))
                .and_then(|()| same_modes(&out.files))
                .and_then(|()| complete())
                .and_then(|()| commit(&temp, &out.target));
            if placed.is_err() {
                remove(&temp);
            }
            placed.map(|()| run)
        }
        Ok(run) => Ok(run),
        Err(e) => {
            if cluster.process == 0 {
                remove(&temp);
            }
            Err(e)
        }
    };
    crate::output::unregister_pending(&temp);
    // Without a formed cluster, the others never ran the decode: the links
    // close with this process, and their watch stops them.
    match formed {
        true => agreed.settle(result, &out.target),
        false => result,
    }
}

/// Gives each file its container's permission bits, as a run of one
/// process does (`TempOutput::create_from`): private weights stay private.
fn same_modes(files: &[(Arc<Container>, PathBuf)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (c, path) in files {
        let mode = crate::output::permission_bits(c.path())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Renames `temp` to `target`, over an empty directory there.
fn commit(temp: &Path, target: &Path) -> Result<()> {
    if temp.is_dir() && target.is_dir() {
        std::fs::remove_dir(target).map_err(|e| Error::io(target, e))?;
    }
    std::fs::rename(temp, target).map_err(|e| Error::io(target, e))
}

/// Removes a cluster's temporary output, a file or a directory.
fn remove(temp: &Path) {
    let _ = match temp.is_dir() {
        true => std::fs::remove_dir_all(temp),
        false => std::fs::remove_file(temp),
    };
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync>;

/// Turns the loss of a cluster peer into a hard, clear failure. Timely's
/// network threads panic when a connection drops, and the panic cascades
/// through the workers; here the first such panic prints one line naming the
/// process, removes the shared temporary output, and exits with status 2.
/// A watchdog does the same when the other processes have not connected
/// within the timeout. Without this, a lost peer means a backtrace, status
/// 101, and a temporary file left behind; a peer that never starts means a
/// wait without end.
pub(crate) struct ClusterWatch {
    pub(crate) formed: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    previous: Arc<PanicHook>,
}

/// Panic messages of a lost connection, from timely's network threads and
/// the workers and main thread they take down.
fn is_lost_peer(msg: &str) -> bool {
    msg.contains("timely communication error")
        || msg.contains("MergeQueue poisoned")
        || msg.contains("Send thread panic")
        || msg.contains("Recv thread panic")
}

/// Stops the process with exit code 2 after saying why, once. A lost peer
/// takes down several threads at a time (workers, send and receive threads),
/// and each lands here: the first holds the lock while it removes the temp
/// file, writes its line and exits, so a second can neither exit with the line
/// half-written nor call `exit` concurrently with it.
fn cluster_exit(process: usize, temp: &Path, why: &str) -> ! {
    static EXITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_one = EXITING.lock().unwrap_or_else(|e| e.into_inner());
    remove(temp);
    eprintln!("error: cluster process {process}: {why}; stopping, no output written");
    std::process::exit(2)
}

impl ClusterWatch {
    pub(crate) fn install(process: usize, temp: PathBuf, timeout: std::time::Duration) -> Self {
        let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let prev = previous.clone();
        let hook_temp = temp.clone();
        std::panic::set_hook(Box::new(move |info| {
            let msg = crate::error::panic_message(info.payload());
            if is_lost_peer(msg) {
                cluster_exit(
                    process,
                    &hook_temp,
                    &format!("lost the connection to another process ({msg})"),
                );
            }
            prev(info)
        }));
        let formed = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (f, d) = (formed.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !f.load(Ordering::SeqCst) && !d.load(Ordering::SeqCst) {
                if start.elapsed() > timeout {
                    cluster_exit(
                        process,
                        &temp,
                        &format!(
                            "the other processes did not connect within {:.1} s (PADIC_CLUSTER_CONNECT_TIMEOUT_S); check the hosts file and that every process was started",
                            timeout.as_secs_f64()
                        ),
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        ClusterWatch {
            formed,
            done,
            previous,
        }
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let prev = self.previous.clone();
        std::panic::set_hook(Box::new(move |info| prev(info)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(global: usize, out_len: u64) -> ChunkTask {
        ChunkTask {
            global,
            shard: 0,
            tensor: global,
            chunk: 0,
            elements: out_len / 2,
            out_offset: 0,
            out_len,
            sent_us: 0,
        }
    }

    fn timely(args: &[&str]) -> Timely {
        let mut opts = super::super::RunOptions::new(
            crate::policy::Mode::CpuOnly,
            crate::config::Config::default(),
        );
        opts.timely_args = args.iter().map(|a| a.to_string()).collect();
        Timely::parse(&opts).unwrap()
    }

    #[test]
    fn a_run_has_no_more_workers_than_chunks() {
        assert_eq!(timely(&["-w", "4"]).at_most(1).local_workers(), 1);
        assert_eq!(timely(&["-w", "4"]).at_most(0).local_workers(), 1);
        assert_eq!(timely(&["-w", "4"]).at_most(3).local_workers(), 3);
        assert_eq!(timely(&["-w", "4"]).at_most(9).local_workers(), 4);
        assert_eq!(timely(&["-w", "1"]).at_most(9).local_workers(), 1);
        // A cluster's processes keep the workers they agreed on.
        let cluster = timely(&["-w", "2", "-n", "2", "-p", "1"]).at_most(1);
        assert_eq!(cluster.local_workers(), 2);
        assert_eq!(cluster.cluster.processes, 2);
    }

    #[test]
    fn processes_share_the_output_bytes_not_the_chunk_count() {
        // Large weights and small biases in turn, as in a transformer.
        let tasks: Vec<ChunkTask> = (0..100)
            .map(|k| task(k, if k % 2 == 0 { 1 << 20 } else { 1 << 10 }))
            .collect();
        for processes in [1, 2, 3, 4] {
            let shares = shares(&tasks, processes);
            let mut bytes = vec![0u64; processes];
            for (t, &p) in tasks.iter().zip(&shares) {
                bytes[p] += t.out_len;
            }
            let (lo, hi) = (bytes.iter().min().unwrap(), bytes.iter().max().unwrap());
            assert!(hi - lo <= 2 << 20, "{processes} processes: {bytes:?}");
            // Runs in global order: a process's chunks follow each other.
            assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
        }
        assert!(shares(&[], 2).is_empty());
        assert_eq!(shares(&[task(0, 0), task(1, 0)], 2), vec![0, 0]);
    }
}
