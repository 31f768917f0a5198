//! containerd 1.6's metadata database (`meta.db`) on `stowage-bolt`, compatible both ways:
//! namespaces, images, containers, leases, namespaced views of a content store and of
//! snapshotters, and the mark-and-sweep garbage collector.
//!
//! # Using it
//! - [`Db::open`] opens `<root>/io.containerd.metadata.v1.bolt/meta.db` (mode 0644), failing
//!   fast with `Unavailable` when another process (a running containerd) holds its lock, and
//!   brings the schema to `v1` version 3 (migrating 0–2 as containerd does; a newer or unknown
//!   schema is refused and the file left untouched). [`Options`] carries the content backend
//!   and the snapshotters by name.
//! - Per-namespace stores: [`Db::images`], [`Db::containers`], [`Db::leases`], and the
//!   namespaced [`Db::content_store`] and [`Db::snapshotter`]. These two take an optional
//!   lease id: work done through them is added to that lease, as containerd does for a
//!   request carrying `containerd-lease`.
//! - Garbage collection: [`Db::collect`] runs one pass now; a [`Scheduler`] runs them in the
//!   background with containerd's knobs ([`GcConfig`]); [`Db::collect_sync`],
//!   [`Images::delete_sync`] and [`Leases::delete_sync`] wait for one.
//!
//! Every operation is one bolt transaction, so a failed one writes nothing. Readers never
//! wait for writers; writers wait while a collection marks and removes records.
//!
//! # Compatibility notes
//! The schema, encodings and semantics are those of containerd's `metadata` package (see
//! `shared/reference/formats.md`); the tests compare with the real containerd 1.6 and its Go
//! metadata package. Deliberate differences: a namespace holding leases cannot be deleted
//! (containerd 1.6 only checks images, blobs, containers and snapshots); meta.db's lock is not
//! waited for forever; the `labels` bucket is not created for a label map whose values are all
//! empty (containerd creates it empty).

mod containers;
mod content;
mod db;
mod encoding;
mod gc;
mod images;
mod leases;
mod namespaces;
mod scheduler;
mod schema;
mod snapshots;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use containers::{Container, Containers, Runtime};
pub use content::{ContentSharing, ContentStore, INGEST_EXPIRY};
pub use db::{db_path, Db, MutationCallback, Options, DB_FILE, PLUGIN_DIR};
pub use encoding::{
    decode_time, decode_uvarint, decode_varint, encode_time, encode_uvarint, encode_varint, Any,
    RUNC_OPTIONS_TYPE_URL, SPEC_TYPE_URL,
};
pub use gc::{
    GcStats, Node, ResourceKind, LABEL_GC_REF_CONTENT, LABEL_GC_REF_SNAPSHOT, LABEL_GC_ROOT,
};
pub use images::{Image, Images};
pub use leases::{
    format_rfc3339, parse_rfc3339, Lease, Leases, Resource, LABEL_GC_EXPIRE, LABEL_GC_FLAT,
};
pub use scheduler::{GcConfig, Scheduler};
pub use schema::{DB_VERSION, KEY_VERSION, SCHEMA};
pub use snapshots::{
    inherited_labels, NamespacedSnapshotter, INHERITED_LABELS_PREFIX, LABEL_SNAPSHOT_REF,
};
