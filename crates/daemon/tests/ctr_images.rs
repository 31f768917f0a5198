//! The real `ctr` imports the generated OCI archives into stowaged (content Write, images,
//! leases, snapshots and diff Apply through ctr's client-side unpacker), and the rootfs it
//! mounts equals the one containerd 1.6 produces from the same archive.

mod common;

use std::path::Path;

use common::{require_ctr, tree, Stowaged};
use stowage_tests::containerd::Containerd;

fn mount_tree(
    ctr: &dyn Fn(&[&str]) -> String,
    sn: &str,
    image: &str,
    target: &Path,
) -> Vec<String> {
    std::fs::create_dir_all(target).unwrap();
    let t = target.to_str().unwrap();
    ctr(&["images", "mount", "--snapshotter", sn, image, t]);
    let listing = tree(target);
    ctr(&["images", "unmount", "--rm", t]);
    listing
}

/// One containerd at a time: two of them importing side by side have failed now and then
/// for reasons of their own (seen once), which is not what these tests are about.
static CONTAINERD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn import_and_compare(sn: &str) {
    let _one = CONTAINERD.lock().unwrap_or_else(|p| p.into_inner());
    let fixtures = common::fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&cdir.path().join("root"), cdir.path()).unwrap();
    let ours = |a: &[&str]| d.ok(a);
    let theirs = |a: &[&str]| {
        c.ctr(a)
            .unwrap_or_else(|e| panic!("containerd: {e}\n{}", c.log()))
    };
    for f in fixtures {
        let archive = f.archive.to_str().unwrap();
        ours(&["images", "import", "--snapshotter", sn, archive]);
        theirs(&["images", "import", "--snapshotter", sn, archive]);
    }
    let ls = ours(&["images", "ls"]);
    for f in fixtures {
        let line = ls
            .lines()
            .find(|l| l.starts_with(&format!("{} ", f.reference)))
            .unwrap_or_else(|| panic!("{} not listed:\n{ls}", f.reference));
        assert!(line.contains(&f.manifest_digest), "{line}");
    }
    // Same images, digests and sizes as containerd lists.
    let norm = |s: &str| {
        let mut v: Vec<String> = s
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    assert_eq!(norm(&ls), norm(&theirs(&["images", "ls"])));

    let check = ours(&["images", "check", "--snapshotter", sn]);
    assert_eq!(
        norm(&check),
        norm(&theirs(&["images", "check", "--snapshotter", sn]))
    );
    for l in check.lines().skip(1) {
        assert!(
            l.contains("complete") && l.trim_end().ends_with("true"),
            "{l}"
        );
    }

    for f in fixtures {
        let ours_tree = mount_tree(
            &ours,
            sn,
            &f.reference,
            &dir.path().join(format!("m-{}", f.name)),
        );
        let theirs_tree = mount_tree(
            &theirs,
            sn,
            &f.reference,
            &cdir.path().join(format!("m-{}", f.name)),
        );
        assert!(!ours_tree.is_empty(), "{}: empty rootfs", f.name);
        assert_eq!(
            ours_tree, theirs_tree,
            "{}: rootfs differs from containerd's",
            f.name
        );
    }

    // Snapshots: same committed chain IDs as containerd (the mounts above were removed).
    let snaps = |s: String| {
        let mut v: Vec<String> = s
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(1).collect())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        snaps(ours(&["snapshots", "--snapshotter", sn, "ls"])),
        snaps(theirs(&["snapshots", "--snapshotter", sn, "ls"]))
    );

    // tag and rm.
    let base = &fixtures[0].reference;
    ours(&["images", "tag", base, "example.test/copy:1"]);
    let ls = ours(&["images", "ls", "-q"]);
    assert!(ls.lines().any(|l| l == "example.test/copy:1"), "{ls}");
    let err = d.fails(&["images", "tag", base, "example.test/copy:1"]);
    assert!(err.contains("already exists"), "{err}");
    ours(&["images", "rm", "example.test/copy:1"]);
    let ls = ours(&["images", "ls", "-q"]);
    assert!(!ls.lines().any(|l| l == "example.test/copy:1"), "{ls}");
    assert!(ls.lines().any(|l| l == base), "{ls}");
    for f in fixtures {
        ours(&["images", "rm", "--sync", &f.reference]);
    }
    assert_eq!(ours(&["images", "ls", "-q"]), "");
}

#[test]
fn import_mount_overlayfs_like_containerd() {
    if !require_ctr(true) {
        return;
    }
    import_and_compare("overlayfs");
}

#[test]
fn import_mount_native_like_containerd() {
    if !require_ctr(true) {
        return;
    }
    import_and_compare("native");
}

#[test]
fn containers() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let base = &fixtures[0];
    // `ctr events` sees what an import and a container create publish.
    let events = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&d.address)
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.ok(&["images", "import", base.archive.to_str().unwrap()]);
    d.ok(&[
        "containers",
        "create",
        "--label",
        "app=web",
        &base.reference,
        "c1",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: SIGTERM to the ctr child we spawned and have not reaped.
    unsafe {
        libc::kill(events.id() as libc::pid_t, libc::SIGTERM);
    }
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    for topic in [
        "/images/create",
        "/snapshot/prepare",
        "/snapshot/commit",
        "/containers/create",
    ] {
        assert!(
            seen.lines()
                .any(|l| l.contains(&format!(" default {topic} "))),
            "no {topic} event in:\n{seen}"
        );
    }
    d.ok(&["containers", "create", &base.reference, "c2"]);
    let ls = d.ok(&["containers", "ls"]);
    let rows: Vec<Vec<&str>> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec![
            "c1",
            base.reference.as_str(),
            "io.containerd.runc.v2"
        ]),
        "{ls}"
    );
    assert_eq!(
        d.ok(&["containers", "ls", "-q", "labels.app==web"]).trim(),
        "c1"
    );
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["containers", "info", "c1"])).unwrap();
    assert_eq!(info["ID"], "c1");
    assert_eq!(info["Image"], base.reference.as_str());
    assert_eq!(info["Snapshotter"], "overlayfs");
    assert_eq!(info["SnapshotKey"], "c1");
    assert_eq!(info["Labels"]["app"], "web");
    // ctr creates the rootfs snapshot with the container.
    let snaps = d.ok(&["snapshots", "ls"]);
    assert!(snaps.lines().any(|l| l.starts_with("c1 ")), "{snaps}");
    let err = d.fails(&["containers", "create", &base.reference, "c1"]);
    assert!(err.contains("already exists"), "{err}");
    d.ok(&["containers", "rm", "c1", "c2"]);
    assert_eq!(d.ok(&["containers", "ls", "-q"]), "");
    let snaps = d.ok(&["snapshots", "ls"]);
    assert!(!snaps.lines().any(|l| l.starts_with("c1 ")), "{snaps}");
    let err = d.fails(&["containers", "info", "c1"]);
    assert!(err.contains("not found"), "{err}");
}
