//! containerd 1.6's local content store, on disk byte for byte as containerd lays it out, so
//! stowage and containerd can share one `io.containerd.content.v1.content` directory.
//!
//! [`LocalStore`] implements every content trait of `stowage-core-types`: positional reads,
//! resumable writers keyed by reference (one writer per reference at a time), commit with size
//! and digest verification, fsync and an atomic rename, labels through an optional
//! [`LabelStore`], walking with filters, and ingest status and abort.
//!
//! With the `testsuite` feature, the `testsuite` module holds the conformance suite every
//! content store implementation runs.

mod fsutil;
mod hashing;
mod ingest;
mod labels;
mod locks;
mod reader;
mod store;
mod timefmt;
mod writer;

#[cfg(feature = "testsuite")]
pub mod testsuite;

/// The content store's directory under a containerd (or stowage) root: open
/// `LocalStore::open(root.join(CONTENT_DIR))` to share content with containerd 1.6.
pub const CONTENT_DIR: &str = "io.containerd.content.v1.content";

pub use labels::{LabelStore, MemoryLabelStore};
pub use reader::BlobReader;
pub use store::LocalStore;
pub use writer::LocalWriter;
