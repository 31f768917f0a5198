//! Compatibility with the real containerd 1.6: containerd unpacks fixture images with its
//! native snapshotter; our native snapshotter, opened on that root after containerd stopped,
//! sees the same snapshots, mounts them with the image's files and prepares a copy on top;
//! containerd, started again, still serves the root.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Labels;
use stowage_snapshots_native::NativeSnapshotter;
use stowage_snapshots_storage::mount::TempMount;
use stowage_tests::containerd::{require, Containerd};
use stowage_tests::fixtures;

fn ctr_list(ctrd: &Containerd) -> BTreeSet<(String, String, String)> {
    let out = ctrd
        .ctr(&["snapshots", "--snapshotter", "native", "ls"])
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

fn strip_ns(bkey: &str) -> String {
    let rest = bkey.strip_prefix("default/").unwrap();
    rest.split_once('/').unwrap().1.to_string()
}

#[test]
fn native_reads_and_extends_containerds_snapshots() {
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
            "native",
            img.archive.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("import {name}: {e}\n{}", ctrd.log()));
    }
    let listed = ctr_list(&ctrd);
    assert_eq!(listed.len(), 4, "{listed:?}");
    ctrd.stop().unwrap();

    let sn = NativeSnapshotter::new(root.join("io.containerd.snapshotter.v1.native")).unwrap();
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
    assert_eq!(ours, listed);

    let top = infos
        .iter()
        .find(|i| !i.parent.is_empty() && !infos.iter().any(|c| c.parent == i.name))
        .unwrap()
        .name
        .clone();
    let base = infos
        .iter()
        .find(|i| i.parent.is_empty() && !infos.iter().any(|c| c.parent == i.name))
        .unwrap()
        .name
        .clone();

    // A prepared copy of containerd's top snapshot holds the whiteout-resolved tree.
    let m = sn.prepare("stowage-active", &top, Labels::new()).unwrap();
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    let r = tm.path();
    assert!(!r.join("keep/a").exists() && !r.join("keep/b").exists());
    assert_eq!(fs::read(r.join("keep/c")).unwrap(), b"upper c\n");
    assert_eq!(
        fs::read(r.join("gone/again")).unwrap(),
        b"recreated after a whiteout\n"
    );
    assert_eq!(fs::read(r.join("hardlink-dst")).unwrap(), b"linked\n");
    fs::write(r.join("added-by-stowage"), b"hi").unwrap();
    tm.unmount().unwrap();
    sn.commit("stowage-committed", "stowage-active", Labels::new())
        .unwrap();

    let m = sn.prepare("stowage-base", &base, Labels::new()).unwrap();
    let tm = TempMount::new_in(work.path(), &m).unwrap();
    let r = tm.path();
    let tool = fs::symlink_metadata(r.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        fs::symlink_metadata(r.join("usr/bin/tool-hardlink"))
            .unwrap()
            .ino()
    );
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(
        fs::symlink_metadata(r.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    let owned = fs::symlink_metadata(r.join("home/user/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    tm.unmount().unwrap();
    sn.remove("stowage-base").unwrap();
    drop(sn);

    let ctrd = Containerd::start(&root, work.path()).unwrap();
    assert_eq!(ctr_list(&ctrd), listed, "containerd after our writes");
    let img = images.iter().find(|i| i.name == "whiteouts").unwrap();
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    ctrd.ctr(&[
        "images",
        "mount",
        "--snapshotter",
        "native",
        &img.reference,
        mnt.to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("mount: {e}\n{}", ctrd.log()));
    assert_eq!(fs::read(mnt.join("keep/c")).unwrap(), b"upper c\n");
    assert!(!mnt.join("added-by-stowage").exists());
    ctrd.ctr(&["images", "unmount", "--rm", mnt.to_str().unwrap()])
        .unwrap();
    ctrd.stop().unwrap();
}
