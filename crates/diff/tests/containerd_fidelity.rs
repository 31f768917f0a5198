//! Fidelity against containerd 1.6: the same layers applied by stowage and by containerd's
//! own `archive.Apply` (Debian's Go source, built from tests/goapply) give identical trees —
//! paths, types, modes, owners, sizes, contents, link targets, device numbers, xattrs
//! (overlay's trusted.* markers included), hard link groups and times.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use stowage_diff::{ApplyOptions, WhiteoutMode};

/// Builds tests/goapply once; `None` (after printing why) when the opt-out is set and Go or
/// containerd's source is missing. Without the opt-out a missing tool fails the test.
fn goapply() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let gopath = Path::new("/usr/share/gocode");
        let pkg = gopath.join("src/github.com/containerd/containerd/archive");
        let have_go = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
        if !have_go || !pkg.exists() {
            let what = "Go and containerd's source (apt-get install golang-go golang-github-containerd-containerd-dev)";
            if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
                eprintln!("skipping containerd fidelity test: needs {what}");
                return None;
            }
            panic!("containerd fidelity test needs {what}; set STOWAGE_SKIP_EXTERNAL=1 to skip");
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("goapply");
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("goapply");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goapply/main.go");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.join("cache"))
            .output()
            .expect("run go build");
        assert!(out.status.success(), "go build of goapply failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(bin)
    })
    .clone()
}

fn containerd_apply(bin: &Path, mode: &str, layer: &[u8], root: &Path, parents: &[&Path]) {
    let file = root.parent().unwrap().join(format!(
        "layer-{}.tar",
        root.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&file, layer).unwrap();
    let out = Command::new(bin)
        .arg(mode)
        .arg(&file)
        .arg(root)
        .args(parents)
        .output()
        .unwrap();
    fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "containerd apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn link_groups(t: &BTreeMap<String, Node>) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, n) in t {
        if n.kind != "dir" {
            by_ino.entry(n.ino).or_default().push(p.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

fn assert_same_tree(ours: &Path, theirs: &Path, what: &str) {
    assert_eq!(
        link_groups(&tree(ours)),
        link_groups(&tree(theirs)),
        "{what}: hard links"
    );
    // Overlay whiteout devices carry their creation time with both tools: not comparable.
    let now_times = |mut t: BTreeMap<String, Node>| {
        for n in t.values_mut() {
            if n.mtime.0 > T0 as i64 + 10_000_000 {
                n.mtime = (0, 0);
            }
        }
        t
    };
    let (a, b) = (
        now_times(tree_comparable(ours)),
        now_times(tree_comparable(theirs)),
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: paths (stowage left, containerd right)"
    );
    for (path, node) in &a {
        assert_eq!(
            node, &b[path],
            "{what}: {path} (stowage left, containerd right)"
        );
    }
}

fn base_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir_at("etc/", 0o755, T0 + 10)
        .file("etc/hostname", 0o644, b"box\n")
        .file_with("etc/shadow", b"secret", |h| {
            h.set_mode(0o640);
            h.set_gid(42);
        })
        .dir_at("usr/bin/", 0o755, T0 + 30)
        .file_with("usr/bin/su", b"#!su", |h| h.set_mode(0o4755))
        .file_with("usr/bin/wall", b"#!wall", |h| {
            h.set_mode(0o2755);
            h.set_gid(5);
        })
        .dir_at("tmp/", 0o1777, T0 + 40)
        .file_with("home/user/notes", b"mine", |h| {
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mode(0o600);
        })
        .symlink("usr/bin/sh", "bash")
        .file("usr/bin/bash", 0o755, b"#!bash")
        .hardlink("usr/bin/rbash", "usr/bin/bash")
        .fifo("run/fifo", 0o620)
        .device("dev/null", tar::EntryType::Char, 1, 3, 0o666)
        .device("dev/loop0", tar::EntryType::Block, 7, 0, 0o660)
        .long_file(&format!("deep/{}/file", "d".repeat(150)), b"long name")
        .long_symlink("deep/link", &format!("{}/target", "t".repeat(140)))
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello"),
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("mtime", b"1700000123.456789"),
        ])
        .file("usr/bin/ping", 0o755, b"#!ping")
        // Not the default 0755, so implied copies of it in an upper dir show where they came from.
        .dir("a/", 0o750)
        .file("a/gone", 0o644, b"gone")
        .dir("a/sub/", 0o700)
        .file("a/sub/deep", 0o644, b"deep")
        .dir("opq/", 0o750)
        .file("opq/old", 0o644, b"old")
        .dir("opq/olddir/", 0o755)
        .file("opq/olddir/x", 0o644, b"x")
        .file("kind/f2d", 0o644, b"file")
        .dir("kind/d2f/", 0o755)
        .file("kind/d2f/child", 0o644, b"c")
        .symlink("kind/l2f", "f2d");
    l.finish()
}

fn upper_layer() -> Vec<u8> {
    Layer::new()
        .whiteout("a/.wh.gone")
        .whiteout("a/.wh.sub")
        .dir("opq/", 0o755)
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new", 0o644, b"new")
        .dir("kind/f2d/", 0o711)
        .file("kind/d2f", 0o644, b"now a file")
        .file("kind/l2f", 0o600, b"not a link")
        // Implied directories: "a/sub2" does not exist below; "etc" does, with its own times.
        .file("a/sub2/new", 0o644, b"n")
        .file("etc/added", 0o644, b"added")
        .file_with("usr/bin/bash", b"#!bash v2", |h| h.set_mode(0o755))
        .finish()
}

fn need_all(what: &str) -> Option<PathBuf> {
    if !need_root(what) {
        return None;
    }
    goapply()
}

#[test]
fn plain_directory_applies_match_containerd() {
    let Some(bin) = need_all("containerd fidelity test (devices, ownership)") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    fs::create_dir(&ours).unwrap();
    fs::create_dir(&theirs).unwrap();
    for (i, layer) in [base_layer(), upper_layer()].iter().enumerate() {
        apply(&gzip(layer), &ours, &ApplyOptions::default()).unwrap();
        containerd_apply(&bin, "plain", &gzip(layer), &theirs, &[]);
        assert_same_tree(&ours, &theirs, &format!("plain, after layer {i}"));
    }
}

#[test]
fn overlay_upper_applies_match_containerd() {
    let Some(bin) = need_all("containerd overlay fidelity test (trusted xattrs, mknod)") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let p = tmp.path().join(n);
        fs::create_dir(&p).unwrap();
        p
    };
    let (o1, o2, c1, c2) = (dir("o1"), dir("o2"), dir("c1"), dir("c2"));
    let opts = |parents: &[&Path]| ApplyOptions {
        whiteouts: WhiteoutMode::Overlay { user_xattr: false },
        parents: parents.iter().map(|p| p.to_path_buf()).collect(),
        ..ApplyOptions::default()
    };
    apply(&base_layer(), &o1, &opts(&[])).unwrap();
    containerd_apply(&bin, "overlay", &base_layer(), &c1, &[]);
    assert_same_tree(&o1, &c1, "overlay layer 0");
    apply(&upper_layer(), &o2, &opts(&[&o1])).unwrap();
    containerd_apply(&bin, "overlay", &upper_layer(), &c2, &[&c1]);
    assert_same_tree(&o2, &c2, "overlay layer 1");
}

#[test]
fn gnu_tar_archives_match_containerd() {
    let Some(bin) = need_all("containerd fidelity test on GNU tar archives") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // A compact tree with what GNU tar encodes differently from the tar crate: ustar prefix
    // splitting, PAX xattrs, PAX sparse 1.0 (containerd writes holes as zeros; contents are
    // compared, not block usage).
    let long = src.join(format!("{}/{}", "p".repeat(80), "q".repeat(80)));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("f"), b"prefix split").unwrap();
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    drop(sparse);
    fs::write(src.join("plain"), b"plain").unwrap();
    std::os::unix::fs::symlink("plain", src.join("link")).unwrap();
    let layer = tmp.path().join("l.tar");
    let st = Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--sparse",
            "--sparse-version=1.0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&src)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .expect("GNU tar is needed (apt-get install tar)");
    assert!(st.success());
    let data = fs::read(&layer).unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    fs::create_dir(&ours).unwrap();
    fs::create_dir(&theirs).unwrap();
    apply(&data, &ours, &ApplyOptions::default()).unwrap();
    containerd_apply(&bin, "plain", &data, &theirs, &[]);
    assert_same_tree(&ours, &theirs, "GNU tar posix archive");
}
