//! Disk usage of a directory tree, counted as containerd's `fs.DiskUsage` counts it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use stowage_core_types::snapshot::Usage;
use stowage_core_types::{Error, Result};

/// Inodes and allocated bytes (`st_blocks * 512`) under `root`, the root itself included;
/// each inode counts once however many hardlinks point at it. Symlinks are not followed.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut size: i64 = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)
            .map_err(|e| Error::io(format!("disk usage: lstat {}", p.display()), e))?;
        if seen.insert((md.dev(), md.ino())) {
            size = size.saturating_add(
                i64::try_from(md.blocks())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(512),
            );
        }
        if md.is_dir() {
            let rd = std::fs::read_dir(&p)
                .map_err(|e| Error::io(format!("disk usage: read dir {}", p.display()), e))?;
            for entry in rd {
                let entry = entry
                    .map_err(|e| Error::io(format!("disk usage: read dir {}", p.display()), e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(Usage {
        inodes: i64::try_from(seen.len()).unwrap_or(i64::MAX),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardlinks_count_once() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, vec![1u8; 10_000]).unwrap();
        let before = disk_usage(d.path()).unwrap();
        assert_eq!(before.inodes, 2, "the root and one file");
        let file_blocks = std::fs::metadata(&a).unwrap().blocks() as i64 * 512;
        let root_blocks = std::fs::metadata(d.path()).unwrap().blocks() as i64 * 512;
        assert_eq!(before.size, file_blocks + root_blocks);

        std::fs::hard_link(&a, d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("c")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let after = disk_usage(d.path()).unwrap();
        assert_eq!(after.inodes, 4, "root, a (=b), c, sub");
        assert!(after.size >= file_blocks, "{after:?}");
    }
}
