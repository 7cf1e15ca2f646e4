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
    /// bytes it never held are zeroed. The buffer taken is the shortest that
    /// holds `n` bytes, so a short part (a tensor's last chunk) does not
    /// shorten a buffer the next full chunk then has to zero again; with
    /// none that long, the longest.
    pub(crate) fn take(&self, n: usize) -> Vec<u8> {
        let mut v = {
            let mut free = self.free.lock().expect("pool lock");
            let fits = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.len() >= n)
                .min_by_key(|(_, v)| v.len())
                .map(|(i, _)| i);
            let longest = || {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, v)| v.len())
                    .map(|(i, _)| i)
            };
            match fits.or_else(longest) {
                Some(i) => free.swap_remove(i),
                None => Vec::new(),
            }
        };
        if v.len() >= n {
            v.truncate(n);
        } else if v.capacity() == 0 {
            // Fresh: zeroed by the allocator (calloc), which for a large
            // buffer takes pages the kernel zeroed already, rather than
            // writing zeros over them once more.
            v = vec![0; n];
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

    #[test]
    fn a_short_part_takes_the_shortest_buffer_that_holds_it() {
        let pool = BufferPool::default();
        let (long, short) = (vec![7u8; 1000], vec![7u8; 300]);
        let (long_at, short_at) = (long.as_ptr(), short.as_ptr());
        pool.give(short);
        pool.give(long);
        let a = pool.take(200);
        assert_eq!(a.as_ptr(), short_at, "the 300-byte buffer holds 200");
        // The long buffer kept its length: a full part needs no zeroing.
        let b = pool.take(1000);
        assert_eq!(b.as_ptr(), long_at);
        assert!(
            b.iter().all(|&x| x == 7),
            "the long buffer was zeroed again"
        );
        pool.give(a);
        // None holds 500 bytes: the longest grows (the 200 bytes it keeps,
        // then zeros).
        let c = pool.take(500);
        assert_eq!(c.len(), 500);
        assert!(c[..200].iter().all(|&x| x == 7) && c[200..].iter().all(|&x| x == 0));
    }
}
