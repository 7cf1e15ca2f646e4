//! Recycled part buffers.

use std::sync::Mutex;

/// Recycled part buffers: a part's bytes come back here once merged, so
/// chunk after chunk decodes into memory that is already mapped rather than
/// into fresh pages the kernel must fault in and zero.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers a pool keeps; beyond this, merged buffers are freed.
const POOL_MAX: usize = 64;

impl BufferPool {
    /// `n` bytes (their content is overwritten by the decoder).
    pub(crate) fn take(&self, n: usize) -> Vec<u8> {
        let mut v = self
            .free
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_default();
        v.clear();
        v.resize(n, 0);
        v
    }

    pub(crate) fn give(&self, v: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        if free.len() < POOL_MAX {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_come_back_sized_and_zeroed() {
        let pool = BufferPool::default();
        let mut a = pool.take(100);
        a.iter_mut().for_each(|b| *b = 7);
        pool.give(a);
        let b = pool.take(50);
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|&x| x == 0));
        assert!(b.capacity() >= 100, "the pooled buffer was reused");
    }
}
