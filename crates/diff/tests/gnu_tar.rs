//! Layers written by GNU tar from a real directory tree (GNU and POSIX formats, every PAX
//! sparse version, xattrs, long names) apply back to an identical tree.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use stowage_diff::ApplyOptions;

fn setxattr(path: &Path, key: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {key} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn set_mtime(path: &Path, sec: i64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

/// A source tree with everything a layer can hold.
fn source_tree(src: &Path, root: bool) {
    let d = |p: &str, mode: u32| {
        fs::create_dir_all(src.join(p)).unwrap();
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    let f = |p: &str, mode: u32, data: &[u8]| {
        fs::write(src.join(p), data).unwrap();
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    d("bin", 0o755);
    f("bin/tool", 0o755, b"#!/bin/sh\necho tool\n");
    f("bin/suid", 0o4755, b"suid");
    f("bin/sgid", 0o2711, b"sgid");
    d("tmp", 0o1777);
    d("etc/conf.d", 0o750);
    f("etc/conf.d/a.conf", 0o640, &vec![b'a'; 10_000]);
    symlink("../bin/tool", src.join("etc/tool-link")).unwrap();
    symlink("/nonexistent/absolute", src.join("etc/dangling")).unwrap();
    fs::hard_link(src.join("bin/tool"), src.join("bin/tool-hard")).unwrap();
    let long_dir = format!("deep/{}/{}", "x".repeat(90), "y".repeat(90));
    fs::create_dir_all(src.join(&long_dir)).unwrap();
    f(
        &format!("{long_dir}/{}", "z".repeat(120)),
        0o644,
        b"long path",
    );
    symlink("t".repeat(150), src.join("deep/long-link")).unwrap();
    // Sparse: data at 0 and at 5 MiB in an 8 MiB file.
    let mut sp = File::create(src.join("sparse.img")).unwrap();
    sp.write_all(b"start").unwrap();
    sp.seek(SeekFrom::Start(5 << 20)).unwrap();
    sp.write_all(&[0xab; 70_000]).unwrap();
    sp.set_len(8 << 20).unwrap();
    drop(sp);
    // Many data islands: old GNU headers need extension blocks, and the PAX 1.0 map spans
    // more than one block.
    let mut many = File::create(src.join("many.img")).unwrap();
    for i in 0..60u64 {
        many.seek(SeekFrom::Start(i * (256 << 10) + 1_000_000))
            .unwrap();
        many.write_all(&[i as u8 + 1; 4096]).unwrap();
    }
    many.set_len(20 << 20).unwrap();
    drop(many);
    let fifo = CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    setxattr(&src.join("bin/tool"), "user.origin", b"gnu-tar-test");
    if root {
        setxattr(
            &src.join("bin/suid"),
            "security.capability",
            &[
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
        std::os::unix::fs::lchown(src.join("etc/conf.d"), Some(101), Some(102)).unwrap();
        std::os::unix::fs::lchown(src.join("etc/tool-link"), Some(103), Some(104)).unwrap();
        let dev = CString::new(src.join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        // chown cleared setuid/setgid on nothing here, but make sure modes are as intended.
        fs::set_permissions(src.join("bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    // Fixed times everywhere, directories last so their children do not bump them.
    let mut all: Vec<_> = tree(src).keys().cloned().collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(&src.join(p), T0 as i64 + i as i64);
    }
}

/// Hard link groups as sets of paths (inode numbers differ between trees).
fn link_groups(t: &BTreeMap<String, Node>) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, n) in t {
        if n.kind == "file" {
            by_ino.entry(n.ino).or_default().push(p.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

fn comparable(mut t: BTreeMap<String, Node>, xattrs: bool) -> BTreeMap<String, Node> {
    for n in t.values_mut() {
        n.ino = 0;
        if !xattrs {
            n.xattrs.clear();
        }
    }
    t
}

/// Archives `source_tree` with GNU tar using `format_args`, applies it, and compares.
/// `xattrs` says whether the format carries extended attributes.
fn roundtrip(format_args: &[&str], xattrs: bool) {
    let root = unsafe { libc::geteuid() } == 0;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    source_tree(&src, root);
    let layer = tmp.path().join("layer.tar");
    let out = Command::new("tar")
        .args(format_args)
        .args(["--sparse", "--numeric-owner", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("GNU tar is needed for this test (apt-get install tar): {e}"));
    assert!(
        out.status.success(),
        "tar {format_args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = fs::read(&layer).unwrap();
    let res = apply(&gzip(&data), &dst, &ApplyOptions::default())
        .unwrap_or_else(|e| panic!("applying tar {format_args:?}: {e}"));
    assert_eq!(res.size, data.len() as u64);
    let (want, got) = (tree(&src), tree(&dst));
    assert_eq!(link_groups(&got), link_groups(&want), "{format_args:?}");
    assert_eq!(
        comparable(got, xattrs),
        comparable(want, xattrs),
        "{format_args:?}"
    );
    let blocks = fs::metadata(dst.join("sparse.img")).unwrap().blocks() * 512;
    assert!(
        blocks < 1 << 20,
        "{format_args:?}: sparse file takes {blocks} bytes"
    );
}

#[test]
fn gnu_format_roundtrips() {
    roundtrip(&["--format=gnu"], false);
}

#[test]
fn posix_format_with_xattrs_and_every_sparse_version_roundtrips() {
    for version in ["0.0", "0.1", "1.0"] {
        roundtrip(
            &[
                "--format=posix",
                "--xattrs",
                "--xattrs-include=*",
                &format!("--sparse-version={version}"),
            ],
            true,
        );
    }
}
