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
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Kind, Snapshotter, Usage};
use stowage_core_types::{Error, Labels, Result};
use stowage_snapshots_storage::metastore::{self, MetaStore, Snapshot};
use stowage_snapshots_storage::usage::disk_usage;

/// The native snapshotter.
#[derive(Debug)]
pub struct NativeSnapshotter {
    root: PathBuf,
    ms: MetaStore,
}

impl NativeSnapshotter {
    /// Opens (creating it if needed) the snapshotter at `root`.
    pub fn new(root: impl AsRef<Path>) -> Result<NativeSnapshotter> {
        let root = root.as_ref().to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(format!("create snapshotter root {}", root.display()), e))?;
        let ms = MetaStore::open(root.join("metadata.db"))?;
        let snapshots = root.join("snapshots");
        match fs::DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", snapshots.display()), e)),
        }
        Ok(NativeSnapshotter { root, ms })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `snapshots/<id>`: the snapshot's tree.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
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
        let snapshots = self.snapshots_dir();
        let needs_dir = kind == Kind::Active || parent.is_empty();
        let mut temp: Option<PathBuf> = None;
        let mut renamed: Option<PathBuf> = None;
        let result = self.ms.update(|tx| {
            let td = if needs_dir {
                // Made under the write lock so a concurrent cleanup cannot take it for an
                // orphan.
                let td = make_temp_dir(&snapshots)?;
                temp = Some(td.clone());
                fs::set_permissions(&td, fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::io(format!("chmod {}", td.display()), e))?;
                Some(td)
            } else {
                None
            };
            let s = metastore::create_snapshot(tx, kind, key, parent, labels)?;
            if let Some(td) = td {
                if let Some(pid) = s.parent_ids.first() {
                    copy::copy_dir(&self.snapshot_dir(pid), &td)
                        .map_err(|e| e.context("copy parent snapshot"))?;
                }
                let path = self.snapshot_dir(&s.id);
                remove_stale(&path)?;
                fs::rename(&td, &path).map_err(|e| {
                    Error::io(format!("rename {} to {}", td.display(), path.display()), e)
                })?;
                temp = None;
                renamed = Some(path);
            }
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

    fn orphan_dirs<T: metastore::ReadView>(&self, tx: &T) -> Result<Vec<PathBuf>> {
        let ids = metastore::id_map(tx)?;
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            if !ids.contains_key(&*e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
        Ok(out)
    }
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

/// A new, empty `new-XXXXXX` directory in `parent`.
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

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.ms.view(|tx| metastore::get_info(tx, key))?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        self.ms
            .update(|tx| metastore::update_info(tx, info, fieldpaths))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (id, info, usage) = self.ms.view(|tx| metastore::get_info(tx, key))?;
        if info.kind == Kind::Active {
            return disk_usage(&self.snapshot_dir(&id));
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
            let usage = disk_usage(&self.snapshot_dir(&id))?;
            metastore::commit_active(tx, key, name, usage, labels)
                .map_err(|e| e.context("commit snapshot"))?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut moved: Option<(PathBuf, PathBuf)> = None;
        let result = self.ms.update(|tx| {
            let (id, _) = metastore::remove(tx, key).map_err(|e| e.context("remove snapshot"))?;
            // Out of the way first, so the record and the directory go together: if the
            // transaction fails the rename is undone.
            let path = self.snapshot_dir(&id);
            let renamed = self.snapshots_dir().join(format!("rm-{id}"));
            match fs::rename(&path, &renamed) {
                Ok(()) => moved = Some((path, renamed)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("rename {}", path.display()), e)),
            }
            Ok(())
        });
        match (result, moved) {
            (Ok(()), Some((_, renamed))) => {
                // The record is gone; a leftover directory is an orphan for cleanup.
                let _ = fs::remove_dir_all(renamed);
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), Some((path, renamed))) => {
                let _ = fs::rename(renamed, path);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let infos = self.ms.view(|tx| metastore::walk_info(tx, filters))?;
        for info in infos {
            f(info)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        // containerd's native snapshotter has no cleanup; this one removes what no record
        // owns (interrupted creates `new-*`, interrupted removes `rm-*`).
        let dirs = self.ms.update(|tx| self.orphan_dirs(tx))?;
        for dir in dirs {
            fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("remove orphan {}", dir.display()), e))?;
        }
        Ok(())
    }
}
