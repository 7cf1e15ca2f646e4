//! The connections between a cluster's processes that timely's workers
//! talk over, made here rather than by timely: timely's own start sleeps a
//! whole second after each refused connection and each empty poll of its
//! listener, and a process that starts a moment after another (as every
//! process does once the agreement round has ended) paid that second on
//! every cluster run. Here each process listens on its address, connects
//! to every process before it and accepts every process after it, retrying
//! every few milliseconds within the cluster's connect timeout
//! (`PADIC_CLUSTER_CONNECT_TIMEOUT_S`); timely then runs over these sockets
//! as it would over its own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::Hooks;
use timely::CommunicationConfig;

use crate::error::{Error, Result};

/// How often a refused connection or an empty listener is tried again.
const RETRY: Duration = Duration::from_millis(2);

/// The allocators of this process's workers for `config`, and what must
/// live as long as they run: for a cluster, over connections this module
/// makes (within `timeout`); otherwise as timely builds them.
pub(crate) fn allocators(
    config: CommunicationConfig,
    timeout: impl FnOnce() -> Result<Duration>,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>)> {
    let CommunicationConfig::Cluster {
        threads,
        process,
        addresses,
        zerocopy,
        ..
    } = config
    else {
        return config
            .try_build()
            .map_err(|e| Error::Internal(format!("timely: {e}")));
    };
    let sockets = connect(&addresses, process, timeout()?)?;
    let hooks = Hooks::default();
    let local = if zerocopy {
        ProcessBuilder::new_bytes_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    } else {
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    };
    let (builders, guard) = initialize_networking_from_sockets(
        local, sockets, process, threads, hooks,
    )
    .map_err(|e| Error::Internal(format!("cluster process {process}: starting timely: {e}")))?;
    Ok((
        builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        Box::new(guard),
    ))
}

/// Non-blocking listeners on each of a process's `addresses` (a hosts
/// file's line may name several, separated by spaces).
pub(super) fn listen(addresses: &str) -> Result<Vec<TcpListener>> {
    addresses
        .split_whitespace()
        .map(|a| {
            let l = TcpListener::bind(a).map_err(|e| Error::io(a, e))?;
            l.set_nonblocking(true).map_err(|e| Error::io(a, e))?;
            Ok(l)
        })
        .collect()
}

/// A connection to every other process of the cluster at `addresses`, by
/// process (`None` at `me`): connected to each process before `me`, which
/// is told `me` first, and accepted from each after it.
fn connect(addresses: &[String], me: usize, timeout: Duration) -> Result<Vec<Option<TcpStream>>> {
    let deadline = Instant::now() + timeout;
    let late = |what: String| {
        Error::InvalidArgument(format!(
            "cluster process {me}: {what} within {:.1} s (PADIC_CLUSTER_CONNECT_TIMEOUT_S); \
             check the hosts file and that every process was started; no output written",
            timeout.as_secs_f64()
        ))
    };
    // Listening first: a process after this one may connect at any time.
    let listeners = listen(&addresses[me])?;
    let mut sockets: Vec<Option<TcpStream>> = addresses.iter().map(|_| None).collect();
    for (p, address) in addresses.iter().enumerate().take(me) {
        let mut stream = loop {
            match TcpStream::connect(address.as_str()) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(RETRY),
                Err(e) => return Err(late(format!("process {p} ({address}) did not answer: {e}"))),
            }
        };
        let _ = stream.set_nodelay(true);
        stream
            .write_all(&(me as u64).to_le_bytes())
            .map_err(|e| Error::io(address, e))?;
        sockets[p] = Some(stream);
    }
    while sockets.iter().skip(me + 1).any(Option::is_none) {
        let mut accepted = false;
        for l in &listeners {
            let Ok((mut stream, _)) = l.accept() else {
                continue;
            };
            accepted = true;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut index = [0u8; 8];
            // A stray connection, or one from a process we do not wait for: dropped.
            if stream.read_exact(&mut index).is_err() {
                continue;
            }
            let p = u64::from_le_bytes(index) as usize;
            if p > me && p < sockets.len() && sockets[p].is_none() {
                let _ = stream.set_read_timeout(None);
                let _ = stream.set_nodelay(true);
                sockets[p] = Some(stream);
            }
        }
        if !accepted {
            if Instant::now() > deadline {
                let missing: Vec<String> = (me + 1..sockets.len())
                    .filter(|&p| sockets[p].is_none())
                    .map(|p| p.to_string())
                    .collect();
                return Err(late(format!(
                    "process(es) {} did not connect",
                    missing.join(", ")
                )));
            }
            std::thread::sleep(RETRY);
        }
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Free loopback addresses, one a process.
    fn addresses(n: usize) -> Vec<String> {
        let held: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        held.iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    #[test]
    fn three_processes_connect_each_pair_once_in_process_order() {
        let hosts = addresses(3);
        // The last process first: the others start later, as they may.
        let threads: Vec<_> = (0..3)
            .rev()
            .map(|me| {
                let hosts = hosts.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20 * (2 - me) as u64));
                    connect(&hosts, me, Duration::from_secs(10)).unwrap()
                })
            })
            .collect();
        let mut all: Vec<Vec<Option<TcpStream>>> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        all.reverse();
        // Each pair is one connection: what one end writes, the other reads.
        assert!((0..3).all(|p| all[p][p].is_none()));
        let pairs = (0..3).flat_map(|a| (0..3).map(move |b| (a, b)));
        for (a, b) in pairs.filter(|(a, b)| a != b) {
            let word = [a as u8, b as u8];
            all[a][b].as_mut().unwrap().write_all(&word).unwrap();
            let mut got = [0u8; 2];
            all[b][a].as_mut().unwrap().read_exact(&mut got).unwrap();
            assert_eq!(got, word, "{a} -> {b}");
        }
    }

    #[test]
    fn a_missing_process_is_a_clear_error_within_the_timeout() {
        let hosts = addresses(2);
        let e = connect(&hosts, 0, Duration::from_millis(200)).unwrap_err();
        assert!(
            e.to_string().contains("process(es) 1 did not connect"),
            "{e}"
        );
        let e = connect(&hosts, 1, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("process 0"), "{e}");
    }
}
