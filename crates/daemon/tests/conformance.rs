//! The content conformance suite through our gRPC client against stowaged: every case on a
//! fresh daemon and root.

mod common;

use std::sync::Arc;

use common::Stowaged;
use stowage_content::testsuite::TestStore;
use stowage_daemon::remote::content::RemoteContentStore;

fn remote_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = Stowaged::start(dir.path()).expect("starting stowaged");
    // As containerd's own content suite, work under a lease so the collector leaves the
    // blobs of a case alone.
    d.ok(&["-n", "conformance", "leases", "create", "--id", "suite"]);
    let store =
        RemoteContentStore::connect(&d.address, "conformance", Some("suite")).expect("connect");
    TestStore::new(Arc::new(store), (d, dir))
}

stowage_content::content_store_conformance!(remote_store);
