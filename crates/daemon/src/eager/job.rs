//! One eager unpack: the image's layers applied into a namespace's snapshotter under the
//! client's lease, through the same metadata-wrapped snapshotter, content store and local
//! applier the gRPC services use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use stowage_core_types::content::Manager;
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Snapshotter, Usage};
use stowage_core_types::{Digest, Error, Labels, Result};
use stowage_images::unpack::UNCOMPRESSED_LABEL;

use super::pending::Registration;
use crate::api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use crate::events::{topics, Exchange};

/// A layer the job may apply: its blob and the DiffID its config names.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub blob: Digest,
    pub diff_id: Digest,
}

/// The snapshotter an eager unpack works through: the namespace's metadata-wrapped one, plus
/// what the Snapshots service would do around each call (publish `/snapshot/prepare`,
/// `/snapshot/commit` and `/snapshot/remove`), the `containerd.io/uncompressed` label on each
/// layer as its snapshot is committed, and the release of the waiters on that ChainID.
/// It refuses to prepare once the daemon is stopping, which ends the unpack between layers.
pub(super) struct JobSnapshotter<'a> {
    pub inner: &'a dyn Snapshotter,
    pub content: &'a dyn Manager,
    pub exchange: &'a Exchange,
    pub ns: &'a str,
    pub registration: &'a Registration,
    pub stop: &'a AtomicBool,
    /// What the job has committed, and whether the client wants it elsewhere.
    pub guess: &'a super::Guess,
    /// By ChainID.
    pub layers: HashMap<String, Layer>,
}

impl JobSnapshotter<'_> {
    /// Labels the layer blob of `chain` with its DiffID, as a client's unpack does once the
    /// applier has verified it (the unpacker checks the DiffID before it commits). Done before
    /// the waiters on `chain` are released, so a client that skipped the layer because the
    /// snapshot is there also finds the label.
    fn label_layer(&self, chain: &str) {
        let Some(layer) = self.layers.get(chain) else {
            return;
        };
        let set = || -> Result<()> {
            let mut info = self.content.info(&layer.blob)?;
            if info.labels.get(UNCOMPRESSED_LABEL) == Some(&layer.diff_id.to_string()) {
                return Ok(());
            }
            info.labels
                .insert(UNCOMPRESSED_LABEL.to_string(), layer.diff_id.to_string());
            self.content
                .update(info, &[format!("labels.{UNCOMPRESSED_LABEL}")])
                .map(|_| ())
        };
        if let Err(e) = set() {
            tracing::debug!(namespace = %self.ns, blob = %layer.blob, error = %e, "eager unpack: labelling the layer failed");
        }
    }
}

impl Snapshotter for JobSnapshotter<'_> {
    fn stat(&self, key: &str) -> Result<Info> {
        let info = self.inner.stat(key)?;
        // Committed by someone else meanwhile: the unpacker will skip it, nothing to wait for.
        self.registration.settle(key);
        Ok(info)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        self.inner.update(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.inner.usage(key)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.inner.mounts(key)
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(
                stowage_core_types::ErrorKind::Canceled,
                "the daemon is shutting down",
            ));
        }
        if let Some(why) = self.guess.stop_reason() {
            return Err(Error::new(stowage_core_types::ErrorKind::Canceled, why));
        }
        let mounts = self.inner.prepare(key, parent, labels)?;
        let (topic, ty) = topics::SNAPSHOT_PREPARE;
        self.exchange.publish(
            self.ns,
            topic,
            ty,
            &SnapshotPrepare {
                key: key.to_string(),
                parent: parent.to_string(),
            },
        );
        Ok(mounts)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.inner.view(key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let r = self.inner.commit(name, key, labels);
        match &r {
            Ok(()) => {
                self.guess
                    .committed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.to_string());
                let (topic, ty) = topics::SNAPSHOT_COMMIT;
                self.exchange.publish(
                    self.ns,
                    topic,
                    ty,
                    &SnapshotCommit {
                        key: key.to_string(),
                        name: name.to_string(),
                    },
                );
                self.label_layer(name);
                self.registration.settle(name);
            }
            // Someone else committed it first: the snapshot is there for the waiters.
            Err(e) if e.is(stowage_core_types::ErrorKind::AlreadyExists) => {
                self.registration.settle(name);
            }
            Err(_) => {}
        }
        r
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.inner.remove(key)?;
        let (topic, ty) = topics::SNAPSHOT_REMOVE;
        self.exchange.publish(
            self.ns,
            topic,
            ty,
            &SnapshotRemove {
                key: key.to_string(),
            },
        );
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        self.inner.walk(f, filters)
    }

    fn cleanup(&self) -> Result<()> {
        self.inner.cleanup()
    }
}
