//! In-memory B+tree nodes a write transaction materialises from pages, and their encoding.

use crate::error::Result;
use crate::format::{
    put_u32, put_u64, write_page_header, PageRef, BRANCH_PAGE, ELEM_SIZE, LEAF_PAGE, PAGE_HEADER,
};

/// One key/value of a leaf; key and value share one allocation to halve allocator work.
#[derive(Debug)]
pub(crate) struct LeafItem {
    kv: Box<[u8]>,
    klen: u32,
    pub flags: u32,
}

impl LeafItem {
    pub fn new(key: &[u8], value: &[u8], flags: u32) -> LeafItem {
        let mut kv = Vec::with_capacity(key.len() + value.len());
        kv.extend_from_slice(key);
        kv.extend_from_slice(value);
        LeafItem {
            kv: kv.into_boxed_slice(),
            klen: key.len() as u32,
            flags,
        }
    }
    pub fn key(&self) -> &[u8] {
        &self.kv[..self.klen as usize]
    }
    pub fn value(&self) -> &[u8] {
        &self.kv[self.klen as usize..]
    }
    fn size(&self) -> usize {
        ELEM_SIZE + self.kv.len()
    }
}

/// A child of a branch: still on disk, or materialised in this transaction.
#[derive(Debug)]
pub(crate) enum Child {
    Page(u64),
    Node(Box<Node>),
}

/// One separator key and the child holding keys from it up to the next separator.
#[derive(Debug)]
pub(crate) struct BranchItem {
    pub key: Box<[u8]>,
    pub child: Child,
}

/// A materialised page. Nodes own their children, so a page can only be materialised (and
/// freed) once per transaction and a merged-away node simply ceases to exist.
#[derive(Debug)]
pub(crate) enum Node {
    Leaf(Vec<LeafItem>),
    Branch(Vec<BranchItem>),
}

/// Above this many items a node is split in memory during puts, so inserting at random
/// positions into a huge transaction stays O(log n) per key instead of shifting one giant
/// vector. Spill later splits nodes to page size.
pub(crate) const EAGER_SPLIT: usize = 4096;

impl Node {
    pub fn from_page(p: &PageRef<'_>) -> Result<Node> {
        let p = p.expect_tree()?;
        if p.is_leaf() {
            let mut items = Vec::with_capacity(p.count);
            for i in 0..p.count {
                let (flags, k, v) = p.leaf(i)?;
                items.push(LeafItem::new(k, v, flags));
            }
            Ok(Node::Leaf(items))
        } else {
            let mut items = Vec::with_capacity(p.count);
            for i in 0..p.count {
                let (k, id) = p.branch(i)?;
                items.push(BranchItem {
                    key: k.into(),
                    child: Child::Page(id),
                });
            }
            Ok(Node::Branch(items))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Node::Leaf(v) => v.len(),
            Node::Branch(v) => v.len(),
        }
    }

    pub fn is_leaf(&self) -> bool {
        matches!(self, Node::Leaf(_))
    }

    pub fn first_key(&self) -> Option<&[u8]> {
        match self {
            Node::Leaf(v) => v.first().map(|i| i.key()),
            Node::Branch(v) => v.first().map(|i| &*i.key),
        }
    }

    /// Encoded size in bytes (header + elements + data), as bbolt computes it.
    pub fn size(&self) -> usize {
        PAGE_HEADER
            + match self {
                Node::Leaf(v) => v.iter().map(LeafItem::size).sum::<usize>(),
                Node::Branch(v) => v.iter().map(|i| ELEM_SIZE + i.key.len()).sum::<usize>(),
            }
    }

    /// Minimum item count below which the node is merged with a sibling at commit.
    pub fn min_keys(&self) -> usize {
        if self.is_leaf() {
            1
        } else {
            2
        }
    }

    /// Splits off the upper half if the node holds more than [`EAGER_SPLIT`] items.
    pub fn eager_split(&mut self) -> Option<Node> {
        if self.len() <= EAGER_SPLIT {
            return None;
        }
        let mid = self.len() / 2;
        Some(match self {
            Node::Leaf(v) => Node::Leaf(v.split_off(mid)),
            Node::Branch(v) => Node::Branch(v.split_off(mid)),
        })
    }

    /// Item sizes for the page splitter.
    fn item_sizes(&self) -> Vec<usize> {
        match self {
            Node::Leaf(v) => v.iter().map(LeafItem::size).collect(),
            Node::Branch(v) => v.iter().map(|i| ELEM_SIZE + i.key.len()).collect(),
        }
    }

    /// Cuts the node into page-sized pieces the way bbolt does with its default fill
    /// percent (0.5): pieces are filled to half a page, except the last, so our files have
    /// the same density as Go's.
    pub fn split_for_pages(self, page_size: usize) -> Vec<Node> {
        let sizes = self.item_sizes();
        let mut bounds = Vec::new();
        let mut start = 0usize;
        loop {
            let rest = &sizes[start..];
            let total: usize = PAGE_HEADER + rest.iter().sum::<usize>();
            if rest.len() <= 4 || total < page_size {
                break;
            }
            let threshold = page_size / 2;
            let mut sz = PAGE_HEADER;
            let mut index = 0;
            for (i, el) in rest.iter().enumerate().take(rest.len() - 2) {
                index = i;
                if i >= 2 && sz + el > threshold {
                    break;
                }
                sz += el;
            }
            start += index;
            bounds.push(start);
        }
        if bounds.is_empty() {
            return vec![self];
        }
        let mut out = Vec::with_capacity(bounds.len() + 1);
        match self {
            Node::Leaf(mut v) => {
                for &b in bounds.iter().rev() {
                    out.push(Node::Leaf(v.split_off(b)));
                }
                out.push(Node::Leaf(v));
            }
            Node::Branch(mut v) => {
                for &b in bounds.iter().rev() {
                    out.push(Node::Branch(v.split_off(b)));
                }
                out.push(Node::Branch(v));
            }
        }
        out.reverse();
        out
    }

    /// Encodes the node into `buf` (sized to whole pages) as page `id`. Every branch child
    /// must already be a page id (spill writes children first).
    pub fn encode(&self, buf: &mut [u8], id: u64, page_size: usize) {
        let overflow = (buf.len() / page_size).saturating_sub(1) as u32;
        let n = self.len();
        let (flags, count) = (
            if self.is_leaf() {
                LEAF_PAGE
            } else {
                BRANCH_PAGE
            },
            n as u16,
        );
        write_page_header(buf, id, flags, count, overflow);
        let mut data = PAGE_HEADER + n * ELEM_SIZE;
        match self {
            Node::Leaf(items) => {
                for (i, it) in items.iter().enumerate() {
                    let e = PAGE_HEADER + i * ELEM_SIZE;
                    put_u32(buf, e, it.flags);
                    put_u32(buf, e + 4, (data - e) as u32);
                    put_u32(buf, e + 8, it.klen);
                    put_u32(buf, e + 12, (it.kv.len() - it.klen as usize) as u32);
                    buf[data..data + it.kv.len()].copy_from_slice(&it.kv);
                    data += it.kv.len();
                }
            }
            Node::Branch(items) => {
                for (i, it) in items.iter().enumerate() {
                    let e = PAGE_HEADER + i * ELEM_SIZE;
                    put_u32(buf, e, (data - e) as u32);
                    put_u32(buf, e + 4, it.key.len() as u32);
                    let id = match &it.child {
                        Child::Page(id) => *id,
                        // Unreachable by construction: spill replaces every node child by
                        // its page id before encoding the parent.
                        Child::Node(_) => 0,
                    };
                    put_u64(buf, e + 8, id);
                    buf[data..data + it.key.len()].copy_from_slice(&it.key);
                    data += it.key.len();
                }
            }
        }
    }
}

/// Index of the child of a branch that covers `key`: the last separator <= key, or 0.
pub(crate) fn branch_index(items: &[BranchItem], key: &[u8]) -> usize {
    items.partition_point(|i| &*i.key <= key).saturating_sub(1)
}
