//! An exactly-once ledger: the receipts of a run's parts, checked against
//! what the run was to produce. Each part (a unit's key and the first value
//! it holds) must arrive once, and each unit's parts must add up to its
//! length; where several workers or processes merge, their receipts all come
//! to one ledger.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// What the ledger found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError<K> {
    /// The part of `key` from value `first` arrived a second time.
    Twice { key: K, first: u64 },
    /// `key`'s parts add up to `got` of its `want` bytes.
    Short { key: K, got: u64, want: u64 },
}

/// Receipts by unit.
#[derive(Debug, Clone)]
pub struct Ledger<K> {
    seen: HashSet<(K, u64)>,
    covered: HashMap<K, u64>,
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Ledger {
            seen: HashSet::new(),
            covered: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Ledger<K> {
    /// Records that the part of `key` from value `first`, `bytes` long, arrived.
    ///
    /// ```
    /// use padic_burst_operators::{Ledger, LedgerError};
    ///
    /// let mut ledger = Ledger::default();
    /// // Unit "a" (10 bytes) in two parts, unit "b" (4 bytes) in one.
    /// ledger.record("a", 0, 6).unwrap();
    /// ledger.record("a", 6, 4).unwrap();
    /// ledger.record("b", 0, 4).unwrap();
    /// assert_eq!(ledger.check([("a", 10), ("b", 4)]), Ok(()));
    /// // A part twice, and a unit that never came.
    /// assert_eq!(ledger.record("b", 0, 4), Err(LedgerError::Twice { key: "b", first: 0 }));
    /// assert_eq!(
    ///     ledger.check([("a", 10), ("c", 8)]),
    ///     Err(LedgerError::Short { key: "c", got: 0, want: 8 })
    /// );
    /// ```
    pub fn record(&mut self, key: K, first: u64, bytes: u64) -> Result<(), LedgerError<K>> {
        if !self.seen.insert((key.clone(), first)) {
            return Err(LedgerError::Twice { key, first });
        }
        *self.covered.entry(key).or_default() += bytes;
        Ok(())
    }

    /// Checks that every unit of `expected` (key, length) arrived in full;
    /// the first that did not is the error.
    pub fn check(
        &self,
        expected: impl IntoIterator<Item = (K, u64)>,
    ) -> Result<(), LedgerError<K>> {
        for (key, want) in expected {
            let got = self.covered.get(&key).copied().unwrap_or(0);
            if got != want {
                return Err(LedgerError::Short { key, got, want });
            }
        }
        Ok(())
    }
}
