//! Mounting what snapshotters return: `mount(2)` from a [`Mount`], unmounting with retries and
//! a lazy detach as last resort, and temporary mounts that are always undone.
//!
//! Overlay option strings longer than a page (a 128-layer stack with absolute lower paths)
//! are rejected by the kernel. As containerd 1.6 does, the lower directories are then written
//! relative to their common parent directory and the mount is made from inside it. containerd
//! forks a helper process for the `chdir`; here a dedicated thread detaches its filesystem
//! context with `unshare(CLONE_FS)` (so its working directory is its own, not the process's),
//! changes into the common directory and mounts from there.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stowage_core_types::mount::Mount;
use stowage_core_types::{Error, Result};

/// How often a busy unmount is retried before falling back to a lazy detach.
const UNMOUNT_RETRIES: u32 = 50;
/// Pause between busy unmount retries.
const UNMOUNT_PAUSE: Duration = Duration::from_millis(50);

/// `mount(2)` flags and propagation changes parsed from fstab-style options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    flags: libc::c_ulong,
    propagation: libc::c_ulong,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut p = Parsed::default();
    for o in options {
        // (clear?, flag) for flag-like options, as mount(8) understands them.
        let flag: Option<(bool, libc::c_ulong)> = match o.as_str() {
            "async" => Some((true, libc::MS_SYNCHRONOUS)),
            "atime" => Some((true, libc::MS_NOATIME)),
            "bind" => Some((false, libc::MS_BIND)),
            "defaults" => Some((false, 0)),
            "dev" => Some((true, libc::MS_NODEV)),
            "diratime" => Some((true, libc::MS_NODIRATIME)),
            "dirsync" => Some((false, libc::MS_DIRSYNC)),
            "exec" => Some((true, libc::MS_NOEXEC)),
            "mand" => Some((false, libc::MS_MANDLOCK)),
            "noatime" => Some((false, libc::MS_NOATIME)),
            "nodev" => Some((false, libc::MS_NODEV)),
            "nodiratime" => Some((false, libc::MS_NODIRATIME)),
            "noexec" => Some((false, libc::MS_NOEXEC)),
            "nomand" => Some((true, libc::MS_MANDLOCK)),
            "norelatime" => Some((true, libc::MS_RELATIME)),
            "nostrictatime" => Some((true, libc::MS_STRICTATIME)),
            "nosuid" => Some((false, libc::MS_NOSUID)),
            "rbind" => Some((false, libc::MS_BIND | libc::MS_REC)),
            "relatime" => Some((false, libc::MS_RELATIME)),
            "remount" => Some((false, libc::MS_REMOUNT)),
            "ro" => Some((false, libc::MS_RDONLY)),
            "rw" => Some((true, libc::MS_RDONLY)),
            "strictatime" => Some((false, libc::MS_STRICTATIME)),
            "suid" => Some((true, libc::MS_NOSUID)),
            "sync" => Some((false, libc::MS_SYNCHRONOUS)),
            _ => None,
        };
        let prop = match o.as_str() {
            "private" => Some(libc::MS_PRIVATE),
            "rprivate" => Some(libc::MS_PRIVATE | libc::MS_REC),
            "shared" => Some(libc::MS_SHARED),
            "rshared" => Some(libc::MS_SHARED | libc::MS_REC),
            "slave" => Some(libc::MS_SLAVE),
            "rslave" => Some(libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => Some(libc::MS_UNBINDABLE),
            "runbindable" => Some(libc::MS_UNBINDABLE | libc::MS_REC),
            _ => None,
        };
        match (flag, prop) {
            (Some((true, f)), _) => p.flags &= !f,
            (Some((false, f)), _) => p.flags |= f,
            (None, Some(f)) => p.propagation |= f,
            (None, None) => p.data.push(o.clone()),
        }
    }
    p
}

fn cstring(what: &str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid_argument(format!("{what} contains a NUL byte")))
}

fn sys_mount(
    source: &CString,
    target: &CString,
    fstype: &CString,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> io::Result<()> {
    let data_ptr = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null for
    // `data`, which mount(2) accepts.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// Rewrites the `lowerdir=` option with paths relative to the lower dirs' common parent
/// directory; `None` when there is nothing to shorten.
fn compact_lowerdirs(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let idx = options.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = options[idx]["lowerdir=".len()..].split(':').collect();
    if dirs.len() < 2 || dirs.iter().any(|d| !d.starts_with('/')) {
        return None;
    }
    // The longest common run of whole path components, then its parent when it is itself a
    // lower dir (so every relative path is non-empty).
    let first: Vec<&str> = dirs[0].split('/').collect();
    let mut common = first.len();
    for d in &dirs[1..] {
        let comps: Vec<&str> = d.split('/').collect();
        common = common.min(first.iter().zip(&comps).take_while(|(a, b)| a == b).count());
    }
    let min_len = dirs.iter().map(|d| d.split('/').count()).min()?;
    if common >= min_len {
        common = min_len - 1;
    }
    let base = first[..common].join("/");
    if base.is_empty() {
        return None;
    }
    let rel: Vec<&str> = dirs.iter().map(|d| &d[base.len() + 1..]).collect();
    let mut out: Vec<String> = options.to_vec();
    out[idx] = format!("lowerdir={}", rel.join(":"));
    Some((PathBuf::from(base), out))
}

/// Mounts from inside `dir` on a dedicated thread with its own working directory.
fn mount_in_dir(
    dir: &Path,
    source: CString,
    target: CString,
    fstype: CString,
    flags: libc::c_ulong,
    data: CString,
) -> io::Result<()> {
    let dir = cstring("mount directory", dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare(CLONE_FS) only detaches this thread's cwd/root/umask from the
            // other threads'; it takes no pointers.
            if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `dir` is a NUL-terminated string alive for the call.
            if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            sys_mount(&source, &target, &fstype, flags, Some(&data))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("mount thread panicked")))
    })
}

/// Mounts `m` on `target`.
pub fn mount(m: &Mount, target: &Path) -> Result<()> {
    let p = parse_options(&m.options);
    let describe = || {
        format!(
            "mount {} {:?} on {} with options {:?}",
            m.kind,
            m.source,
            target.display(),
            m.options
        )
    };
    let target_c = cstring("mount target", target.as_os_str().as_bytes())?;
    let source_c = cstring("mount source", m.source.as_bytes())?;
    let fstype_c = cstring("mount type", m.kind.as_bytes())?;
    let mut data = p.data.join(",");
    let mut chdir = None;
    if m.kind == "overlay" && data.len() >= page_size() {
        if let Some((dir, opts)) = compact_lowerdirs(&p.data) {
            data = opts.join(",");
            chdir = Some(dir);
        }
    }
    let data_c = cstring("mount options", data.as_bytes())?;
    // A read-only bind takes a second, remount call: MS_RDONLY is ignored when binding.
    let first_flags = if p.flags & libc::MS_BIND != 0 {
        p.flags & !libc::MS_RDONLY
    } else {
        p.flags
    };
    let res = match &chdir {
        Some(dir) => {
            // A relative target would resolve inside `dir`.
            if !target.is_absolute() {
                return Err(Error::invalid_argument(format!(
                    "{}: target must be absolute for a long overlay option string",
                    describe()
                )));
            }
            mount_in_dir(
                dir,
                source_c,
                target_c.clone(),
                fstype_c,
                first_flags,
                data_c,
            )
        }
        None => sys_mount(
            &source_c,
            &target_c,
            &fstype_c,
            first_flags,
            (!data.is_empty()).then_some(&data_c),
        ),
    };
    res.map_err(|e| Error::io(describe(), e))?;

    let empty = CString::default();
    let finish = || -> io::Result<()> {
        if p.flags & libc::MS_BIND != 0 && p.flags & libc::MS_RDONLY != 0 {
            let keep = libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_NOATIME
                | libc::MS_NODIRATIME
                | libc::MS_RELATIME
                | libc::MS_STRICTATIME;
            sys_mount(
                &empty,
                &target_c,
                &empty,
                libc::MS_REMOUNT | libc::MS_BIND | (p.flags & keep),
                None,
            )?;
        }
        if p.propagation != 0 {
            sys_mount(&empty, &target_c, &empty, p.propagation, None)?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        // Never leave a half-configured (say, writable instead of read-only) mount behind.
        let _ = unmount(target);
        return Err(Error::io(describe(), e));
    }
    Ok(())
}

/// Mounts each of `mounts` on `target` in order; when one fails, those already made are
/// unmounted before the error is returned.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount(m, target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn umount2(target: &CString, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a NUL-terminated string alive for the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts the top mount on `t`, retrying while busy, then detaching lazily.
fn unmount_io(t: &CString) -> io::Result<()> {
    for attempt in 0..UNMOUNT_RETRIES {
        match umount2(t, 0) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if attempt + 1 < UNMOUNT_RETRIES {
                    std::thread::sleep(UNMOUNT_PAUSE);
                }
            }
            Err(e) => return Err(e),
        }
    }
    umount2(t, libc::MNT_DETACH)
}

/// Unmounts the top mount on `target`: retries while it is busy, then detaches it lazily
/// (it disappears from the tree now and is released when its last user goes).
pub fn unmount(target: &Path) -> Result<()> {
    let t = cstring("unmount target", target.as_os_str().as_bytes())?;
    unmount_io(&t).map_err(|e| Error::io(format!("unmount {}", target.display()), e))
}

/// Unmounts every mount stacked on `target`; a target with nothing mounted is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    let t = cstring("unmount target", target.as_os_str().as_bytes())?;
    // Bounded: a stack of mounts is never this deep.
    for _ in 0..1024 {
        match unmount_io(&t) {
            Ok(()) => continue,
            // EINVAL: not (or no longer) a mount point.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                return Ok(())
            }
            Err(e) => return Err(Error::io(format!("unmount {}", target.display()), e)),
        }
    }
    Err(Error::unknown(format!(
        "unmount {}: still mounted after 1024 unmounts",
        target.display()
    )))
}

/// True when `path` is a mount point according to `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.as_os_str().as_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp).as_slice() == want)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory with mounts on it that are undone, and the directory removed, when the value
/// is dropped.
///
/// The directory is removed with `rmdir` only, never recursively: if unmounting failed the
/// data under it must not be deleted.
#[derive(Debug)]
pub struct TempMount {
    dir: PathBuf,
    mounted: bool,
}

impl TempMount {
    /// Mounts `mounts` on a new directory in the system temporary directory.
    pub fn new(mounts: &[Mount]) -> Result<TempMount> {
        TempMount::new_in(&std::env::temp_dir(), mounts)
    }

    /// Mounts `mounts` on a new directory under `parent`.
    pub fn new_in(parent: &Path, mounts: &[Mount]) -> Result<TempMount> {
        let dir = loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = parent.join(format!(
                "stowage-mount-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("create temporary mount point in {}", parent.display()),
                        e,
                    ))
                }
            }
        };
        let mut tm = TempMount {
            dir,
            mounted: false,
        };
        mount_all(mounts, &tm.dir)?;
        tm.mounted = true;
        Ok(tm)
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the directory, reporting errors that dropping would swallow.
    pub fn unmount(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        if self.mounted {
            unmount_all(&self.dir)?;
            self.mounted = false;
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.dir.display()), e)),
        }
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Mounts `mounts` on a temporary directory, runs `f` on it, and unmounts whatever `f`
/// returned.
pub fn with_temp_mount<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tm = TempMount::new(mounts)?;
    let out = f(tm.path());
    let un = tm.unmount();
    let out = out?;
    un?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&s(&[
            "rbind",
            "ro",
            "nosuid",
            "rprivate",
            "index=off",
            "userxattr",
        ]));
        assert_eq!(
            p.flags,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID
        );
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(p.data, s(&["index=off", "userxattr"]));
        // A later rw clears an earlier ro.
        let p = parse_options(&s(&["ro", "rw"]));
        assert_eq!(p.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn long_lowerdirs_become_relative_to_their_common_parent() {
        let opts = s(&[
            "index=off",
            "workdir=/r/snapshots/9/work",
            "upperdir=/r/snapshots/9/fs",
            "lowerdir=/r/snapshots/8/fs:/r/snapshots/7/fs:/r/snapshots/10/fs",
        ]);
        let (dir, out) = compact_lowerdirs(&opts).unwrap();
        assert_eq!(dir, PathBuf::from("/r/snapshots"));
        assert_eq!(out[3], "lowerdir=8/fs:7/fs:10/fs");
        assert_eq!(out[..3], opts[..3]);

        // One lower dir, or no common directory: nothing to do.
        assert!(compact_lowerdirs(&s(&["lowerdir=/a/b"])).is_none());
        assert!(compact_lowerdirs(&s(&["lowerdir=/a/x:/b/x"])).is_none());
        // A lower dir that is the common prefix itself keeps a non-empty relative name.
        let (dir, out) = compact_lowerdirs(&s(&["lowerdir=/a/b:/a/b/c"])).unwrap();
        assert_eq!(dir, PathBuf::from("/a"));
        assert_eq!(out[0], "lowerdir=b:b/c");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), b"/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), b"/x\\");
    }
}
