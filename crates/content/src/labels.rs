//! Where the local store keeps blob labels.
//!
//! containerd 1.6's local store keeps no labels on disk: under the daemon, labels live in the
//! metadata database, and a bare local store only gets them from an optional label store. This
//! module is that option.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use stowage_core_types::digest::Digest;
use stowage_core_types::error::Result;
use stowage_core_types::labels::Labels;

/// Keeps the mutable labels of blobs, keyed by digest.
pub trait LabelStore: Send + Sync + fmt::Debug {
    /// The labels of `digest` (empty when none were set).
    fn get(&self, digest: &Digest) -> Result<Labels>;
    /// Replaces all labels of `digest`; an empty map removes the entry.
    fn set(&self, digest: &Digest, labels: Labels) -> Result<()>;
}

/// A [`LabelStore`] in memory: labels live as long as the process.
#[derive(Debug, Default)]
pub struct MemoryLabelStore {
    map: Mutex<HashMap<Digest, Labels>>,
}

impl MemoryLabelStore {
    /// An empty label store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Labels>> {
        // Each operation is one map call, so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LabelStore for MemoryLabelStore {
    fn get(&self, digest: &Digest) -> Result<Labels> {
        Ok(self.lock().get(digest).cloned().unwrap_or_default())
    }

    fn set(&self, digest: &Digest, labels: Labels) -> Result<()> {
        let mut map = self.lock();
        if labels.is_empty() {
            map.remove(digest);
        } else {
            map.insert(digest.clone(), labels);
        }
        Ok(())
    }
}
