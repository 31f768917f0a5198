//! Read views: buckets and cursors over pages, inline pages and materialised nodes.

use crate::error::{show_key, Error, Result};
use crate::format::{BucketValue, PageRef, Pages, BUCKET_FLAG, MAX_DEPTH};
use crate::node::{Child, Node};
use crate::write::BucketState;

/// One entry seen through a cursor: the key and its value, or `None` for a nested bucket
/// (as in Go, where a bucket shows as a key with a nil value).
pub type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

/// Where a bucket's tree starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Root<'a> {
    Page(u64),
    Inline(&'a [u8]),
    Node(&'a Node),
}

/// A tree position: a page or a node of the current transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Elem<'a> {
    Page(PageRef<'a>),
    Node(&'a Node),
}

impl<'a> Elem<'a> {
    fn count(&self) -> usize {
        match self {
            Elem::Page(p) => p.count,
            Elem::Node(n) => n.len(),
        }
    }
    fn is_leaf(&self) -> bool {
        match self {
            Elem::Page(p) => p.is_leaf(),
            Elem::Node(n) => n.is_leaf(),
        }
    }
    /// Leaf entry `i`: (flags, key, value).
    fn leaf(&self, i: usize) -> Result<(u32, &'a [u8], &'a [u8])> {
        match self {
            Elem::Page(p) => p.leaf(i),
            Elem::Node(Node::Leaf(v)) => Ok((v[i].flags, v[i].key(), v[i].value())),
            Elem::Node(Node::Branch(_)) => Err(Error::corrupt("leaf access on a branch node")),
        }
    }
    fn child(&self, i: usize, pages: &Pages<'a>) -> Result<Elem<'a>> {
        match self {
            Elem::Page(p) => Ok(Elem::Page(pages.page(p.branch(i)?.1)?.expect_tree()?)),
            Elem::Node(Node::Branch(v)) => match &v[i].child {
                Child::Page(id) => Ok(Elem::Page(pages.page(*id)?.expect_tree()?)),
                Child::Node(n) => Ok(Elem::Node(n)),
            },
            Elem::Node(Node::Leaf(_)) => Err(Error::corrupt("child access on a leaf node")),
        }
    }
    /// For a leaf: first index with key >= `key`. For a branch: the child covering `key`.
    fn search(&self, key: &[u8]) -> Result<usize> {
        match self {
            Elem::Page(p) => {
                let (i, exact) = p.search(key)?;
                if p.is_leaf() || exact || i == 0 {
                    Ok(i)
                } else {
                    Ok(i - 1)
                }
            }
            Elem::Node(Node::Leaf(v)) => Ok(v.partition_point(|it| it.key() < key)),
            Elem::Node(Node::Branch(v)) => Ok(crate::node::branch_index(v, key)),
        }
    }
}

/// A read-only view of a bucket inside a read or write transaction.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    pub(crate) pages: Pages<'a>,
    pub(crate) root: Root<'a>,
    pub(crate) sequence: u64,
    /// In a write transaction: the bucket's materialised state (opened sub-buckets).
    pub(crate) state: Option<&'a BucketState>,
}

impl std::fmt::Debug for Bucket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("root", &self.root)
            .field("sequence", &self.sequence)
            .finish()
    }
}

impl<'a> Bucket<'a> {
    pub(crate) fn root_elem(&self) -> Result<Elem<'a>> {
        match self.root {
            Root::Page(id) => Ok(Elem::Page(self.pages.page(id)?.expect_tree()?)),
            Root::Inline(b) => {
                let p = PageRef::parse(b, 0)?;
                if !p.is_leaf() {
                    return Err(Error::corrupt("inline bucket page is not a leaf"));
                }
                Ok(Elem::Page(p))
            }
            Root::Node(n) => Ok(Elem::Node(n)),
        }
    }

    /// A cursor over the bucket's entries in key order.
    pub fn cursor(&self) -> Cursor<'a> {
        Cursor {
            bucket: *self,
            stack: Vec::new(),
        }
    }

    /// The raw leaf entry for `key`: (flags, value).
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<(u32, &'a [u8])>> {
        // A point lookup needs no cursor stack (and so no allocation): the key, if present,
        // is in the one leaf that the branch searches lead to.
        let mut elem = self.root_elem()?;
        for _ in 0..MAX_DEPTH {
            let idx = elem.search(key)?;
            if elem.is_leaf() {
                if idx < elem.count() {
                    let (flags, k, v) = elem.leaf(idx)?;
                    if k == key {
                        return Ok(Some((flags, v)));
                    }
                }
                return Ok(None);
            }
            if elem.count() == 0 {
                return Err(Error::corrupt("branch page with no elements"));
            }
            elem = elem.child(idx, &self.pages)?;
        }
        Err(Error::corrupt(format!(
            "tree deeper than {MAX_DEPTH} levels: the page graph has a cycle"
        )))
    }

    /// The value of `key`, or `None` if absent or if `key` names a nested bucket.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        Ok(match self.lookup(key)? {
            Some((flags, v)) if flags & BUCKET_FLAG == 0 => Some(v),
            _ => None,
        })
    }

    /// The nested bucket `name`, or `None` if absent or if `name` holds a plain value.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>> {
        if let Some(st) = self.state.and_then(|s| s.children.get(name)) {
            return Ok(Some(st.view(self.pages)));
        }
        match self.lookup(name)? {
            Some((flags, v)) if flags & BUCKET_FLAG != 0 => Ok(Some(self.nested(name, v)?)),
            _ => Ok(None),
        }
    }

    /// The nested bucket `name` whose leaf value `v` was already found in this bucket.
    fn nested(&self, name: &[u8], v: &'a [u8]) -> Result<Bucket<'a>> {
        // A sub-bucket opened for writing in this transaction is newer than its leaf value.
        if let Some(st) = self.state.and_then(|s| s.children.get(name)) {
            return Ok(st.view(self.pages));
        }
        let bv = BucketValue::parse(v, name)?;
        let root = if bv.root == 0 {
            bv.inline_page()?;
            Root::Inline(bv.inline)
        } else {
            Root::Page(bv.root)
        };
        Ok(Bucket {
            pages: self.pages,
            root,
            sequence: bv.sequence,
            state: None,
        })
    }

    /// The bucket's sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Calls `f` for every entry in key order; nested buckets have value `None`.
    /// Stops at and returns the first error `f` returns.
    pub fn for_each<E: From<Error>>(
        &self,
        mut f: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut c = self.cursor();
        let mut e = c.first()?;
        while let Some((k, v)) = e {
            f(k, v)?;
            e = c.next()?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Frame<'a> {
    elem: Elem<'a>,
    index: usize,
}

/// A position in a bucket, moved with first/last/next/prev/seek.
///
/// Every move returns the entry now under the cursor, or `None` past either end.
pub struct Cursor<'a> {
    bucket: Bucket<'a>,
    stack: Vec<Frame<'a>>,
}

impl std::fmt::Debug for Cursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("depth", &self.stack.len())
            .finish()
    }
}

type Raw<'a> = (&'a [u8], u32, &'a [u8]);

fn to_entry(r: Option<Raw<'_>>) -> Option<Entry<'_>> {
    r.map(|(k, flags, v)| {
        (
            k,
            if flags & BUCKET_FLAG != 0 {
                None
            } else {
                Some(v)
            },
        )
    })
}

impl<'a> Cursor<'a> {
    fn push(&mut self, elem: Elem<'a>, index: usize) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::corrupt(format!(
                "tree deeper than {MAX_DEPTH} levels: the page graph has a cycle"
            )));
        }
        self.stack.push(Frame { elem, index });
        Ok(())
    }

    /// Descends from the top frame to a leaf, taking the first (or last) child each time.
    fn descend(&mut self, last: bool) -> Result<()> {
        loop {
            let top = *self
                .stack
                .last()
                .ok_or_else(|| Error::corrupt("empty cursor"))?;
            if top.elem.is_leaf() {
                return Ok(());
            }
            if top.elem.count() == 0 {
                return Err(Error::corrupt("branch page with no elements"));
            }
            let child = top.elem.child(top.index, &self.bucket.pages)?;
            let idx = if last {
                child.count().saturating_sub(1)
            } else {
                0
            };
            self.push(child, idx)?;
        }
    }

    fn current(&self) -> Result<Option<Raw<'a>>> {
        match self.stack.last() {
            Some(f) if f.index < f.elem.count() => {
                let (flags, k, v) = f.elem.leaf(f.index)?;
                Ok(Some((k, flags, v)))
            }
            _ => Ok(None),
        }
    }

    fn first_raw(&mut self) -> Result<Option<Raw<'a>>> {
        self.stack.clear();
        let root = self.bucket.root_elem()?;
        self.push(root, 0)?;
        self.descend(false)?;
        if self.stack.last().is_some_and(|f| f.elem.count() == 0) {
            return self.next_raw();
        }
        self.current()
    }

    fn last_raw(&mut self) -> Result<Option<Raw<'a>>> {
        self.stack.clear();
        let root = self.bucket.root_elem()?;
        let idx = root.count().saturating_sub(1);
        self.push(root, idx)?;
        self.descend(true)?;
        if self.stack.last().is_some_and(|f| f.elem.count() == 0) {
            return self.prev_raw();
        }
        self.current()
    }

    fn next_raw(&mut self) -> Result<Option<Raw<'a>>> {
        loop {
            let mut level = None;
            for i in (0..self.stack.len()).rev() {
                let f = &mut self.stack[i];
                if f.index + 1 < f.elem.count() {
                    f.index += 1;
                    level = Some(i);
                    break;
                }
            }
            let Some(i) = level else {
                // Park past the end so a following prev() returns the last entry.
                if let Some(f) = self.stack.last_mut() {
                    f.index = f.elem.count();
                }
                return Ok(None);
            };
            self.stack.truncate(i + 1);
            self.descend(false)?;
            if self.stack.last().is_some_and(|f| f.elem.count() == 0) {
                continue;
            }
            return self.current();
        }
    }

    fn prev_raw(&mut self) -> Result<Option<Raw<'a>>> {
        if self.stack.is_empty() {
            return Ok(None);
        }
        loop {
            let mut level = None;
            for i in (0..self.stack.len()).rev() {
                let f = &mut self.stack[i];
                if f.index > 0 {
                    f.index -= 1;
                    level = Some(i);
                    break;
                }
            }
            let Some(i) = level else {
                self.stack.clear();
                return Ok(None);
            };
            self.stack.truncate(i + 1);
            self.descend(true)?;
            if self.stack.last().is_some_and(|f| f.elem.count() == 0) {
                continue;
            }
            return self.current();
        }
    }

    fn seek_raw(&mut self, key: &[u8]) -> Result<Option<Raw<'a>>> {
        self.stack.clear();
        let mut elem = self.bucket.root_elem()?;
        loop {
            let idx = elem.search(key)?;
            self.push(elem, idx)?;
            if elem.is_leaf() {
                break;
            }
            if elem.count() == 0 {
                return Err(Error::corrupt("branch page with no elements"));
            }
            elem = elem.child(idx, &self.bucket.pages)?;
        }
        match self.stack.last() {
            Some(f) if f.index >= f.elem.count() => self.next_raw(),
            _ => self.current(),
        }
    }

    /// Moves to the first entry.
    pub fn first(&mut self) -> Result<Option<Entry<'a>>> {
        Ok(to_entry(self.first_raw()?))
    }
    /// Moves to the last entry.
    pub fn last(&mut self) -> Result<Option<Entry<'a>>> {
        Ok(to_entry(self.last_raw()?))
    }
    /// Moves to the next entry; starts at the first one if the cursor was never positioned.
    // Go's cursor vocabulary; a move can fail on a damaged file, so this is not Iterator::next.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'a>>> {
        if self.stack.is_empty() {
            return self.first();
        }
        Ok(to_entry(self.next_raw()?))
    }
    /// Moves to the previous entry.
    pub fn prev(&mut self) -> Result<Option<Entry<'a>>> {
        Ok(to_entry(self.prev_raw()?))
    }
    /// Moves to the first entry whose key is >= `key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<Option<Entry<'a>>> {
        Ok(to_entry(self.seek_raw(key)?))
    }

    /// The nested bucket under the cursor, opened from the entry the cursor already holds,
    /// so walking a bucket's sub-buckets costs no second search per entry (Go has no
    /// equivalent: there, `Bucket.Bucket(k)` searches again). `None` when the entry is a
    /// plain value or the cursor is past either end (or was never positioned).
    ///
    /// ```
    /// # use stowage_bolt::{Db, Error, Options};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = Db::open(dir.path().join("db"), Options::default())?;
    /// db.update::<_, Error>(|tx| {
    ///     let mut top = tx.create_bucket(b"top")?;
    ///     top.create_bucket(b"a")?.put(b"k", b"1")?;
    ///     top.put(b"b", b"plain")?;
    ///     Ok(())
    /// })?;
    /// let tx = db.begin_read()?;
    /// let mut c = tx.bucket(b"top")?.unwrap().cursor();
    /// c.first()?;
    /// assert_eq!(c.bucket()?.unwrap().get(b"k")?, Some(&b"1"[..]));
    /// c.next()?;
    /// assert!(c.bucket()?.is_none()); // `b` holds a value
    /// # Ok::<(), Error>(())
    /// ```
    pub fn bucket(&self) -> Result<Option<Bucket<'a>>> {
        match self.current()? {
            Some((k, flags, v)) if flags & BUCKET_FLAG != 0 => Ok(Some(self.bucket.nested(k, v)?)),
            _ => Ok(None),
        }
    }
}

/// Helper for messages naming a bucket path element.
pub(crate) fn name(k: &[u8]) -> String {
    show_key(k)
}
