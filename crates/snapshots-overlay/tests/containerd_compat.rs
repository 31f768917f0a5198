//! Compatibility with the real containerd 1.6: containerd unpacks fixture images into its
//! overlayfs snapshotter root; our overlay snapshotter, opened on that root after containerd
//! stopped, sees the same snapshots (keys, kinds, parents, usage), mounts them with the
//! image's files, and stacks a new snapshot on containerd's. containerd, started again on the
//! root we wrote to, still lists its snapshots.
//!
//! Snapshots created directly in the backend are invisible to `ctr` (it goes through
//! containerd's metadata namespace layer), so the direction tested here is containerd → us,
//! plus containerd still working on a metastore we have written.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use stowage_core_types::snapshot::{Kind, Snapshotter};
use stowage_core_types::Labels;
use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_snapshots_storage::mount::TempMount;
use stowage_tests::containerd::{require, Containerd};
use stowage_tests::fixtures;

/// `(key, parent, kind)` rows of `ctr snapshots ls`.
fn ctr_list(ctrd: &Containerd, snapshotter: &str) -> BTreeSet<(String, String, String)> {
    let out = ctrd
        .ctr(&["snapshots", "--snapshotter", snapshotter, "ls"])
        .unwrap_or_else(|e| panic!("ctr snapshots ls: {e}\n{}", ctrd.log()));
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [key, kind] => (key.to_string(), String::new(), kind.to_lowercase()),
                [key, parent, kind] => (key.to_string(), parent.to_string(), kind.to_lowercase()),
                _ => panic!("unexpected ctr line {l:?}"),
            }
        })
        .collect()
}

/// `default/<n>/<key>` → `<key>`: the metadata layer's backend key for namespace `default`.
fn strip_ns(bkey: &str) -> String {
    let rest = bkey
        .strip_prefix("default/")
        .unwrap_or_else(|| panic!("backend key {bkey:?} is not in namespace default"));
    let (n, key) = rest.split_once('/').unwrap();
    assert!(n.parse::<u64>().is_ok(), "{bkey:?}");
    key.to_string()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a writable buffer of buf.len() bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn overlay_reads_and_extends_containerds_snapshots() {
    if !require(&["containerd", "ctr"], "apt-get install containerd") {
        return;
    }
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let root = work.path().join("root");
    let ctrd = Containerd::start(&root, work.path()).unwrap();
    for name in ["base", "whiteouts"] {
        let img = images.iter().find(|i| i.name == name).unwrap();
        ctrd.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            img.archive.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("import {name}: {e}\n{}", ctrd.log()));
    }
    let listed = ctr_list(&ctrd, "overlayfs");
    assert_eq!(
        listed.len(),
        4,
        "1 base layer + 3 whiteout layers: {listed:?}"
    );
    let usage_out = ctrd
        .ctr(&["snapshots", "--snapshotter", "overlayfs", "usage", "-b"])
        .unwrap();
    ctrd.stop().unwrap();

    let sroot = root.join("io.containerd.snapshotter.v1.overlayfs");
    let sn = OverlaySnapshotter::new(&sroot).unwrap();
    let mut infos = Vec::new();
    sn.walk(
        &mut |i| {
            infos.push(i);
            Ok(())
        },
        &[],
    )
    .unwrap();
    let ours: BTreeSet<(String, String, String)> = infos
        .iter()
        .map(|i| {
            let parent = if i.parent.is_empty() {
                String::new()
            } else {
                strip_ns(&i.parent)
            };
            (strip_ns(&i.name), parent, i.kind.as_str().to_string())
        })
        .collect();
    assert_eq!(
        ours, listed,
        "our walk of containerd's metastore matches ctr"
    );

    // Usage as containerd recorded it at commit ("KEY SIZE INODES" rows).
    for line in usage_out.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let info = infos.iter().find(|i| strip_ns(&i.name) == f[0]).unwrap();
        let u = sn.usage(&info.name).unwrap();
        assert_eq!(
            (u.size.to_string(), u.inodes.to_string()),
            (f[1].to_string(), f[2].to_string()),
            "{line}"
        );
    }

    // The top of the whiteouts chain: the snapshot with the longest parent chain.
    let depth = |name: &str| {
        let mut d = 0;
        let mut cur = name.to_string();
        while let Some(i) = infos.iter().find(|i| i.name == cur) {
            d += 1;
            cur = i.parent.clone();
        }
        d
    };
    let top = infos
        .iter()
        .max_by_key(|i| depth(&i.name))
        .unwrap()
        .name
        .clone();
    assert_eq!(depth(&top), 3);
    let base = infos
        .iter()
        .find(|i| {
            i.parent.is_empty() && depth(&i.name) == 1 && !infos.iter().any(|c| c.parent == i.name)
        })
        .unwrap()
        .name
        .clone();

    let m = sn.view("stowage-view", &top, Labels::new()).unwrap();
    assert_eq!(m[0].kind, "overlay");
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    let r = tm.path();
    assert!(!r.join("keep/a").exists() && !r.join("keep/b").exists());
    assert_eq!(fs::read(r.join("keep/c")).unwrap(), b"upper c\n");
    assert!(!r.join("opaque/old1").exists());
    assert_eq!(
        fs::read(r.join("opaque/new")).unwrap(),
        b"added with the opaque marker\n"
    );
    assert_eq!(
        fs::read(r.join("gone/again")).unwrap(),
        b"recreated after a whiteout\n"
    );
    assert!(!r.join("gone/x").exists());
    tm.unmount().unwrap();

    let m = sn.view("stowage-base", &base, Labels::new()).unwrap();
    assert_eq!(
        m[0].kind, "bind",
        "a view of a single layer is a bind mount"
    );
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    let r = tm.path();
    let tool = fs::symlink_metadata(r.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        fs::symlink_metadata(r.join("usr/bin/tool-hardlink"))
            .unwrap()
            .ino()
    );
    assert!(xattr(&r.join("usr/bin/ping"), "security.capability").is_some());
    assert_eq!(
        fs::symlink_metadata(r.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    tm.unmount().unwrap();

    // A new layer on containerd's top snapshot.
    let m = sn.prepare("stowage-active", &top, Labels::new()).unwrap();
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    fs::write(tm.path().join("added-by-stowage"), b"hi").unwrap();
    fs::remove_file(tm.path().join("keep/c")).unwrap();
    tm.unmount().unwrap();
    sn.commit("stowage-committed", "stowage-active", Labels::new())
        .unwrap();
    let m = sn
        .view("stowage-view-2", "stowage-committed", Labels::new())
        .unwrap();
    assert_eq!(m[0].lower_dirs().len(), 4);
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    assert_eq!(fs::read(tm.path().join("added-by-stowage")).unwrap(), b"hi");
    assert!(!tm.path().join("keep/c").exists());
    assert_eq!(
        fs::read(tm.path().join("gone/again")).unwrap(),
        b"recreated after a whiteout\n"
    );
    tm.unmount().unwrap();
    for key in ["stowage-view-2", "stowage-view", "stowage-base"] {
        sn.remove(key).unwrap();
    }
    assert_eq!(sn.stat("stowage-committed").unwrap().kind, Kind::Committed);
    drop(sn);

    // containerd opens the metastore we wrote to and still serves its snapshots.
    let ctrd = Containerd::start(&root, work.path()).unwrap();
    let again = ctr_list(&ctrd, "overlayfs");
    assert_eq!(again, listed, "containerd after our writes");
    let img = images.iter().find(|i| i.name == "whiteouts").unwrap();
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    ctrd.ctr(&["images", "mount", &img.reference, mnt.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("mount: {e}\n{}", ctrd.log()));
    assert_eq!(fs::read(mnt.join("keep/c")).unwrap(), b"upper c\n");
    ctrd.ctr(&["images", "unmount", "--rm", mnt.to_str().unwrap()])
        .unwrap();
    ctrd.stop().unwrap();
}
