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
use stowage_snapshots_storage::metastore::{self, MetaStore, Snapshot};
use stowage_snapshots_storage::usage::disk_usage;

/// The label that, with [`Options::upperdir_label`], carries a snapshot's upper directory.
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// Choices made when the snapshotter is opened.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Add [`UPPERDIR_LABEL`] (the snapshot's `fs` path) to the labels returned by stat,
    /// update and walk, as containerd's `WithUpperdirLabel` does. It is not stored.
    pub upperdir_label: bool,
}

/// The overlay snapshotter.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    root: PathBuf,
    ms: MetaStore,
    options: Options,
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
        let root = root.as_ref().to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(format!("create snapshotter root {}", root.display()), e))?;
        let ms = MetaStore::open(root.join("metadata.db"))?;
        // The metastore file guarantees an entry to look at.
        match detect::supports_d_type(&root) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::failed_precondition(format!(
                "{} does not support d_type, which overlayfs needs (on xfs, format with ftype=1)",
                root.display()
            )))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("check d_type support of {}", root.display()),
                    e,
                ))
            }
        }
        let snapshots = root.join("snapshots");
        match fs::DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", snapshots.display()), e)),
        }
        Ok(OverlaySnapshotter {
            index_off: detect::supports_index(),
            userxattr: detect::needs_userxattr(&root),
            root,
            ms,
            options,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether mounts carry `userxattr` (detected at start).
    pub fn userxattr(&self) -> bool {
        self.userxattr
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `snapshots/<id>/fs`: the layer's files.
    pub fn upper_path(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id).join("fs")
    }

    fn work_path(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id).join("work")
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

    fn with_upperdir_label(&self, mut info: Info, id: &str) -> Info {
        if self.options.upperdir_label {
            info.labels.insert(
                UPPERDIR_LABEL.to_string(),
                Self::path_str(&self.upper_path(id)),
            );
        }
        info
    }

    /// Directories under `snapshots/` that no record owns (removed snapshots, interrupted
    /// creates).
    fn orphan_dirs<T: metastore::ReadView>(&self, tx: &T) -> Result<Vec<PathBuf>> {
        let ids = metastore::id_map(tx)?;
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains_key(&name) {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let snapshots = self.snapshots_dir();
        let mut temp: Option<PathBuf> = None;
        let mut renamed: Option<PathBuf> = None;
        let result = self.ms.update(|tx| {
            // Made under the write lock so a concurrent remove or cleanup cannot take it
            // for an orphan.
            let td = make_temp_dir(&snapshots)?;
            temp = Some(td.clone());
            mkdir(&td.join("fs"), 0o755)?;
            if kind == Kind::Active {
                mkdir(&td.join("work"), 0o711)?;
            }
            let s = metastore::create_snapshot(tx, kind, key, parent, labels)?;
            if let Some(pid) = s.parent_ids.first() {
                // The new layer's root starts owned like its parent's root.
                let pfs = self.upper_path(pid);
                let md = fs::metadata(&pfs)
                    .map_err(|e| Error::io(format!("stat parent {}", pfs.display()), e))?;
                std::os::unix::fs::lchown(td.join("fs"), Some(md.uid()), Some(md.gid()))
                    .map_err(|e| Error::io("chown new snapshot root", e))?;
            }
            let path = snapshots.join(&s.id);
            remove_stale(&path)?;
            fs::rename(&td, &path).map_err(|e| {
                Error::io(format!("rename {} to {}", td.display(), path.display()), e)
            })?;
            temp = None;
            renamed = Some(path);
            Ok(s)
        });
        match result {
            Ok(s) => Ok(self.mounts_for(&s)),
            Err(e) => {
                for dir in temp.iter().chain(renamed.iter()) {
                    let _ = fs::remove_dir_all(dir);
                }
                Err(e)
            }
        }
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

/// Removes a leftover directory at the place of a snapshot whose id was just allocated.
///
/// The id is new in this transaction, so nothing owns such a directory: it is what a crash
/// between the rename and the metastore commit of an earlier create left behind (that
/// create's id was never recorded and is handed out again). containerd would fail every
/// create with that id until a cleanup; removing it is safe.
fn remove_stale(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    }
    .map_err(|e| Error::io(format!("remove stale {}", path.display()), e))
}

/// A new, empty `new-XXXXXX` directory in `parent` (mode 0700, as `mkdtemp`).
fn make_temp_dir(parent: &Path) -> Result<PathBuf> {
    let mut template = parent
        .join("new-XXXXXX")
        .into_os_string()
        .into_encoded_bytes();
    template.push(0);
    // SAFETY: `template` is a writable NUL-terminated buffer that mkdtemp fills in place.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast::<libc::c_char>()) };
    if p.is_null() {
        return Err(Error::io(
            format!("create temporary directory in {}", parent.display()),
            std::io::Error::last_os_error(),
        ));
    }
    template.pop();
    // SAFETY: the bytes came from an OsString and mkdtemp replaced only ASCII X's.
    let os = unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(template) };
    Ok(PathBuf::from(os))
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let (id, info, _) = self.ms.view(|tx| metastore::get_info(tx, key))?;
        Ok(self.with_upperdir_label(info, &id))
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let (info, id) = self.ms.update(|tx| {
            let info = metastore::update_info(tx, info, fieldpaths)?;
            let (id, _, _) = metastore::get_info(tx, &info.name)?;
            Ok((info, id))
        })?;
        Ok(self.with_upperdir_label(info, &id))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (id, info, usage) = self.ms.view(|tx| metastore::get_info(tx, key))?;
        if info.kind == Kind::Active {
            return disk_usage(&self.upper_path(&id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self
            .ms
            .view(|tx| metastore::get_snapshot(tx, key))
            .map_err(|e| e.context("get mounts"))?;
        Ok(self.mounts_for(&s))
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.ms.update(|tx| {
            let (id, info, _) = metastore::get_info(tx, key)?;
            // Checked before measuring: a view may have no directory of its own.
            if info.kind != Kind::Active {
                return Err(Error::failed_precondition(format!(
                    "commit snapshot: {key:?} is {}, expected active",
                    info.kind
                )));
            }
            let usage = disk_usage(&self.upper_path(&id))?;
            metastore::commit_active(tx, key, name, usage, labels)
                .map_err(|e| e.context("commit snapshot"))?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<()> {
        let removals = self.ms.update(|tx| {
            metastore::remove(tx, key).map_err(|e| e.context("remove snapshot"))?;
            self.orphan_dirs(tx)
        })?;
        // The record is gone; failing to delete its directory leaves an orphan for cleanup,
        // as in containerd, rather than failing the removal.
        for dir in removals {
            let _ = fs::remove_dir_all(dir);
        }
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let infos = self.ms.view(|tx| {
            let infos = metastore::walk_info(tx, filters)?;
            if !self.options.upperdir_label {
                return Ok(infos);
            }
            let ids = metastore::id_map(tx)?;
            let by_name: std::collections::HashMap<&String, &String> =
                ids.iter().map(|(id, name)| (name, id)).collect();
            Ok(infos
                .into_iter()
                .map(|i| {
                    let id = by_name
                        .get(&i.name)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    self.with_upperdir_label(i, &id)
                })
                .collect())
        })?;
        for info in infos {
            f(info)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        // A write transaction, only to keep creates and removes out while listing.
        let dirs = self.ms.update(|tx| self.orphan_dirs(tx))?;
        for dir in dirs {
            fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("remove orphan {}", dir.display()), e))?;
        }
        Ok(())
    }
}
