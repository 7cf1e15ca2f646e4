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
    /// `n` bytes, for a decoder to overwrite: a recycled buffer keeps its
    /// old bytes (zeroing them again cost 3–4% of a decode to a file); only
    /// bytes it never held are zeroed.
    pub(crate) fn take(&self, n: usize) -> Vec<u8> {
        let mut v = self
            .free
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_default();
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0);
        }
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
    fn pooled_buffers_come_back_sized() {
        let pool = BufferPool::default();
        let mut a = pool.take(100);
        assert!(a.iter().all(|&x| x == 0), "new bytes are zeroed");
        a.iter_mut().for_each(|b| *b = 7);
        let at = a.as_ptr();
        pool.give(a);
        let b = pool.take(50);
        assert_eq!(b.len(), 50);
        assert_eq!(b.as_ptr(), at, "the pooled buffer was reused");
        pool.give(b);
        // Grown past what it held: the bytes it never held are zeroed.
        let c = pool.take(200);
        assert_eq!(c.len(), 200);
        assert!(c[50..].iter().all(|&x| x == 0), "{:?}", &c[50..]);
    }
}
