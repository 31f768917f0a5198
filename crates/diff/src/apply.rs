//! Applying tar entries to the target directory.

mod workers;

use std::collections::HashSet;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use stowage_core_types::error::{Error, Result};
use stowage_digest_identity::{Compression, Digest};

use crate::entry::{Entry, EntryReader, Kind};
use crate::resolve::{clean_name, Dir, Resolver};
use crate::stream::{ChunkSource, LayerStream};
use crate::sys::{self, Time};
use crate::{ApplyOptions, WhiteoutMode};
use workers::Pool;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What the applier knows about an inode's current owner and mode, so it can skip `chown` and
/// `chmod` calls that would change nothing.
#[derive(Debug, Clone, Copy)]
struct Current {
    uid: u32,
    gid: u32,
    /// Permission bits including setuid/setgid/sticky; `None` when unknown.
    mode: Option<u32>,
}

/// Counters reported back to the caller.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) entries: u64,
    pub(crate) skipped: u64,
}

pub(crate) struct Applier<'o> {
    root_path: PathBuf,
    resolver: Resolver,
    options: &'o ApplyOptions,
    euid: u32,
    egid: u32,
    umask: Option<u32>,
    /// Paths (relative to the root) this layer created, for opaque directories in delete mode.
    unpacked: Option<HashSet<PathBuf>>,
    /// Directories whose times are restored once all their children exist.
    dir_times: Vec<(PathBuf, Time, Time)>,
    /// Workers finishing small files; `None` when the apply runs on one thread.
    pool: Option<Pool>,
    pub(crate) counts: Counts,
}

fn ctx_io(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(what, e)
}

fn bounded(t: Time) -> Time {
    // containerd clamps times outside what a 64-bit nanosecond clock holds to the epoch.
    const MAX_SEC: i64 = i64::MAX / 1_000_000_000;
    if t.sec < 0 || t.sec >= MAX_SEC {
        Time::default()
    } else {
        t
    }
}

fn entry_times(entry: &Entry) -> (Time, Time) {
    let mtime = bounded(entry.mtime);
    let atime = match entry.atime {
        Some(a) if bounded(a) > mtime => bounded(a),
        _ => mtime,
    };
    (atime, mtime)
}

fn id32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::invalid_argument(format!("{what} {v} does not fit in 32 bits")))
}

impl<'o> Applier<'o> {
    pub(crate) fn new(
        root_path: &Path,
        root_fd: OwnedFd,
        options: &'o ApplyOptions,
    ) -> Result<Self> {
        let umask = sys::current_umask();
        let (euid, egid) = sys::effective_ids();
        let track = matches!(options.whiteouts, WhiteoutMode::Delete);
        let resolver = Resolver::new(root_fd, root_path, umask)
            .with_lowers(&options.parents, options.privileged)
            .map_err(ctx_io("opening parent layer directories"))?;
        Ok(Applier {
            root_path: root_path.to_path_buf(),
            resolver,
            options,
            euid,
            egid,
            umask,
            unpacked: track.then(HashSet::new),
            dir_times: Vec::new(),
            pool: options
                .threaded
                .then(|| Pool::start(worker_threads()))
                .flatten(),
            counts: Counts::default(),
        })
    }

    /// Applies every entry of the layer, then restores directory times, then drains the
    /// stream. Returns the DiffID and uncompressed size.
    pub(crate) fn run(
        &mut self,
        source: &mut dyn ChunkSource,
        compression: Compression,
    ) -> Result<(Digest, u64)> {
        let mut stream = LayerStream::new(source, compression);
        let mut reader = EntryReader::new();
        while let Some(entry) = reader.next(&mut stream)? {
            if let Some(flag) = &self.options.cancel {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::canceled(format!(
                        "layer apply canceled before entry {:?}",
                        entry.display_name()
                    )));
                }
            }
            // Worker errors name their own entry, so they are not wrapped with this one's.
            if entry.kind == Kind::Hardlink {
                // The link's owner, mode and times apply to the target's inode, which a worker
                // may still be finishing with the target entry's metadata.
                self.wait_workers()?;
            } else if let Some(pool) = &self.pool {
                pool.check()?;
            }
            self.apply_entry(&entry, &mut stream, &mut reader)
                .map_err(|e| e.context(format!("layer entry {:?}", entry.display_name())))?;
            self.counts.entries += 1;
        }
        self.wait_workers()?;
        self.restore_dir_times()?;
        stream.finish()
    }

    /// Waits for every file handed to the workers to be complete.
    fn wait_workers(&mut self) -> Result<()> {
        match &mut self.pool {
            Some(pool) => pool.wait(),
            None => Ok(()),
        }
    }

    fn full_path(&self, dir: &Dir, name: &[u8]) -> PathBuf {
        let mut p = self.root_path.join(dir.path());
        if !name.is_empty() {
            p.push(sys::os(name));
        }
        p
    }

    fn apply_entry(
        &mut self,
        entry: &Entry,
        stream: &mut LayerStream<'_>,
        reader: &mut EntryReader,
    ) -> Result<()> {
        let comps = clean_name(&entry.name)
            .map_err(|_| Error::invalid_argument("path escapes the target root through \"..\""))?;
        let Some((base, parents)) = comps.split_last() else {
            // The root itself ("./"): containerd leaves the root's own metadata alone.
            return Ok(());
        };
        let parent = self
            .resolver
            .resolve_dir(parents, true)
            .map_err(ctx_io("resolving parent directory"))?;
        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(entry, &parent, base);
        }
        let name = sys::cstr(base).map_err(ctx_io("entry name"))?;
        match entry.kind {
            Kind::Directory => self.directory(entry, &parent, base, &name)?,
            Kind::Regular => self.regular(entry, &parent, &name, stream, reader)?,
            Kind::Symlink => self.symlink(entry, &parent, &name)?,
            Kind::Hardlink => self.hardlink(entry, &parent, &name)?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                if !self.special(entry, &parent, &name)? {
                    self.counts.skipped += 1;
                    return Ok(());
                }
            }
        }
        if let Some(set) = &mut self.unpacked {
            // Directories the entry implied count as this layer's too, so an opaque marker
            // listed later does not remove them with the entry inside.
            // Looked up before inserting: the parent is almost always known already, and an
            // insert would allocate its path first.
            let path = parent.path().join(sys::os(base));
            for ancestor in path.ancestors().skip(1) {
                if ancestor.as_os_str().is_empty() || set.contains(ancestor) {
                    break;
                }
                set.insert(ancestor.to_path_buf());
            }
            set.insert(path);
        }
        Ok(())
    }

    /// Removes whatever is at `name` in `dir` (a directory with all its contents); absent is
    /// fine.
    fn remove(&mut self, dir: &Dir, name: &CStr) -> Result<()> {
        self.resolver.invalidate();
        match sys::unlinkat(dir.fd(), name, false) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
                let full = self.full_path(dir, name.to_bytes());
                match std::fs::remove_dir_all(&full) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(format!("removing {}", full.display()), e)),
                }
            }
            Err(e) => Err(Error::io(
                format!(
                    "removing {}",
                    self.full_path(dir, name.to_bytes()).display()
                ),
                e,
            )),
        }
    }

    /// Runs `create`; if the name is taken, removes what is there and tries once more, which
    /// is how an entry replaces a lower one of another type.
    fn create_replacing<T>(
        &mut self,
        dir: &Dir,
        name: &CStr,
        what: &str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<T> {
        match create() {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove(dir, name)?;
                create().map_err(ctx_io(what))
            }
            Err(e) => Err(Error::io(what, e)),
        }
    }

    /// Owner and mode a freshly created inode has in `dir`.
    fn fresh(&self, dir: &Dir, perm: u32, is_dir: bool) -> Result<Current> {
        let mut gid = self.egid;
        let mut inherit_sgid = false;
        if self.options.privileged || is_dir {
            let (dmode, dgid) = dir.mode_gid().map_err(ctx_io("reading parent directory"))?;
            if dmode & libc::S_ISGID != 0 {
                gid = dgid;
                inherit_sgid = is_dir;
            }
        }
        let mode = self.umask.map(|m| {
            let mut mode = perm & !m & 0o777;
            if inherit_sgid {
                mode |= libc::S_ISGID;
            }
            mode
        });
        Ok(Current {
            uid: self.euid,
            gid,
            mode,
        })
    }

    fn directory(
        &mut self,
        entry: &Entry,
        parent: &Rc<Dir>,
        base: &[u8],
        name: &CStr,
    ) -> Result<()> {
        let perm = entry.mode & 0o777;
        let current = match sys::mkdirat(parent.fd(), name, perm) {
            Ok(()) => self.fresh(parent, perm, true)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let st = sys::lstatat(parent.fd(), name).map_err(ctx_io("stat"))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    // Directories merge: only the metadata of the layer's entry applies.
                    Current {
                        uid: st.st_uid,
                        gid: st.st_gid,
                        mode: Some(st.st_mode & 0o7777),
                    }
                } else {
                    self.remove(parent, name)?;
                    sys::mkdirat(parent.fd(), name, perm).map_err(ctx_io("creating directory"))?;
                    self.fresh(parent, perm, true)?
                }
            }
            Err(e) => return Err(Error::io("creating directory", e)),
        };
        self.metadata(entry, parent, name, None, current)?;
        let (atime, mtime) = entry_times(entry);
        self.dir_times
            .push((parent.path().join(sys::os(base)), atime, mtime));
        Ok(())
    }

    fn regular(
        &mut self,
        entry: &Entry,
        parent: &Rc<Dir>,
        name: &CStr,
        stream: &mut LayerStream<'_>,
        reader: &mut EntryReader,
    ) -> Result<()> {
        let perm = entry.mode & 0o777;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = self.create_replacing(parent, name, "creating file", || {
            sys::openat(parent.fd(), name, flags, perm)
        })?;
        let mut file = File::from(fd);
        if self.pool.is_some()
            && entry.sparse.is_none()
            && entry.size <= workers::MAX_SIZE
            && entry.xattrs.is_empty()
        {
            return self.hand_over(entry, parent, perm, file, stream, reader);
        }
        match &entry.sparse {
            None => stream.feed(entry.size, &mut |buf| file_write(&mut file, buf))?,
            Some(map) => {
                for &(off, len) in map {
                    file.seek(SeekFrom::Start(off))
                        .map_err(ctx_io("seeking in sparse file"))?;
                    stream.feed(len, &mut |buf| file_write(&mut file, buf))?;
                }
                // Holes at the end exist only through the length.
                file.set_len(entry.real_size)
                    .map_err(ctx_io("setting sparse file length"))?;
            }
        }
        reader.consumed(entry.size);
        let current = self.fresh(parent, perm, false)?;
        self.metadata(entry, parent, name, Some(file.as_fd()), current)
    }

    /// Reads the data of a small file just created as `file` and gives it, with the owner,
    /// mode and times [`Self::metadata_inner`] would set, to the workers to finish.
    fn hand_over(
        &mut self,
        entry: &Entry,
        parent: &Rc<Dir>,
        perm: u32,
        file: File,
        stream: &mut LayerStream<'_>,
        reader: &mut EntryReader,
    ) -> Result<()> {
        let mut data = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        stream.feed(entry.size, &mut |buf| {
            data.extend_from_slice(buf);
            Ok(())
        })?;
        reader.consumed(entry.size);
        let mut current = self.fresh(parent, perm, false)?;
        let mut owner = None;
        if self.options.privileged {
            let uid = id32(entry.uid, "uid")?;
            let gid = id32(entry.gid, "gid")?;
            if (uid, gid) != (current.uid, current.gid) {
                owner = Some((uid, gid));
                current.mode = current.mode.map(|m| m & !(libc::S_ISUID | libc::S_ISGID));
            }
        }
        let want = entry.mode & 0o7777;
        let (atime, mtime) = entry_times(entry);
        let job = workers::Job {
            file,
            data,
            owner,
            mode: (current.mode != Some(want)).then_some(want),
            atime,
            mtime,
            name: entry.display_name(),
        };
        match &mut self.pool {
            Some(pool) => pool.submit(job),
            None => Err(Error::unknown("no worker threads to finish a file")),
        }
    }

    fn symlink(&mut self, entry: &Entry, parent: &Rc<Dir>, name: &CStr) -> Result<()> {
        let target = sys::cstr(&entry.link).map_err(ctx_io("symlink target"))?;
        self.create_replacing(parent, name, "creating symlink", || {
            sys::symlinkat(&target, parent.fd(), name)
        })?;
        let current = self.fresh(parent, 0o777, false)?;
        self.metadata(entry, parent, name, None, current)
    }

    fn hardlink(&mut self, entry: &Entry, parent: &Rc<Dir>, name: &CStr) -> Result<()> {
        let link_name = String::from_utf8_lossy(&entry.link).into_owned();
        let comps = clean_name(&entry.link).map_err(|_| {
            Error::invalid_argument(format!(
                "hard link target {link_name:?} escapes the target root"
            ))
        })?;
        let Some((tbase, tparents)) = comps.split_last() else {
            return Err(Error::invalid_argument(format!(
                "hard link target {link_name:?} is the root directory"
            )));
        };
        let tdir = self
            .resolver
            .resolve_dir(tparents, false)
            .map_err(|e| Error::io(format!("resolving hard link target {link_name:?}"), e))?;
        let tname = sys::cstr(tbase).map_err(ctx_io("hard link target"))?;
        self.create_replacing(parent, name, &format!("linking to {link_name:?}"), || {
            sys::linkat(tdir.fd(), &tname, parent.fd(), name)
        })?;
        let st = sys::lstatat(parent.fd(), name).map_err(ctx_io("stat"))?;
        let current = Current {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: Some(st.st_mode & 0o7777),
        };
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        self.metadata_inner(entry, parent, name, None, current, is_link)
    }

    /// Devices and fifos. Returns false when the entry was skipped by policy.
    fn special(&mut self, entry: &Entry, parent: &Rc<Dir>, name: &CStr) -> Result<bool> {
        let (kind_bits, dev) = match entry.kind {
            Kind::Char => (
                libc::S_IFCHR,
                sys::makedev(entry.dev_major, entry.dev_minor),
            ),
            Kind::Block => (
                libc::S_IFBLK,
                sys::makedev(entry.dev_major, entry.dev_minor),
            ),
            _ => (libc::S_IFIFO, 0),
        };
        if kind_bits != libc::S_IFIFO && !self.options.privileged {
            // Device nodes need CAP_MKNOD; unprivileged applies leave them out.
            return Ok(false);
        }
        let perm = entry.mode & 0o777;
        self.create_replacing(parent, name, "creating device node", || {
            sys::mknodat(parent.fd(), name, kind_bits | perm, dev)
        })?;
        let current = self.fresh(parent, perm, false)?;
        self.metadata(entry, parent, name, None, current)?;
        Ok(true)
    }

    fn metadata(
        &mut self,
        entry: &Entry,
        parent: &Dir,
        name: &CStr,
        fd: Option<BorrowedFd<'_>>,
        current: Current,
    ) -> Result<()> {
        let is_link = entry.kind == Kind::Symlink;
        self.metadata_inner(entry, parent, name, fd, current, is_link)
    }

    /// Ownership, xattrs, mode and (except for directories) times, in the order that keeps
    /// each from undoing the previous: `chown` clears setuid/setgid and file capabilities, so
    /// it goes first and `chmod` after the xattrs.
    fn metadata_inner(
        &mut self,
        entry: &Entry,
        parent: &Dir,
        name: &CStr,
        fd: Option<BorrowedFd<'_>>,
        mut current: Current,
        is_link: bool,
    ) -> Result<()> {
        let is_dir = entry.kind == Kind::Directory;
        if self.options.privileged {
            let uid = id32(entry.uid, "uid")?;
            let gid = id32(entry.gid, "gid")?;
            if (uid, gid) != (current.uid, current.gid) {
                match fd {
                    Some(fd) => sys::fchown(fd, uid, gid),
                    None => sys::lchownat(parent.fd(), name, uid, gid),
                }
                .map_err(|e| Error::io(format!("changing owner to {uid}:{gid}"), e))?;
                if !is_dir {
                    current.mode = current.mode.map(|m| m & !(libc::S_ISUID | libc::S_ISGID));
                }
            }
        }
        if !entry.xattrs.is_empty() {
            self.xattrs(entry, parent, name, fd, is_link)?;
        }
        if !is_link {
            let want = entry.mode & 0o7777;
            if current.mode != Some(want) {
                match fd {
                    Some(fd) => sys::fchmod(fd, want),
                    None => sys::fchmodat(parent.fd(), name, want),
                }
                .map_err(|e| Error::io(format!("changing mode to {want:o}"), e))?;
            }
        }
        if !is_dir {
            let (atime, mtime) = entry_times(entry);
            match fd {
                Some(fd) => sys::futimens(fd, atime, mtime),
                None => sys::lutimensat(parent.fd(), name, atime, mtime),
            }
            .map_err(ctx_io("setting times"))?;
        }
        Ok(())
    }

    fn xattrs(
        &mut self,
        entry: &Entry,
        parent: &Dir,
        name: &CStr,
        fd: Option<BorrowedFd<'_>>,
        is_link: bool,
    ) -> Result<()> {
        let path = if fd.is_none() {
            Some(sys::cpath(&self.full_path(parent, name.to_bytes())).map_err(ctx_io("path"))?)
        } else {
            None
        };
        for (key, value) in &entry.xattrs {
            // A layer may not set trusted.* attributes: they hold overlayfs' own whiteout and
            // opaque markers (containerd refuses them too).
            if key.starts_with(b"trusted.") {
                continue;
            }
            let ckey = sys::cstr(key).map_err(ctx_io("xattr name"))?;
            let res = match (&fd, &path) {
                (Some(fd), _) => sys::fsetxattr(*fd, &ckey, value),
                (None, Some(p)) => sys::lsetxattr(p, &ckey, value),
                (None, None) => Ok(()),
            };
            if let Err(e) = res {
                let errno = e.raw_os_error();
                let unsupported = errno == Some(libc::ENOTSUP) || errno == Some(libc::EOPNOTSUPP);
                // user.* attributes exist only on regular files and directories.
                let user_on_special = errno == Some(libc::EPERM)
                    && key.starts_with(b"user.")
                    && (is_link || !matches!(entry.kind, Kind::Regular | Kind::Directory));
                let unprivileged = errno == Some(libc::EPERM) && !self.options.privileged;
                if unsupported || user_on_special || unprivileged {
                    continue;
                }
                return Err(Error::io(
                    format!("setting xattr {:?}", String::from_utf8_lossy(key)),
                    e,
                ));
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, entry: &Entry, parent: &Rc<Dir>, base: &[u8]) -> Result<()> {
        let overlay_xattr = match self.options.whiteouts {
            WhiteoutMode::Delete => None,
            WhiteoutMode::Overlay { user_xattr: false } => Some(c"trusted.overlay.opaque"),
            WhiteoutMode::Overlay { user_xattr: true } => Some(c"user.overlay.opaque"),
        };
        if base == OPAQUE_MARKER {
            return match overlay_xattr {
                None => self.make_opaque(parent),
                Some(key) => {
                    let dir = sys::cpath(&self.full_path(parent, b"")).map_err(ctx_io("path"))?;
                    sys::lsetxattr(&dir, key, b"y").map_err(ctx_io("marking directory opaque"))
                }
            };
        }
        let original = &base[WHITEOUT_PREFIX.len()..];
        if original.is_empty() || original == b"." || original == b".." {
            return Err(Error::invalid_argument(format!(
                "invalid whiteout name {:?}",
                String::from_utf8_lossy(base)
            )));
        }
        let name = sys::cstr(original).map_err(ctx_io("whiteout name"))?;
        match overlay_xattr {
            None => self.remove(parent, &name),
            Some(_) => {
                // overlayfs hides a lower entry behind a 0/0 character device of the same name.
                self.create_replacing(parent, &name, "creating overlay whiteout", || {
                    sys::mknodat(parent.fd(), &name, libc::S_IFCHR, 0)
                })?;
                if self.options.privileged {
                    let uid = id32(entry.uid, "uid")?;
                    let gid = id32(entry.gid, "gid")?;
                    let fresh = self.fresh(parent, 0, false)?;
                    if (uid, gid) != (fresh.uid, fresh.gid) {
                        sys::lchownat(parent.fd(), &name, uid, gid)
                            .map_err(ctx_io("changing whiteout owner"))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Delete-mode opaque directory: removes everything under `dir` that this layer did not
    /// put there (the marker may come after some of the layer's own entries).
    fn make_opaque(&mut self, dir: &Rc<Dir>) -> Result<()> {
        let full = self.full_path(dir, b"");
        let rel = dir.path().to_path_buf();
        self.clear_lower(&full, &rel)
    }

    fn clear_lower(&mut self, full: &Path, rel: &Path) -> Result<()> {
        let entries =
            std::fs::read_dir(full).map_err(ctx_io(format!("reading {}", full.display())))?;
        for item in entries {
            let item = item.map_err(ctx_io(format!("reading {}", full.display())))?;
            let child_rel = rel.join(item.file_name());
            let child_full = full.join(item.file_name());
            let ft = item
                .file_type()
                .map_err(ctx_io(format!("stat {}", child_full.display())))?;
            let ours = self
                .unpacked
                .as_ref()
                .is_some_and(|s| s.contains(&child_rel));
            if ours {
                if ft.is_dir() {
                    self.clear_lower(&child_full, &child_rel)?;
                }
                continue;
            }
            self.resolver.invalidate();
            let res = if ft.is_dir() && !ft.is_symlink() {
                std::fs::remove_dir_all(&child_full)
            } else {
                std::fs::remove_file(&child_full)
            };
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", child_full.display()), e)),
            }
        }
        Ok(())
    }

    fn restore_dir_times(&mut self) -> Result<()> {
        let root = self.resolver.root().clone();
        for (rel, atime, mtime) in std::mem::take(&mut self.dir_times) {
            let c = sys::cstr(rel.as_os_str().as_bytes()).map_err(ctx_io("path"))?;
            match sys::lutimensat(root.fd(), &c, atime, mtime) {
                Ok(()) => {}
                // Removed again later in the same layer.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("setting times of directory {}", rel.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Workers for small files: one per core beyond the applier's own thread, at least one (with
/// decompression on a thread of its own, that keeps two cores busy), at most four (more only
/// contend for the same directory locks).
/// Computed once: `available_parallelism` reads several /proc and cgroup files per call,
/// which is a noticeable part of applying a small layer.
fn worker_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .clamp(1, 4)
    })
}

fn file_write(file: &mut File, buf: &[u8]) -> Result<()> {
    file.write_all(buf).map_err(ctx_io("writing file data"))
}
