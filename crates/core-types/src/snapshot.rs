//! The snapshotter trait: how layered filesystems are prepared, committed, viewed and removed.
//!
//! It mirrors containerd's `snapshots.Snapshotter`. Keys name snapshots; an *active* snapshot is
//! writable and becomes *committed* under a new name; a *view* is a read-only active snapshot.
//! Implementations: `stowage-snapshots-native`, `stowage-snapshots-overlay`, the namespaced
//! wrapper in `stowage-metadata` and the gRPC client; all run one conformance suite.

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::mount::Mount;

/// What state a snapshot is in. The numbers are containerd's, also stored in its metastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Not known (never stored for a real snapshot).
    Unknown = 0,
    /// A read-only snapshot of a committed parent.
    View = 1,
    /// A writable snapshot.
    Active = 2,
    /// An immutable snapshot that can be a parent.
    Committed = 3,
}

impl Kind {
    /// The byte stored in the metastore.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// Decodes the metastore byte.
    pub fn from_byte(b: u8) -> Result<Kind> {
        match b {
            0 => Ok(Kind::Unknown),
            1 => Ok(Kind::View),
            2 => Ok(Kind::Active),
            3 => Ok(Kind::Committed),
            other => Err(Error::data_loss(format!(
                "unknown snapshot kind byte {other}"
            ))),
        }
    }

    /// The lower-case name containerd prints (`"view"`, `"active"`, `"committed"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown",
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its state.
    pub kind: Kind,
    /// Its key (active, view) or name (committed).
    pub name: String,
    /// The committed parent's name; empty for a base snapshot.
    pub parent: String,
    /// Its labels.
    pub labels: Labels,
    /// When it was created.
    pub created_at: SystemTime,
    /// When its record last changed.
    pub updated_at: SystemTime,
}

/// Disk used by a snapshot's own layer (not its parents').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Number of inodes.
    pub inodes: i64,
    /// Bytes used.
    pub size: i64,
}

/// A snapshotter. All methods are synchronous and may block on the filesystem.
pub trait Snapshotter: Send + Sync {
    /// Information about the snapshot `key`; `NotFound` when absent.
    fn stat(&self, key: &str) -> Result<Info>;
    /// Updates the fields named by `fieldpaths` (`labels`, `labels.<k>`); none replaces all
    /// labels. Returns the stored result.
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info>;
    /// Disk usage of `key`; for active snapshots computed now, for committed ones as recorded.
    fn usage(&self, key: &str) -> Result<Usage>;
    /// The mounts that give the filesystem of active or view snapshot `key`.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Creates active snapshot `key` on committed `parent` (empty for none) and returns its mounts.
    /// `AlreadyExists` when `key` is taken.
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;
    /// Creates a read-only view `key` of committed `parent` and returns its mounts.
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;
    /// Commits active snapshot `key` as `name`; `key` is gone afterwards.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;
    /// Removes `key`; `FailedPrecondition` while it has children.
    fn remove(&self, key: &str) -> Result<()>;
    /// Calls `f` for each snapshot matching any of `filters` (all when empty).
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()>;
    /// Removes on-disk leftovers that no record owns. A no-op where there is nothing to clean.
    fn cleanup(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_bytes_round_trip_and_reject_unknown() {
        for k in [Kind::Unknown, Kind::View, Kind::Active, Kind::Committed] {
            assert_eq!(Kind::from_byte(k.as_byte()).unwrap(), k);
        }
        assert_eq!(Kind::Committed.as_byte(), 3);
        assert!(Kind::from_byte(9).is_err());
    }
}
