//! The content conformance suite against the local store (labels in memory, as containerd's
//! own local-store tests use).

use std::sync::Arc;

use stowage_content::testsuite::TestStore;
use stowage_content::LocalStore;

fn local_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::with_memory_labels(dir.path().join("content")).expect("open store");
    TestStore::new(Arc::new(store), dir)
}

stowage_content::content_store_conformance!(local_store);
