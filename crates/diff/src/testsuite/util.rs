//! Helpers of the differ conformance cases: building layers, filling snapshots through their
//! mounts, and describing trees so two can be compared.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use stowage_core_types::content::{read_blob, write_blob, Store};
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Labels};
use stowage_digest_identity::{Digest, Digester};
use stowage_snapshots_storage::mount::with_temp_mount;

use crate::compare::fsmeta;

/// The modification time every entry of a built layer gets.
pub const LAYER_TIME: u64 = 1_600_000_000;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    let mut d = Digester::sha256();
    d.update(data);
    d.finish()
}

/// One entry of a layer to build.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A directory with its mode.
    Dir(&'a str, u32),
    /// A regular file with its mode and contents.
    File(&'a str, u32, &'a [u8]),
    /// A symlink and its target.
    Symlink(&'a str, &'a str),
}

/// A plain tar layer of `entries`, in order, owned by 0:0 with time [`LAYER_TIME`].
pub fn tar_layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(LAYER_TIME);
        match e {
            Entry::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty())
                    .expect("tar dir");
            }
            Entry::File(name, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).expect("tar file");
            }
            Entry::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, name, target).expect("tar symlink");
            }
        }
    }
    b.into_inner().expect("tar end")
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `data` zstd-compressed.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// Decompresses a gzip, zstd or plain blob (detected from its magic bytes).
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip");
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("unzstd");
    } else {
        out = blob.to_vec();
    }
    out
}

/// Stores `data` in `content` as a blob of `media_type` and returns its descriptor.
pub fn put_blob(content: &dyn Store, media_type: &str, data: &[u8]) -> Descriptor {
    let desc = Descriptor::new(media_type, sha256(data), data.len() as u64);
    write_blob(
        content,
        &format!("suite-{}", desc.digest.encoded()),
        &mut &data[..],
        &desc,
        Labels::new(),
    )
    .expect("writing a layer blob into the content store");
    desc
}

/// Reads the whole blob `desc` names.
pub fn get_blob(content: &dyn Store, desc: &Descriptor) -> Vec<u8> {
    read_blob(content, desc).expect("reading a blob back")
}

/// Runs `f` on the filesystem `mounts` give, mounted read-write.
pub fn fill(mounts: &[Mount], f: impl FnOnce(&Path)) {
    with_temp_mount(mounts, |root| {
        f(root);
        Ok(())
    })
    .expect("mounting a snapshot to fill it");
}

/// Sets the extended attribute `name` on `path` (not following a symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("xattr name");
    // SAFETY: both strings are NUL-terminated and alive for the call; `value` is a readable
    // buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Writes `data` to `path` with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates the symlink `path` -> `target`.
pub fn make_symlink(target: &str, path: &Path) {
    symlink(target, path).expect("symlink");
}

/// A description of a tree: for each path below the root, its type, mode, owner, whole-second
/// modification time, layer xattrs and contents (a digest) or link target.
pub type Tree = BTreeMap<String, String>;

fn describe(root: &Path, rel: &str, out: &mut Tree) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let crel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = root.join(&crel);
        let m = fs::symlink_metadata(&path).expect("lstat");
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                fs::read_link(&path).expect("readlink").display()
            )
        } else if ft.is_file() {
            format!("file {}", sha256(&fs::read(&path).expect("read file")))
        } else {
            format!("other rdev={}", m.rdev())
        };
        let xattrs: Vec<String> = fsmeta::layer_xattrs(&path)
            .expect("xattrs")
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect();
        // Symlink times are not compared: not every path (a copying snapshotter, for one)
        // keeps them.
        let mtime = if ft.is_symlink() { 0 } else { m.mtime() };
        out.insert(
            crel.clone(),
            format!(
                "{what} mode={:o} owner={}:{} mtime={mtime} xattrs={xattrs:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
        if ft.is_dir() {
            describe(root, &crel, out);
        }
    }
}

/// Describes the tree at `root`.
pub fn tree_at(root: &Path) -> Tree {
    let mut out = Tree::new();
    describe(root, "", &mut out);
    out
}

/// Describes the filesystem `mounts` give, mounted read-only.
pub fn tree_of(mounts: &[Mount]) -> Tree {
    let ro: Vec<Mount> = mounts.iter().map(Mount::to_readonly).collect();
    with_temp_mount(&ro, |root| Ok(tree_at(root))).expect("mounting a snapshot to read it")
}

/// Describes active snapshot `key` of `sn`.
pub fn tree_of_key(sn: &dyn Snapshotter, key: &str) -> Tree {
    tree_of(&sn.mounts(key).expect("mounts of a snapshot"))
}

/// The paths of `tree`, in order.
pub fn paths(tree: &Tree) -> Vec<&str> {
    tree.keys().map(String::as_str).collect()
}
