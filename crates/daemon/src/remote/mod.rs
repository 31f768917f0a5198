//! Remote implementations of the core traits over stowaged's (or containerd's) gRPC API, so
//! code written against `core_types::content::Store` (or the snapshotter, diff and image
//! store traits) works across the socket and the same conformance suites run against the
//! daemon.
//!
//! The traits are synchronous; each remote store owns a small tokio runtime and blocks on it.
//! Call them from ordinary threads, not from inside another tokio runtime.

pub mod content;
pub mod diff;
pub mod images;
pub mod snapshots;

use std::sync::Arc;

use stowage_core_types::{Error, Result};

/// A runtime shared by the remote stores of one connection.
pub(crate) fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::io("starting the client runtime", e))
}
