//! Handing a root over: what stowaged stored, containerd 1.6 serves (images, snapshots,
//! mounts), and the reverse.

mod common;

use common::{require_ctr, tree, Stowaged};
use stowage_tests::containerd::Containerd;

fn mounted(ctr: &dyn Fn(&[&str]) -> String, image: &str, target: &std::path::Path) -> Vec<String> {
    std::fs::create_dir_all(target).unwrap();
    let t = target.to_str().unwrap();
    ctr(&["images", "mount", image, t]);
    let listing = tree(target);
    ctr(&["images", "unmount", "--rm", t]);
    listing
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[test]
fn stowaged_root_to_containerd_and_back() {
    if !require_ctr(true) {
        return;
    }
    let fixtures = common::fixtures();
    let (first, second) = (&fixtures[..2], &fixtures[2..4]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let sdir = work.path().join("s");
    let cdir = work.path().join("c");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::create_dir_all(&cdir).unwrap();

    // stowaged writes, containerd reads.
    let d = Stowaged::start_with(&root, &sdir, &[]).unwrap();
    let mut want = Vec::new();
    for f in first {
        d.ok(&["images", "import", f.archive.to_str().unwrap()]);
        let ours = |a: &[&str]| d.ok(a);
        want.push(mounted(
            &ours,
            &f.reference,
            &work.path().join(format!("s-{}", f.name)),
        ));
    }
    let images = d.ok(&["images", "ls"]);
    let snaps = d.ok(&["snapshots", "ls"]);
    assert!(d.stop().unwrap());

    let c = Containerd::start(&root, &cdir).unwrap();
    let theirs = |a: &[&str]| {
        c.ctr(a)
            .unwrap_or_else(|e| panic!("containerd: {e}\n{}", c.log()))
    };
    assert_eq!(
        sorted_lines(&theirs(&["images", "ls"])),
        sorted_lines(&images)
    );
    assert_eq!(
        sorted_lines(&theirs(&["snapshots", "ls"])),
        sorted_lines(&snaps)
    );
    for (f, want) in first.iter().zip(&want) {
        let got = mounted(
            &theirs,
            &f.reference,
            &work.path().join(format!("c-{}", f.name)),
        );
        assert_eq!(
            &got, want,
            "{}: containerd mounts a different rootfs",
            f.name
        );
    }
    // containerd writes, stowaged reads.
    let mut want2 = Vec::new();
    for f in second {
        theirs(&["images", "import", f.archive.to_str().unwrap()]);
        want2.push(mounted(
            &theirs,
            &f.reference,
            &work.path().join(format!("c2-{}", f.name)),
        ));
    }
    let images = theirs(&["images", "ls"]);
    let snaps = theirs(&["snapshots", "ls"]);
    c.stop().unwrap();

    let d = Stowaged::start_with(&root, &sdir, &[]).unwrap();
    assert_eq!(
        sorted_lines(&d.ok(&["images", "ls"])),
        sorted_lines(&images)
    );
    assert_eq!(
        sorted_lines(&d.ok(&["snapshots", "ls"])),
        sorted_lines(&snaps)
    );
    let ours = |a: &[&str]| d.ok(a);
    for (f, want) in second.iter().zip(&want2) {
        let got = mounted(
            &ours,
            &f.reference,
            &work.path().join(format!("s2-{}", f.name)),
        );
        assert_eq!(&got, want, "{}: stowaged mounts a different rootfs", f.name);
    }
    for (f, want) in first.iter().zip(&want) {
        let got = mounted(
            &ours,
            &f.reference,
            &work.path().join(format!("s3-{}", f.name)),
        );
        assert_eq!(&got, want, "{}: changed across the handovers", f.name);
    }
}
