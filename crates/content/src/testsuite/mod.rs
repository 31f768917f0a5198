//! The content store conformance suite, written once and run by every implementation: the
//! local store, the namespaced metadata store and the gRPC client.
//!
//! It pins down what containerd's `content/testsuite` does (writes, status, resume in its
//! variants, commit verification and error states, labels, small blobs) and more: walking with
//! filters, ingest listing with filters, abort, delete, ref locking, concurrent writers and
//! commits, large streamed blobs, positional reads, hostile references and truncation.
//!
//! Run it either all at once:
//!
//! ```ignore
//! #[test]
//! fn conformance() {
//!     stowage_content::testsuite::run_all(&|| {
//!         let dir = tempfile::tempdir().unwrap();
//!         let store = MyStore::open(dir.path()).unwrap();
//!         TestStore::new(Arc::new(store), dir)
//!     });
//! }
//! ```
//!
//! or as one `#[test]` per case with [`content_store_conformance!`](crate::content_store_conformance),
//! which reports each case on its own and lets the test harness run them in parallel.
//!
//! Every case gets a fresh, empty store from the factory. Stores must support labels.

use std::any::Any;
use std::sync::Arc;

use stowage_core_types::content::Store;

pub mod cases;
mod util;

/// A store under test, kept alive together with whatever backs it (a temp dir, a daemon).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    // Dropped after the store (field order), so a temp dir outlives the store using it.
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore").finish_non_exhaustive()
    }
}

impl TestStore {
    /// Wraps `store`; `guard` is dropped after it (e.g. the `tempfile::TempDir` it lives in).
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send) -> Self {
        TestStore {
            store,
            _guard: Box::new(guard),
        }
    }
}

/// One case of the suite.
pub type Case = fn(&dyn Store);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("writer_commit_and_info", cases::writer_commit_and_info),
    ("status_tracks_progress", cases::status_tracks_progress),
    ("commit_existing_content", cases::commit_existing_content),
    (
        "open_with_existing_expected",
        cases::open_with_existing_expected,
    ),
    ("resume_after_close", cases::resume_after_close),
    ("resume_variants", cases::resume_variants),
    ("small_blob_read_past_end", cases::small_blob_read_past_end),
    ("positional_reads", cases::positional_reads),
    ("labels_update", cases::labels_update),
    ("commit_error_state", cases::commit_error_state),
    (
        "commit_verifies_size_and_digest",
        cases::commit_verifies_size_and_digest,
    ),
    ("ref_locking", cases::ref_locking),
    ("walk_filters", cases::walk_filters),
    ("delete_blob", cases::delete_blob),
    ("abort_ingest", cases::abort_ingest),
    ("list_statuses_filter", cases::list_statuses_filter),
    ("concurrent_writers", cases::concurrent_writers),
    ("concurrent_same_ref", cases::concurrent_same_ref),
    (
        "concurrent_commit_same_content",
        cases::concurrent_commit_same_content,
    ),
    ("large_blob_streamed", cases::large_blob_streamed),
    ("hostile_refs", cases::hostile_refs),
    ("truncate_and_rewrite", cases::truncate_and_rewrite),
    ("closed_writer", cases::closed_writer),
    ("empty_ref_rejected", cases::empty_ref_rejected),
    ("empty_blob", cases::empty_blob),
    ("missing_things", cases::missing_things),
    (
        "commit_rejects_bad_labels",
        cases::commit_rejects_bad_labels,
    ),
    (
        "expected_size_without_digest",
        cases::expected_size_without_digest,
    ),
];

/// Runs the case `name` on a fresh store from `factory`. Panics when it fails or is unknown.
pub fn run_one(name: &str, factory: &dyn Fn() -> TestStore) {
    let Some((_, case)) = CASES.iter().find(|(n, _)| *n == name) else {
        panic!("no content conformance case named {name:?}");
    };
    let fixture = factory();
    case(&*fixture.store);
}

/// Runs every case, each on a fresh store, and panics listing the ones that failed.
pub fn run_all(factory: &dyn Fn() -> TestStore) {
    stowage_core_types::conformance::run_all("content", CASES.iter().map(|(n, _)| *n), |name| {
        run_one(name, factory)
    });
}

/// Generates one `#[test]` per conformance case, each calling `$factory` (an expression of type
/// `impl Fn() -> TestStore`) for a fresh store.
///
/// ```ignore
/// stowage_content::content_store_conformance!(my_factory);
/// ```
#[macro_export]
macro_rules! content_store_conformance {
    ($factory:expr) => {
        $crate::content_store_conformance!(@cases $factory;
            writer_commit_and_info status_tracks_progress commit_existing_content
            open_with_existing_expected resume_after_close resume_variants
            small_blob_read_past_end positional_reads labels_update commit_error_state
            commit_verifies_size_and_digest ref_locking walk_filters delete_blob abort_ingest
            list_statuses_filter concurrent_writers concurrent_same_ref
            concurrent_commit_same_content large_blob_streamed hostile_refs
            truncate_and_rewrite closed_writer empty_ref_rejected empty_blob missing_things
            commit_rejects_bad_labels expected_size_without_digest);
    };
    (@cases $factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::testsuite::run_one(stringify!($name), &$factory);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_lists_every_case() {
        // The macro repeats the case names; keep it in step with CASES.
        let src = include_str!("mod.rs");
        let macro_body = src
            .split("(@cases $factory;")
            .nth(1)
            .and_then(|s| s.split(");").next())
            .unwrap_or_default();
        let in_macro: Vec<&str> = macro_body.split_whitespace().collect();
        let in_cases: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        assert_eq!(in_macro, in_cases);
    }
}
