//! The Diff service's Diff (compare) through `ctr snapshots diff`: the layer of a native
//! snapshot's changes lands in the content store with its DiffID label and the changed file.

mod common;

use common::{require_ctr, Stowaged};

#[test]
fn ctr_snapshots_diff_creates_the_layer() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let sn = ["snapshots", "--snapshotter", "native"];
    d.ok(&[&sn[..], &["prepare", "work", ""]].concat());
    // The native snapshot is a plain directory: write into it where its mount points.
    let mounts = d.ok(&[&sn[..], &["mounts", "/x", "work"]].concat());
    let source = mounts
        .split_whitespace()
        .find(|w| w.starts_with('/') && *w != "/x")
        .unwrap_or_else(|| panic!("no source in {mounts}"))
        .to_string();
    std::fs::write(
        std::path::Path::new(&source).join("hello.txt"),
        b"hi there\n",
    )
    .unwrap();

    // ctr writes the layer to stdout and, with --keep, leaves the blob in the store.
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&d.address)
        .args(sn)
        .args([
            "diff",
            "--keep",
            "--media-type",
            "application/vnd.oci.image.layer.v1.tar",
            "work",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = out.stdout;
    let digest = {
        use sha2::{Digest as _, Sha256};
        format!(
            "sha256:{}",
            Sha256::digest(&blob)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let ls = d.ok(&["content", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&digest))
        .unwrap_or_else(|| panic!("{digest} not stored:\n{ls}"));
    // An uncompressed layer is its own DiffID.
    assert!(
        line.contains(&format!("containerd.io/uncompressed={digest}")),
        "{line}"
    );
    let mut ar = tar::Archive::new(blob.as_slice());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["hello.txt"], "{names:?}");
}
