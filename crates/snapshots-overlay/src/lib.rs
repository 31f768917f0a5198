//! containerd 1.6's overlayfs snapshotter, directory for directory.
//!
//! Layout under the root (containerd's `io.containerd.snapshotter.v1.overlayfs`):
//! `metadata.db` (the metastore, see `stowage-snapshots-storage`) and `snapshots/<id>/fs`
//! (the layer's files) plus `snapshots/<id>/work` (overlay's work dir, active snapshots only).
//! New snapshot directories are built as `snapshots/new-XXXX` and renamed into place inside
//! the metastore transaction, so a crash leaves at worst an orphan that [`cleanup`] removes.
//!
//! Mounts are what containerd returns: a snapshot without parents is an `rw` (or `ro` for a
//! view) `rbind` of its `fs`; a view of one parent is a read-only bind of the parent's `fs`;
//! everything else is `overlay` with `index=off` (when the kernel has the `index` feature),
//! `userxattr` (when detected at start), `workdir`/`upperdir` for active snapshots and
//! `lowerdir` with the parents' `fs`, nearest first. Mounting stacks whose option string
//! exceeds a page is handled by the mount helper in `stowage-snapshots-storage`.
//!
//! [`cleanup`]: stowage_core_types::snapshot::Snapshotter::cleanup

mod detect;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Kind, Snapshotter, Usage};
use stowage_core_types::{Error, Labels, Result};
use stowage_snapshots_storage::layout::{Layout, LayoutOptions, Removal};
use stowage_snapshots_storage::metastore::Snapshot;

/// The label that, with [`Options::upperdir_label`], carries a snapshot's upper directory.
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// Choices made when the snapshotter is opened.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Add [`UPPERDIR_LABEL`] (the snapshot's `fs` path) to the labels returned by stat,
    /// update and walk, as containerd's `WithUpperdirLabel` does. It is not stored.
    pub upperdir_label: bool,
    /// Remove only the record on `remove` and leave the directory to
    /// [`cleanup`](Snapshotter::cleanup), as containerd's `AsynchronousRemove` does (containerd
    /// 1.6's plugin always sets it; 1.7's unless `sync_remove`). The garbage collector runs
    /// cleanup after its removals. Off, `remove` deletes the directory before returning.
    pub async_remove: bool,
}

/// The overlay snapshotter.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    layout: Layout,
    index_off: bool,
    userxattr: bool,
}

impl OverlaySnapshotter {
    /// Opens (creating it if needed) the snapshotter at `root`.
    pub fn new(root: impl AsRef<Path>) -> Result<OverlaySnapshotter> {
        OverlaySnapshotter::with_options(root, Options::default())
    }

    /// Opens the snapshotter at `root` with `options`.
    pub fn with_options(root: impl AsRef<Path>, options: Options) -> Result<OverlaySnapshotter> {
        let layout_options = LayoutOptions {
            files_subdir: Some("fs"),
            files_label: options.upperdir_label.then_some(UPPERDIR_LABEL),
            removal: if options.async_remove {
                Removal::Deferred
            } else {
                Removal::SweepOrphans
            },
        };
        let layout = Layout::open(root, layout_options, check_d_type)?;
        Ok(OverlaySnapshotter {
            index_off: detect::supports_index(),
            userxattr: detect::needs_userxattr(layout.root()),
            layout,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Whether mounts carry `userxattr` (detected at start).
    pub fn userxattr(&self) -> bool {
        self.userxattr
    }

    /// `snapshots/<id>/fs`: the layer's files.
    pub fn upper_path(&self, id: &str) -> PathBuf {
        self.layout.files_dir(id)
    }

    fn work_path(&self, id: &str) -> PathBuf {
        self.layout.snapshot_dir(id).join("work")
    }

    fn path_str(p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        if s.parent_ids.is_empty() {
            let flag = if s.kind == Kind::View { "ro" } else { "rw" };
            return vec![Mount::new(
                "bind",
                Self::path_str(&self.upper_path(&s.id)),
                [flag, "rbind"],
            )];
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_string());
        }
        if self.userxattr {
            options.push("userxattr".to_string());
        }
        if s.kind == Kind::Active {
            options.push(format!(
                "workdir={}",
                Self::path_str(&self.work_path(&s.id))
            ));
            options.push(format!(
                "upperdir={}",
                Self::path_str(&self.upper_path(&s.id))
            ));
        } else if s.parent_ids.len() == 1 {
            return vec![Mount::new(
                "bind",
                Self::path_str(&self.upper_path(&s.parent_ids[0])),
                ["ro", "rbind"],
            )];
        }
        let lowers: Vec<String> = s
            .parent_ids
            .iter()
            .map(|id| Self::path_str(&self.upper_path(id)))
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        vec![Mount::new("overlay", "overlay", options)]
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let s = self.layout.create_with_dir(
            kind,
            key,
            parent,
            labels,
            |td| {
                mkdir(&td.join("fs"), 0o755)?;
                if kind == Kind::Active {
                    mkdir(&td.join("work"), 0o711)?;
                }
                Ok(())
            },
            |td, s| {
                let Some(pid) = s.parent_ids.first() else {
                    return Ok(());
                };
                // The new layer's root starts owned like its parent's root.
                let pfs = self.upper_path(pid);
                let md = fs::metadata(&pfs)
                    .map_err(|e| Error::io(format!("stat parent {}", pfs.display()), e))?;
                std::os::unix::fs::lchown(td.join("fs"), Some(md.uid()), Some(md.gid()))
                    .map_err(|e| Error::io("chown new snapshot root", e))
            },
        )?;
        Ok(self.mounts_for(&s))
    }
}

/// Refuses a root whose filesystem does not report entry types, as containerd does. Run
/// once the metastore file guarantees an entry to look at.
fn check_d_type(root: &Path) -> Result<()> {
    match detect::supports_d_type(root) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::failed_precondition(format!(
            "{} does not support d_type, which overlayfs needs (on xfs, format with ftype=1)",
            root.display()
        ))),
        Err(e) => Err(Error::io(
            format!("check d_type support of {}", root.display()),
            e,
        )),
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
    // The umask may have taken bits away.
    fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", p.display()), e))
}

impl Snapshotter for OverlaySnapshotter {
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
        self.layout.cleanup()
    }
}
