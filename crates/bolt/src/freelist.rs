//! Free page bookkeeping: pages free now, and pages freed by a transaction that readers of
//! older snapshots may still be looking at ("pending").

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(crate) struct Freelist {
    /// Pages that can be allocated.
    pub free: BTreeSet<u64>,
    /// Pages freed by write transaction `txid`, reusable once no reader older than it remains.
    pub pending: BTreeMap<u64, Vec<u64>>,
}

impl Freelist {
    /// Releases pages freed by transactions <= `upto` (no reader can still see them).
    pub fn release(&mut self, upto: u64) {
        let keep = self.pending.split_off(&(upto.saturating_add(1)));
        let done = std::mem::replace(&mut self.pending, keep);
        for (_, ids) in done {
            self.free.extend(ids);
        }
    }

    /// Takes `n` contiguous free pages (the lowest run, as bbolt does), if there are any.
    pub fn allocate(&mut self, n: u64) -> Option<u64> {
        if n == 1 {
            return self.free.pop_first();
        }
        let mut run_start = 0u64;
        let mut prev = None;
        let mut found = None;
        for &id in &self.free {
            if prev != Some(id.wrapping_sub(1)) {
                run_start = id;
            }
            prev = Some(id);
            if id - run_start + 1 == n {
                found = Some(run_start);
                break;
            }
        }
        let start = found?;
        for id in start..start + n {
            self.free.remove(&id);
        }
        Some(start)
    }

    /// Number of ids a freelist page must hold (free + all pending), plus `extra`.
    pub fn count_with(&self, extra: usize) -> usize {
        self.free.len() + self.pending.values().map(Vec::len).sum::<usize>() + extra
    }

    /// All free and pending ids plus `extra`, sorted.
    pub fn all_ids(&self, extra: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = self.free.iter().copied().collect();
        for ids in self.pending.values() {
            v.extend_from_slice(ids);
        }
        v.extend_from_slice(extra);
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_takes_lowest_contiguous_run() {
        let mut f = Freelist::default();
        f.free.extend([3, 5, 6, 8, 9, 10]);
        assert_eq!(f.allocate(3), Some(8));
        assert_eq!(f.allocate(2), Some(5));
        assert_eq!(f.allocate(2), None);
        assert_eq!(f.allocate(1), Some(3));
        assert!(f.free.is_empty());
    }

    #[test]
    fn release_frees_only_old_enough_pending() {
        let mut f = Freelist::default();
        f.pending.insert(4, vec![10]);
        f.pending.insert(5, vec![11]);
        f.pending.insert(7, vec![12]);
        f.release(5);
        assert_eq!(f.free.iter().copied().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(f.pending.keys().copied().collect::<Vec<_>>(), vec![7]);
    }
}
