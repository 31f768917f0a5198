//! A faithful copy of a directory tree, for preparing a snapshot from its parent.
//!
//! Everything a layer can hold is reproduced: regular files (shared extents with `FICLONE`
//! where the filesystem can, else `copy_file_range` over the data segments only, so holes stay
//! holes), directories, symlinks, hardlinks (as hardlinks), character and block devices,
//! fifos and sockets, permission bits including setuid/setgid/sticky, ownership, extended
//! attributes (including `security.capability`) and access/modification times.
//!
//! Per entry the order is: create, chown (which clears setuid bits and file capabilities),
//! chmod, xattrs, times. Directory times are set after their children are in place, since
//! adding entries changes them.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use stowage_core_types::{Error, Result};

/// `FICLONE` from `linux/fs.h`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_argument(format!("path {} contains a NUL byte", p.display())))
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(what(), io::Error::last_os_error()))
    }
}

/// Copies the contents and metadata of directory `src` into existing directory `dst`.
pub fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    let md =
        fs::symlink_metadata(src).map_err(|e| Error::io(format!("lstat {}", src.display()), e))?;
    if !md.is_dir() {
        return Err(Error::invalid_argument(format!(
            "copy source {} is not a directory",
            src.display()
        )));
    }
    let mut copier = Copier::default();
    copier.copy_children(src, dst, 0)?;
    apply_metadata(src, dst, &md)
}

/// Trees deeper than this are refused rather than overflowing the stack.
const MAX_DEPTH: usize = 4096;

/// Files up to this size are copied with one read and one write from a reused buffer: for
/// them the in-kernel copy's set-up costs more than moving the bytes through user space.
const SMALL_FILE: u64 = 64 * 1024;

/// State of one tree copy.
///
/// The memos of what a source filesystem cannot do are per copy and keyed by the source
/// device, so a mount below the parent tree (a different filesystem) is judged on its own;
/// the destination is a fresh directory of the snapshotter's, one filesystem throughout.
#[derive(Default)]
struct Copier {
    /// First destination path of each multiply-linked source inode, to hardlink the rest.
    links: HashMap<(u64, u64), PathBuf>,
    /// Source devices on which `FICLONE` was refused for the filesystem as a whole.
    no_reflink: Vec<u64>,
    /// Source devices on which `copy_file_range` was refused for the filesystem as a whole.
    no_copy_range: Vec<u64>,
    /// Buffer for small files and the read/write fallback, allocated once per copy.
    buf: Vec<u8>,
}

impl Copier {
    fn copy_children(&mut self, src: &Path, dst: &Path, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid_argument(format!(
                "directory tree deeper than {MAX_DEPTH} levels at {}",
                src.display()
            )));
        }
        let rd =
            fs::read_dir(src).map_err(|e| Error::io(format!("read dir {}", src.display()), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("read dir {}", src.display()), e))?;
            let s = entry.path();
            let d = dst.join(entry.file_name());
            let md = fs::symlink_metadata(&s)
                .map_err(|e| Error::io(format!("lstat {}", s.display()), e))?;
            let ft = md.file_type();
            if ft.is_dir() {
                mkdir(&d, md.mode() & 0o7777)?;
                self.copy_children(&s, &d, depth + 1)?;
                apply_metadata(&s, &d, &md)?;
                continue;
            }
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    fs::hard_link(first, &d).map_err(|e| {
                        Error::io(
                            format!("hardlink {} to {}", d.display(), first.display()),
                            e,
                        )
                    })?;
                    continue;
                }
                self.links.insert((md.dev(), md.ino()), d.clone());
            }
            if ft.is_file() {
                // Metadata through the open descriptors, sparing the path walks.
                self.copy_file(&s, &d, &md)?;
                continue;
            } else if ft.is_symlink() {
                let target = fs::read_link(&s)
                    .map_err(|e| Error::io(format!("readlink {}", s.display()), e))?;
                std::os::unix::fs::symlink(&target, &d)
                    .map_err(|e| Error::io(format!("symlink {}", d.display()), e))?;
            } else {
                // Devices, fifos, sockets: a new node of the same type and number.
                let c = cpath(&d)?;
                // SAFETY: `c` is a NUL-terminated path alive for the call.
                let rc = unsafe { libc::mknod(c.as_ptr(), md.mode(), md.rdev()) };
                check(rc, || format!("mknod {}", d.display()))?;
            }
            apply_metadata(&s, &d, &md)?;
        }
        Ok(())
    }

    /// Copies a regular file, its bytes and then its metadata. The bytes: a reflink where the filesystem shares extents, else
    /// the data segments (holes stay holes), by one read and write for small files and
    /// copy_file_range for the rest. Only the syscalls that can matter are made: an empty
    /// file needs none, reflink is not retried on a filesystem that refused it, a file whose
    /// allocation covers its length is not probed for holes, and the length is set only when
    /// the copy ended short of it (a trailing hole).
    fn copy_file(&mut self, src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
        let from = File::open(src).map_err(|e| Error::io(format!("open {}", src.display()), e))?;
        let to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| Error::io(format!("create {}", dst.display()), e))?;
        let files = Files {
            from: &from,
            to: &to,
            src,
            dst,
        };
        self.copy_bytes(&files, md)?;
        files.apply_metadata(md)
    }

    /// The byte copy of [`Copier::copy_file`] between its two open files.
    fn copy_bytes(&mut self, files: &Files<'_>, md: &fs::Metadata) -> Result<()> {
        let (from, to, src) = (files.from, files.to, files.src);
        let size = i64::try_from(md.len())
            .map_err(|_| Error::invalid_argument(format!("{} is too large", src.display())))?;
        if size == 0 {
            return Ok(());
        }
        let dev = md.dev();
        if !self.no_reflink.contains(&dev) {
            // SAFETY: both descriptors are open for the duration of the call; FICLONE takes
            // the source descriptor as its integer argument.
            let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
            if rc == 0 {
                return Ok(());
            }
            // These say the filesystem (or the pair) cannot share extents at all; EINVAL
            // and others can be about this one file (btrfs nodatasum mixes, XFS realtime
            // files), so they do not stop reflinks for the rest.
            if matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EOPNOTSUPP)
                    | Some(libc::ENOTTY)
                    | Some(libc::ENOSYS)
                    | Some(libc::EXDEV)
            ) {
                self.no_reflink.push(dev);
            }
        }
        // A file with as many bytes allocated as its length has no holes to keep (an
        // indirect block counted in st_blocks can at worst turn a tiny hole into zeros).
        if md.blocks() * 512 >= md.len() {
            let end = if md.len() <= SMALL_FILE {
                self.copy_plain(files, 0, size)?
            } else {
                self.copy_range(files, dev, 0, size)?
            };
            return files.finish(end, size);
        }
        let mut pos: i64 = 0;
        let mut written: i64 = 0;
        while pos < size {
            // SAFETY: lseek on an open descriptor.
            let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
            if data < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENXIO) {
                    break; // only a hole remains
                }
                written = self.copy_plain(files, pos, size)?;
                break;
            }
            // SAFETY: lseek on an open descriptor.
            let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
            let end = if hole < 0 { size } else { hole.min(size) };
            written = self.copy_range(files, dev, data, end)?;
            pos = end;
        }
        files.finish(written, size)
    }

    /// Copies bytes `[start, end)` at the same offsets with copy_file_range, falling back to
    /// read/write where the kernel refuses. Returns the offset the copy reached.
    fn copy_range(&mut self, f: &Files<'_>, dev: u64, start: i64, end: i64) -> Result<i64> {
        if self.no_copy_range.contains(&dev) {
            return self.copy_plain(f, start, end);
        }
        let mut off_in = start;
        let mut off_out = start;
        while off_in < end {
            let len = usize::try_from(end - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            // SAFETY: valid open descriptors and pointers to local offsets that outlive the
            // call.
            let n = unsafe {
                libc::copy_file_range(
                    f.from.as_raw_fd(),
                    &mut off_in,
                    f.to.as_raw_fd(),
                    &mut off_out,
                    len,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::ENOSYS)
                        | Some(libc::EINVAL)
                        | Some(libc::EOPNOTSUPP)
                ) {
                    // Refused for this filesystem, not for this file: later files go
                    // straight to read/write.
                    self.no_copy_range.push(dev);
                    return self.copy_plain(f, off_in, end);
                }
                return Err(f.err(e));
            }
            if n == 0 {
                break; // the file shrank under us
            }
        }
        Ok(off_out)
    }

    /// Copies bytes `[start, end)` at the same offsets through the reused buffer. Returns
    /// the offset the copy reached.
    fn copy_plain(&mut self, f: &Files<'_>, start: i64, end: i64) -> Result<i64> {
        use std::os::unix::fs::FileExt;
        let mut off = u64::try_from(start).unwrap_or(0);
        let end = u64::try_from(end).unwrap_or(0);
        let want_buf = usize::try_from(end - off.min(end))
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        if self.buf.len() < want_buf {
            self.buf.resize(want_buf, 0);
        }
        while off < end {
            let want = usize::try_from(end - off)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = f
                .from
                .read_at(&mut self.buf[..want], off)
                .map_err(|e| f.err(e))?;
            if n == 0 {
                break;
            }
            f.to.write_all_at(&self.buf[..n], off)
                .map_err(|e| f.err(e))?;
            off += n as u64;
        }
        Ok(i64::try_from(off).unwrap_or(i64::MAX))
    }
}

/// The two open files of one regular-file copy, with their paths for error messages.
struct Files<'a> {
    from: &'a File,
    to: &'a File,
    src: &'a Path,
    dst: &'a Path,
}

impl Files<'_> {
    fn err(&self, e: io::Error) -> Error {
        Error::io(
            format!("copy {} to {}", self.src.display(), self.dst.display()),
            e,
        )
    }

    /// Ownership, mode, xattrs and times of the source onto the open destination, in the
    /// same order as [`apply_metadata`] (chown clears setuid bits and capabilities, so it
    /// goes first; times go last, after every write).
    fn apply_metadata(&self, md: &fs::Metadata) -> Result<()> {
        let fd = self.to.as_raw_fd();
        // SAFETY: `fd` is an open descriptor for the duration of each call.
        let rc = unsafe { libc::fchown(fd, md.uid(), md.gid()) };
        check(rc, || format!("chown {}", self.dst.display()))?;
        // SAFETY: as above.
        let rc = unsafe { libc::fchmod(fd, md.mode() & 0o7777) };
        check(rc, || format!("chmod {}", self.dst.display()))?;
        copy_xattrs(self.src, self.dst, &cpath(self.dst)?)?;
        let times = timespecs(md);
        // SAFETY: `times` is an array of two timespecs alive for the call.
        let rc = unsafe { libc::futimens(fd, times.as_ptr()) };
        check(rc, || format!("set times of {}", self.dst.display()))
    }

    /// Sets the destination's length when the copy stopped short of `size`: a trailing hole,
    /// or a source that shrank meanwhile (the length recorded at lstat wins, as before).
    fn finish(&self, written: i64, size: i64) -> Result<()> {
        if written == size {
            return Ok(());
        }
        self.to
            .set_len(u64::try_from(size).unwrap_or(0))
            .map_err(|e| Error::io(format!("truncate {}", self.dst.display()), e))
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    let rc = unsafe { libc::mkdir(c.as_ptr(), mode) };
    check(rc, || format!("mkdir {}", p.display()))
}

/// Ownership, mode, xattrs and times of `src` onto `dst` (never following symlinks).
fn apply_metadata(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
    let c = cpath(dst)?;
    let is_link = md.file_type().is_symlink();
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    let rc = unsafe { libc::lchown(c.as_ptr(), md.uid(), md.gid()) };
    check(rc, || format!("chown {}", dst.display()))?;
    if !is_link {
        // SAFETY: as above.
        let rc = unsafe { libc::chmod(c.as_ptr(), md.mode() & 0o7777) };
        check(rc, || format!("chmod {}", dst.display()))?;
    }
    copy_xattrs(src, dst, &c)?;
    let times = timespecs(md);
    // SAFETY: `c` is NUL-terminated and `times` is an array of two timespecs, both alive for
    // the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc, || format!("set times of {}", dst.display()))
}

/// Access and modification times of `md`, as utimensat and futimens take them.
fn timespecs(md: &fs::Metadata) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: md.atime() as libc::time_t,
            tv_nsec: md.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: md.mtime() as libc::time_t,
            tv_nsec: md.mtime_nsec() as _,
        },
    ]
}

fn xattr_names(src: &Path, csrc: &CString) -> Result<Vec<u8>> {
    loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let n = unsafe { libc::llistxattr(csrc.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(Error::io(format!("list xattrs of {}", src.display()), e));
        }
        let mut buf = vec![0u8; n as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let m = unsafe { libc::llistxattr(csrc.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(Error::io(
                format!("list xattrs of {}", src.display()),
                io::Error::last_os_error(),
            ));
        }
        // The list grew between the calls: ask again.
    }
}

fn xattr_value(src: &Path, csrc: &CString, name: &CString) -> Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let n = unsafe { libc::lgetxattr(csrc.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODATA) {
                return Ok(None); // removed meanwhile
            }
            return Err(Error::io(
                format!("get xattr {name:?} of {}", src.display()),
                e,
            ));
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes (a zero-length buffer is fine).
        let m = unsafe {
            libc::lgetxattr(
                csrc.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(Some(buf));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(Error::io(
                format!("get xattr {name:?} of {}", src.display()),
                io::Error::last_os_error(),
            ));
        }
    }
}

fn copy_xattrs(src: &Path, dst: &Path, cdst: &CString) -> Result<()> {
    let csrc = cpath(src)?;
    let names = xattr_names(src, &csrc)?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| Error::data_loss("xattr name with NUL"))?;
        let Some(value) = xattr_value(src, &csrc, &cname)? else {
            continue;
        };
        // SAFETY: NUL-terminated path and name, and a value buffer of `value.len()` bytes.
        let rc = unsafe {
            libc::lsetxattr(
                cdst.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Like containerd's native snapshotter, a filesystem or security module that
            // refuses an attribute (SELinux labels, user.* on symlinks) does not fail the
            // copy; anything else does.
            if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                continue;
            }
            return Err(Error::io(
                format!(
                    "set xattr {} on {}",
                    String::from_utf8_lossy(OsStr::from_bytes(name).as_bytes()),
                    dst.display()
                ),
                e,
            ));
        }
    }
    Ok(())
}
