//! What a restart tidies before serving: the leftovers of a daemon that died mid-work.
//!
//! A SIGKILL can leave, under the root, files and directories that no record owns:
//! snapshot directories being built or removed (`snapshots/new-*`, `snapshots/rm-*`, or a
//! renamed directory whose metastore transaction never committed), which each snapshotter's
//! `cleanup` removes, and in the content store the `<file>.tmp` of a timestamp being replaced
//! and ingest directories that never got their `data` file. Those ingests cannot be resumed
//! (a writer for the same ref starts afresh) and listings skip them, so they are dead weight.
//! Ingests with data are kept: they resume. Snapshots and blobs a backend holds but no
//! meta.db record names (a crash between the two commits) are not this module's business: the
//! metadata database starts with every backend dirty, so the scheduler's first collection
//! sweeps them.
//!
//! The daemon holds every lock of the root when this runs, so nothing of ours is writing.

use std::fs;
use std::io;
use std::path::Path;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Error, Result};

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
