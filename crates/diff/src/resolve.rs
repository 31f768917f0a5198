//! Confining archive paths to the target root.
//!
//! Names are cleaned lexically first ([`clean_name`]): a leading `/` means "from the root", and
//! a `..` that would climb above the root is refused. Parent directories are then walked one
//! component at a time with `openat(O_PATH | O_NOFOLLOW)`; a symlink met on the way is resolved
//! as if the root were `/` (absolute targets restart at the root, `..` stops at the root), which
//! is what containerd's `fs.RootPath` does, so real-world layers that write through symlinks
//! such as `var/run -> /run` land where containerd puts them and never outside. The final
//! component of an entry is never followed.
//!
//! Resolved directories are cached along the logical path of the previous entry (tar streams
//! list a directory's children together), so most entries cost no lookups at all. The cache is
//! dropped whenever anything is removed, the only way a resolution can change.

use std::cell::{OnceCell, RefCell};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::sys;

/// Most symlinks followed while resolving one path (the same bound containerd uses).
const MAX_LINKS: u32 = 255;

/// A lexical `..` climbed above the root.
#[derive(Debug)]
pub(crate) struct Escapes;

/// Splits `name` into components relative to the root, dropping empty and `.` components and
/// applying `..` lexically. An absolute name is taken relative to the root.
pub(crate) fn clean_name(name: &[u8]) -> Result<Vec<&[u8]>, Escapes> {
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Escapes);
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A directory inside the root, found by resolution.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Path relative to the root, free of symlinks.
    path: PathBuf,
    parent: Option<Rc<Dir>>,
    /// Mode bits and group, read on first use.
    stat: OnceCell<(u32, u32)>,
}

impl Dir {
    /// Descriptor (`O_PATH`) usable as the `dirfd` of `*at` calls.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Path relative to the root.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Mode bits and gid of the directory.
    pub(crate) fn mode_gid(&self) -> io::Result<(u32, u32)> {
        if let Some(v) = self.stat.get() {
            return Ok(*v);
        }
        let st = sys::lstatat(self.fd(), c"")?;
        let v = (st.st_mode, st.st_gid);
        let _ = self.stat.set(v);
        Ok(v)
    }
}

/// Resolves parent directories of archive entries inside one root.
#[derive(Debug)]
pub(crate) struct Resolver {
    root: Rc<Dir>,
    /// The root as the caller named it.
    root_path: PathBuf,
    /// `levels[i]` is the resolution of the first `i + 1` logical components of the last
    /// resolved path.
    levels: Vec<(Vec<u8>, Rc<Dir>)>,
    /// Mode to fix up implicitly created directories to, when the umask would strip bits.
    umask: Option<u32>,
    /// Lower layers (newest first) that implicitly created directories copy their owner, mode
    /// and xattrs from, as containerd's `archive.WithParents` does for overlay upper dirs.
    lowers: Vec<Lower>,
    /// Whether ownership may be copied from lowers.
    privileged: bool,
}

/// A lower directory tree consulted for implied parents.
#[derive(Debug)]
struct Lower {
    resolver: RefCell<Resolver>,
}

/// What a lower layer says about a path.
enum LowerEntry {
    Dir(Rc<Dir>),
    NotDir,
    Absent,
}

/// Mode of directories created because an entry needs a parent that is missing.
const IMPLICIT_DIR_MODE: u32 = 0o755;

impl Resolver {
    pub(crate) fn new(root_fd: OwnedFd, root_path: &Path, umask: Option<u32>) -> Self {
        Resolver {
            root_path: root_path.to_path_buf(),
            lowers: Vec::new(),
            privileged: false,
            root: Rc::new(Dir {
                fd: root_fd,
                path: PathBuf::new(),
                parent: None,
                stat: OnceCell::new(),
            }),
            levels: Vec::new(),
            umask,
        }
    }

    /// Adds lower directories (newest first) for implied parent directories.
    pub(crate) fn with_lowers(mut self, lowers: &[PathBuf], privileged: bool) -> io::Result<Self> {
        for path in lowers {
            let fd = sys::open_dir_path(path)?;
            self.lowers.push(Lower {
                resolver: RefCell::new(Resolver::new(fd, path, self.umask)),
            });
        }
        self.privileged = privileged;
        Ok(self)
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &Rc<Dir> {
        &self.root
    }

    /// Forgets cached resolutions; call after removing anything.
    pub(crate) fn invalidate(&mut self) {
        self.levels.clear();
    }

    /// Resolves the directory named by the cleaned components `comps`. Missing directories are
    /// created with mode 0755 when `create` is set (as containerd creates missing parents);
    /// otherwise a missing one is `NotFound`. A component that exists and is neither a
    /// directory nor a symlink is `ENOTDIR`.
    pub(crate) fn resolve_dir(&mut self, comps: &[&[u8]], create: bool) -> io::Result<Rc<Dir>> {
        let common = self
            .levels
            .iter()
            .zip(comps)
            .take_while(|((name, _), comp)| name.as_slice() == **comp)
            .count();
        self.levels.truncate(common);
        let mut cur = match self.levels.last() {
            Some((_, d)) => d.clone(),
            None => self.root.clone(),
        };
        for comp in &comps[common..] {
            let mut links = 0;
            cur = self.step(&cur, comp, create, &mut links)?;
            self.levels.push((comp.to_vec(), cur.clone()));
        }
        Ok(cur)
    }

    fn step(
        &self,
        cur: &Rc<Dir>,
        comp: &[u8],
        create: bool,
        links: &mut u32,
    ) -> io::Result<Rc<Dir>> {
        let c = sys::cstr(comp)?;
        let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY;
        let child = |fd| {
            Rc::new(Dir {
                fd,
                path: cur.path.join(sys::os(comp)),
                parent: Some(cur.clone()),
                stat: OnceCell::new(),
            })
        };
        match sys::openat(cur.fd(), &c, flags, 0) {
            Ok(fd) => Ok(child(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                let st = sys::lstatat(cur.fd(), &c)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!(
                            "{} is not a directory",
                            cur.path.join(sys::os(comp)).display()
                        ),
                    ));
                }
                *links += 1;
                if *links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "too many levels of symbolic links",
                    ));
                }
                let target = sys::readlinkat(cur.fd(), &c)?;
                self.follow(cur, &target, create, links)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match sys::mkdirat(cur.fd(), &c, IMPLICIT_DIR_MODE) {
                    Ok(()) => {
                        let rel = cur.path.join(sys::os(comp));
                        if !self.copy_from_lowers(cur, &c, &rel)?
                            && self.umask.is_none_or(|m| m & IMPLICIT_DIR_MODE != 0)
                        {
                            sys::fchmodat(cur.fd(), &c, IMPLICIT_DIR_MODE)?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                // Open again (without following) so that whatever is there now is checked.
                let fd = sys::openat(cur.fd(), &c, flags, 0)?;
                Ok(child(fd))
            }
            Err(e) => Err(e),
        }
    }

    /// Looks `rel` up in one lower tree, following symlinks inside that tree.
    fn lookup(resolver: &mut Resolver, rel: &Path) -> io::Result<LowerEntry> {
        let bytes = rel.as_os_str().as_encoded_bytes();
        let comps: Vec<&[u8]> = bytes
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        match resolver.resolve_dir(&comps, false) {
            Ok(d) => Ok(LowerEntry::Dir(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LowerEntry::Absent),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(LowerEntry::NotDir),
            Err(e) => Err(e),
        }
    }

    /// Gives the directory just created as `name` in `parent` (at `rel` from the root) the
    /// owner, mode and xattrs of the same directory in the newest lower that has it. Returns
    /// false when no lower has a directory there (the caller keeps the default mode). A lower
    /// with a non-directory there hides the older ones, as in containerd.
    fn copy_from_lowers(
        &self,
        parent: &Dir,
        name: &std::ffi::CStr,
        rel: &Path,
    ) -> io::Result<bool> {
        for lower in &self.lowers {
            let found = Self::lookup(&mut lower.resolver.borrow_mut(), rel)?;
            let dir = match found {
                LowerEntry::Absent => continue,
                LowerEntry::NotDir => return Ok(false),
                LowerEntry::Dir(d) => d,
            };
            let st = sys::lstatat(dir.fd(), c"")?;
            if self.privileged {
                sys::lchownat(parent.fd(), name, st.st_uid, st.st_gid)?;
            }
            sys::fchmodat(parent.fd(), name, st.st_mode & 0o7777)?;
            let src = sys::cpath(&lower.resolver.borrow().path_of(&dir))?;
            let dst = sys::cpath(&self.path_of(parent).join(sys::os(name.to_bytes())))?;
            sys::copy_xattrs(&src, &dst)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Path of `dir` as given to the resolver (for path-based calls such as xattrs).
    fn path_of(&self, dir: &Dir) -> PathBuf {
        self.root_path.join(dir.path())
    }

    /// Resolves a symlink target found in directory `from`, confined to the root.
    fn follow(
        &self,
        from: &Rc<Dir>,
        target: &[u8],
        create: bool,
        links: &mut u32,
    ) -> io::Result<Rc<Dir>> {
        let mut cur = if target.first() == Some(&b'/') {
            self.root.clone()
        } else {
            from.clone()
        };
        for comp in target.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                // `..` at the root stays at the root.
                b".." => {
                    let up = cur.parent.clone().unwrap_or_else(|| self.root.clone());
                    cur = up;
                }
                c => cur = self.step(&cur, c, create, links)?,
            }
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let c = |s: &str| {
            clean_name(s.as_bytes())
                .map(|v| {
                    v.iter()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .map_err(|_| ())
        };
        assert_eq!(c("a/b/c"), Ok("a/b/c".into()));
        assert_eq!(c("./a//b/./c/"), Ok("a/b/c".into()));
        assert_eq!(c("/etc/passwd"), Ok("etc/passwd".into()));
        assert_eq!(c("a/../b"), Ok("b".into()));
        assert_eq!(c("."), Ok(String::new()));
        assert_eq!(c("../x"), Err(()));
        assert_eq!(c("a/../../x"), Err(()));
        assert_eq!(c("/../x"), Err(()));
    }
}
