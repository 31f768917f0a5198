//! Overlay-specific behaviour: mount shapes as containerd 1.6 returns them, the directory
//! layout, orphan cleanup, the upperdir label, long option strings.

use std::fs;
use std::path::Path;

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Labels;
use stowage_snapshots_overlay::{Options, OverlaySnapshotter, UPPERDIR_LABEL};
use stowage_snapshots_storage::mount::TempMount;
use stowage_snapshots_storage::testsuite::require_root;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn index_opts() -> Vec<String> {
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        vec!["index=off".to_string()]
    } else {
        Vec::new()
    }
}

#[test]
fn mounts_have_containerds_shapes_and_layout() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("overlay");
    let sn = OverlaySnapshotter::new(&root).unwrap();
    let snaps = root.join("snapshots");
    assert!(root.join("metadata.db").is_file());

    let m = sn.prepare("a", "", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("1/fs")), ["rw", "rbind"])]
    );
    assert!(snaps.join("1/work").is_dir());
    sn.commit("A", "a", Labels::new()).unwrap();
    let m = sn.view("v0", "", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("2/fs")), ["ro", "rbind"])]
    );
    assert!(!snaps.join("2/work").exists(), "views have no work dir");

    let m = sn.view("v1", "A", Labels::new()).unwrap();
    assert_eq!(
        m,
        [Mount::new("bind", s(&snaps.join("1/fs")), ["ro", "rbind"])]
    );

    let m = sn.prepare("b", "A", Labels::new()).unwrap();
    let mut want = index_opts();
    want.push(format!("workdir={}", s(&snaps.join("4/work"))));
    want.push(format!("upperdir={}", s(&snaps.join("4/fs"))));
    want.push(format!("lowerdir={}", s(&snaps.join("1/fs"))));
    assert_eq!(m, [Mount::new("overlay", "overlay", want)]);
    sn.commit("B", "b", Labels::new()).unwrap();

    let m = sn.view("v2", "B", Labels::new()).unwrap();
    let mut want = index_opts();
    want.push(format!(
        "lowerdir={}:{}",
        s(&snaps.join("4/fs")),
        s(&snaps.join("1/fs"))
    ));
    assert_eq!(m, [Mount::new("overlay", "overlay", want)]);
    assert_eq!(sn.mounts("v2").unwrap(), m);

    // Directory permissions as containerd makes them.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&snaps), 0o700);
    assert_eq!(mode(&snaps.join("1/fs")), 0o755);
    assert_eq!(mode(&snaps.join("4/work")), 0o711);

    // Removal deletes the directory with the record.
    sn.remove("v2").unwrap();
    assert!(!snaps.join("5").exists());
    let mut names: Vec<String> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1", "2", "3", "4"]);
}

#[test]
fn cleanup_removes_only_unowned_directories() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("overlay");
    let sn = OverlaySnapshotter::new(&root).unwrap();
    sn.prepare("a", "", Labels::new()).unwrap();
    let snaps = root.join("snapshots");
    fs::create_dir_all(snaps.join("77/fs")).unwrap();
    fs::write(snaps.join("77/fs/orphan"), b"x").unwrap();
    fs::create_dir_all(snaps.join("new-interrupted/fs")).unwrap();
    fs::write(snaps.join("1/fs/kept"), b"y").unwrap();
    sn.cleanup().unwrap();
    assert!(!snaps.join("77").exists());
    assert!(!snaps.join("new-interrupted").exists());
    assert_eq!(fs::read(snaps.join("1/fs/kept")).unwrap(), b"y");
}

#[test]
fn async_remove_defers_the_directory_to_cleanup_and_sync_remove_does_not() {
    for async_remove in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("overlay");
        let options = Options {
            async_remove,
            ..Options::default()
        };
        let sn = OverlaySnapshotter::with_options(&root, options).unwrap();
        sn.prepare("a", "", Labels::new()).unwrap();
        fs::write(root.join("snapshots/1/fs/f"), b"x").unwrap();
        sn.commit("base", "a", Labels::new()).unwrap();
        sn.prepare("child", "base", Labels::new()).unwrap();
        sn.remove("child").unwrap();
        let child_dir = root.join("snapshots/2");
        assert_eq!(
            child_dir.exists(),
            async_remove,
            "async_remove={async_remove}"
        );
        // The key is usable again at once, with a fresh directory.
        let m = sn.prepare("child", "base", Labels::new()).unwrap();
        let upper = s(&root.join("snapshots/3/fs"));
        assert!(m[0].options.contains(&format!("upperdir={upper}")), "{m:?}");
        sn.remove("child").unwrap();
        sn.remove("base").unwrap();
        sn.cleanup().unwrap();
        let left: Vec<_> = fs::read_dir(root.join("snapshots")).unwrap().collect();
        assert!(left.is_empty(), "async_remove={async_remove}: {left:?}");
    }
}

#[test]
fn upperdir_label_is_reported_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("overlay");
    let sn = OverlaySnapshotter::with_options(
        &root,
        Options {
            upperdir_label: true,
            ..Options::default()
        },
    )
    .unwrap();
    let labels: Labels = [("k".to_string(), "v".to_string())].into();
    sn.prepare("a", "", labels.clone()).unwrap();
    let upper = s(&root.join("snapshots/1/fs"));
    let info = sn.stat("a").unwrap();
    assert_eq!(info.labels.get(UPPERDIR_LABEL), Some(&upper));
    assert_eq!(info.labels.get("k").map(String::as_str), Some("v"));
    let mut walked = Vec::new();
    sn.walk(
        &mut |i| {
            walked.push(i);
            Ok(())
        },
        &[],
    )
    .unwrap();
    assert_eq!(walked[0].labels.get(UPPERDIR_LABEL), Some(&upper));
    let mut upd = info.clone();
    upd.labels = [("n".to_string(), "1".to_string())].into();
    let after = sn.update(upd, &[]).unwrap();
    assert_eq!(after.labels.get(UPPERDIR_LABEL), Some(&upper));
    drop(sn);
    // Without the option the label is absent: it was never stored.
    let plain = OverlaySnapshotter::new(&root).unwrap();
    let info = plain.stat("a").unwrap();
    assert_eq!(info.labels, [("n".to_string(), "1".to_string())].into());
}

#[test]
fn stacks_beyond_a_page_of_options_mount() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // A long root makes the option string of 48 layers exceed a page on its own.
    let root = d
        .path()
        .join("a-rather-long-directory-name-to-make-lowerdir-paths-long/overlay");
    let sn = OverlaySnapshotter::new(&root).unwrap();
    let mut parent = String::new();
    for i in 0..48 {
        let key = format!("k{i}");
        let m = sn.prepare(&key, &parent, Labels::new()).unwrap();
        let tm = TempMount::new_in(d.path(), &m).unwrap();
        fs::write(tm.path().join(format!("f{i}")), i.to_string()).unwrap();
        tm.unmount().unwrap();
        sn.commit(&format!("c{i}"), &key, Labels::new()).unwrap();
        parent = format!("c{i}");
    }
    let m = sn.view("top", &parent, Labels::new()).unwrap();
    let opts = m[0].options.join(",");
    assert!(opts.len() > 4096, "option string is {} bytes", opts.len());
    let tm = TempMount::new_in(d.path(), &m).unwrap();
    for i in 0..48 {
        assert_eq!(
            fs::read_to_string(tm.path().join(format!("f{i}"))).unwrap(),
            i.to_string()
        );
    }
    tm.unmount().unwrap();
    // The mount thread's chdir did not move the process.
    assert_eq!(
        std::env::current_dir().unwrap(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
    );
}

#[test]
fn child_usage_counts_only_its_own_changes() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let sn = OverlaySnapshotter::new(d.path().join("overlay")).unwrap();
    let m = sn.prepare("base-a", "", Labels::new()).unwrap();
    let tm = TempMount::new_in(d.path(), &m).unwrap();
    fs::write(tm.path().join("big"), vec![1u8; 1 << 20]).unwrap();
    tm.unmount().unwrap();
    sn.commit("base", "base-a", Labels::new()).unwrap();
    let base = sn.usage("base").unwrap();
    let m = sn.prepare("child", "base", Labels::new()).unwrap();
    let tm = TempMount::new_in(d.path(), &m).unwrap();
    fs::write(tm.path().join("small"), b"small").unwrap();
    tm.unmount().unwrap();
    let child = sn.usage("child").unwrap();
    assert_eq!(child.inodes, 2, "the upper root and one file: {child:?}");
    assert!(child.size < base.size / 8, "{child:?} vs {base:?}");
}

#[test]
fn containerds_go_overlay_snapshotter_agrees_both_ways() {
    stowage_snapshots_storage::testsuite::gocheck::check_both_directions("overlayfs", &|root| {
        Ok(Box::new(OverlaySnapshotter::new(root)?) as Box<dyn Snapshotter>)
    });
}

#[test]
fn a_root_in_use_is_not_opened_twice() {
    let d = tempfile::tempdir().unwrap();
    let first = OverlaySnapshotter::new(d.path().join("root")).unwrap();
    // containerd's bbolt would wait forever for the lock; here the second open fails fast.
    let err = OverlaySnapshotter::new(d.path().join("root")).unwrap_err();
    assert_eq!(
        err.kind(),
        stowage_core_types::ErrorKind::Unavailable,
        "{err}"
    );
    drop(first);
    OverlaySnapshotter::new(d.path().join("root")).unwrap();
}

#[test]
fn a_directory_left_by_an_interrupted_create_does_not_block_its_id() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("overlay");
    let sn = OverlaySnapshotter::new(&root).unwrap();
    sn.prepare("a", "", Labels::new()).unwrap();
    // What a crash after the rename and before the metastore commit leaves: the next id's
    // directory, with content, but no record.
    fs::create_dir_all(root.join("snapshots/2/fs/junk")).unwrap();
    let m = sn.prepare("b", "", Labels::new()).unwrap();
    assert_eq!(m[0].source, s(&root.join("snapshots/2/fs")));
    assert!(!root.join("snapshots/2/fs/junk").exists());
    assert!(root.join("snapshots/2/work").is_dir());
}
