//! An LRU cache of decoded tensors for the library API (layer-by-layer
//! streaming loads the same layers again): keyed by container identity,
//! tensor and target precision, bounded in bytes, thread-safe, and counting
//! its hits and misses.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What identifies a cached tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// `Container::read_identity()`: another file, or this one rewritten,
    /// is another key.
    pub container: u64,
    /// The tensor's name.
    pub tensor: String,
    /// Digits decoded (`None`: all stored).
    pub target: Option<u32>,
}

struct Inner {
    entries: HashMap<CacheKey, (Arc<Vec<u8>>, u64)>,
    /// Use tick -> key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// A byte-bounded least-recently-used cache.
pub struct TensorCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl TensorCache {
    /// An empty cache that holds at most `capacity_bytes` of values.
    pub fn new(capacity_bytes: usize) -> Self {
        TensorCache {
            capacity: capacity_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                hits: 0,
                misses: 0,
            }),
        }
    }

    /// The cached bytes for `key`, marking them most recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Vec<u8>>> {
        let mut g = self.inner.lock().expect("cache lock");
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        match inner.entries.get_mut(key) {
            Some((data, used)) => {
                inner.order.remove(used);
                *used = tick;
                inner.order.insert(tick, key.clone());
                inner.hits += 1;
                Some(data.clone())
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    /// Stores `data` under `key`, evicting the least recently used entries
    /// until it fits; an entry larger than the whole cache is not stored.
    pub fn put(&self, key: CacheKey, data: Arc<Vec<u8>>) {
        if data.len() > self.capacity {
            return;
        }
        let mut g = self.inner.lock().expect("cache lock");
        let inner = &mut *g;
        if let Some((old, used)) = inner.entries.remove(&key) {
            inner.order.remove(&used);
            inner.bytes -= old.len();
        }
        while inner.bytes + data.len() > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= old.len();
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += data.len();
        inner.order.insert(tick, key.clone());
        inner.entries.insert(key, (data, tick));
    }

    /// (hits, misses).
    pub fn counts(&self) -> (u64, u64) {
        let g = self.inner.lock().expect("cache lock");
        (g.hits, g.misses)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("cache lock").bytes
    }

    /// Whether `key` is cached (without counting a hit or a miss).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.inner
            .lock()
            .expect("cache lock")
            .entries
            .contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> CacheKey {
        CacheKey {
            container: 1,
            tensor: t.into(),
            target: None,
        }
    }

    #[test]
    fn evicts_the_least_recently_used_and_counts() {
        let c = TensorCache::new(300);
        c.put(key("a"), Arc::new(vec![0; 100]));
        c.put(key("b"), Arc::new(vec![0; 100]));
        c.put(key("c"), Arc::new(vec![0; 100]));
        assert!(c.get(&key("a")).is_some()); // a is now newer than b
        c.put(key("d"), Arc::new(vec![0; 100])); // evicts b, the least recent
        assert!(!c.contains(&key("b")));
        assert!(c.contains(&key("a")) && c.contains(&key("c")) && c.contains(&key("d")));
        assert!(c.get(&key("b")).is_none());
        assert_eq!(c.counts(), (1, 1));
        assert_eq!(c.bytes(), 300);
        c.put(key("huge"), Arc::new(vec![0; 301]));
        assert!(
            !c.contains(&key("huge")),
            "larger than the cache: not stored"
        );
        let other_target = CacheKey {
            target: Some(3),
            ..key("a")
        };
        assert!(
            c.get(&other_target).is_none(),
            "the target precision is part of the key"
        );
    }

    #[test]
    fn is_shared_across_threads() {
        let c = Arc::new(TensorCache::new(10_000));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for j in 0..50 {
                        let k = key(&format!("{}", (i * 7 + j) % 20));
                        if c.get(&k).is_none() {
                            c.put(k, Arc::new(vec![i as u8; 100]));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let (hits, misses) = c.counts();
        assert_eq!(hits + misses, 200);
        assert!(c.bytes() <= 2000);
    }
}
