//! What the kernel needs in overlay options, found once at start as containerd does.

use std::path::Path;

/// True when the overlay module has the `index` feature: mounts then carry `index=off`, so a
/// lower layer can be shared by several overlay mounts.
pub fn supports_index() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// True when this process runs in a user namespace that maps less than the whole id range.
fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

fn on_tmpfs(d: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether overlay needs `userxattr`, by containerd 1.6's rules: only inside a user namespace
/// (where `trusted.*` xattrs are out of reach) and not on tmpfs; then yes on kernels from 5.11,
/// and on older ones when a trial overlay mount with the option succeeds.
pub fn needs_userxattr(root: &Path) -> bool {
    if !in_user_namespace() || on_tmpfs(root) {
        return false;
    }
    if kernel_at_least(5, 11) {
        return true;
    }
    probe_userxattr(root).unwrap_or(false)
}

/// Mounts a throwaway overlay with `userxattr` under `root/userxattr-check` and reports
/// whether the kernel accepted the option. Everything it made is removed again.
pub fn probe_userxattr(root: &Path) -> std::io::Result<bool> {
    let top = root.join("userxattr-check");
    let _ = std::fs::remove_dir_all(&top);
    let result = (|| {
        for d in ["lower1", "lower2", "upper", "work", "merged"] {
            std::fs::create_dir_all(top.join(d))?;
        }
        let p = |d: &str| top.join(d).to_string_lossy().into_owned();
        let m = stowage_core_types::mount::Mount::new(
            "overlay",
            "overlay",
            [
                format!("lowerdir={}:{}", p("lower2"), p("lower1")),
                format!("upperdir={}", p("upper")),
                format!("workdir={}", p("work")),
                "userxattr".to_string(),
            ],
        );
        let merged = top.join("merged");
        match stowage_snapshots_storage::mount::mount(&m, &merged) {
            Ok(()) => {
                let _ = stowage_snapshots_storage::mount::unmount_all(&merged);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    })();
    let _ = std::fs::remove_dir_all(&top);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_compares_numerically() {
        // The running kernel is at least 2.6 and not 999.0.
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(999, 0));
    }
}

/// True when directory entries under `dir` carry their type (`d_type`), which overlayfs
/// needs to find whiteouts; checked, as containerd does, on the entries of `dir` (it must
/// have at least one).
pub fn supports_d_type(dir: &Path) -> std::io::Result<bool> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut seen = 0usize;
    let mut ok = true;
    loop {
        // SAFETY: `d` is an open directory stream owned by this function.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry that stays valid until the next call; its
        // name is NUL-terminated.
        let (name, d_type) = unsafe {
            (
                std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes(),
                (*e).d_type,
            )
        };
        // "." and ".." say nothing about the files.
        if name == b"." || name == b".." {
            continue;
        }
        seen += 1;
        if d_type == libc::DT_UNKNOWN {
            ok = false;
            break;
        }
    }
    // SAFETY: `d` is open and closed exactly once.
    unsafe { libc::closedir(d) };
    if seen == 0 {
        return Err(std::io::Error::other(format!(
            "no directory entries found in {}",
            dir.display()
        )));
    }
    Ok(ok)
}

#[cfg(test)]
mod d_type_tests {
    use super::*;

    #[test]
    fn local_fs_has_d_type_and_empty_dirs_are_an_error() {
        let d = std::env::temp_dir().join(format!("stowage-dtype-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(supports_d_type(&d).is_err(), "no entries: cannot tell");
        std::fs::write(d.join("f"), b"").unwrap();
        assert!(supports_d_type(&d).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
        assert!(supports_d_type(Path::new("/nonexistent-stowage-dir")).is_err());
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn userxattr_probe_mounts_and_cleans_up() {
        if !stowage_snapshots_storage::testsuite::require_root() {
            return;
        }
        let d = std::env::temp_dir().join(format!("stowage-uxprobe-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // Every kernel from 5.11 knows the option (this one is newer than that).
        assert_eq!(probe_userxattr(&d).unwrap(), kernel_at_least(5, 11));
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "nothing left behind"
        );
        std::fs::remove_dir(&d).unwrap();
    }
}
