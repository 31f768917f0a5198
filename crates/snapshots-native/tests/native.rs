//! Native-specific behaviour: a faithful copy of the parent, mount shapes as containerd 1.6
//! returns them, directory lifecycle.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Labels;
use stowage_snapshots_native::{copy, NativeSnapshotter};
use stowage_snapshots_storage::testsuite::{assert_trees_eq, require_root, tree};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name, value buffer of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
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
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: as above, with a writable buffer.
    let rc = unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (rc >= 0).then(|| {
        buf.truncate(rc as usize);
        buf
    })
}

fn set_times(p: &Path, sec: i64, nsec: i64) {
    let t = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec + 1,
            tv_nsec: nsec + 1,
        },
    ];
    // SAFETY: NUL-terminated path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

/// A VFS_CAP_REVISION_2 capability set granting CAP_NET_BIND_SERVICE (bit 10), permitted
/// and effective.
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// Entries given distinct times, children before their parents.
const TIMED: &[&str] = &[
    "dir/sub/file",
    "dir/sub",
    "dir/link",
    "dir",
    "capped",
    "sparse",
    "fifo",
    "sock",
    "null",
    "",
];

fn build_source(src: &Path) {
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/sub/file"), b"content").unwrap();
    fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src.join("setuid"), b"#!").unwrap();
    std::os::unix::fs::lchown(src.join("setuid"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("setgid"), b"g").unwrap();
    fs::set_permissions(src.join("setgid"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::write(src.join("capped"), b"bin").unwrap();
    std::os::unix::fs::lchown(src.join("capped"), Some(5), Some(6)).unwrap();
    set_xattr(&src.join("capped"), "security.capability", &capability());
    set_xattr(&src.join("capped"), "user.note", b"hello");
    set_xattr(&src.join("dir"), "trusted.overlay.opaque", b"y");
    fs::write(src.join("linked"), b"shared").unwrap();
    fs::hard_link(src.join("linked"), src.join("dir/sub/linked2")).unwrap();
    std::os::unix::fs::symlink("../linked", src.join("dir/link")).unwrap();
    std::os::unix::fs::lchown(src.join("dir/link"), Some(7), Some(8)).unwrap();
    // SAFETY: NUL-terminated paths.
    unsafe {
        assert_eq!(
            libc::mknod(
                c(&src.join("null")).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3)
            ),
            0
        );
        assert_eq!(
            libc::mknod(
                c(&src.join("loop")).as_ptr(),
                libc::S_IFBLK | 0o660,
                libc::makedev(7, 0)
            ),
            0
        );
        assert_eq!(libc::mkfifo(c(&src.join("fifo")).as_ptr(), 0o640), 0);
        assert_eq!(
            libc::mknod(c(&src.join("whiteout")).as_ptr(), libc::S_IFCHR, 0),
            0
        );
    }
    drop(std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap());
    // Sparse: 64 MiB with 4 KiB of data in the middle and a hole at the end.
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[9u8; 4096], 32 << 20).unwrap();
    drop(f);
    // Sparse at the head and ending in data, so no length needs setting after the copy;
    // small enough for the small-file path were it not sparse.
    let f = fs::File::create(src.join("sparse-head")).unwrap();
    f.write_all_at(&[7u8; 4096], 60 << 10).unwrap();
    drop(f);
    // Dense files on either side of the small-file size, and an empty one.
    let pattern = |n: usize| (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    fs::write(src.join("dense-small"), pattern(64 << 10)).unwrap();
    fs::write(src.join("dense-big"), pattern((1 << 20) + 123)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    // Times last, children before parents.
    for (i, p) in TIMED.iter().enumerate() {
        set_times(&src.join(p), 1_000_000_000 + i as i64 * 1000, 123_456_789);
    }
}

#[test]
fn copy_is_faithful() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let dst = d.path().join("dst");
    build_source(&src);
    fs::create_dir(&dst).unwrap();
    copy::copy_dir(&src, &dst).unwrap();

    // Times as set on the source (reading the source may have moved its atimes since).
    // Directory atimes are moved by the copy reading them, so only their mtimes count.
    for (i, p) in TIMED.iter().enumerate() {
        let b = fs::symlink_metadata(dst.join(p)).unwrap();
        let sec = 1_000_000_000 + i as i64 * 1000;
        assert_eq!(
            (b.mtime(), b.mtime_nsec()),
            (sec + 1, 123_456_790),
            "mtime of {p:?}"
        );
        if !b.is_dir() {
            assert_eq!(
                (b.atime(), b.atime_nsec()),
                (sec, 123_456_789),
                "atime of {p:?}"
            );
        }
    }
    // Type, mode (with special bits), owner, content, link target, device number, nlink.
    assert_trees_eq(&tree(&src), &tree(&dst), "after copy");
    let m = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap();
    assert!(m("sock").file_type().is_socket());
    assert_eq!(
        m("linked").ino(),
        m("dir/sub/linked2").ino(),
        "hardlinks stay hardlinks"
    );
    assert_ne!(
        m("linked").ino(),
        fs::metadata(src.join("linked")).unwrap().ino()
    );
    assert_eq!(
        m("setuid").mode() & 0o7777,
        0o4755,
        "setuid survives the chown"
    );
    assert_eq!((m("setuid").uid(), m("setuid").gid()), (1000, 1001));
    assert_eq!((m("dir/link").uid(), m("dir/link").gid()), (7, 8));
    assert_eq!(m("null").rdev(), libc::makedev(1, 3));
    assert_eq!(m("loop").rdev(), libc::makedev(7, 0));
    assert_eq!(
        get_xattr(&dst.join("capped"), "security.capability"),
        Some(capability())
    );
    assert_eq!(
        get_xattr(&dst.join("capped"), "user.note"),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        get_xattr(&dst.join("dir"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    // Holes stay holes: 64 MiB apparent, a few KiB allocated.
    assert_eq!(m("sparse").len(), 64 << 20);
    assert!(
        m("sparse").blocks() * 512 < 1 << 20,
        "{} blocks",
        m("sparse").blocks()
    );
    assert_eq!(
        fs::read(dst.join("sparse")).unwrap(),
        fs::read(src.join("sparse")).unwrap()
    );
    assert_eq!(m("sparse-head").len(), 64 << 10);
    assert!(
        m("sparse-head").blocks() * 512 < 64 << 10,
        "leading hole of sparse-head filled: {} blocks",
        m("sparse-head").blocks()
    );
    for p in ["sparse-head", "dense-small", "dense-big", "empty"] {
        assert_eq!(
            fs::read(dst.join(p)).unwrap(),
            fs::read(src.join(p)).unwrap(),
            "content of {p}"
        );
    }
}

#[test]
fn prepare_copies_the_parent_and_mounts_like_containerd() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("native");
    let sn = NativeSnapshotter::new(&root).unwrap();
    let snaps = root.join("snapshots");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let m = sn.prepare("a", "", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("1")), ["rbind", "rw"])]
    );
    build_source(&snaps.join("1"));
    sn.commit("A", "a", Labels::new()).unwrap();

    let m = sn.view("v", "A", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("1")), ["rbind", "ro"])]
    );
    assert!(
        !snaps.join("2").exists(),
        "a view of a parent has no directory"
    );
    let m = sn.view("v0", "", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("3")), ["rbind", "ro"])]
    );

    let m = sn.prepare("b", "A", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("4")), ["rbind", "rw"])]
    );
    assert_trees_eq(
        &tree(&snaps.join("1")),
        &tree(&snaps.join("4")),
        "prepared copy",
    );
    assert_eq!(
        get_xattr(&snaps.join("4/capped"), "security.capability"),
        Some(capability())
    );
    // No temporary directory is left behind.
    let mut names: Vec<String> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1", "3", "4"]);

    sn.remove("b").unwrap();
    assert!(!snaps.join("4").exists());
    fs::create_dir(snaps.join("rm-99")).unwrap();
    fs::create_dir(snaps.join("new-abc")).unwrap();
    sn.cleanup().unwrap();
    let mut names: Vec<String> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1", "3"]);
}

#[test]
fn containerds_go_native_snapshotter_agrees_both_ways() {
    stowage_snapshots_storage::testsuite::gocheck::check_both_directions("native", &|root| {
        Ok(Box::new(NativeSnapshotter::new(root)?) as Box<dyn Snapshotter>)
    });
}

#[test]
fn a_root_in_use_is_not_opened_twice() {
    let d = tempfile::tempdir().unwrap();
    let first = NativeSnapshotter::new(d.path().join("root")).unwrap();
    // containerd's bbolt would wait forever for the lock; here the second open fails fast.
    let err = NativeSnapshotter::new(d.path().join("root")).unwrap_err();
    assert_eq!(
        err.kind(),
        stowage_core_types::ErrorKind::Unavailable,
        "{err}"
    );
    drop(first);
    NativeSnapshotter::new(d.path().join("root")).unwrap();
}

#[test]
fn a_directory_left_by_an_interrupted_create_does_not_block_its_id() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("native");
    let sn = NativeSnapshotter::new(&root).unwrap();
    sn.prepare("a", "", Labels::new()).unwrap();
    fs::create_dir_all(root.join("snapshots/2/junk")).unwrap();
    let m = sn.prepare("b", "", Labels::new()).unwrap();
    assert_eq!(m[0].source, root.join("snapshots/2").to_str().unwrap());
    assert!(!root.join("snapshots/2/junk").exists());
}
