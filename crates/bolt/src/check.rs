//! Consistency check, reachability scan and bucket statistics.

use std::collections::BTreeSet;

use crate::cursor::{Bucket, Root};
use crate::error::{Error, Result};
use crate::format::{BucketValue, Meta, PageRef, Pages, BUCKET_FLAG, MAX_DEPTH, NO_FREELIST};

/// One bit per page below the high-water mark.
pub(crate) struct PageSet {
    bits: Vec<u64>,
}

impl PageSet {
    fn new(n: u64) -> PageSet {
        PageSet {
            bits: vec![0; n.div_ceil(64) as usize],
        }
    }
    pub fn contains(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
    /// Marks `id`; false if it was already marked.
    fn insert(&mut self, id: u64) -> bool {
        match self.bits.get_mut((id / 64) as usize) {
            Some(w) => {
                let had = *w & (1 << (id % 64)) != 0;
                *w |= 1 << (id % 64);
                !had
            }
            None => false,
        }
    }
}

struct Walker<'a> {
    pages: Pages<'a>,
    seen: PageSet,
    problems: Vec<String>,
}

impl<'a> Walker<'a> {
    fn walk_page(&mut self, id: u64, depth: usize) {
        if depth > MAX_DEPTH {
            self.problems.push(format!(
                "page {id}: tree deeper than {MAX_DEPTH} levels (cycle?)"
            ));
            return;
        }
        if id < 2 || id >= self.pages.high {
            self.problems.push(format!(
                "page {id}: out of bounds (high-water mark {})",
                self.pages.high
            ));
            return;
        }
        if self.seen.contains(id) {
            self.problems
                .push(format!("page {id}: multiple references"));
            return;
        }
        let p = match self.pages.page(id).and_then(|p| p.expect_tree()) {
            Ok(p) => p,
            Err(e) => {
                self.seen.insert(id);
                self.problems.push(format!("page {id}: {e}"));
                return;
            }
        };
        for i in 0..=p.overflow() {
            if !self.seen.insert(id + i) {
                self.problems
                    .push(format!("page {}: multiple references", id + i));
            }
        }
        self.walk_elems(&p, depth);
    }

    fn walk_elems(&mut self, p: &PageRef<'a>, depth: usize) {
        let mut prev: Option<&[u8]> = None;
        for i in 0..p.count {
            let key = match p.key(i) {
                Ok(k) => k,
                Err(e) => {
                    self.problems.push(e.to_string());
                    return;
                }
            };
            if prev.is_some_and(|pk| pk >= key) {
                self.problems
                    .push(format!("page {}: keys out of order at element {i}", p.id));
            }
            prev = Some(key);
            if p.is_branch() {
                if let Ok((_, child)) = p.branch(i) {
                    self.walk_page(child, depth + 1);
                }
            } else if let Ok((flags, k, v)) = p.leaf(i) {
                if flags & BUCKET_FLAG != 0 {
                    self.walk_bucket_value(k, v, depth + 1);
                }
            }
        }
    }

    fn walk_bucket_value(&mut self, name: &[u8], v: &'a [u8], depth: usize) {
        if depth > MAX_DEPTH {
            self.problems
                .push("buckets nested deeper than the depth limit".to_string());
            return;
        }
        match BucketValue::parse(v, name) {
            Ok(bv) if bv.root != 0 => self.walk_page(bv.root, depth),
            Ok(bv) => match bv.inline_page() {
                Ok(p) => self.walk_elems(&p, depth),
                Err(e) => self.problems.push(e.to_string()),
            },
            Err(e) => self.problems.push(e.to_string()),
        }
    }
}

fn walk<'a>(pages: Pages<'a>, meta: &Meta) -> Walker<'a> {
    let mut w = Walker {
        pages,
        seen: PageSet::new(meta.pgid),
        problems: Vec::new(),
    };
    w.seen.insert(0);
    w.seen.insert(1);
    w
}

/// Pages reachable from the root (plus the metas); any damage is an error.
pub(crate) fn reachable(pages: Pages<'_>, meta: &Meta) -> Result<PageSet> {
    let mut w = walk(pages, meta);
    w.walk_page(meta.root, 0);
    if !w.problems.is_empty() {
        return Err(Error::Corrupt(w.problems.join("; ")));
    }
    Ok(w.seen)
}

/// Lists every inconsistency of the snapshot described by `meta`.
pub(crate) fn check(pages: Pages<'_>, meta: &Meta) -> Result<Vec<String>> {
    let mut w = walk(pages, meta);
    let mut free = BTreeSet::new();
    let synced = meta.freelist != NO_FREELIST;
    if synced {
        match pages
            .page(meta.freelist)
            .and_then(|p| Ok((p, p.freelist_ids()?)))
        {
            Ok((p, ids)) => {
                for i in 0..=p.overflow() {
                    w.seen.insert(meta.freelist + i);
                }
                for id in ids {
                    if !free.insert(id) {
                        w.problems.push(format!("page {id}: already freed"));
                    }
                }
            }
            Err(e) => w.problems.push(format!("freelist: {e}")),
        }
    }
    w.walk_page(meta.root, 0);
    for &id in &free {
        if id >= meta.pgid || id < 2 {
            w.problems
                .push(format!("page {id}: free but outside 2..{}", meta.pgid));
        } else if w.seen.contains(id) {
            w.problems.push(format!("page {id}: reachable freed"));
        }
    }
    if synced {
        for id in 2..meta.pgid {
            if !w.seen.contains(id) && !free.contains(&id) {
                w.problems.push(format!("page {id}: unreachable unfreed"));
            }
        }
    }
    Ok(w.problems)
}

/// Page and key statistics of a bucket and everything nested in it (as Go's `Bucket.Stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Branch pages.
    pub branch_page_n: usize,
    /// Overflow pages of branch pages.
    pub branch_overflow_n: usize,
    /// Leaf pages.
    pub leaf_page_n: usize,
    /// Overflow pages of leaf pages.
    pub leaf_overflow_n: usize,
    /// Key/value pairs (nested bucket names count as keys).
    pub key_n: usize,
    /// Deepest level of B+tree pages.
    pub depth: usize,
    /// Bytes used in branch pages.
    pub branch_inuse: usize,
    /// Bytes used in leaf pages.
    pub leaf_inuse: usize,
    /// Buckets, including this one.
    pub bucket_n: usize,
    /// Inline buckets.
    pub inline_bucket_n: usize,
    /// Bytes used by inline buckets.
    pub inline_bucket_inuse: usize,
}

fn used(p: &PageRef<'_>) -> usize {
    // Data ends where the last element's data ends; elements are written in key order.
    if p.count == 0 {
        return crate::format::PAGE_HEADER;
    }
    let last = p.count - 1;
    let end = if p.is_leaf() {
        p.leaf(last)
            .map(|(_, _, v)| v.as_ptr() as usize + v.len() - p.data.as_ptr() as usize)
    } else {
        p.branch(last)
            .map(|(k, _)| k.as_ptr() as usize + k.len() - p.data.as_ptr() as usize)
    };
    end.unwrap_or(p.data.len())
}

impl Bucket<'_> {
    /// Statistics of this bucket and its nested buckets, from the committed pages. Fails with
    /// `InvalidArgument` for a bucket modified in the current write transaction.
    pub fn stats(&self) -> Result<BucketStats> {
        let mut s = BucketStats::default();
        self.add_stats(&mut s, 0)?;
        Ok(s)
    }

    fn add_stats(&self, s: &mut BucketStats, nest: usize) -> Result<()> {
        if nest > MAX_DEPTH {
            return Err(Error::corrupt("buckets nested too deep"));
        }
        s.bucket_n += 1;
        match self.root {
            Root::Node(_) => {
                return Err(Error::InvalidArgument(
                    "stats of a bucket modified in this transaction".into(),
                ))
            }
            Root::Inline(b) => {
                s.inline_bucket_n += 1;
                s.inline_bucket_inuse += b.len();
                let p = PageRef::parse(b, 0)?;
                s.key_n += p.count;
                s.depth = s.depth.max(1);
            }
            Root::Page(id) => self.page_stats(id, 1, s)?,
        }
        let mut c = self.cursor();
        let mut e = c.first()?;
        while let Some((k, v)) = e {
            if v.is_none() {
                if let Some(b) = self.bucket(k)? {
                    b.add_stats(s, nest + 1)?;
                }
            }
            e = c.next()?;
        }
        Ok(())
    }

    fn page_stats(&self, id: u64, depth: usize, s: &mut BucketStats) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::corrupt("tree too deep (cycle?)"));
        }
        let p = self.pages.page(id)?.expect_tree()?;
        s.depth = s.depth.max(depth);
        if p.is_leaf() {
            s.leaf_page_n += 1;
            s.leaf_overflow_n += p.overflow() as usize;
            s.leaf_inuse += used(&p);
            s.key_n += p.count;
        } else {
            s.branch_page_n += 1;
            s.branch_overflow_n += p.overflow() as usize;
            s.branch_inuse += used(&p);
            for i in 0..p.count {
                self.page_stats(p.branch(i)?.1, depth + 1, s)?;
            }
        }
        Ok(())
    }
}
