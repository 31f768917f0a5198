//! A full description of a directory tree, for comparing two unpacked images: every path with
//! its type, mode, owner, size, content hash, symlink target, xattrs, device number, hardlink
//! group and (for regular files) mtime.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::Digest as _;

/// What is compared for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// sha256 of a regular file's content.
    pub content: Option<String>,
    pub link: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Major and minor of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Seconds and nanoseconds of a regular file's mtime.
    pub mtime: Option<(i64, i64)>,
    /// The other paths sharing this inode (non-directories).
    pub hardlinks: Vec<String>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Every xattr of `path` (not following symlinks) that can be read.
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let p = cstr(path);
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: p is NUL-terminated; names is writable for names.len() bytes.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated; buf is writable for buf.len() bytes.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if len < 0 {
            continue;
        }
        buf.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), buf);
    }
    out
}

fn hash_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Describes every path under `root` (`.` is the root itself), keyed by relative path.
pub fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), ".".to_string())];
    while let Some((path, rel)) = stack.pop() {
        let md =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
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
        } else if ft.is_socket() {
            "socket"
        } else {
            "unknown"
        };
        let rdev = (ft.is_char_device() || ft.is_block_device()).then(|| {
            let r = md.rdev();
            (libc::major(r), libc::minor(r))
        });
        let node = Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: ft.is_file().then_some(md.len()),
            content: ft.is_file().then(|| hash_file(&path)),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(&path).unwrap().to_string_lossy().into_owned()),
            xattrs: xattrs(&path),
            rdev,
            mtime: ft.is_file().then(|| (md.mtime(), md.mtime_nsec())),
            hardlinks: Vec::new(),
        };
        if !ft.is_dir() {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let child_rel = if rel == "." {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child_rel));
            }
        }
        out.insert(rel, node);
    }
    for paths in inodes.values().filter(|p| p.len() > 1) {
        for p in paths {
            let mut others: Vec<String> = paths.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            out.get_mut(p).unwrap().hardlinks = others;
        }
    }
    out
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v).escape_debug()))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Every difference between two descriptions, one line each, naming the path and field.
pub fn differences(
    a_name: &str,
    a: &BTreeMap<String, Node>,
    b_name: &str,
    b: &BTreeMap<String, Node>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, na) in a {
        let Some(nb) = b.get(path) else {
            out.push(format!("{path}: only in {a_name} ({})", na.kind));
            continue;
        };
        let mut field = |name: &str, va: String, vb: String| {
            if va != vb {
                out.push(format!("{path}: {name} {a_name}={va} {b_name}={vb}"));
            }
        };
        field("type", na.kind.into(), nb.kind.into());
        field("mode", format!("{:o}", na.mode), format!("{:o}", nb.mode));
        field("uid", na.uid.to_string(), nb.uid.to_string());
        field("gid", na.gid.to_string(), nb.gid.to_string());
        field("size", format!("{:?}", na.size), format!("{:?}", nb.size));
        field(
            "content",
            format!("{:?}", na.content),
            format!("{:?}", nb.content),
        );
        field(
            "symlink",
            format!("{:?}", na.link),
            format!("{:?}", nb.link),
        );
        field("xattrs", show_xattrs(&na.xattrs), show_xattrs(&nb.xattrs));
        field("rdev", format!("{:?}", na.rdev), format!("{:?}", nb.rdev));
        field(
            "mtime",
            format!("{:?}", na.mtime),
            format!("{:?}", nb.mtime),
        );
        field(
            "hardlinks",
            format!("{:?}", na.hardlinks),
            format!("{:?}", nb.hardlinks),
        );
    }
    for (path, nb) in b {
        if !a.contains_key(path) {
            out.push(format!("{path}: only in {b_name} ({})", nb.kind));
        }
    }
    out
}
