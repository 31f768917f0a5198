//! The compare half: diffs of two trees (plain, overlay upper directory, real snapshots) must
//! apply back onto the lower tree as the upper tree, entry for entry.
//!
//! Needs root (ownership, device nodes, overlay mounts, `security.capability`); without it the
//! tests fail unless `STOWAGE_SKIP_EXTERNAL=1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use stowage_content::LocalStore;
use stowage_core_types::content::{
    IngestManager, Ingester, Manager, Provider, SectionReader, WriterOptions,
};
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{ErrorKind, Labels};
use stowage_diff::{
    apply_layer, compare, write_diff, write_overlay_diff, ApplyOptions, CompareOptions,
    LayerEncoding, UNCOMPRESSED_LABEL,
};
use stowage_snapshots_native::NativeSnapshotter;
use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_snapshots_storage::mount::{with_temp_mount, TempMount};
use stowage_tests::containerd::{require, Containerd};

const T0: i64 = 1_700_000_000;

/// Held by every test: the mount checks read this process's mounts, which a test running
/// alongside would change.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The temporary mounts this process holds.
fn our_mounts() -> Vec<String> {
    let tag = format!("stowage-mount-{}-", std::process::id());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

/// `true` when the test can run; `false` (skip) only with STOWAGE_SKIP_EXTERNAL=1.
fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: needs root");
        return false;
    }
    panic!(
        "this test needs root (chown, mknod, overlay mounts); set STOWAGE_SKIP_EXTERNAL=1 to skip"
    );
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn list_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cpath(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: valid C string and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let s = String::from_utf8_lossy(name).into_owned();
        if s.starts_with("trusted.") || s.starts_with("user.overlay.") || s == "security.selinux" {
            continue;
        }
        let k = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        // SAFETY: valid C strings and a buffer of the given length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0, "getxattr {s} on {}", p.display());
        v.truncate(m as usize);
        out.insert(s, v);
    }
    out
}

fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(p: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(cpath(p).as_ptr(), kind | 0o644, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    chmod(p, mode);
}

/// A `security.capability` value (v2, effective) granting CAP_NET_RAW.
fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

const LONG: &str = "a-directory-name-long-enough-that-the-whole-path-goes-past-one-hundred-bytes";

/// The lower tree: every kind of entry, times fixed to whole seconds.
fn build_lower(root: &Path) {
    for d in [
        "etc",
        "bin",
        "usr/share/doc/pkg",
        "var/tmp",
        "data",
        "dev",
        "x",
        "y/inner",
        "g",
        "opq/sub",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
        0o644,
    );
    write(&root.join("etc/group"), b"root:x:0:\n", 0o644);
    write(&root.join("etc/shadow"), b"root:*:19000::::::\n", 0o600);
    chown(&root.join("etc/shadow"), 0, 42);
    write(&root.join("etc/obsolete"), b"old", 0o644);
    write(&root.join("bin/sh"), b"#!shell-v1\n", 0o755);
    write(&root.join("bin/su"), b"su", 0o755);
    chmod(&root.join("bin/su"), 0o4755);
    write(&root.join("bin/ping"), b"ping", 0o755);
    write(&root.join("usr/share/doc/a.txt"), b"a", 0o644);
    write(&root.join("usr/share/doc/pkg/b.txt"), b"b", 0o644);
    chmod(&root.join("var/tmp"), 0o1777);
    write(&root.join("data/link1"), b"shared", 0o644);
    fs::hard_link(root.join("data/link1"), root.join("data/link2")).unwrap();
    write(&root.join("data/pair_a"), b"pair-v1", 0o640);
    fs::hard_link(root.join("data/pair_a"), root.join("data/pair_b")).unwrap();
    write(&root.join("data/solo"), b"solo", 0o644);
    symlink("etc/passwd", root.join("lnk")).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR, 1, 3);
    mknod(&root.join("dev/sda"), libc::S_IFBLK, 8, 0);
    mknod(&root.join("fifo"), libc::S_IFIFO, 0, 0);
    write(&root.join("x/file"), b"x", 0o644);
    write(&root.join("y/inner/z"), b"z", 0o644);
    write(&root.join("attrs"), b"attrs", 0o644);
    set_xattr(&root.join("attrs"), "user.a", b"1");
    set_xattr(&root.join("attrs"), "user.keep", b"k");
    chmod(&root.join("g"), 0o2775);
    chown(&root.join("g"), 1000, 1000);
    write(&root.join("g/owned"), b"o", 0o664);
    chown(&root.join("g/owned"), 1000, 1000);
    write(&root.join("opq/sub/old"), b"old", 0o644);
    write(&root.join("opq/top"), b"top", 0o644);
    fix_times(root);
}

/// Sets every entry's times to T0 (directories after their children).
fn fix_times(root: &Path) {
    for entry in walk(root).into_iter().rev() {
        set_mtime(&entry, T0, 0);
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            out.extend(names);
        }
        i += 1;
    }
    out
}

/// The changes, made the same way on a plain copy and through an overlay mount.
fn modify(root: &Path, overlay_opaque: bool) {
    let r = |p: &str| root.join(p);
    // Added entries, new directories with them.
    write(&r("etc/new.conf"), b"new", 0o600);
    fs::create_dir_all(r("newdir/sub")).unwrap();
    write(&r("newdir/sub/deep.txt"), b"deep", 0o644);
    write(&r("newdir/h1"), b"hard", 0o644);
    fs::hard_link(r("newdir/h1"), r("newdir/h2")).unwrap();
    fs::create_dir_all(r(&format!("{LONG}/{LONG}"))).unwrap();
    write(
        &r(&format!("{LONG}/{LONG}/file-with-a-long-path")),
        b"long",
        0o644,
    );
    write(&r("ünïcode.txt"), "ü".as_bytes(), 0o644);
    symlink("/abs/dangling/target", r("newlnk")).unwrap();
    mknod(&r("dev/zero"), libc::S_IFCHR, 1, 5);
    mknod(&r("newfifo"), libc::S_IFIFO, 0, 0);
    // Content changed, size and (whole-second) time kept: only the content tells.
    fs::write(r("bin/sh"), b"#!shell-v2\n").unwrap();
    set_mtime(&r("bin/sh"), T0, 0);
    // Content of a hard-linked pair, through one name.
    fs::write(r("data/pair_a"), b"pair-v2-longer").unwrap();
    // Metadata only.
    chmod(&r("etc/shadow"), 0o640);
    chown(&r("etc/group"), 0, 42);
    set_mtime(&r("etc/group"), T0, 0);
    set_xattr(&r("attrs"), "user.a", b"2");
    set_mtime(&r("attrs"), T0, 0);
    set_xattr(&r("bin/ping"), "security.capability", &cap_net_raw());
    set_mtime(&r("bin/ping"), T0 + 5, 0);
    set_mtime(&r("data/solo"), T0 + 77, 0);
    // A new name for a hard-linked file.
    fs::hard_link(r("data/link1"), r("data/link3")).unwrap();
    // Symlink retargeted.
    fs::remove_file(r("lnk")).unwrap();
    symlink("etc/group", r("lnk")).unwrap();
    // Deletions.
    fs::remove_file(r("etc/obsolete")).unwrap();
    fs::remove_dir_all(r("usr/share/doc")).unwrap();
    fs::remove_file(r("dev/sda")).unwrap();
    // File replaced by a directory, directory by a file.
    fs::remove_file(r("x/file")).unwrap();
    fs::create_dir(r("x/file")).unwrap();
    write(&r("x/file/inner"), b"inner", 0o644);
    fs::remove_dir_all(r("y")).unwrap();
    write(&r("y"), b"now a file", 0o600);
    // A directory emptied and refilled (opaque on overlay).
    if overlay_opaque {
        fs::remove_dir_all(r("opq")).unwrap();
        fs::create_dir(r("opq")).unwrap();
        write(&r("opq/fresh"), b"fresh", 0o644);
    }
    // Setuid survives ownership changes only if set after them.
    chown(&r("bin/su"), 0, 1000);
    chmod(&r("bin/su"), 0o4750);
    // Owners too large for the ustar fields (PAX `uid`/`gid` records).
    write(&r("bigids"), b"ids", 0o644);
    chown(&r("bigids"), 3_000_000, 4_000_000);
    // A name that is not UTF-8.
    let raw = root.join(std::ffi::OsStr::from_bytes(b"raw-\xff-name"));
    write(&raw, b"raw", 0o644);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    data: Vec<u8>,
    target: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry under `root` (the root itself excluded: layers never carry it), plus the hard
/// link groups (names sharing an inode, groups of two or more).
fn inspect(root: &Path) -> (BTreeMap<String, Node>, BTreeSet<Vec<String>>) {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    for p in walk(root).into_iter().skip(1) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        if kind == 'f' {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        nodes.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                data: if kind == 'f' {
                    fs::read(&p).unwrap()
                } else {
                    Vec::new()
                },
                target: (kind == 'l').then(|| fs::read_link(&p).unwrap()),
                rdev: if kind == 'c' || kind == 'b' {
                    m.rdev()
                } else {
                    0
                },
                xattrs: list_xattrs(&p),
            },
        );
    }
    let groups = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    (nodes, groups)
}

fn assert_same_tree(got: &Path, want: &Path) {
    let (g, gl) = inspect(got);
    let (w, wl) = inspect(want);
    let keys: BTreeSet<_> = g.keys().chain(w.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys {
        if g.get(k) != w.get(k) {
            diffs.push(format!(
                "{k}:\n   got  {:?}\n   want {:?}",
                g.get(k),
                w.get(k)
            ));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
    assert_eq!(gl, wl, "hard link groups differ");
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("running cp -a (coreutils)");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn apply_onto(layer: &[u8], target: &Path) {
    apply_layer(
        layer,
        LayerEncoding::Detect,
        target,
        &ApplyOptions::default(),
    )
    .unwrap();
}

/// Entry names of a layer, in order.
fn entry_names(layer: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(layer);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

#[test]
fn plain_trees_round_trip() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, target) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("target"),
    );
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
    }
    build_lower(&lower);
    cp_a(&lower, &upper);
    modify(&upper, true);

    let mut layer = Vec::new();
    let stats = write_diff(&lower, &upper, &mut layer).unwrap();
    assert_eq!(stats.size, layer.len() as u64);
    let names = entry_names(&layer);
    assert_eq!(stats.entries, names.len() as u64);

    // What containerd's walk would write, in its order: parents first, deletions as
    // whiteouts, unchanged entries left out.
    for expected in [
        "bin/",
        "bin/ping",
        "bin/sh",
        "bin/su",
        "etc/.wh.obsolete",
        "etc/group",
        "etc/new.conf",
        "etc/shadow",
        "usr/share/.wh.doc",
        "dev/.wh.sda",
        "dev/zero",
        "y",
        "x/file/",
        "x/file/inner",
        "newdir/h2",
        "data/link3",
        "data/link1",
        "data/link2",
        "data/solo",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for absent in ["etc/passwd", "var/", "g/owned", "fifo", "dev/null"] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent} should not be in {names:?}"
        );
    }
    // Parents come before their children, and only once.
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("newdir/") < pos("newdir/h1") && pos("newdir/sub/") < pos("newdir/sub/deep.txt"));
    assert_eq!(names.iter().filter(|n| *n == "newdir/").count(), 1);
    assert!(pos("y") > pos("x/file/inner"));

    cp_a(&lower, &target);
    apply_onto(&layer, &target);
    assert_same_tree(&target, &upper);

    // The same trees give the same bytes.
    let mut again = Vec::new();
    write_diff(&lower, &upper, &mut again).unwrap();
    assert!(again == layer, "two diffs of the same trees differ");
}

#[test]
fn identical_trees_give_an_empty_layer() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    build_lower(&lower);
    cp_a(&lower, &upper);
    let mut layer = Vec::new();
    let stats = write_diff(&lower, &upper, &mut layer).unwrap();
    assert_eq!(stats.entries, 0, "{:?}", entry_names(&layer));
    assert_eq!(layer, vec![0u8; 1024]);
}

#[test]
fn hard_link_peers_follow_a_changed_name() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, target) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("target"),
    );
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
    }
    build_lower(&lower);
    cp_a(&lower, &upper);
    // Only a new name is added; the unchanged earlier names must still join its group.
    fs::hard_link(upper.join("data/link2"), upper.join("data/link0")).unwrap();
    let mut layer = Vec::new();
    write_diff(&lower, &upper, &mut layer).unwrap();
    let mut ar = tar::Archive::new(&layer[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        seen.push((
            String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            e.header().entry_type().as_byte(),
            link,
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("data/".to_string(), b'5', None),
            ("data/link0".to_string(), b'0', None),
            (
                "data/link1".to_string(),
                b'1',
                Some("data/link0".to_string())
            ),
            (
                "data/link2".to_string(),
                b'1',
                Some("data/link0".to_string())
            ),
        ]
    );
    cp_a(&lower, &target);
    apply_onto(&layer, &target);
    assert_same_tree(&target, &upper);
}

fn overlay_mount(lower: &Path, upper: &Path, work: &Path, userxattr: bool) -> TempMount {
    let mut options = vec![
        "index=off".to_string(),
        format!("lowerdir={}", lower.display()),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    if userxattr {
        options.push("userxattr".into());
    }
    let m = Mount::new("overlay", "overlay", options);
    TempMount::new(&[m]).expect("mounting overlayfs (root and a kernel with overlay needed)")
}

#[test]
fn overlay_upper_dir_round_trip() {
    overlay_round_trip(false);
}

#[test]
fn overlay_upper_dir_with_userxattr_round_trip() {
    overlay_round_trip(true);
}

fn overlay_round_trip(userxattr: bool) {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    for d in ["lower", "upper", "work", "target"] {
        fs::create_dir(p(d)).unwrap();
    }
    build_lower(&p("lower"));
    let merged = overlay_mount(&p("lower"), &p("upper"), &p("work"), userxattr);
    modify(merged.path(), true);
    // The opaque marker is in the namespace the mount uses.
    let marker = if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    };
    let c = cpath(&p("upper/opq"));
    let n = CString::new(marker).unwrap();
    let mut v = [0u8; 8];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    assert_eq!(len, 1, "{marker} missing on the upper opq/");
    assert_eq!(v[0], b'y');

    let mut layer = Vec::new();
    write_overlay_diff(&p("lower"), &p("upper"), &mut layer).unwrap();
    let names = entry_names(&layer);
    for expected in [
        "opq/",
        "opq/.wh..wh..opq",
        "opq/fresh",
        "usr/share/.wh.doc",
        "etc/.wh.obsolete",
        "dev/.wh.sda",
        "y",
        "x/file/",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // The upper directory does not hold untouched lower entries.
    for absent in ["etc/passwd", "var/", "g/", "opq/top", "opq/sub/"] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent} should not be in {names:?}"
        );
    }
    // Untouched names never appear, and nothing from the upper directory's overlay markers
    // leaks into the layer as an xattr.
    let mut ar = tar::Archive::new(&layer[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let key = x.unwrap().key().unwrap().to_string();
                assert!(!key.contains("overlay"), "{key} leaked into the layer");
            }
        }
    }

    cp_a(&p("lower"), &p("target"));
    apply_onto(&layer, &p("target"));
    assert_same_tree(&p("target"), merged.path());

    // The merged tree walked in full gives a different layer that applies to the same tree.
    let mut walked = Vec::new();
    write_diff(&p("lower"), merged.path(), &mut walked).unwrap();
    fs::create_dir(p("target2")).unwrap();
    cp_a(&p("lower"), &p("target2"));
    apply_onto(&walked, &p("target2"));
    assert_same_tree(&p("target2"), merged.path());
    merged.unmount().unwrap();
}

fn read_blob(store: &LocalStore, desc: &stowage_core_types::Descriptor) -> Vec<u8> {
    let ra = store.reader_at(desc).unwrap();
    let mut out = Vec::new();
    SectionReader::new(&*ra, 0).read_to_end(&mut out).unwrap();
    out
}

fn decompressed(blob: &[u8]) -> Vec<u8> {
    let (_, mut r) = stowage_digest_identity::decompressed_reader(blob).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

fn sha256(data: &[u8]) -> String {
    stowage_digest_identity::digest_of(data).to_string()
}

#[test]
fn snapshots_compare_and_apply_back() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sn = OverlaySnapshotter::new(tmp.path().join("overlay")).unwrap();
    let store = LocalStore::with_memory_labels(tmp.path().join("content")).unwrap();

    let base = sn.prepare("base-active", "", Labels::new()).unwrap();
    with_temp_mount(&base, |root| {
        build_lower(root);
        Ok(())
    })
    .unwrap();
    sn.commit("base", "base-active", Labels::new()).unwrap();

    let work = sn.prepare("work", "base", Labels::new()).unwrap();
    with_temp_mount(&work, |root| {
        modify(root, true);
        Ok(())
    })
    .unwrap();
    let view = sn.view("base-view", "base", Labels::new()).unwrap();

    let mut labels = Labels::new();
    labels.insert("test.label".into(), "kept".into());
    let opts = CompareOptions {
        labels,
        ..CompareOptions::default()
    };
    let desc = compare(&view, &work, &store, &opts).unwrap();
    assert_eq!(desc.media_type, mediatype::OCI_LAYER_GZIP);
    let blob = read_blob(&store, &desc);
    assert_eq!(desc.size, blob.len() as u64);
    assert_eq!(&blob[..2], &[0x1f, 0x8b], "gzip by default");
    let tar = decompressed(&blob);
    let info = store.info(&desc.digest).unwrap();
    assert_eq!(info.labels.get(UNCOMPRESSED_LABEL), Some(&sha256(&tar)));
    assert_eq!(
        info.labels.get("test.label").map(String::as_str),
        Some("kept")
    );
    // The overlay path ran: the opaque marker only comes from the upper directory.
    assert!(entry_names(&tar).iter().any(|n| n == "opq/.wh..wh..opq"));

    // Applied onto a fresh snapshot of the parent, the layer rebuilds the work snapshot.
    let fresh = sn.prepare("fresh", "base", Labels::new()).unwrap();
    let fresh_mount = TempMount::new(&fresh).unwrap();
    let res = apply_layer(
        &blob[..],
        LayerEncoding::MediaType(&desc.media_type),
        fresh_mount.path(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        Some(&res.diff_id.to_string()),
        info.labels.get(UNCOMPRESSED_LABEL)
    );
    let work_ro: Vec<Mount> = work.iter().map(Mount::to_readonly).collect();
    let work_mount = TempMount::new(&work_ro).unwrap();
    assert_same_tree(fresh_mount.path(), work_mount.path());

    // Same snapshots, same blob; the second commit finds it and keeps its labels.
    let again = compare(&view, &work, &store, &CompareOptions::default()).unwrap();
    assert_eq!(again, desc);
    assert_eq!(
        store
            .info(&desc.digest)
            .unwrap()
            .labels
            .get(UNCOMPRESSED_LABEL),
        Some(&sha256(&tar))
    );

    // The mounted-trees path (upper given read-only, so not an overlay upper) rebuilds it too.
    let walked = compare(
        &view,
        &work_ro,
        &store,
        &CompareOptions {
            media_type: mediatype::OCI_LAYER_ZSTD.into(),
            ..CompareOptions::default()
        },
    )
    .unwrap();
    assert_eq!(walked.media_type, mediatype::OCI_LAYER_ZSTD);
    let zblob = read_blob(&store, &walked);
    assert_eq!(&zblob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd on request");
    let ztar = decompressed(&zblob);
    assert!(!entry_names(&ztar).iter().any(|n| n == "opq/.wh..wh..opq"));
    let fresh2 = sn.prepare("fresh2", "base", Labels::new()).unwrap();
    let fresh2_mount = TempMount::new(&fresh2).unwrap();
    apply_layer(
        &zblob[..],
        LayerEncoding::Detect,
        fresh2_mount.path(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_same_tree(fresh2_mount.path(), work_mount.path());

    // Uncompressed on request: the blob is the tar, and its digest is the DiffID.
    let plain = compare(
        &view,
        &work,
        &store,
        &CompareOptions {
            media_type: mediatype::OCI_LAYER.into(),
            ..CompareOptions::default()
        },
    )
    .unwrap();
    let pblob = read_blob(&store, &plain);
    assert_eq!(pblob, tar);
    assert_eq!(plain.digest.to_string(), sha256(&tar));

    for m in [fresh_mount, fresh2_mount, work_mount] {
        m.unmount().unwrap();
    }
    assert!(
        store.list_statuses(&[]).unwrap().is_empty(),
        "no ingest left behind"
    );
}

#[test]
fn native_snapshots_compare_and_apply_back() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sn = NativeSnapshotter::new(tmp.path().join("native")).unwrap();
    let store = LocalStore::with_memory_labels(tmp.path().join("content")).unwrap();
    let base = sn.prepare("base-active", "", Labels::new()).unwrap();
    with_temp_mount(&base, |root| {
        build_lower(root);
        Ok(())
    })
    .unwrap();
    sn.commit("base", "base-active", Labels::new()).unwrap();
    let work = sn.prepare("work", "base", Labels::new()).unwrap();
    with_temp_mount(&work, |root| {
        modify(root, true);
        Ok(())
    })
    .unwrap();
    let view = sn.view("base-view", "base", Labels::new()).unwrap();

    // Bind mounts on both sides: the trees are walked.
    let desc = compare(&view, &work, &store, &CompareOptions::default()).unwrap();
    let blob = read_blob(&store, &desc);
    let fresh = sn.prepare("fresh", "base", Labels::new()).unwrap();
    with_temp_mount(&fresh, |root| {
        apply_layer(
            &blob[..],
            LayerEncoding::MediaType(&desc.media_type),
            root,
            &ApplyOptions::default(),
        )?;
        Ok(())
    })
    .unwrap();
    let fresh_mount = TempMount::new(&fresh).unwrap();
    let work_mount = TempMount::new(&work).unwrap();
    assert_same_tree(fresh_mount.path(), work_mount.path());
    fresh_mount.unmount().unwrap();
    work_mount.unmount().unwrap();

    // The same snapshots give the same blob.
    let again = compare(&view, &work, &store, &CompareOptions::default()).unwrap();
    assert_eq!(again.digest, desc.digest);
}

#[test]
fn failures_clean_up() {
    let _serial = serial();
    if !need_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path().join("content")).unwrap();
    let dir = tmp.path().join("dir");
    fs::create_dir(&dir).unwrap();
    let bind = |p: &Path| vec![Mount::new("bind", p.display().to_string(), ["rbind"])];

    let err = compare(
        &bind(&dir),
        &bind(&dir),
        &store,
        &CompareOptions {
            media_type: mediatype::OCI_LAYER_GZIP_ENCRYPTED.into(),
            ..CompareOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");

    assert!(our_mounts().is_empty(), "{:?}", our_mounts());
    let missing = tmp.path().join("missing");
    let err = compare(
        &bind(&dir),
        &bind(&missing),
        &store,
        &CompareOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("upper"), "{err}");
    assert_eq!(
        our_mounts(),
        Vec::<String>::new(),
        "a mount was left behind"
    );

    // A failure while writing aborts the ingest it opened: sysfs files claim 4096 bytes and
    // hold fewer, so the walk fails once the layer is being written.
    let sys = Path::new("/sys/kernel/mm");
    assert!(sys.is_dir(), "{} missing (sysfs needed)", sys.display());
    let opts = CompareOptions {
        reference: "failing-diff".into(),
        ..CompareOptions::default()
    };
    let err = compare(&[], &bind(sys), &store, &opts).unwrap_err();
    assert!(
        store.list_statuses(&[]).unwrap().is_empty(),
        "ingest left after {err}"
    );
    assert_eq!(
        our_mounts(),
        Vec::<String>::new(),
        "a mount was left behind"
    );

    // A lower that cannot be mounted (a file on a directory) fails before anything is written.
    let file = tmp.path().join("plainfile");
    fs::write(&file, b"x").unwrap();
    let err = compare(&bind(&file), &bind(&dir), &store, &opts).unwrap_err();
    assert!(err.to_string().contains("lower"), "{err}");
    assert!(store.list_statuses(&[]).unwrap().is_empty());
    assert_eq!(
        our_mounts(),
        Vec::<String>::new(),
        "a mount was left behind"
    );

    // A reference another writer holds: the diff fails, and the other ingest is left alone.
    let mut held = store.writer(WriterOptions::with_ref("held")).unwrap();
    held.write_all(b"someone else's bytes").unwrap();
    let err = compare(
        &bind(&dir),
        &bind(&dir),
        &store,
        &CompareOptions {
            reference: "held".into(),
            ..CompareOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(store.status("held").unwrap().offset, 20);
    drop(held);
    store.abort("held").unwrap();
    assert_eq!(our_mounts(), Vec::<String>::new());
}

/// Mounts of a containerd snapshot, parsed from `ctr snapshots mounts` (`mount -t <type>
/// <source> <target> -o <options>` per line).
fn ctr_mounts(ctrd: &Containerd, key: &str) -> Vec<Mount> {
    let out = ctrd
        .ctr(&["snapshots", "mounts", "/target", key])
        .unwrap_or_else(|e| panic!("ctr snapshots mounts {key}: {e}\n{}", ctrd.log()));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["mount", "-t", kind, source, _target, "-o", opts] => {
                    Mount::new(*kind, *source, opts.split(','))
                }
                ["mount", "-t", kind, source, _target] => {
                    Mount::new(*kind, *source, Vec::<String>::new())
                }
                _ => panic!("unexpected ctr mounts line {l:?}"),
            }
        })
        .collect()
}

/// What a layer says about each entry, in order: name, type, mode, owner, size, link name,
/// time (not for whiteouts: containerd stamps them with the current time), the
/// `security.capability` xattr (the only one containerd writes), and the data's digest.
fn entry_summary(layer: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(layer);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut cap = None;
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                if x.key().unwrap() == "SCHILY.xattr.security.capability" {
                    cap = Some(x.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let base = name.rsplit('/').next().unwrap_or("");
        let mtime = if base.starts_with(".wh.") {
            None
        } else {
            Some(h.mtime().unwrap())
        };
        out.push(format!(
            "{name} type={} mode={:o} uid={} gid={} size={} link={link:?} mtime={mtime:?} cap={cap:?} data={}",
            h.entry_type().as_byte() as char,
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.size().unwrap(),
            sha256(&data),
        ));
    }
    out
}

#[test]
fn entries_match_containerds_snapshot_diff() {
    let _serial = serial();
    if !need_root() || !require(&["containerd", "ctr"], "apt-get install containerd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctrd = Containerd::start(&tmp.path().join("root"), tmp.path()).unwrap();
    let ctr = |args: &[&str]| {
        ctrd.ctr(args)
            .unwrap_or_else(|e| panic!("ctr {args:?}: {e}\n{}", ctrd.log()))
    };
    ctr(&["snapshots", "prepare", "base-active"]);
    with_temp_mount(&ctr_mounts(&ctrd, "base-active"), |root| {
        build_lower(root);
        Ok(())
    })
    .unwrap();
    ctr(&["snapshots", "commit", "base", "base-active"]);
    ctr(&["snapshots", "prepare", "work", "base"]);
    with_temp_mount(&ctr_mounts(&ctrd, "work"), |root| {
        modify(root, true);
        Ok(())
    })
    .unwrap();

    // containerd's walking differ over the parent's view and the active snapshot.
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&ctrd.address)
        .args([
            "snapshots",
            "diff",
            "--media-type",
            mediatype::OCI_LAYER,
            "work",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr snapshots diff: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctrd.log()
    );
    let theirs = out.stdout;

    // Ours, over the same snapshots, walking the mounted trees as containerd 1.6 does.
    // An untouched active child of the parent stands for the parent: ctr labels the
    // snapshots it prepares as GC roots, but not its views, which containerd's GC may collect
    // before they are mounted.
    ctr(&["snapshots", "prepare", "base-lower", "base"]);
    let lower = ctr_mounts(&ctrd, "base-lower");
    let upper: Vec<Mount> = ctr_mounts(&ctrd, "work")
        .iter()
        .map(Mount::to_readonly)
        .collect();
    let store = LocalStore::with_memory_labels(tmp.path().join("content")).unwrap();
    let desc = compare(
        &lower,
        &upper,
        &store,
        &CompareOptions {
            media_type: mediatype::OCI_LAYER.into(),
            ..CompareOptions::default()
        },
    )
    .unwrap();
    let ours = read_blob(&store, &desc);

    let (t, o) = (entry_summary(&theirs), entry_summary(&ours));
    assert!(
        t.len() > 20,
        "containerd's diff is too small to mean much: {t:#?}"
    );
    // One documented difference: containerd compares only `security.capability` among the
    // xattrs, so it misses the xattr-only change of `attrs`; everything else is identical,
    // in the same order.
    let (extra, same): (Vec<String>, Vec<String>) =
        o.into_iter().partition(|e| e.starts_with("attrs "));
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert!(!t.iter().any(|e| e.starts_with("attrs ")), "{t:#?}");
    assert_eq!(same, t, "entries differ from containerd's");

    // The overlay path (the work snapshot's upper directory over a bind of the parent)
    // writes other entries (an opaque marker, no parents of unchanged names), but applied
    // onto the parent it builds the tree containerd's layer builds.
    let work = ctr_mounts(&ctrd, "work");
    let parent_dir = work[0].lower_dirs()[0].to_string();
    let parent = vec![Mount::new("bind", parent_dir.clone(), ["rbind", "ro"])];
    let fast = compare(
        &parent,
        &work,
        &store,
        &CompareOptions {
            media_type: mediatype::OCI_LAYER.into(),
            ..CompareOptions::default()
        },
    )
    .unwrap();
    let fast = read_blob(&store, &fast);
    assert!(entry_names(&fast).iter().any(|n| n == "opq/.wh..wh..opq"));
    let (by_them, by_us) = (tmp.path().join("by-containerd"), tmp.path().join("by-us"));
    for (dir, layer) in [(&by_them, &theirs), (&by_us, &fast)] {
        fs::create_dir(dir).unwrap();
        cp_a(Path::new(&parent_dir), dir);
        apply_onto(layer, dir);
    }
    let (mut a, ga) = inspect(&by_them);
    let (mut b, gb) = inspect(&by_us);
    assert_eq!(ga, gb, "hard link groups differ");
    // The xattr-only change containerd misses, again.
    let (attrs_a, attrs_b) = (a.remove("attrs").unwrap(), b.remove("attrs").unwrap());
    assert_eq!(
        attrs_b.xattrs.get("user.a").map(Vec::as_slice),
        Some(&b"2"[..])
    );
    assert_eq!(
        attrs_a.xattrs.get("user.a").map(Vec::as_slice),
        Some(&b"1"[..])
    );
    assert_eq!(a, b, "trees built from the two layers differ");
    ctrd.stop().unwrap();
}
