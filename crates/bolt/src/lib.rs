//! A storage engine for bbolt files, file-compatible with Go bbolt 1.3.
//!
//! See `FORMAT.md` next to this crate for the on-disk format and disk assumptions.
//!
//! # Design
//! - **Copy-on-write.** A write transaction materialises into owned in-memory nodes only
//!   the pages on the paths it changes (freeing each page as it does). At commit it merges
//!   under-filled nodes, splits nodes to page size, writes them to free or new pages,
//!   writes the freelist, fdatasyncs, then writes the meta page for its txid and
//!   fdatasyncs again. Nodes own their children, so a page is materialised and freed at
//!   most once per transaction: the double free that breaks `bbolt-rs` after
//!   every-other-key deletes cannot be expressed.
//! - **Readers never block.** A read transaction clones, under one short mutex, the current
//!   meta and an `Arc` of the current memory map. Growth never remaps in place: the
//!   committing writer creates a new, larger mapping and swaps the `Arc`; old mappings
//!   stay valid until their last reader ends. There is no lock that a reader holds while
//!   waiting for another, so readers and a growing writer cannot deadlock.
//! - **One writer**, serialised by a flag and condvar. Pages freed by transaction T are
//!   reused only once no reader older than T remains.
//! - **Errors, not panics**, on bad files: every page access is bounds-checked against the
//!   snapshot's high-water mark and the file, tree depth is capped (a cycle in the page
//!   graph is an error), and meta pages are checksummed.
//!
//! # Example
//! ```
//! use stowage_bolt::{Db, Error, Options};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(dir.path().join("meta.db"), Options::default())?;
//! db.update::<_, Error>(|tx| {
//!     let mut v1 = tx.create_bucket_if_not_exists(b"v1")?;
//!     let mut ns = v1.create_bucket_if_not_exists(b"default")?;
//!     ns.put(b"key", b"value")?;
//!     ns.next_sequence()?;
//!     Ok(())
//! })?;
//! let tx = db.begin_read()?;
//! let ns = tx.bucket(b"v1")?.unwrap().bucket(b"default")?.unwrap();
//! assert_eq!(ns.get(b"key")?, Some(&b"value"[..]));
//! assert_eq!(ns.sequence(), 1);
//! let mut c = tx.bucket(b"v1")?.unwrap().cursor();
//! assert_eq!(c.first()?, Some((&b"default"[..], None))); // a bucket: key, no value
//! tx.check()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! # Differences from Go's API
//! - Handles borrow: a [`BucketMut`] borrows its [`WriteTx`] mutably, so one bucket is
//!   written at a time; [`BucketMut::into_bucket_mut`] walks a path of nested buckets.
//! - Cursors are read-only (no `Cursor.Delete`); collect keys, then delete them.
//! - [`Cursor::bucket`] opens the nested bucket under the cursor from the entry it already
//!   holds, so walking a bucket's sub-buckets costs no second search per entry (Go's
//!   `Bucket.Bucket(k)` after `Cursor.Next` searches again).
//! - Cursor moves and gets return `Result`: a damaged file is an error, never a panic.
//! - `lock_timeout` defaults to failing at once instead of waiting forever.
//!
//! Unix only (flock, pread/pwrite, mmap); files must be little-endian (see FORMAT.md).
//!
//! The crate is standalone: it has its own [`Error`] (it does not depend on
//! `stowage-core-types`), which callers map to their error kinds.

mod check;
mod cursor;
mod db;
mod disk;
mod error;
mod format;
mod freelist;
mod node;
mod write;

pub use check::BucketStats;
pub use cursor::{Bucket, Cursor, Entry};
pub use db::{Db, DbStats, Options, ReadTx};
pub use error::{Error, Result};
pub use format::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
pub use write::{BucketMut, WriteTx};

/// Scripted random transactions and their model, shared by this crate's fault tests (unit
/// and integration); not part of the engine's API.
#[cfg(any(test, feature = "testscript"))]
#[doc(hidden)]
pub use disk::script as testscript;
