//! The write transaction: copy-on-write nodes, rebalance, spill and commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::cursor::{name, Bucket, Cursor, Root};
use crate::db::{mmap_size, Inner, Map, ALLOC_STEP};
use crate::error::{Error, Result};
use crate::format::{
    encode_freelist, put_u64, BucketValue, Meta, PageRef, Pages, BUCKET_FLAG, BUCKET_HEADER,
    MAX_DEPTH, MAX_KEY_SIZE, MAX_VALUE_SIZE, NO_FREELIST, PAGE_HEADER,
};
use crate::freelist::Freelist;
use crate::node::{branch_index, BranchItem, Child, LeafItem, Node};

/// A bucket opened for writing in the current transaction.
#[derive(Debug, Default)]
pub(crate) struct BucketState {
    /// Root page on disk, or 0 for an inline bucket.
    root_pgid: u64,
    sequence: u64,
    /// The inline page, for an inline bucket not yet materialised.
    inline: Vec<u8>,
    /// The materialised root; `Some` means the bucket is rewritten at commit.
    node: Option<Node>,
    /// Sub-buckets opened for writing; their entries in `node` are stale until commit.
    pub(crate) children: BTreeMap<Vec<u8>, BucketState>,
}

impl BucketState {
    pub(crate) fn view<'a>(&'a self, pages: Pages<'a>) -> Bucket<'a> {
        let root = match &self.node {
            Some(n) => Root::Node(n),
            None if self.root_pgid == 0 => Root::Inline(&self.inline),
            None => Root::Page(self.root_pgid),
        };
        Bucket {
            pages,
            root,
            sequence: self.sequence,
            state: Some(self),
        }
    }

    fn from_value(v: &[u8], key: &[u8]) -> Result<BucketState> {
        let bv = BucketValue::parse(v, key)?;
        let inline = if bv.root == 0 {
            bv.inline_page()?;
            bv.inline.to_vec()
        } else {
            Vec::new()
        };
        Ok(BucketState {
            root_pgid: bv.root,
            sequence: bv.sequence,
            inline,
            node: None,
            children: BTreeMap::new(),
        })
    }
}

/// Writes are collected into one buffer while page ids are contiguous, so a big commit
/// issues few large pwrites instead of one per page.
const WRITE_BUFFER: usize = 4 << 20;

pub(crate) struct Ctx {
    inner: Arc<Inner>,
    map: Arc<Map>,
    ps: usize,
    /// High-water mark of the snapshot (pages that may be read).
    high: u64,
    /// Next never-used page id.
    next_pgid: u64,
    freelist: Freelist,
    /// Runs taken from the freelist, given back on rollback.
    taken: Vec<(u64, u64)>,
    /// Pages freed by this transaction.
    freed: Vec<u64>,
    freed_set: HashSet<u64>,
    out_start: u64,
    out: Vec<u8>,
    /// Current length of the file, and its length when the transaction began.
    file_len: u64,
    begin_file_len: u64,
}

impl Ctx {
    fn pages(&self) -> Pages<'_> {
        Pages {
            data: self.map.bytes(),
            page_size: self.ps,
            high: self.high,
        }
    }

    fn free_page(&mut self, id: u64, overflow: u64) -> Result<()> {
        for p in id..=id + overflow {
            if !self.freed_set.insert(p) {
                return Err(Error::corrupt(format!(
                    "page {p} is referenced twice in the tree (freed twice)"
                )));
            }
            self.freed.push(p);
        }
        Ok(())
    }

    /// Turns a on-disk child into a node of this transaction, freeing its page.
    fn materialize<'c>(&mut self, child: &'c mut Child) -> Result<&'c mut Node> {
        if let Child::Page(id) = *child {
            let (node, overflow) = {
                let p = self.pages().page(id)?;
                (Node::from_page(&p)?, p.overflow())
            };
            self.free_page(id, overflow)?;
            *child = Child::Node(Box::new(node));
        }
        match child {
            Child::Node(n) => Ok(n),
            Child::Page(_) => Err(Error::corrupt("materialise failed")),
        }
    }

    fn allocate(&mut self, n: u64) -> u64 {
        if let Some(s) = self.freelist.allocate(n) {
            self.taken.push((s, n));
            return s;
        }
        let s = self.next_pgid;
        self.next_pgid += n;
        s
    }

    /// The size bbolt grows a file to when `end` bytes are needed: the mapping size while
    /// under 16 MiB, then 16 MiB beyond what is needed.
    fn grow_target(&self, end: u64) -> u64 {
        let map_len = mmap_size(end.max(self.map.bytes().len() as u64), self.ps as u64);
        if map_len < ALLOC_STEP {
            map_len
        } else {
            end + ALLOC_STEP
        }
    }

    /// Extends the file to `target` bytes and fsyncs, so the size is durable before any
    /// page in the new space is referenced (bbolt does the same).
    fn set_file_len(&mut self, target: u64) -> Result<()> {
        let inner = &self.inner;
        inner
            .file
            .set_len(target)
            .map_err(|e| Error::io(format!("grow {} to {target}", inner.path.display()), e))?;
        if !inner.opts.no_sync {
            inner
                .file
                .sync_all()
                .map_err(|e| Error::io(format!("fsync {}", inner.path.display()), e))?;
        }
        self.file_len = target;
        Ok(())
    }

    /// Grows the file before pages are written past its end, so writes stay inside it.
    fn ensure_len(&mut self, end: u64) -> Result<()> {
        if end > self.file_len {
            self.set_file_len(self.grow_target(end))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let off = self.out_start * self.ps as u64;
        // One page of slack beyond the written end, as bbolt grows to (high-water + 1) pages.
        self.ensure_len(off + (self.out.len() + self.ps) as u64)?;
        self.inner
            .file
            .write_all_at(&self.out, off)
            .map_err(|e| Error::io(format!("write {} bytes at offset {off}", self.out.len()), e))?;
        self.out.clear();
        Ok(())
    }

    /// A zeroed buffer for pages `id..id+n`, written out later in order.
    fn page_buf(&mut self, id: u64, n: u64) -> Result<&mut [u8]> {
        let contiguous = self.out_start + (self.out.len() / self.ps) as u64 == id;
        if !self.out.is_empty() && (!contiguous || self.out.len() >= WRITE_BUFFER) {
            self.flush()?;
        }
        if self.out.is_empty() {
            self.out_start = id;
        }
        let start = self.out.len();
        self.out.resize(start + n as usize * self.ps, 0);
        Ok(&mut self.out[start..])
    }

    fn write_node(&mut self, node: &Node) -> Result<u64> {
        let ps = self.ps;
        let n = node.size().div_ceil(ps) as u64;
        let id = self.allocate(n);
        let buf = self.page_buf(id, n)?;
        node.encode(buf, id, ps);
        Ok(id)
    }
}

fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::corrupt(format!(
            "tree deeper than {MAX_DEPTH} levels: the page graph has a cycle"
        )));
    }
    Ok(())
}

fn node_put(node: &mut Node, ctx: &mut Ctx, item: LeafItem, depth: usize) -> Result<()> {
    check_depth(depth)?;
    match node {
        Node::Leaf(items) => {
            match items.binary_search_by(|it| it.key().cmp(item.key())) {
                Ok(i) => {
                    if (items[i].flags ^ item.flags) & BUCKET_FLAG != 0 {
                        let what = if items[i].flags & BUCKET_FLAG != 0 {
                            "bucket"
                        } else {
                            "value"
                        };
                        return Err(Error::IncompatibleValue(name(item.key()), what));
                    }
                    items[i] = item;
                }
                Err(i) => items.insert(i, item),
            }
            Ok(())
        }
        Node::Branch(items) => {
            if items.is_empty() {
                return Err(Error::corrupt("branch page with no elements"));
            }
            let i = branch_index(items, item.key());
            let split = {
                let child = ctx.materialize(&mut items[i].child)?;
                node_put(child, ctx, item, depth + 1)?;
                child.eager_split()
            };
            if let Some(right) = split {
                let key: Box<[u8]> = right.first_key().unwrap_or_default().into();
                items.insert(
                    i + 1,
                    BranchItem {
                        key,
                        child: Child::Node(Box::new(right)),
                    },
                );
            }
            Ok(())
        }
    }
}

fn node_delete(node: &mut Node, ctx: &mut Ctx, key: &[u8], depth: usize) -> Result<()> {
    check_depth(depth)?;
    match node {
        Node::Leaf(items) => {
            if let Ok(i) = items.binary_search_by(|it| it.key().cmp(key)) {
                items.remove(i);
            }
            Ok(())
        }
        Node::Branch(items) => {
            if items.is_empty() {
                return Err(Error::corrupt("branch page with no elements"));
            }
            let i = branch_index(items, key);
            let child = ctx.materialize(&mut items[i].child)?;
            node_delete(child, ctx, key, depth + 1)
        }
    }
}

fn root_node<'s>(state: &'s mut BucketState, ctx: &mut Ctx) -> Result<&'s mut Node> {
    if state.node.is_none() {
        let node = if state.root_pgid == 0 {
            Node::from_page(&PageRef::parse(&state.inline, 0)?)?
        } else {
            let (node, overflow) = {
                let p = ctx.pages().page(state.root_pgid)?;
                (Node::from_page(&p)?, p.overflow())
            };
            ctx.free_page(state.root_pgid, overflow)?;
            node
        };
        state.node = Some(node);
    }
    state
        .node
        .as_mut()
        .ok_or_else(|| Error::corrupt("bucket root missing"))
}

fn bucket_put(state: &mut BucketState, ctx: &mut Ctx, item: LeafItem) -> Result<()> {
    let root = root_node(state, ctx)?;
    node_put(root, ctx, item, 0)?;
    if let Some(right) = root.eager_split() {
        let left = std::mem::replace(root, Node::Leaf(Vec::new()));
        let lk: Box<[u8]> = left.first_key().unwrap_or_default().into();
        let rk: Box<[u8]> = right.first_key().unwrap_or_default().into();
        *root = Node::Branch(vec![
            BranchItem {
                key: lk,
                child: Child::Node(Box::new(left)),
            },
            BranchItem {
                key: rk,
                child: Child::Node(Box::new(right)),
            },
        ]);
    }
    Ok(())
}

/// Merges under-filled nodes of this transaction with a sibling, bottom-up, as bbolt does
/// (a node is under-filled at a quarter page or fewer than its minimum keys). Because
/// nodes own their children, a merged-away node and its page are gone for good: nothing can
/// revisit or free it again.
fn rebalance_items(items: &mut Vec<BranchItem>, ctx: &mut Ctx, depth: usize) -> Result<()> {
    check_depth(depth)?;
    for it in items.iter_mut() {
        if let Child::Node(n) = &mut it.child {
            if let Node::Branch(ch) = &mut **n {
                rebalance_items(ch, ctx, depth + 1)?;
            }
        }
    }
    let threshold = ctx.ps / 4;
    let mut i = 0;
    while i < items.len() {
        let (under, empty) = match &items[i].child {
            Child::Node(n) => (
                !(n.size() > threshold && n.len() > n.min_keys()),
                n.len() == 0,
            ),
            Child::Page(_) => (false, false),
        };
        if !under {
            i += 1;
            continue;
        }
        if empty {
            items.remove(i);
            continue;
        }
        if items.len() == 1 {
            break;
        }
        let (l, r) = if i == 0 { (0, 1) } else { (i - 1, i) };
        ctx.materialize(&mut items[l].child)?;
        ctx.materialize(&mut items[r].child)?;
        let right = items.remove(r);
        let Child::Node(rn) = right.child else {
            return Err(Error::corrupt("merge of an unmaterialised node"));
        };
        let Child::Node(ln) = &mut items[l].child else {
            return Err(Error::corrupt("merge of an unmaterialised node"));
        };
        match (&mut **ln, *rn) {
            (Node::Leaf(a), Node::Leaf(b)) => a.extend(b),
            (Node::Branch(a), Node::Branch(b)) => a.extend(b),
            (_, other) => {
                // Siblings of different kinds only occur in unbalanced trees written
                // elsewhere; leave them as they are.
                items.insert(
                    r,
                    BranchItem {
                        key: right.key,
                        child: Child::Node(Box::new(other)),
                    },
                );
                i += 1;
                continue;
            }
        }
        i = l;
    }
    Ok(())
}

fn rebalance_root(node: &mut Node, ctx: &mut Ctx) -> Result<()> {
    if let Node::Branch(items) = node {
        rebalance_items(items, ctx, 0)?;
    }
    for _ in 0..=MAX_DEPTH {
        match node {
            Node::Branch(items) if items.len() == 1 => {
                let mut only = items.pop().map(|i| i.child).unwrap_or(Child::Page(0));
                ctx.materialize(&mut only)?;
                if let Child::Node(n) = only {
                    *node = *n;
                }
            }
            Node::Branch(items) if items.is_empty() => *node = Node::Leaf(Vec::new()),
            _ => return Ok(()),
        }
    }
    Err(Error::corrupt("tree too deep while collapsing the root"))
}

/// Writes `node` and everything materialised below it; returns the separator entries that
/// replace it in its parent (none if it became empty, several if it was split).
fn spill_node(node: Node, ctx: &mut Ctx) -> Result<Vec<BranchItem>> {
    let node = match node {
        Node::Branch(items) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match it.child {
                    Child::Page(_) => out.push(it),
                    Child::Node(n) => out.extend(spill_node(*n, ctx)?),
                }
            }
            Node::Branch(out)
        }
        leaf => leaf,
    };
    if node.len() == 0 {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    for piece in node.split_for_pages(ctx.ps) {
        let key: Box<[u8]> = piece.first_key().unwrap_or_default().into();
        let id = ctx.write_node(&piece)?;
        entries.push(BranchItem {
            key,
            child: Child::Page(id),
        });
    }
    Ok(entries)
}

fn spill_root(node: Node, ctx: &mut Ctx) -> Result<u64> {
    let mut entries = spill_node(node, ctx)?;
    for _ in 0..=MAX_DEPTH {
        match entries.len() {
            0 => return ctx.write_node(&Node::Leaf(Vec::new())),
            1 => {
                if let Child::Page(id) = entries[0].child {
                    return Ok(id);
                }
                return Err(Error::corrupt("spill left a node unwritten"));
            }
            _ => entries = spill_node(Node::Branch(entries), ctx)?,
        }
    }
    Err(Error::corrupt("spill did not converge"))
}

fn inlineable(node: &Node, ps: usize) -> bool {
    match node {
        Node::Leaf(items) => {
            items.iter().all(|i| i.flags & BUCKET_FLAG == 0) && node.size() <= ps / 4
        }
        Node::Branch(_) => false,
    }
}

fn bucket_value(root: u64, sequence: u64, inline: Option<(&Node, usize)>) -> Vec<u8> {
    let extra = inline.map_or(0, |(n, _)| n.size());
    let mut v = vec![0u8; BUCKET_HEADER + extra];
    put_u64(&mut v, 0, root);
    put_u64(&mut v, 8, sequence);
    if let Some((n, ps)) = inline {
        n.encode(&mut v[BUCKET_HEADER..], 0, ps);
    }
    v
}

/// Writes a bucket's changes; returns its new value for the parent, or `None` if unchanged.
fn spill_bucket(state: &mut BucketState, ctx: &mut Ctx, is_root: bool) -> Result<Option<Vec<u8>>> {
    let children = std::mem::take(&mut state.children);
    for (key, mut child) in children {
        if let Some(v) = spill_bucket(&mut child, ctx, false)? {
            bucket_put(state, ctx, LeafItem::new(&key, &v, BUCKET_FLAG))?;
        }
    }
    let Some(mut node) = state.node.take() else {
        return Ok(None);
    };
    rebalance_root(&mut node, ctx)?;
    if !is_root && inlineable(&node, ctx.ps) {
        let v = bucket_value(0, state.sequence, Some((&node, ctx.ps)));
        state.root_pgid = 0;
        return Ok(Some(v));
    }
    let id = spill_root(node, ctx)?;
    state.root_pgid = id;
    Ok(Some(bucket_value(id, state.sequence, None)))
}

/// Frees every page of a bucket being deleted, including nested buckets.
fn free_state(state: &BucketState, ctx: &mut Ctx, depth: usize) -> Result<()> {
    check_depth(depth)?;
    for child in state.children.values() {
        free_state(child, ctx, depth + 1)?;
    }
    match &state.node {
        Some(node) => free_node(node, &state.children, ctx, depth),
        None if state.root_pgid != 0 => free_tree(state.root_pgid, &state.children, ctx, depth),
        None => {
            let p = PageRef::parse(&state.inline, 0)?;
            free_leaf_buckets(&p, &state.children, ctx, depth)
        }
    }
}

fn free_node(
    node: &Node,
    skip: &BTreeMap<Vec<u8>, BucketState>,
    ctx: &mut Ctx,
    depth: usize,
) -> Result<()> {
    check_depth(depth)?;
    match node {
        Node::Leaf(items) => {
            for it in items {
                if it.flags & BUCKET_FLAG != 0 && !skip.contains_key(it.key()) {
                    free_value(it.value(), it.key(), ctx, depth + 1)?;
                }
            }
        }
        Node::Branch(items) => {
            for it in items {
                match &it.child {
                    Child::Page(id) => free_tree(*id, skip, ctx, depth + 1)?,
                    Child::Node(n) => free_node(n, skip, ctx, depth + 1)?,
                }
            }
        }
    }
    Ok(())
}

fn free_leaf_buckets(
    p: &PageRef<'_>,
    skip: &BTreeMap<Vec<u8>, BucketState>,
    ctx: &mut Ctx,
    depth: usize,
) -> Result<()> {
    for i in 0..p.count {
        let (flags, k, v) = p.leaf(i)?;
        if flags & BUCKET_FLAG != 0 && !skip.contains_key(k) {
            free_value(v, k, ctx, depth + 1)?;
        }
    }
    Ok(())
}

fn free_tree(
    id: u64,
    skip: &BTreeMap<Vec<u8>, BucketState>,
    ctx: &mut Ctx,
    depth: usize,
) -> Result<()> {
    check_depth(depth)?;
    let map = ctx.map.clone();
    let pages = Pages {
        data: map.bytes(),
        page_size: ctx.ps,
        high: ctx.high,
    };
    let p = pages.page(id)?.expect_tree()?;
    ctx.free_page(id, p.overflow())?;
    if p.is_branch() {
        for i in 0..p.count {
            free_tree(p.branch(i)?.1, skip, ctx, depth + 1)?;
        }
        Ok(())
    } else {
        free_leaf_buckets(&p, skip, ctx, depth)
    }
}

fn free_value(v: &[u8], key: &[u8], ctx: &mut Ctx, depth: usize) -> Result<()> {
    check_depth(depth)?;
    let bv = BucketValue::parse(v, key)?;
    let none = BTreeMap::new();
    if bv.root != 0 {
        free_tree(bv.root, &none, ctx, depth)
    } else {
        free_leaf_buckets(&bv.inline_page()?, &none, ctx, depth)
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "key required: keys must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes, the maximum is {MAX_KEY_SIZE}",
            key.len()
        )));
    }
    Ok(())
}

/// Opens sub-bucket `key` of `state` for writing.
fn open_child<'a>(
    state: &'a mut BucketState,
    ctx: &'a mut Ctx,
    key: &[u8],
) -> Result<Option<BucketMut<'a>>> {
    if !state.children.contains_key(key) {
        let found = state.view(ctx.pages()).lookup(key)?;
        let child = match found {
            Some((flags, v)) if flags & BUCKET_FLAG != 0 => BucketState::from_value(v, key)?,
            _ => return Ok(None),
        };
        state.children.insert(key.to_vec(), child);
    }
    Ok(state.children.get_mut(key).map(|s| BucketMut {
        state: s,
        ctx,
        is_root: false,
    }))
}

fn create_child<'a>(
    state: &'a mut BucketState,
    ctx: &'a mut Ctx,
    key: &[u8],
    if_missing: bool,
) -> Result<BucketMut<'a>> {
    check_key(key)?;
    let exists = if state.children.contains_key(key) {
        Some(BUCKET_FLAG)
    } else {
        state.view(ctx.pages()).lookup(key)?.map(|(f, _)| f)
    };
    match exists {
        Some(f) if f & BUCKET_FLAG == 0 => {
            return Err(Error::IncompatibleValue(name(key), "value"))
        }
        Some(_) if !if_missing => return Err(Error::BucketExists(name(key))),
        Some(_) => {}
        None => {
            let empty = Node::Leaf(Vec::new());
            let v = bucket_value(0, 0, Some((&empty, ctx.ps)));
            bucket_put(state, ctx, LeafItem::new(key, &v, BUCKET_FLAG))?;
            state.children.insert(
                key.to_vec(),
                BucketState {
                    root_pgid: 0,
                    sequence: 0,
                    inline: v[BUCKET_HEADER..].to_vec(),
                    node: Some(empty),
                    children: BTreeMap::new(),
                },
            );
        }
    }
    open_child(state, ctx, key)?.ok_or_else(|| Error::BucketNotFound(name(key)))
}

fn delete_child(state: &mut BucketState, ctx: &mut Ctx, key: &[u8]) -> Result<()> {
    if let Some(child) = state.children.remove(key) {
        free_state(&child, ctx, 0)?;
    } else {
        // Not opened in this transaction: free its pages straight from the leaf value,
        // without materialising a `BucketState` that would be dropped at once (a GC pass
        // deletes tens of thousands of buckets in one transaction).
        let map = ctx.map.clone();
        let pages = Pages {
            data: map.bytes(),
            page_size: ctx.ps,
            high: ctx.high,
        };
        match state.view(pages).lookup(key)? {
            Some((flags, v)) if flags & BUCKET_FLAG != 0 => {
                // The value may live in this transaction's nodes, which freeing must not borrow.
                let v = v.to_vec();
                free_value(&v, key, ctx, 0)?;
            }
            Some(_) => return Err(Error::IncompatibleValue(name(key), "value")),
            None => return Err(Error::BucketNotFound(name(key))),
        }
    }
    let root = root_node(state, ctx)?;
    node_delete(root, ctx, key, 0)
}

/// A bucket opened for writing. Obtained from [`WriteTx`]; reads see this transaction's
/// own changes.
pub struct BucketMut<'t> {
    state: &'t mut BucketState,
    ctx: &'t mut Ctx,
    is_root: bool,
}

impl std::fmt::Debug for BucketMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketMut")
            .field("sequence", &self.state.sequence)
            .finish()
    }
}

impl<'t> BucketMut<'t> {
    /// A read view of the bucket as this transaction has changed it so far.
    pub fn view(&self) -> Bucket<'_> {
        self.state.view(self.ctx.pages())
    }

    /// The value of `key` (None if absent or a bucket).
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.view().get(key)
    }

    /// A read-only view of sub-bucket `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.view().bucket(name)
    }

    /// A cursor over the bucket.
    pub fn cursor(&self) -> Cursor<'_> {
        self.view().cursor()
    }

    /// Calls `f` for each entry in key order (nested buckets have value `None`).
    pub fn for_each<E: From<Error>>(
        &self,
        f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.view().for_each(f)
    }

    /// The bucket's sequence number.
    pub fn sequence(&self) -> u64 {
        self.state.sequence
    }

    fn not_root(&self, what: &str) -> Result<()> {
        if self.is_root {
            return Err(Error::InvalidArgument(format!(
                "{what} on the root bucket, which only holds buckets"
            )));
        }
        Ok(())
    }

    /// Sets `key` to `value`. Fails with `IncompatibleValue` if `key` names a bucket.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.not_root("put")?;
        check_key(key)?;
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes, the maximum is {MAX_VALUE_SIZE}",
                value.len()
            )));
        }
        bucket_put(self.state, self.ctx, LeafItem::new(key, value, 0))
    }

    /// Removes `key`; absent keys are fine. Fails with `IncompatibleValue` on a bucket.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.not_root("delete")?;
        match self.view().lookup(key)? {
            None => Ok(()),
            Some((f, _)) if f & BUCKET_FLAG != 0 => {
                Err(Error::IncompatibleValue(name(key), "bucket"))
            }
            Some(_) => {
                let root = root_node(self.state, self.ctx)?;
                node_delete(root, self.ctx, key, 0)
            }
        }
    }

    /// Opens sub-bucket `name` for writing.
    pub fn bucket_mut(&mut self, name: &[u8]) -> Result<Option<BucketMut<'_>>> {
        open_child(self.state, self.ctx, name)
    }

    /// Opens sub-bucket `name` for writing, consuming this handle, so a path of nested
    /// buckets can be walked in a loop.
    pub fn into_bucket_mut(self, name: &[u8]) -> Result<Option<BucketMut<'t>>> {
        open_child(self.state, self.ctx, name)
    }

    /// Creates sub-bucket `name`; `BucketExists` if it exists.
    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_child(self.state, self.ctx, name, false)
    }

    /// Creates sub-bucket `name` unless it exists, and opens it.
    pub fn create_bucket_if_not_exists(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_child(self.state, self.ctx, name, true)
    }

    /// Deletes sub-bucket `name` and everything in it.
    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        delete_child(self.state, self.ctx, name)
    }

    /// Increments and returns the bucket's sequence.
    pub fn next_sequence(&mut self) -> Result<u64> {
        self.not_root("next_sequence")?;
        root_node(self.state, self.ctx)?;
        self.state.sequence += 1;
        Ok(self.state.sequence)
    }

    /// Sets the bucket's sequence.
    pub fn set_sequence(&mut self, v: u64) -> Result<()> {
        self.not_root("set_sequence")?;
        root_node(self.state, self.ctx)?;
        self.state.sequence = v;
        Ok(())
    }
}

/// The write transaction. Dropping it without [`WriteTx::commit`] rolls it back.
pub struct WriteTx {
    ctx: Ctx,
    root: BucketState,
    meta: Meta,
    done: bool,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("txid", &(self.meta.txid + 1))
            .finish()
    }
}

impl WriteTx {
    pub(crate) fn new(
        inner: Arc<Inner>,
        map: Arc<Map>,
        meta: Meta,
        freelist: Freelist,
        file_len: u64,
    ) -> WriteTx {
        let ps = inner.page_size;
        WriteTx {
            ctx: Ctx {
                inner,
                map,
                ps,
                high: meta.pgid,
                next_pgid: meta.pgid,
                freelist,
                taken: Vec::new(),
                freed: Vec::new(),
                freed_set: HashSet::new(),
                out_start: 0,
                out: Vec::new(),
                file_len,
                begin_file_len: file_len,
            },
            root: BucketState {
                root_pgid: meta.root,
                sequence: meta.sequence,
                ..BucketState::default()
            },
            meta,
            done: false,
        }
    }

    /// The id this transaction commits as.
    pub fn id(&self) -> u64 {
        self.meta.txid + 1
    }

    /// The root bucket as changed so far (entries are the top-level buckets).
    pub fn root(&self) -> Bucket<'_> {
        self.root.view(self.ctx.pages())
    }

    /// Read view of top-level bucket `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.root().bucket(name)
    }

    /// A cursor over the top-level bucket names.
    pub fn cursor(&self) -> Cursor<'_> {
        self.root().cursor()
    }

    /// Opens top-level bucket `name` for writing.
    pub fn bucket_mut(&mut self, name: &[u8]) -> Result<Option<BucketMut<'_>>> {
        open_child(&mut self.root, &mut self.ctx, name)
    }

    /// Creates top-level bucket `name`; `BucketExists` if it exists.
    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_child(&mut self.root, &mut self.ctx, name, false)
    }

    /// Creates top-level bucket `name` unless it exists, and opens it.
    pub fn create_bucket_if_not_exists(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_child(&mut self.root, &mut self.ctx, name, true)
    }

    /// Deletes top-level bucket `name` and everything in it.
    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        delete_child(&mut self.root, &mut self.ctx, name)
    }

    /// Discards all changes.
    pub fn rollback(self) {}

    /// Writes the changes durably: new pages, fdatasync, then the meta page, fdatasync.
    pub fn commit(mut self) -> Result<()> {
        self.commit_inner()?;
        self.done = true;
        Ok(())
    }

    fn commit_inner(&mut self) -> Result<()> {
        let ctx = &mut self.ctx;
        let inner = ctx.inner.clone();
        let ps = ctx.ps;
        let txid = self.meta.txid + 1;
        let mut meta = self.meta;
        if spill_bucket(&mut self.root, ctx, true)?.is_some() {
            meta.root = self.root.root_pgid;
        }
        meta.sequence = self.root.sequence;

        if self.meta.freelist != NO_FREELIST {
            let overflow = ctx.pages().page(self.meta.freelist)?.overflow();
            ctx.free_page(self.meta.freelist, overflow)?;
        }
        if inner.opts.no_freelist_sync {
            meta.freelist = NO_FREELIST;
        } else {
            let count = ctx.freelist.count_with(ctx.freed.len());
            let slots = if count >= 0xFFFF { count + 1 } else { count };
            let n = ((PAGE_HEADER + 8 * slots) / ps + 1) as u64;
            let id = ctx.allocate(n);
            let ids = ctx.freelist.all_ids(&ctx.freed);
            let buf = ctx.page_buf(id, n)?;
            encode_freelist(buf, id, (n - 1) as u32, &ids);
            meta.freelist = id;
        }
        meta.pgid = ctx.next_pgid;
        meta.txid = txid;
        ctx.flush()?;

        // bbolt keeps one page of slack beyond the high-water mark; so do we, so file
        // sizes match Go's.
        let needed = (meta.pgid + 1) * ps as u64;
        // Go grows once per commit, to grow_target(needed); our writes may have grown the
        // file in steps already, which only ever stay below that, so finish at the same size.
        if needed > ctx.begin_file_len {
            let target = ctx.grow_target(needed);
            if target > ctx.file_len {
                ctx.set_file_len(target)?;
            }
        }
        let file_len = ctx.file_len;
        let mut map_len = ctx.map.bytes().len() as u64;
        if needed >= map_len {
            map_len = mmap_size(needed, ps as u64);
        }
        inner.sync()?;
        let new_map = if map_len > ctx.map.bytes().len() as u64 {
            Some(inner.map(map_len as usize)?)
        } else {
            None
        };
        let page = meta.page(ps);
        let written = inner
            .file
            .write_all_at(&page, (txid % 2) * ps as u64)
            .map_err(|e| Error::io("write meta page", e))
            .and_then(|()| inner.sync());
        if let Err(e) = written {
            inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }

        let mut freelist = std::mem::take(&mut ctx.freelist);
        let freed = std::mem::take(&mut ctx.freed);
        if !freed.is_empty() {
            freelist.pending.insert(txid, freed);
        }
        let mut sh = inner.lock();
        sh.meta = meta;
        sh.file_len = file_len;
        if let Some(m) = new_map {
            sh.map = m;
        }
        sh.freelist = freelist;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.done {
            let mut fl = std::mem::take(&mut self.ctx.freelist);
            for &(s, n) in &self.ctx.taken {
                fl.free.extend(s..s + n);
            }
            self.ctx.inner.lock().freelist = fl;
        }
        self.ctx.inner.release_writer();
    }
}
