//! Remote implementations of the core traits over stowaged's (or containerd's) gRPC API, so
//! code written against `core_types::content::Store` (or the snapshotter, diff and image
//! store traits) works across the socket and the same conformance suites run against the
//! daemon.
//!
//! The traits are synchronous: the stores block on the runtime of their [`Connection`].
//! Call them from ordinary threads (or `spawn_blocking` ones), not from async code. Build
//! them from one connection ([`Connection::scope`]) so that they share its socket and
//! runtime; each store's own `connect` opens a connection of its own.

mod connection;
pub mod content;
pub mod diff;
pub mod images;
pub mod snapshots;

pub use connection::{Connection, Scope};
