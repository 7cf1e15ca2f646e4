//! The tensor cache's rules, one per test: bounded in bytes, the least
//! recently *used* entry leaves first, a re-stored key replaces its old bytes,
//! and an entry larger than the whole cache is never stored.

use std::sync::Arc;

use padic_burst::cache::{CacheKey, TensorCache};

fn key(t: &str) -> CacheKey {
    CacheKey {
        container: 1,
        tensor: t.into(),
        target: None,
    }
}

fn bytes(n: usize, fill: u8) -> Arc<Vec<u8>> {
    Arc::new(vec![fill; n])
}

fn held(c: &TensorCache, names: &[&str]) -> Vec<bool> {
    names.iter().map(|n| c.contains(&key(n))).collect()
}

#[test]
fn storing_a_key_again_replaces_its_bytes() {
    let c = TensorCache::new(300);
    c.put(key("a"), bytes(100, 1));
    c.put(key("a"), bytes(60, 2));
    assert_eq!(c.bytes(), 60, "the old 100 bytes are gone from the count");
    assert_eq!(*c.get(&key("a")).unwrap(), vec![2; 60]);
    // The freed room is real: 240 more bytes fit beside it without eviction.
    c.put(key("b"), bytes(240, 3));
    assert_eq!(held(&c, &["a", "b"]), vec![true, true]);
    assert_eq!(c.bytes(), 300);
}

#[test]
fn eviction_follows_the_order_of_use_not_of_storing() {
    let c = TensorCache::new(300);
    for k in ["a", "b", "c"] {
        c.put(key(k), bytes(100, 0));
    }
    // Used last to first: c is now the least recently used, then b, then a.
    assert!(c.get(&key("b")).is_some());
    assert!(c.get(&key("a")).is_some());
    c.put(key("d"), bytes(100, 0));
    assert_eq!(
        held(&c, &["a", "b", "c", "d"]),
        vec![true, true, false, true]
    );
    c.put(key("e"), bytes(100, 0));
    assert_eq!(
        held(&c, &["a", "b", "c", "d", "e"]),
        vec![true, false, false, true, true]
    );
    // A miss does not make anything more recent: a is the oldest now.
    assert!(c.get(&key("zzz")).is_none());
    c.put(key("f"), bytes(100, 0));
    assert_eq!(
        held(&c, &["a", "d", "e", "f"]),
        vec![false, true, true, true]
    );
    assert_eq!(c.bytes(), 300);
    assert_eq!(c.counts(), (2, 1));
}

#[test]
fn an_entry_of_exactly_the_capacity_is_stored_one_byte_more_is_not() {
    let c = TensorCache::new(300);
    c.put(key("a"), bytes(100, 0));
    c.put(key("whole"), bytes(300, 0));
    assert_eq!(held(&c, &["a", "whole"]), vec![false, true]);
    assert_eq!(c.bytes(), 300);
    c.put(key("over"), bytes(301, 0));
    assert_eq!(
        held(&c, &["whole", "over"]),
        vec![true, false],
        "refused without evicting anything"
    );
    assert_eq!(c.bytes(), 300);
}

#[test]
fn entries_that_fit_exactly_evict_nothing() {
    let c = TensorCache::new(300);
    c.put(key("a"), bytes(120, 0));
    c.put(key("b"), bytes(180, 0));
    assert_eq!(held(&c, &["a", "b"]), vec![true, true]);
    assert_eq!(c.bytes(), 300);
    // One byte more evicts the oldest, and only it.
    c.put(key("c"), bytes(1, 0));
    assert_eq!(held(&c, &["a", "b", "c"]), vec![false, true, true]);
    assert_eq!(c.bytes(), 181);
}

#[test]
fn hits_and_misses_are_counted_apart() {
    let c = TensorCache::new(1000);
    assert_eq!(c.counts(), (0, 0));
    c.put(key("a"), bytes(10, 7));
    for _ in 0..3 {
        assert_eq!(*c.get(&key("a")).unwrap(), vec![7; 10]);
    }
    assert!(c.get(&key("b")).is_none());
    assert!(c.get(&key("c")).is_none());
    assert_eq!(c.counts(), (3, 2));
}
