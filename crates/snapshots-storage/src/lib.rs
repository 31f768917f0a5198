//! What containerd's snapshotters share, for `stowage-snapshots-native` and
//! `stowage-snapshots-overlay`:
//!
//! - [`metastore`]: the `metadata.db` record store, byte-compatible with containerd 1.6's
//!   `snapshots/storage` (so either program can open the other's snapshotter root);
//! - [`layout`]: the snapshotter root (`metadata.db`, `snapshots/<id>`) and the operations
//!   that change a record and its directory together;
//! - [`mount`]: mounting and unmounting [`Mount`](stowage_core_types::mount::Mount) lists,
//!   temporary mounts;
//! - [`usage`]: disk usage as containerd counts it;
//! - [`codec`]: Go's varint and `time.MarshalBinary` encodings (also used by
//!   `stowage-metadata` for `meta.db`);
//! - `testsuite` (feature `testsuite`): the snapshotter conformance suite.

pub mod codec;
pub mod layout;
pub mod metastore;
pub mod mount;
pub mod usage;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use layout::{Layout, LayoutOptions, Removal};
pub use metastore::{MetaStore, Snapshot};
