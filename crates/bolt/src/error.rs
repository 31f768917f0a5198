//! The error type of the engine.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// The crate is standalone (it does not depend on `stowage-core-types`); callers map these
/// variants onto their own error kinds, e.g. `BucketNotFound` → NotFound, `Locked` → Unavailable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `what` names the operation and file.
    #[error("{what}: {source}")]
    Io {
        /// The operation that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid bbolt database or is damaged.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// Another process (or another handle in this one) holds the file lock.
    #[error("database {path} is locked by another handle (gave up after {waited_ms} ms)")]
    Locked {
        /// The database path.
        path: PathBuf,
        /// How long we waited for the lock.
        waited_ms: u128,
    },
    /// A write was attempted on a database opened read-only.
    #[error("database is opened read-only")]
    ReadOnly,
    /// An earlier commit failed while writing or syncing its meta page; the file may hold
    /// that commit or not, so this handle refuses further writes. Reopen the database.
    #[error("an earlier commit failed while writing its meta page; reopen the database to continue writing")]
    Poisoned,
    /// The named bucket does not exist.
    #[error("bucket not found: {0}")]
    BucketNotFound(String),
    /// A bucket with that name already exists.
    #[error("bucket already exists: {0}")]
    BucketExists(String),
    /// A key holds a bucket where a value was expected, or the reverse.
    #[error("incompatible value: key {0} holds a {1}")]
    IncompatibleValue(String, &'static str),
    /// An argument is out of range (empty key, key or value too large, bad option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
        Error::Corrupt(msg.into())
    }
}

/// Renders a key for messages: printable ASCII as is, anything else as hex.
pub(crate) fn show_key(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        let mut s = String::from("0x");
        for b in key {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}
