//! containerd 1.6's native snapshotter: every active snapshot is a full copy of its parent.
//!
//! Layout under the root (containerd's `io.containerd.snapshotter.v1.native`): `metadata.db`
//! (the metastore, see `stowage-snapshots-storage`) and `snapshots/<id>`, the snapshot's
//! tree. A new active snapshot is built as `snapshots/new-XXXXXX` (a faithful copy of the
//! parent, see [`copy`]) and renamed into place inside the metastore transaction. A view of
//! a parent has no directory of its own: it is a read-only bind of the parent's.
//!
//! Mounts are what containerd returns: `bind` of the snapshot's (or, for a view, the
//! parent's) directory with options `rbind` and `rw` or `ro`.

pub mod copy;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Kind, Snapshotter, Usage};
use stowage_core_types::{Error, Labels, Result};
use stowage_snapshots_storage::layout::{Layout, LayoutOptions, Removal};
use stowage_snapshots_storage::metastore::Snapshot;

/// The native snapshotter.
#[derive(Debug)]
pub struct NativeSnapshotter {
    layout: Layout,
}

impl NativeSnapshotter {
    /// Opens (creating it if needed) the snapshotter at `root`.
    pub fn new(root: impl AsRef<Path>) -> Result<NativeSnapshotter> {
        let options = LayoutOptions {
            files_subdir: None,
            files_label: None,
            removal: Removal::RenameAside,
        };
        let layout = Layout::open(root, options, |_| Ok(()))?;
        Ok(NativeSnapshotter { layout })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// `snapshots/<id>`: the snapshot's tree.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.layout.files_dir(id)
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let flag = if s.kind == Kind::View { "ro" } else { "rw" };
        let source = match s.parent_ids.first() {
            Some(pid) if s.kind != Kind::Active => self.snapshot_dir(pid),
            _ => self.snapshot_dir(&s.id),
        };
        vec![Mount::new(
            "bind",
            source.to_string_lossy().into_owned(),
            ["rbind", flag],
        )]
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let s = if kind == Kind::Active || parent.is_empty() {
            self.layout.create_with_dir(
                kind,
                key,
                parent,
                labels,
                |td| {
                    fs::set_permissions(td, fs::Permissions::from_mode(0o755))
                        .map_err(|e| Error::io(format!("chmod {}", td.display()), e))
                },
                |td, s| match s.parent_ids.first() {
                    Some(pid) => copy::copy_dir(&self.snapshot_dir(pid), td)
                        .map_err(|e| e.context("copy parent snapshot")),
                    None => Ok(()),
                },
            )?
        } else {
            // A view of a parent mounts the parent's directory.
            self.layout.create_record(kind, key, parent, labels)?
        };
        Ok(self.mounts_for(&s))
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        self.layout.stat(key)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        self.layout.update(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.layout.usage(key)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        Ok(self.mounts_for(&self.layout.mountable(key)?))
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.layout.commit(name, key, labels)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.layout.remove(key)
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        self.layout.walk(f, filters)
    }

    fn cleanup(&self) -> Result<()> {
        // containerd's native snapshotter has no cleanup; this one removes what no record
        // owns (interrupted creates `new-*`, interrupted removes `rm-*`).
        self.layout.cleanup()
    }
}
