//! containerd 1.6's metadata database (`meta.db`) on `stowage-bolt`, byte-compatible both ways:
//! namespaces, images, containers, leases, namespaced views of a content store and of
//! snapshotters, and the mark-and-sweep garbage collector.
//!
//! Open a root with [`Db::open`]; per-namespace stores come from [`Db::images`],
//! [`Db::containers`], [`Db::leases`], [`Db::content_store`] and [`Db::snapshotter`]. Every
//! operation is one bolt transaction. The schema and encodings are those of containerd's
//! `metadata` package (see `shared/reference/formats.md`).

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

pub use containers::{Container, Containers, Runtime};
pub use content::{ContentStore, INGEST_EXPIRY};
pub use db::{db_path, Db, MutationCallback, Options, DB_FILE, PLUGIN_DIR};
pub use encoding::{
    decode_time, decode_uvarint, decode_varint, encode_time, encode_uvarint, encode_varint, Any,
    SPEC_TYPE_URL,
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
