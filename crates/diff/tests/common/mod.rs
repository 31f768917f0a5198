//! Deterministic layer building and tree inspection shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use stowage_diff::{apply_layer, ApplyOptions, ApplyResult, LayerEncoding};

/// Fixed time for entries that do not set one (2023-11-14).
pub const T0: u64 = 1_700_000_000;

/// Builds a tar layer entry by entry with the `tar` crate, every header field chosen by the
/// test (nothing from the host leaks in).
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(T0);
    h.set_size(0);
    h
}

/// Writes `name` into the raw header name field, bypassing the `tar` crate's refusal of `..`
/// and absolute paths (the malicious corpus needs exactly those).
fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    assert!(name.len() <= field.len(), "raw name too long");
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

fn raw_link(h: &mut tar::Header, link: &[u8]) {
    let field = &mut h.as_old_mut().linkname;
    assert!(link.len() <= field.len(), "raw link too long");
    field.fill(0);
    field[..link.len()].copy_from_slice(link);
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends an entry with a raw name (no validation), a prepared header and data.
    pub fn raw(
        &mut self,
        mut h: tar::Header,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        raw_name(&mut h, name.as_bytes());
        if let Some(l) = link {
            raw_link(&mut h, l.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = header(tar::EntryType::Directory, mode);
        self.raw(h, name, None, &[])
    }

    pub fn dir_at(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Self {
        let mut h = header(tar::EntryType::Directory, mode);
        h.set_mtime(mtime);
        self.raw(h, name, None, &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = header(tar::EntryType::Regular, mode);
        self.raw(h, name, None, data)
    }

    /// A regular file with full control of the header (owner, mtime, ...).
    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        f: impl FnOnce(&mut tar::Header),
    ) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, 0o644);
        f(&mut h);
        self.raw(h, name, None, data)
    }

    /// A file whose name may be longer than the header field (GNU long name extension).
    pub fn long_file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, 0o644);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    /// A symlink whose target may be long (GNU long link extension).
    pub fn long_symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Symlink, 0o777);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    /// PAX records applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = header(tar::EntryType::Symlink, 0o777);
        self.raw(h, name, Some(target), &[])
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = header(tar::EntryType::Link, 0o644);
        self.raw(h, name, Some(target), &[])
    }

    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, 0o644, &[])
    }

    pub fn device(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = header(kind, mode);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, name, None, &[])
    }

    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = header(tar::EntryType::Fifo, mode);
        self.raw(h, name, None, &[])
    }

    /// An old-GNU sparse file (`S`): `segments` are (offset, data) pairs, `real_size` the
    /// file length. At most four segments (no extension blocks).
    pub fn gnu_sparse(
        &mut self,
        name: &str,
        real_size: u64,
        segments: &[(u64, &[u8])],
    ) -> &mut Self {
        assert!(segments.len() <= 4);
        let mut h = header(tar::EntryType::GNUSparse, 0o644);
        let mut data = Vec::new();
        {
            let gnu = h.as_gnu_mut().unwrap();
            for (slot, (off, bytes)) in gnu.sparse.iter_mut().zip(segments) {
                slot.set_offset(*off);
                slot.set_length(bytes.len() as u64);
                data.extend_from_slice(bytes);
            }
            gnu.set_real_size(real_size);
            gnu.set_is_extended(false);
        }
        self.raw(h, name, None, &data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn apply(
    layer: &[u8],
    root: &Path,
    opts: &ApplyOptions,
) -> stowage_core_types::Result<ApplyResult> {
    apply_layer(layer, LayerEncoding::Detect, root, opts)
}

/// Tests that need root fail unless the caller opted out with STOWAGE_SKIP_EXTERNAL=1.
/// Returns false when the test should be skipped.
pub fn need_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping {what}: needs root (STOWAGE_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!("{what} needs root (run as root, or set STOWAGE_SKIP_EXTERNAL=1 to skip)");
}

/// One inode as seen by `lstat`, for comparing trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Regular files: the contents' digest (short to print), and the contents themselves
    /// through [`Node::bytes`].
    pub content: Option<String>,
    pub link: Option<String>,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer valid for its length, valid C string.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return out;
    }
    for key in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
    {
        let ck = std::ffi::CString::new(key).unwrap();
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), ck.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.insert(String::from_utf8_lossy(key).into_owned(), val);
        }
    }
    out
}

pub fn node(path: &Path) -> Node {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    };
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_file() { md.len() } else { 0 },
        content: ft
            .is_file()
            .then(|| stowage_digest_identity::digest_of(&fs::read(path).unwrap()).to_string()),
        link: ft
            .is_symlink()
            .then(|| fs::read_link(path).unwrap().to_string_lossy().into_owned()),
        rdev: md.rdev(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ino: md.ino(),
        xattrs: xattrs_of(path),
    }
}

/// Every path under `root` (relative, sorted) with its node.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let n = node(&p);
            let is_dir = n.kind == "dir";
            out.insert(rel, n);
            if is_dir {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The digest string [`Node::content`] holds for `data`.
pub fn hash(data: &[u8]) -> Option<String> {
    Some(stowage_digest_identity::digest_of(data).to_string())
}

/// The tree without what legitimately differs between two extractions of the same layer:
/// inode numbers, and the times of directories created implicitly (they get the current time;
/// every time a test layer sets is far older).
pub fn tree_comparable(root: &Path) -> BTreeMap<String, Node> {
    let mut t = tree(root);
    for n in t.values_mut() {
        n.ino = 0;
        if n.kind == "dir" && n.mtime.0 > T0 as i64 + 10_000_000 {
            n.mtime = (0, 0);
        }
    }
    t
}

/// Like [`tree_comparable`], also dropping the creation times of anything else the layer
/// does not date (overlay whiteout devices).
pub fn tree_stable(root: &Path) -> BTreeMap<String, Node> {
    let mut t = tree_comparable(root);
    for n in t.values_mut() {
        if n.mtime.0 > T0 as i64 + 10_000_000 {
            n.mtime = (0, 0);
        }
    }
    t
}

pub fn names(root: &Path) -> Vec<String> {
    tree(root).keys().cloned().collect()
}
