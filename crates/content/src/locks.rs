//! In-process locks on ingest references: one writer per reference at a time.
//!
//! The registry is process-wide and keyed by store root as well as reference, so two store
//! handles opened on the same directory still exclude each other (containerd keys its map by
//! reference only, which would make unrelated stores collide).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use stowage_core_types::error::{Error, Result};

type Key = (PathBuf, String);

fn registry() -> MutexGuard<'static, HashMap<Key, SystemTime>> {
    static LOCKS: OnceLock<Mutex<HashMap<Key, SystemTime>>> = OnceLock::new();
    // A panic while holding this lock cannot leave the map inconsistent (single insert/remove),
    // so a poisoned lock is safe to keep using.
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Held by a writer; releases the reference when dropped.
#[derive(Debug)]
pub(crate) struct RefLock {
    key: Key,
}

impl RefLock {
    /// Takes the lock on `reference` in the store at `root`, retrying briefly so a writer that
    /// is being dropped on another thread does not make the caller fail spuriously.
    pub(crate) fn acquire(root: &Path, reference: &str) -> Result<RefLock> {
        let key = (root.to_path_buf(), reference.to_owned());
        let mut delay = Duration::from_micros(200);
        let mut attempt = 0;
        loop {
            {
                let mut map = registry();
                match map.get(&key) {
                    None => {
                        map.insert(key.clone(), SystemTime::now());
                        return Ok(RefLock { key });
                    }
                    Some(since) if attempt >= 5 => {
                        let held = SystemTime::now().duration_since(*since).unwrap_or_default();
                        return Err(Error::unavailable(format!(
                            "ref {reference} locked for {:.3}s by another writer",
                            held.as_secs_f64()
                        )));
                    }
                    Some(_) => {}
                }
            }
            std::thread::sleep(delay);
            delay *= 2;
            attempt += 1;
        }
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        registry().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    #[test]
    fn exclusive_until_dropped() {
        let root = Path::new("/nonexistent/locks-test");
        let a = RefLock::acquire(root, "r").unwrap();
        let err = RefLock::acquire(root, "r").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("ref r locked"), "{err}");
        // Other refs and other roots are independent.
        let _b = RefLock::acquire(root, "other").unwrap();
        let _c = RefLock::acquire(Path::new("/nonexistent/elsewhere"), "r").unwrap();
        drop(a);
        let _again = RefLock::acquire(root, "r").unwrap();
    }
}
