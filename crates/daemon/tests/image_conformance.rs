//! The image store conformance suite through our gRPC client: against stowaged (every case
//! on a fresh daemon and root) and against containerd 1.6 itself, which must pass every case:
//! the suite pins containerd's semantics, and stowaged is held to the same cases.

mod common;

use std::sync::Arc;

use common::Stowaged;
use stowage_daemon::remote::content::RemoteContentStore;
use stowage_daemon::remote::images::RemoteImageStore;
use stowage_metadata::testsuite::images::TestImages;

/// The stores of namespaces `ns` and `<ns>-other` at `address`. No lease: the synchronous
/// delete case needs the blob to be held by its image alone.
fn stores(address: &std::path::Path, ns: &str, guard: impl std::any::Any + Send) -> TestImages {
    let images = RemoteImageStore::connect(address, ns).expect("connect images");
    let other = RemoteImageStore::connect(address, &format!("{ns}-other")).expect("connect images");
    let content = RemoteContentStore::connect(address, ns, None).expect("connect content");
    TestImages::new(Arc::new(images), Arc::new(other), Arc::new(content), guard)
}

fn remote() -> TestImages {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = Stowaged::start(dir.path()).expect("starting stowaged");
    let address = d.address.clone();
    stores(&address, "conformance", (d, dir))
}

stowage_metadata::image_store_conformance!(remote);

/// Every case against containerd 1.6 through the same client: one containerd, a pair of
/// namespaces per case.
#[test]
fn containerd_passes_every_case() {
    use std::panic::{self, AssertUnwindSafe};

    use stowage_metadata::testsuite::images::{run_one, CASES};
    use stowage_tests::containerd::Containerd;

    if !common::require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Containerd::start(&dir.path().join("root"), dir.path()).expect("starting containerd");
    let mut failed = Vec::new();
    for (name, _) in CASES {
        let ns = format!("case-{}", name.replace('_', "-"));
        let factory = || stores(&c.address, &ns, ());
        if panic::catch_unwind(AssertUnwindSafe(|| run_one(name, &factory))).is_err() {
            failed.push(*name);
        }
    }
    // The cases ran there: what the round trip case created is in containerd's own listing.
    let listed = c
        .ctr(&["-n", "case-create-get-round-trip", "images", "ls", "-q"])
        .expect("ctr images ls");
    assert!(
        listed.lines().any(|l| l == "docker.io/library/round:trip"),
        "containerd does not list the round trip case's image: {listed:?}"
    );
    assert!(
        failed.is_empty(),
        "cases containerd 1.6 fails: {failed:?}\n{}",
        c.log()
    );
}
