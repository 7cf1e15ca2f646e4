//! The source: workers feed the graph from a shared [`WorkQueue`], a batch
//! at a time, many records to a timestamp, each holding back while
//! `read_ahead` of its own records are unprocessed (bounded read-ahead and
//! back-pressure: memory stays bounded whatever the task list's size).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::worker::Worker;

/// Hands a process's task list out to its workers: each owns a contiguous
/// share and takes from its front, and once it is empty takes from the back
/// of the others' shares. The workers thus start far apart in the output (two
/// threads that first touch the same fresh huge page wait on each other's
/// page fault, which cost the graph 10% against the bare loop on 2 workers),
/// and a worker that drew small chunks still takes more.
pub struct WorkQueue {
    /// Per share, its remaining tasks `[lo, hi)` as `lo << 32 | hi`.
    shares: Vec<std::sync::atomic::AtomicU64>,
}

impl WorkQueue {
    /// `tasks` (below 2^32) shared among `workers`.
    pub fn new(tasks: usize, workers: usize) -> Self {
        let n = tasks.min(u32::MAX as usize) as u64;
        let k = workers.max(1) as u64;
        let shares = (0..k)
            .map(|w| std::sync::atomic::AtomicU64::new(((n * w / k) << 32) | (n * (w + 1) / k)))
            .collect();
        WorkQueue { shares }
    }

    /// Up to `batch` task indices for worker `me`, or `None` when all are taken.
    pub fn take(&self, me: usize, batch: usize) -> Option<std::ops::Range<usize>> {
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

/// How a worker feeds the graph from a [`WorkQueue`].
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    /// This worker's share of the queue (its index among the process's workers).
    pub me: usize,
    /// Tasks taken from the queue at a time.
    pub batch: usize,
    /// Records of its own a worker lets be unprocessed before it steps the
    /// graph instead of sending more (at least `batch`, or it would wait on
    /// itself).
    pub read_ahead: usize,
    /// Records sent under one timestamp: many share one, so the graph's
    /// per-timestamp cost is spread thin.
    pub per_timestamp: usize,
}

impl WorkQueue {
    /// Feeds `tasks` (the list this queue was made for) into `input` until
    /// the queue is empty or `stop` is set, then closes the input and runs
    /// the graph to the end. `done` counts the records this worker's graph
    /// has processed; `prepare` makes each record from its task (a send time
    /// stamped on it, say).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, sync::{Arc, atomic::{AtomicBool, AtomicUsize, Ordering}}};
    /// use padic_burst_operators::{Feed, WorkQueue};
    /// use timely::dataflow::InputHandle;
    /// use timely::dataflow::operators::{Input, Inspect};
    ///
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// let tasks: Arc<Vec<u64>> = Arc::new((0..1000).collect());
    /// let queue = Arc::new(WorkQueue::new(tasks.len(), 2));
    /// timely::execute(timely::Config::process(2), move |worker| {
    ///     let mut input = InputHandle::new();
    ///     let done = Rc::new(Cell::new(0usize));
    ///     let (d, s) = (done.clone(), s.clone());
    ///     worker.dataflow::<u64, _, _>(|scope| {
    ///         scope.input_from(&mut input).inspect(move |x: &u64| {
    ///             s.fetch_add(*x as usize, Ordering::SeqCst);
    ///             d.set(d.get() + 1);
    ///         });
    ///     });
    ///     let feed = Feed { me: worker.index(), batch: 8, read_ahead: 32, per_timestamp: 64 };
    ///     queue.feed(worker, input, &tasks, feed, &done, &AtomicBool::new(false), |t| *t);
    /// })
    /// .unwrap();
    /// assert_eq!(seen.load(Ordering::SeqCst), (0..1000).sum::<usize>());
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn feed<D: Clone + 'static>(
        &self,
        worker: &mut Worker,
        mut input: InputHandle<u64, CapacityContainerBuilder<Vec<D>>>,
        tasks: &[D],
        feed: Feed,
        done: &Cell<usize>,
        stop: &AtomicBool,
        mut prepare: impl FnMut(&D) -> D,
    ) {
        let read_ahead = feed.read_ahead.max(feed.batch).max(1);
        let per_timestamp = feed.per_timestamp.max(1);
        let (mut sent, mut epoch) = (0usize, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let Some(take) = self.take(feed.me, feed.batch) else {
                break;
            };
            for task in &tasks[take] {
                input.send(prepare(task));
                sent += 1;
                if sent % per_timestamp == 0 {
                    epoch += 1;
                    input.advance_to(epoch);
                }
            }
            if sent - done.get() >= read_ahead {
                // Records wait in the input's buffer until flushed.
                input.flush();
                while sent - done.get() >= read_ahead {
                    worker.step();
                }
            }
        }
        input.close();
        while worker.step() {}
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
