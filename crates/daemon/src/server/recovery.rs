//! What a restart tidies before serving: the leftovers of a daemon that died mid-work.
//!
//! A SIGKILL can leave, under the root, files and directories that no record owns:
//! snapshot directories being built or removed (`snapshots/new-*`, `snapshots/rm-*`, or a
//! renamed directory whose metastore transaction never committed), which each snapshotter's
//! `cleanup` removes, and in the content store the `<file>.tmp` of a timestamp being replaced
//! and ingest directories that never got their `data` file. Those ingests cannot be resumed
//! (a writer for the same ref starts afresh) and listings skip them, so they are dead weight.
//! Ingests with data are kept: they resume. Once meta.db is open, snapshots a backend holds
//! but no meta.db record refers to (a crash between the two commits) are removed too.
//!
//! The daemon holds every lock of the root when this runs, so nothing of ours is writing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Error, Result};
use stowage_metadata::{Db, SCHEMA};

/// What was removed, for the start-up log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Leftover `*.tmp` files in ingest directories.
    pub temp_files: usize,
    /// Ingest directories without a `data` file.
    pub dead_ingests: usize,
}

/// Removes the content store's crash leftovers under `content_root`
/// (`io.containerd.content.v1.content`).
pub fn clean_content(content_root: &Path) -> Result<Removed> {
    let mut removed = Removed::default();
    let ingest = content_root.join("ingest");
    let entries = match fs::read_dir(&ingest) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(format!("read {}", ingest.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", ingest.display()), e))?;
        let dir = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?
            .is_dir();
        if !is_dir {
            continue;
        }
        match fs::symlink_metadata(dir.join("data")) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::remove_dir_all(&dir)
                    .map_err(|e| Error::io(format!("remove dead ingest {}", dir.display()), e))?;
                removed.dead_ingests += 1;
                continue;
            }
            Err(e) => return Err(Error::io(format!("stat {}/data", dir.display()), e)),
        }
        let files =
            fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        for f in files {
            let f = f.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            if f.file_name().as_encoded_bytes().ends_with(b".tmp") {
                let p = f.path();
                fs::remove_file(&p).map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
                removed.temp_files += 1;
            }
        }
    }
    Ok(removed)
}

/// Runs `cleanup` on a freshly opened snapshotter, logging instead of failing: a directory
/// that cannot be removed now (still mounted, say) is retried by the next collection.
pub fn clean_snapshotter(name: &str, s: &dyn Snapshotter) {
    match s.cleanup() {
        Ok(()) => tracing::debug!(snapshotter = name, "start-up cleanup done"),
        Err(e) => tracing::warn!(snapshotter = name, error = %e, "start-up cleanup failed"),
    }
}

/// The backend keys meta.db's records point at for snapshotter `name`, in every namespace
/// (`v1/<ns>/snapshots/<name>/<key>/name`).
fn referenced_backend_keys(db: &Db, name: &str) -> Result<BTreeSet<String>> {
    let bolt = |e: &dyn std::fmt::Display| Error::unknown(format!("reading meta.db: {e}"));
    let mut keys = BTreeSet::new();
    let tx = db.bolt().begin_read().map_err(|e| bolt(&e))?;
    let Some(v1) = tx.bucket(SCHEMA).map_err(|e| bolt(&e))? else {
        return Ok(keys);
    };
    let mut namespaces = v1.cursor();
    let mut ns = namespaces.first().map_err(|e| bolt(&e))?;
    while let Some((ns_name, _)) = ns {
        let snapshots = match v1.bucket(ns_name).map_err(|e| bolt(&e))? {
            Some(b) => b.bucket(b"snapshots").map_err(|e| bolt(&e))?,
            None => None,
        };
        let records = match snapshots {
            Some(b) => b.bucket(name.as_bytes()).map_err(|e| bolt(&e))?,
            None => None,
        };
        if let Some(records) = records {
            let mut c = records.cursor();
            let mut e = c.first().map_err(|e| bolt(&e))?;
            while let Some((key, _)) = e {
                if let Some(record) = records.bucket(key).map_err(|e| bolt(&e))? {
                    if let Some(bkey) = record.get(b"name").map_err(|e| bolt(&e))? {
                        keys.insert(String::from_utf8_lossy(bkey).into_owned());
                    }
                }
                e = c.next().map_err(|e| bolt(&e))?;
            }
        }
        ns = namespaces.next().map_err(|e| bolt(&e))?;
    }
    Ok(keys)
}

/// Removes the snapshots of `backend` (snapshotter `name`) that no meta.db record refers to,
/// children before parents, then the directories no record owns; returns how many snapshots
/// went.
///
/// A crash between the backend's create and meta.db's commit leaves such a snapshot. The
/// collector reclaims them too, but only from a snapshotter that saw a removal since the
/// last collection (as containerd's does), so without this they could stay for good. Run
/// before anything is served: then nothing can be between those two steps.
pub fn sweep_unreferenced(db: &Db, name: &str, backend: &dyn Snapshotter) -> Result<usize> {
    let referenced = referenced_backend_keys(db, name)?;
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    backend.walk(
        &mut |i| {
            parents.insert(i.name, i.parent);
            Ok(())
        },
        &[],
    )?;
    // Needed: referenced snapshots and every ancestor of one.
    let mut needed = BTreeSet::new();
    for key in parents.keys().filter(|k| referenced.contains(*k)) {
        let mut k = key.as_str();
        while needed.insert(k.to_string()) {
            match parents.get(k) {
                Some(p) if !p.is_empty() => k = p,
                _ => break,
            }
        }
    }
    let mut doomed: Vec<&String> = parents.keys().filter(|k| !needed.contains(*k)).collect();
    let mut removed = 0;
    // Children first: a pass removes the snapshots nothing left depends on.
    while !doomed.is_empty() {
        let before = doomed.len();
        let mut kept = Vec::new();
        for k in doomed {
            match backend.remove(k) {
                Ok(()) => removed += 1,
                Err(e) if e.is(stowage_core_types::ErrorKind::FailedPrecondition) => kept.push(k),
                Err(e) => return Err(e.context(format!("removing unreferenced snapshot {k}"))),
            }
        }
        if kept.len() == before {
            break;
        }
        doomed = kept;
    }
    // The start-up cleanup already ran; only directories these removals left need another.
    if removed > 0 {
        backend.cleanup()?;
    }
    Ok(removed)
}

/// Removes a leftover `<file>.tmp` next to `file` (written then renamed into place).
pub fn remove_temp_beside(file: &Path) -> Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("remove {}", Path::new(&tmp).display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_leftovers_go_and_live_ingests_stay() {
        let d = tempfile::tempdir().unwrap();
        let ingest = d.path().join("ingest");
        let live = ingest.join("aaaa");
        let dead = ingest.join("bbbb");
        fs::create_dir_all(&live).unwrap();
        fs::create_dir_all(&dead).unwrap();
        for (f, v) in [
            ("data", "xyz"),
            ("ref", "r"),
            ("startedat", "t"),
            ("updatedat", "t"),
        ] {
            fs::write(live.join(f), v).unwrap();
        }
        fs::write(live.join("updatedat.tmp"), "half").unwrap();
        fs::write(dead.join("ref"), "r2").unwrap();
        fs::write(ingest.join("stray-file"), "").unwrap();

        let r = clean_content(d.path()).unwrap();
        assert_eq!(
            r,
            Removed {
                temp_files: 1,
                dead_ingests: 1
            }
        );
        assert!(!dead.exists());
        assert!(!live.join("updatedat.tmp").exists());
        assert_eq!(fs::read_to_string(live.join("data")).unwrap(), "xyz");
        assert!(live.join("updatedat").exists());
        assert!(ingest.join("stray-file").exists());
        // Nothing left to do the second time; a missing store is fine.
        assert_eq!(clean_content(d.path()).unwrap(), Removed::default());
        assert_eq!(
            clean_content(&d.path().join("none")).unwrap(),
            Removed::default()
        );
    }
}
