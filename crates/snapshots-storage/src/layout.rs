//! The root both of containerd's snapshotters lay out, and the bookkeeping that keeps its
//! records and directories in step.
//!
//! ```text
//! <root>/metadata.db        the metastore (see [`metastore`](crate::metastore))
//! <root>/snapshots/<id>     a snapshot's directory, named by its record's id
//! <root>/snapshots/new-*    a directory being built, renamed to <id> inside the transaction
//!                           that records it
//! <root>/snapshots/rm-*     a directory being removed (native)
//! ```
//!
//! A [`Layout`] answers every metastore-driven operation (stat, update, usage, commit,
//! remove, walk, cleanup) the same way for both snapshotters; what differs between them is
//! described by [`LayoutOptions`]. A snapshotter keeps only how it fills a new snapshot's
//! directory and which mounts it returns.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use stowage_bolt::WriteTx;
use stowage_core_types::snapshot::{Info, Kind, Usage};
use stowage_core_types::{Error, Labels, Result};

use crate::metastore::{self, MetaStore, ReadView, Snapshot};
use crate::usage::disk_usage;

/// How removing a snapshot takes its directory away; containerd's two snapshotters differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Removal {
    /// containerd's native snapshotter: inside the transaction the directory is renamed to
    /// `snapshots/rm-<id>` (and renamed back if the transaction fails), so the record and the
    /// directory go together; it is deleted after the commit.
    #[default]
    RenameAside,
    /// containerd's overlay snapshotter: after the record is gone, every directory that no
    /// record owns (this snapshot's, and any orphans) is listed in the transaction and deleted
    /// after the commit.
    SweepOrphans,
    /// containerd's overlay snapshotter with asynchronous removal (what containerd 1.6's
    /// plugin always asks for): only the record is removed; the directory stays, owned by no
    /// record, until [`cleanup`](Layout::cleanup) deletes it. A crash in between leaves
    /// nothing that cleanup does not already handle.
    Deferred,
}

/// What differs between the snapshotters' use of the layout.
#[derive(Debug, Clone, Default)]
pub struct LayoutOptions {
    /// The subdirectory of `snapshots/<id>` that holds the snapshot's files (overlay's `fs`),
    /// or `None` when the files fill `snapshots/<id>` itself (native).
    pub files_subdir: Option<&'static str>,
    /// A label, naming the snapshot's files directory, that stat, update and walk add to the
    /// infos they return (overlay's `WithUpperdirLabel`). It is never stored.
    pub files_label: Option<&'static str>,
    /// How a removal deletes the snapshot's directory.
    pub removal: Removal,
}

/// A snapshotter root: its metastore and the `snapshots/<id>` directories the records own.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    ms: MetaStore,
    options: LayoutOptions,
}

impl Layout {
    /// Opens (creating them if needed) `root` (mode 0700), its metastore and `snapshots/`
    /// (mode 0700). `check_root` runs once the metastore exists, before `snapshots/` is
    /// made, for a snapshotter to refuse a root it cannot work on.
    pub fn open(
        root: impl AsRef<Path>,
        options: LayoutOptions,
        check_root: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Layout> {
        let root = root.as_ref().to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(format!("create snapshotter root {}", root.display()), e))?;
        let ms = MetaStore::open(root.join("metadata.db"))?;
        check_root(&root)?;
        let snapshots = root.join("snapshots");
        match fs::DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", snapshots.display()), e)),
        }
        Ok(Layout { root, ms, options })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `snapshots/`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `snapshots/<id>`: the directory of the snapshot with record id `id`.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
    }

    /// Where the snapshot's files are: `snapshots/<id>` or its files subdirectory.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        let dir = self.snapshot_dir(id);
        match self.options.files_subdir {
            Some(sub) => dir.join(sub),
            None => dir,
        }
    }

    fn labelled(&self, mut info: Info, id: &str) -> Info {
        if let Some(label) = self.options.files_label {
            info.labels.insert(
                label.to_string(),
                self.files_dir(id).to_string_lossy().into_owned(),
            );
        }
        info
    }

    /// The info of snapshot `key`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        let (id, info, _) = self.ms.view(|tx| metastore::get_info(tx, key))?;
        Ok(self.labelled(info, &id))
    }

    /// Updates the labels of `info.name` as `fieldpaths` say; returns the stored info.
    pub fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        if self.options.files_label.is_none() {
            return self
                .ms
                .update(|tx| metastore::update_info(tx, info, fieldpaths));
        }
        let (info, id) = self.ms.update(|tx| {
            let info = metastore::update_info(tx, info, fieldpaths)?;
            let (id, _, _) = metastore::get_info(tx, &info.name)?;
            Ok((info, id))
        })?;
        Ok(self.labelled(info, &id))
    }

    /// The usage of `key`: measured on its files when active, as recorded at commit
    /// otherwise.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let (id, info, usage) = self.ms.view(|tx| metastore::get_info(tx, key))?;
        if info.kind == Kind::Active {
            return disk_usage(&self.files_dir(&id));
        }
        Ok(usage)
    }

    /// The active or view snapshot `key`, to build its mounts from.
    pub fn mountable(&self, key: &str) -> Result<Snapshot> {
        self.ms
            .view(|tx| metastore::get_snapshot(tx, key))
            .map_err(|e| e.context("get mounts"))
    }

    /// Records a new snapshot that has no directory of its own (a view that mounts its
    /// parent's).
    pub fn create_record(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Snapshot> {
        self.ms
            .update(|tx| metastore::create_snapshot(tx, kind, key, parent, labels))
    }

    /// Records a new snapshot together with its directory.
    ///
    /// The directory is built as an empty `snapshots/new-XXXXXX` (mode 0700): `prepare` runs
    /// on it before the record is made, `fill` after (with the new record), and it is renamed
    /// to `snapshots/<id>` in the same transaction. On any error neither the record nor the
    /// directory is left.
    pub fn create_with_dir(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
        prepare: impl FnOnce(&Path) -> Result<()>,
        fill: impl FnOnce(&Path, &Snapshot) -> Result<()>,
    ) -> Result<Snapshot> {
        let mut temp: Option<PathBuf> = None;
        let mut renamed: Option<PathBuf> = None;
        let result = self.ms.update(|tx| {
            // Made under the write lock so a concurrent remove or cleanup cannot take it for
            // an orphan.
            let td = make_temp_dir(&self.snapshots_dir())?;
            temp = Some(td.clone());
            prepare(&td)?;
            let s = metastore::create_snapshot(tx, kind, key, parent, labels)?;
            fill(&td, &s)?;
            let path = self.snapshot_dir(&s.id);
            remove_stale(&path)?;
            fs::rename(&td, &path).map_err(|e| {
                Error::io(format!("rename {} to {}", td.display(), path.display()), e)
            })?;
            temp = None;
            renamed = Some(path);
            Ok(s)
        });
        if result.is_err() {
            for dir in temp.iter().chain(renamed.iter()) {
                let _ = fs::remove_dir_all(dir);
            }
        }
        result
    }

    /// Commits active snapshot `key` as `name`, recording the disk usage of its files.
    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.ms.update(|tx| {
            let (id, info, _) = metastore::get_info(tx, key)?;
            // Checked before measuring: a view may have no directory of its own.
            if info.kind != Kind::Active {
                return Err(Error::failed_precondition(format!(
                    "commit snapshot: {key:?} is {}, expected active",
                    info.kind
                )));
            }
            let usage = disk_usage(&self.files_dir(&id))?;
            metastore::commit_active(tx, key, name, usage, labels)
                .map_err(|e| e.context("commit snapshot"))?;
            Ok(())
        })
    }

    /// Removes snapshot `key`, its record and (unless removal is
    /// [`Deferred`](Removal::Deferred)) its directory, as [`LayoutOptions::removal`] says.
    /// Once the record is gone, failing to delete the directory leaves an orphan for
    /// [`cleanup`](Layout::cleanup) rather than failing the removal, as in containerd.
    pub fn remove(&self, key: &str) -> Result<()> {
        match self.options.removal {
            Removal::RenameAside => self.remove_renaming_aside(key),
            Removal::SweepOrphans => {
                let removals = self.ms.update(|tx| {
                    remove_record(tx, key)?;
                    self.orphan_dirs(tx)
                })?;
                for dir in removals {
                    let _ = fs::remove_dir_all(dir);
                }
                Ok(())
            }
            Removal::Deferred => self.ms.update(|tx| remove_record(tx, key).map(|_| ())),
        }
    }

    fn remove_renaming_aside(&self, key: &str) -> Result<()> {
        let mut moved: Option<(PathBuf, PathBuf)> = None;
        let result = self.ms.update(|tx| {
            let id = remove_record(tx, key)?;
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

    /// Calls `f` with the info of every snapshot matching any of `filters` (all when empty).
    pub fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let infos = self.ms.view(|tx| {
            let infos = metastore::walk_info(tx, filters)?;
            if self.options.files_label.is_none() {
                return Ok(infos);
            }
            let ids = metastore::id_map(tx)?;
            let by_name: HashMap<&String, &String> =
                ids.iter().map(|(id, name)| (name, id)).collect();
            Ok(infos
                .into_iter()
                .map(|i| {
                    let id = by_name
                        .get(&i.name)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    self.labelled(i, &id)
                })
                .collect())
        })?;
        for info in infos {
            f(info)?;
        }
        Ok(())
    }

    /// Deletes every directory under `snapshots/` that no record owns: interrupted creates
    /// (`new-*`), interrupted removes (`rm-*`), directories whose deletion failed.
    pub fn cleanup(&self) -> Result<()> {
        // A write transaction, only to keep creates and removes out while listing.
        let dirs = self.ms.update(|tx| self.orphan_dirs(tx))?;
        for dir in dirs {
            fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("remove orphan {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Directories under `snapshots/` that no record owns.
    fn orphan_dirs<T: ReadView>(&self, tx: &T) -> Result<Vec<PathBuf>> {
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

/// Removes the record of `key`; returns its id.
fn remove_record(tx: &mut WriteTx, key: &str) -> Result<String> {
    let (id, _) = metastore::remove(tx, key).map_err(|e| e.context("remove snapshot"))?;
    Ok(id)
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

/// A new, empty `new-XXXXXX` directory in `parent` (mode 0700, as `mkdtemp` makes it).
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

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    fn open(root: &Path, options: LayoutOptions) -> Layout {
        Layout::open(root, options, |_| Ok(())).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn with_dir(l: &Layout, kind: Kind, key: &str, parent: &str) -> Result<Snapshot> {
        l.create_with_dir(kind, key, parent, Labels::new(), |_| Ok(()), |_, _| Ok(()))
    }

    #[test]
    fn a_failed_create_leaves_neither_record_nor_directory() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path(), LayoutOptions::default());
        let failed = |step: &str| Err(Error::unknown(format!("{step} failed")));
        let r = l.create_with_dir(
            Kind::Active,
            "a",
            "",
            Labels::new(),
            |_| failed("prepare"),
            |_, _| Ok(()),
        );
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Unknown);
        let r = l.create_with_dir(
            Kind::Active,
            "a",
            "",
            Labels::new(),
            |td| fs::write(td.join("file"), b"x").map_err(|e| Error::io("write", e)),
            |_, _| failed("fill"),
        );
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Unknown);
        // A create refused by the metastore (unknown parent) cleans up too.
        let r = with_dir(&l, Kind::Active, "a", "missing");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(l.stat("a").unwrap_err().kind(), ErrorKind::NotFound);
        assert!(entries(&l.snapshots_dir()).is_empty());

        let s = with_dir(&l, Kind::Active, "a", "").unwrap();
        assert_eq!(entries(&l.snapshots_dir()), [s.id]);
    }

    #[test]
    fn files_live_where_the_options_say_and_are_measured_there() {
        let d = tempfile::tempdir().unwrap();
        let options = LayoutOptions {
            files_subdir: Some("fs"),
            files_label: Some("files"),
            removal: Removal::SweepOrphans,
        };
        let l = open(d.path(), options);
        let s = l
            .create_with_dir(
                Kind::Active,
                "a",
                "",
                Labels::new(),
                |td| fs::create_dir(td.join("fs")).map_err(|e| Error::io("mkdir", e)),
                |_, _| Ok(()),
            )
            .unwrap();
        let files = l.files_dir(&s.id);
        assert_eq!(files, d.path().join("snapshots").join(&s.id).join("fs"));
        fs::write(files.join("f"), vec![7u8; 8192]).unwrap();
        let measured = disk_usage(&files).unwrap();
        assert_eq!(l.usage("a").unwrap(), measured);

        let want = files.to_string_lossy().into_owned();
        let mut info = l.stat("a").unwrap();
        assert_eq!(info.labels.get("files"), Some(&want));
        info.labels.insert("x".into(), "y".into());
        let updated = l.update(info, &["labels.x".to_string()]).unwrap();
        assert_eq!(updated.labels.get("files"), Some(&want));
        assert_eq!(updated.labels.get("x").map(String::as_str), Some("y"));
        let mut walked = Vec::new();
        l.walk(
            &mut |i| {
                walked.push(i);
                Ok(())
            },
            &[],
        )
        .unwrap();
        assert_eq!(walked[0].labels.get("files"), Some(&want));

        l.commit("c", "a", Labels::new()).unwrap();
        fs::write(files.join("g"), vec![7u8; 8192]).unwrap();
        assert_eq!(l.usage("c").unwrap(), measured, "recorded at commit");

        // The label is reported, never stored.
        drop(l);
        let l = open(d.path(), LayoutOptions::default());
        assert_eq!(l.stat("c").unwrap().labels.get("files"), None);
        assert_eq!(l.files_dir(&s.id), d.path().join("snapshots").join(&s.id));
    }

    #[test]
    fn deferred_removal_leaves_the_directory_to_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let options = LayoutOptions {
            removal: Removal::Deferred,
            ..LayoutOptions::default()
        };
        let l = open(d.path(), options);
        let a = with_dir(&l, Kind::Active, "a", "").unwrap();
        l.commit("base", "a", Labels::new()).unwrap();
        let child = with_dir(&l, Kind::Active, "child", "base").unwrap();
        assert_eq!(
            l.remove("base").unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
        l.remove("child").unwrap();
        assert_eq!(l.stat("child").unwrap_err().kind(), ErrorKind::NotFound);
        assert!(l.snapshot_dir(&child.id).is_dir(), "kept until cleanup");
        // The key is free again at once, and the new snapshot gets a directory of its own.
        let again = with_dir(&l, Kind::Active, "child", "base").unwrap();
        assert_ne!(again.id, child.id);
        l.remove("child").unwrap();
        // Reopening (a restart) forgets nothing: cleanup still finds both orphans.
        drop(l);
        let l = open(
            d.path(),
            LayoutOptions {
                removal: Removal::Deferred,
                ..LayoutOptions::default()
            },
        );
        let mut want = vec![a.id.clone(), child.id.clone(), again.id.clone()];
        want.sort();
        assert_eq!(entries(&l.snapshots_dir()), want);
        l.cleanup().unwrap();
        assert_eq!(entries(&l.snapshots_dir()), [a.id.as_str()]);
        assert_eq!(l.stat("base").unwrap().name, "base");
    }

    #[test]
    fn removals_take_the_directory_and_cleanup_takes_orphans() {
        for removal in [Removal::RenameAside, Removal::SweepOrphans] {
            let d = tempfile::tempdir().unwrap();
            let options = LayoutOptions {
                removal,
                ..LayoutOptions::default()
            };
            let l = open(d.path(), options);
            let s = with_dir(&l, Kind::Active, "a", "").unwrap();
            l.commit("base", "a", Labels::new()).unwrap();
            let child = with_dir(&l, Kind::Active, "child", "base").unwrap();
            let stray = l.snapshots_dir().join("new-stray");
            fs::create_dir(&stray).unwrap();

            // A refused removal keeps the record and the directory.
            let e = l.remove("base").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{removal:?}");
            assert!(l.snapshot_dir(&s.id).is_dir(), "{removal:?}");

            l.remove("child").unwrap();
            assert_eq!(l.stat("child").unwrap_err().kind(), ErrorKind::NotFound);
            assert!(!l.snapshot_dir(&child.id).exists(), "{removal:?}");
            // Only the overlay style sweeps orphans on removal.
            assert_eq!(stray.exists(), removal == Removal::RenameAside);

            l.cleanup().unwrap();
            assert_eq!(entries(&l.snapshots_dir()), [s.id.as_str()], "{removal:?}");
        }
    }
}
