//! Byte-level layout of bbolt pages (see FORMAT.md) and bounds-checked views over them.

use crate::error::{Error, Result};

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const ELEM_SIZE: usize = 16;
pub(crate) const BUCKET_HEADER: usize = 16;
pub(crate) const META_SIZE: usize = 64;
/// Bytes of the meta covered by its checksum: everything before the checksum field.
const META_SUMMED: usize = 56;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;

/// Leaf element flag marking the value as a nested bucket.
pub(crate) const BUCKET_FLAG: u32 = 0x01;
/// `meta.freelist` value of a file written without a synced freelist.
pub(crate) const NO_FREELIST: u64 = u64::MAX;

/// Largest key Go bbolt accepts.
pub const MAX_KEY_SIZE: usize = 32768;
/// Largest value Go bbolt accepts.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// Deepest B+tree we follow; a real tree of 2^64 pages is far shallower, so anything deeper
/// is a cycle in the page graph.
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// FNV-1a, 64 bit: the meta page checksum.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Writes a page header.
pub(crate) fn write_page_header(b: &mut [u8], id: u64, flags: u16, count: u16, overflow: u32) {
    put_u64(b, 0, id);
    put_u16(b, 8, flags);
    put_u16(b, 10, count);
    put_u32(b, 12, overflow);
}

/// The meta record stored (twice) at the start of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// Encodes the 64-byte meta record including its checksum.
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        put_u32(&mut b, 0, MAGIC);
        put_u32(&mut b, 4, VERSION);
        put_u32(&mut b, 8, self.page_size);
        put_u32(&mut b, 12, self.flags);
        put_u64(&mut b, 16, self.root);
        put_u64(&mut b, 24, self.sequence);
        put_u64(&mut b, 32, self.freelist);
        put_u64(&mut b, 40, self.pgid);
        put_u64(&mut b, 48, self.txid);
        let sum = fnv1a64(&b[..META_SUMMED]);
        put_u64(&mut b, 56, sum);
        b
    }

    /// Decodes and validates a meta record (the 64 bytes after a meta page's header).
    pub fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_SIZE {
            return Err(format!(
                "meta record is {} bytes, expected {META_SIZE}",
                b.len()
            ));
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(format!("magic is {magic:#010x}, expected {MAGIC:#010x}"));
        }
        let version = u32_at(b, 4);
        if version != VERSION {
            return Err(format!("version is {version}, expected {VERSION}"));
        }
        let stored = u64_at(b, 56);
        let computed = fnv1a64(&b[..META_SUMMED]);
        if stored != computed {
            return Err(format!(
                "checksum is {stored:#018x}, computed {computed:#018x}"
            ));
        }
        Ok(Meta {
            page_size: u32_at(b, 8),
            flags: u32_at(b, 12),
            root: u64_at(b, 16),
            sequence: u64_at(b, 24),
            freelist: u64_at(b, 32),
            pgid: u64_at(b, 40),
            txid: u64_at(b, 48),
        })
    }

    /// Builds the full meta page (header + record, rest zero) for this meta's txid slot.
    pub fn page(&self, page_size: usize) -> Vec<u8> {
        let mut buf = vec![0u8; page_size];
        write_page_header(&mut buf, self.txid % 2, META_PAGE, 0, 0);
        buf[PAGE_HEADER..PAGE_HEADER + META_SIZE].copy_from_slice(&self.encode());
        buf
    }
}

/// The mapped file seen by one transaction: page `id` lives at `id * page_size`, and only
/// pages below `high` (the snapshot's high-water mark) may be referenced.
#[derive(Clone, Copy)]
pub(crate) struct Pages<'a> {
    pub data: &'a [u8],
    pub page_size: usize,
    pub high: u64,
}

impl<'a> Pages<'a> {
    /// The page `id`, including its overflow pages, after checking it lies inside the snapshot.
    pub fn page(&self, id: u64) -> Result<PageRef<'a>> {
        if id < 2 || id >= self.high {
            return Err(Error::corrupt(format!(
                "page id {id} is out of range (valid data pages are 2..{})",
                self.high
            )));
        }
        let ps = self.page_size as u64;
        let start = id
            .checked_mul(ps)
            .filter(|s| s + PAGE_HEADER as u64 <= self.data.len() as u64)
            .ok_or_else(|| Error::corrupt(format!("page {id} lies beyond the end of the file")))?
            as usize;
        let hdr = &self.data[start..start + PAGE_HEADER];
        let stored = u64_at(hdr, 0);
        if stored != id {
            return Err(Error::corrupt(format!(
                "page {id} has id {stored} in its header"
            )));
        }
        let overflow = u64::from(u32_at(hdr, 12));
        if id + overflow >= self.high {
            return Err(Error::corrupt(format!(
                "page {id} with {overflow} overflow pages runs past the high-water mark {}",
                self.high
            )));
        }
        let len = ((overflow + 1) * ps) as usize;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| Error::corrupt(format!("page {id} runs past the end of the file")))?;
        PageRef::parse(&self.data[start..end], id)
    }
}

/// A bounds-checked view of one branch, leaf or freelist page (or an inline bucket's page).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageRef<'a> {
    pub data: &'a [u8],
    pub id: u64,
    pub flags: u16,
    pub count: usize,
}

impl<'a> PageRef<'a> {
    pub fn parse(data: &'a [u8], id: u64) -> Result<PageRef<'a>> {
        if data.len() < PAGE_HEADER {
            return Err(Error::corrupt(format!(
                "page {id} is {} bytes, shorter than a page header",
                data.len()
            )));
        }
        let flags = u16_at(data, 8);
        let count = usize::from(u16_at(data, 10));
        let p = PageRef {
            data,
            id,
            flags,
            count,
        };
        if flags & (BRANCH_PAGE | LEAF_PAGE) != 0 && PAGE_HEADER + count * ELEM_SIZE > data.len() {
            return Err(Error::corrupt(format!(
                "page {id}: {count} elements do not fit in {} bytes",
                data.len()
            )));
        }
        Ok(p)
    }

    pub fn overflow(&self) -> u64 {
        u64::from(u32_at(self.data, 12))
    }

    pub fn is_leaf(&self) -> bool {
        self.flags & LEAF_PAGE != 0
    }

    pub fn is_branch(&self) -> bool {
        self.flags & BRANCH_PAGE != 0
    }

    /// Checks the page is a branch or leaf page, as a tree page must be.
    pub fn expect_tree(self) -> Result<Self> {
        if self.is_leaf() == self.is_branch() {
            return Err(Error::corrupt(format!(
                "page {} has flags {:#06x}, expected a branch or leaf page",
                self.id, self.flags
            )));
        }
        Ok(self)
    }

    fn slice(&self, elem: usize, rel: u64, len: u64, what: &str) -> Result<&'a [u8]> {
        let start = (elem as u64).checked_add(rel);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.data.len() as u64 => {
                Ok(&self.data[s as usize..e as usize])
            }
            _ => Err(Error::corrupt(format!(
                "page {}: {what} of element at offset {elem} runs past the page ({} bytes)",
                self.id,
                self.data.len()
            ))),
        }
    }

    /// Leaf element `i`: (flags, key, value).
    pub fn leaf(&self, i: usize) -> Result<(u32, &'a [u8], &'a [u8])> {
        let e = PAGE_HEADER + i * ELEM_SIZE;
        let flags = u32_at(self.data, e);
        let pos = u64::from(u32_at(self.data, e + 4));
        let ksize = u64::from(u32_at(self.data, e + 8));
        let vsize = u64::from(u32_at(self.data, e + 12));
        let key = self.slice(e, pos, ksize, "key")?;
        let value = self.slice(e, pos + ksize, vsize, "value")?;
        Ok((flags, key, value))
    }

    /// Branch element `i`: (key, child page id).
    pub fn branch(&self, i: usize) -> Result<(&'a [u8], u64)> {
        let e = PAGE_HEADER + i * ELEM_SIZE;
        let pos = u64::from(u32_at(self.data, e));
        let ksize = u64::from(u32_at(self.data, e + 4));
        let child = u64_at(self.data, e + 8);
        Ok((self.slice(e, pos, ksize, "key")?, child))
    }

    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        if self.is_leaf() {
            Ok(self.leaf(i)?.1)
        } else {
            Ok(self.branch(i)?.0)
        }
    }

    /// Index of the first element whose key is >= `key` (may be `count`), and whether it
    /// is an exact match.
    pub fn search(&self, key: &[u8]) -> Result<(usize, bool)> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid)? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let exact = lo < self.count && self.key(lo)? == key;
        Ok((lo, exact))
    }

    /// The ids stored in a freelist page.
    pub fn freelist_ids(&self) -> Result<Vec<u64>> {
        if self.flags & FREELIST_PAGE == 0 {
            return Err(Error::corrupt(format!(
                "page {} has flags {:#06x}, expected a freelist page",
                self.id, self.flags
            )));
        }
        let (start, n) = if self.count == 0xFFFF {
            if self.data.len() < PAGE_HEADER + 8 {
                return Err(Error::corrupt("freelist page too short for its count"));
            }
            (PAGE_HEADER + 8, u64_at(self.data, PAGE_HEADER))
        } else {
            (PAGE_HEADER, self.count as u64)
        };
        let need = n.checked_mul(8).and_then(|b| b.checked_add(start as u64));
        if need.is_none_or(|need| need > self.data.len() as u64) {
            return Err(Error::corrupt(format!(
                "freelist page {} claims {n} ids, more than its {} bytes hold",
                self.id,
                self.data.len()
            )));
        }
        Ok((0..n as usize)
            .map(|i| u64_at(self.data, start + i * 8))
            .collect())
    }
}

/// Encodes a freelist page holding `ids` into `buf` (whole pages); more than 0xFFFE ids
/// put the real count in the first slot.
pub(crate) fn encode_freelist(buf: &mut [u8], id: u64, overflow: u32, ids: &[u64]) {
    let big = ids.len() >= 0xFFFF;
    let count = if big { 0xFFFF } else { ids.len() as u16 };
    write_page_header(buf, id, FREELIST_PAGE, count, overflow);
    let mut off = PAGE_HEADER;
    if big {
        put_u64(buf, off, ids.len() as u64);
        off += 8;
    }
    for &pid in ids {
        put_u64(buf, off, pid);
        off += 8;
    }
}

/// A bucket value: the header (root page, sequence) and, for an inline bucket, its page.
pub(crate) struct BucketValue<'a> {
    pub root: u64,
    pub sequence: u64,
    pub inline: &'a [u8],
}

impl<'a> BucketValue<'a> {
    pub fn parse(v: &'a [u8], name: &[u8]) -> Result<BucketValue<'a>> {
        if v.len() < BUCKET_HEADER {
            return Err(Error::corrupt(format!(
                "bucket {} value is {} bytes, shorter than a bucket header",
                crate::error::show_key(name),
                v.len()
            )));
        }
        let root = u64_at(v, 0);
        let inline = &v[BUCKET_HEADER..];
        if root == 0 && inline.len() < PAGE_HEADER {
            return Err(Error::corrupt(format!(
                "inline bucket {} has no page",
                crate::error::show_key(name)
            )));
        }
        Ok(BucketValue {
            root,
            sequence: u64_at(v, 8),
            inline,
        })
    }

    pub fn inline_page(&self) -> Result<PageRef<'a>> {
        let p = PageRef::parse(self.inline, 0)?;
        if !p.is_leaf() {
            return Err(Error::corrupt(format!(
                "inline bucket page has flags {:#06x}, expected a leaf",
                p.flags
            )));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_roundtrip_and_checksum() {
        let m = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            sequence: 9,
            freelist: 2,
            pgid: 4,
            txid: 7,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        assert_eq!(u64_at(&b, 56), fnv1a64(&b[..56]));
        b[20] ^= 1;
        assert!(Meta::decode(&b).unwrap_err().contains("checksum"));
    }

    #[test]
    fn fnv1a64_known_values() {
        // Reference values of the FNV-1a 64 specification.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn freelist_roundtrip_small_and_large() {
        for n in [0usize, 1, 100, 0xFFFE, 0xFFFF, 70_000] {
            let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 2).collect();
            let slots = if n >= 0xFFFF { n + 1 } else { n };
            let pages = (PAGE_HEADER + 8 * slots) / 4096 + 1;
            let mut buf = vec![0u8; pages * 4096];
            encode_freelist(&mut buf, 5, (pages - 1) as u32, &ids);
            let p = PageRef::parse(&buf, 5).unwrap();
            assert_eq!(p.overflow(), pages as u64 - 1);
            assert_eq!(p.count, n.min(0xFFFF));
            assert_eq!(p.freelist_ids().unwrap(), ids);
        }
    }

    #[test]
    fn element_bounds_are_checked() {
        let mut buf = vec![0u8; 64];
        write_page_header(&mut buf, 0, LEAF_PAGE, 1, 0);
        put_u32(&mut buf, PAGE_HEADER + 4, 16);
        put_u32(&mut buf, PAGE_HEADER + 8, 1000);
        let p = PageRef::parse(&buf, 0).unwrap();
        assert!(p
            .leaf(0)
            .unwrap_err()
            .to_string()
            .contains("runs past the page"));
        write_page_header(&mut buf, 0, LEAF_PAGE, 100, 0);
        assert!(PageRef::parse(&buf, 0).is_err());
    }
}
