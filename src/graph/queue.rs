//! The work queue the sources take chunks from.

/// Hands a process's task list out to its workers: each owns a contiguous
/// share and takes from its front, and once it is empty takes from the back
/// of the others' shares. The workers thus start far apart in the output (two
/// threads that first touch the same fresh huge page wait on each other's
/// page fault, which cost the graph 10% against the bare loop on 2 workers),
/// and a worker that drew small chunks still takes more.
pub(crate) struct WorkQueue {
    /// Per share, its remaining tasks `[lo, hi)` as `lo << 32 | hi`.
    shares: Vec<std::sync::atomic::AtomicU64>,
}

impl WorkQueue {
    /// `tasks` (below 2^32) shared among `workers`.
    pub(crate) fn new(tasks: usize, workers: usize) -> Self {
        let n = tasks.min(u32::MAX as usize) as u64;
        let k = workers.max(1) as u64;
        let shares = (0..k)
            .map(|w| std::sync::atomic::AtomicU64::new(((n * w / k) << 32) | (n * (w + 1) / k)))
            .collect();
        WorkQueue { shares }
    }

    /// Up to `batch` task indices for worker `me`, or `None` when all are taken.
    pub(crate) fn take(&self, me: usize, batch: usize) -> Option<std::ops::Range<usize>> {
        use std::sync::atomic::Ordering;
        let k = self.shares.len();
        let batch = batch.max(1) as u64;
        for step in 0..k {
            let share = &self.shares[(me + step) % k];
            let mut cur = share.load(Ordering::Acquire);
            loop {
                let (lo, hi) = (cur >> 32, cur & 0xffff_ffff);
                if lo >= hi {
                    break;
                }
                let (next, range) = if step == 0 {
                    let end = (lo + batch).min(hi);
                    ((end << 32) | hi, lo..end)
                } else {
                    let start = hi.saturating_sub(batch).max(lo);
                    ((lo << 32) | start, start..hi)
                };
                match share.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(range.start as usize..range.end as usize),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_queue_hands_out_every_task_once_owners_from_the_front() {
        // One worker alone takes its share front to back.
        let q = WorkQueue::new(10, 1);
        let got: Vec<_> = std::iter::from_fn(|| q.take(0, 4)).collect();
        assert_eq!(got, vec![0..4, 4..8, 8..10]);
        // Two: each starts at its own share's front; once its share is
        // empty, worker 0 takes from the back of worker 1's.
        let q = WorkQueue::new(10, 2);
        assert_eq!(q.take(0, 2), Some(0..2));
        assert_eq!(q.take(1, 2), Some(5..7));
        assert_eq!(q.take(0, 3), Some(2..5));
        assert_eq!(q.take(0, 2), Some(8..10));
        assert_eq!(q.take(1, 2), Some(7..8));
        assert_eq!((q.take(0, 1), q.take(1, 1)), (None, None));
        // More workers than tasks, and a batch of zero.
        let q = WorkQueue::new(2, 3);
        assert_eq!(q.take(2, 0), Some(1..2));
        assert_eq!(q.take(2, 5), Some(0..1));
        assert_eq!(q.take(0, 1), None);
        // Four threads racing over 100,003 tasks: each taken exactly once.
        let n = 100_003;
        let q = WorkQueue::new(n, 4);
        let seen: Vec<std::sync::atomic::AtomicU8> = (0..n)
            .map(|_| std::sync::atomic::AtomicU8::new(0))
            .collect();
        std::thread::scope(|s| {
            for me in 0..4 {
                let (q, seen) = (&q, &seen);
                s.spawn(move || {
                    while let Some(r) = q.take(me, 1 + me * 3) {
                        for i in r {
                            seen[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(seen
            .iter()
            .all(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1));
    }
}
