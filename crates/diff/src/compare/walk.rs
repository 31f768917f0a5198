//! Finding the changes between two trees: a walk of both (containerd's double-walk diff) or,
//! for an overlayfs upper directory, a walk of the upper directory alone.
//!
//! Both walks visit names in byte order, depth first, which is the order containerd's walk
//! reports changes in (it compares paths with `/` sorting before every other byte).

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use stowage_core_types::error::{Error, Result};

use super::fsmeta::{self, Xattrs};
use super::writer::{ChangeKind, ChangeWriter};

/// One directory entry: its name, and a handle whose `metadata()` is an `fstatat` relative
/// to the open directory (no path lookup from the root, no symlink followed).
struct Entry {
    name: OsString,
    ent: fs::DirEntry,
}

impl Entry {
    fn lstat(&self, full: &Path) -> Result<Metadata> {
        self.ent
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", full.display()), e))
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<Entry>> {
    let rd =
        fs::read_dir(dir).map_err(|e| Error::io(format!("read directory {}", dir.display()), e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(format!("read directory {}", dir.display()), e))?;
        out.push(Entry {
            name: ent.file_name(),
            ent,
        });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

fn lstat_opt(path: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(Error::io(format!("stat {}", path.display()), e)),
    }
}

fn xattrs(path: &Path) -> Result<Xattrs> {
    fsmeta::layer_xattrs(path)
        .map_err(|e| Error::io(format!("read xattrs of {}", path.display()), e))
}

fn child(rel: &[u8], name: &OsString) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name.as_bytes());
    r
}

/// Metadata every entry type carries: type and permission bits, owner, device number.
fn same_attrs(l: &Metadata, u: &Metadata) -> bool {
    l.mode() == u.mode() && l.uid() == u.uid() && l.gid() == u.gid() && l.rdev() == u.rdev()
}

fn same_mtime(l: &Metadata, u: &Metadata) -> bool {
    l.mtime() == u.mtime() && l.mtime_nsec() == u.mtime_nsec()
}

fn same_content(lp: &Path, up: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e));
    let (mut a, mut b) = (open(lp)?, open(up)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut a, &mut ba)
            .map_err(|e| Error::io(format!("read {}", lp.display()), e))?;
        let nb = read_full(&mut b, &mut bb)
            .map_err(|e| Error::io(format!("read {}", up.display()), e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether the lower entry `lp` and the upper entry `up` (same path, both present) are the
/// same for a layer. As containerd's `sameFile`: the same inode is the same; type, mode,
/// owner and device number must match; a non-directory must have the same size and
/// modification time, and when both times are whole seconds (as after a tar extraction, where
/// the time says little) the contents are compared. Beyond containerd, every layer xattr
/// (containerd compares only `security.capability`), symlink targets, and directory times
/// are compared, so a change in any of them reaches the layer.
fn same_file(lp: &Path, lm: &Metadata, up: &Path, um: &Metadata) -> Result<bool> {
    if lm.dev() == um.dev() && lm.ino() == um.ino() {
        return Ok(true);
    }
    // The times must match exactly; whole-second times alone do not prove the content equal.
    if !same_attrs(lm, um) || !same_mtime(lm, um) {
        return Ok(false);
    }
    if lm.is_dir() {
        return Ok(xattrs(lp)? == xattrs(up)?);
    }
    if lm.size() != um.size() || xattrs(lp)? != xattrs(up)? {
        return Ok(false);
    }
    if lm.file_type().is_symlink() {
        let target = |p: &Path| {
            fs::read_link(p).map_err(|e| Error::io(format!("read symlink {}", p.display()), e))
        };
        return Ok(target(lp)? == target(up)?);
    }
    if lm.mtime_nsec() == 0 && um.mtime_nsec() == 0 && lm.file_type().is_file() && lm.size() > 0 {
        return same_content(lp, up);
    }
    Ok(true)
}

/// Reports the changes from the tree `lower` to the tree `upper`.
pub(crate) fn double_walk(lower: &Path, upper: &Path, w: &mut ChangeWriter<'_>) -> Result<()> {
    walk_both(&[], Some(lower), upper, w)
}

fn walk_both(
    rel: &[u8],
    lower: Option<&Path>,
    upper: &Path,
    w: &mut ChangeWriter<'_>,
) -> Result<()> {
    let unames = sorted_entries(upper)?;
    let lnames = match lower {
        Some(l) => sorted_entries(l)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < lnames.len() || j < unames.len() {
        let order = match (lnames.get(i), unames.get(j)) {
            (Some(l), Some(u)) => l.name.as_bytes().cmp(u.name.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                // Only in the lower tree: deleted, and whatever was under it goes with it.
                w.change(ChangeKind::Delete, &child(rel, &lnames[i].name), None)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let name = &unames[j].name;
                let crel = child(rel, name);
                let up = upper.join(name);
                let um = unames[j].lstat(&up)?;
                w.change(ChangeKind::Add, &crel, Some(&um))?;
                if um.is_dir() {
                    walk_both(&crel, None, &up, w)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let name = &unames[j].name;
                let crel = child(rel, name);
                let up = upper.join(name);
                let lp = lower.map(|l| l.join(name)).unwrap_or_default();
                let um = unames[j].lstat(&up)?;
                let lm = lnames[i].lstat(&lp)?;
                if !same_file(&lp, &lm, &up, &um)? {
                    w.change(ChangeKind::Modify, &crel, Some(&um))?;
                } else if !um.is_dir() && um.nlink() > 1 {
                    w.change(ChangeKind::Unmodified, &crel, Some(&um))?;
                }
                if um.is_dir() {
                    // A directory that replaced a non-directory has nothing below it to compare.
                    walk_both(&crel, lm.is_dir().then_some(lp.as_path()), &up, w)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Part of the message of the overlay walk's refusal of a metadata-only copy, which tells the
/// fallback to mount with `metacopy=on`.
pub(crate) const METACOPY_MARK: &str = "is an overlayfs metadata-only copy (metacopy)";

/// The overlayfs markers on an upper directory entry that matter to a layer.
struct OverlayMarks {
    opaque: bool,
    layer: Xattrs,
}

fn overlay_marks(path: &Path) -> Result<OverlayMarks> {
    let all = fsmeta::all_xattrs(path)
        .map_err(|e| Error::io(format!("read xattrs of {}", path.display()), e))?;
    let mut opaque = false;
    for (name, value) in &all {
        let suffix = name
            .strip_prefix(b"trusted.overlay.")
            .or_else(|| name.strip_prefix(b"user.overlay."));
        match suffix {
            Some(b"opaque") => opaque |= value.as_slice() == b"y",
            // Redirected directories and metadata-only copies keep their data elsewhere in the
            // stack; the upper directory alone cannot describe them.
            Some(b"redirect") => {
                return Err(Error::not_implemented(format!(
                "{} carries an overlayfs redirect (redirect_dir); diff the mounted trees instead",
                path.display()
            )))
            }
            Some(b"metacopy") => {
                return Err(Error::not_implemented(format!(
                    "{} {METACOPY_MARK}; diff the mounted trees instead",
                    path.display()
                )))
            }
            _ => {}
        }
    }
    let mut layer = all;
    layer.retain(|(n, _)| fsmeta::is_layer_xattr(n));
    Ok(OverlayMarks { opaque, layer })
}

fn is_overlay_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Reports the changes an overlayfs upper directory `upper_dir` holds over the merged lower
/// tree `lower`, reading only the upper directory and looking a path up in `lower` only to
/// decide whether an upper directory differs from the lower one.
pub(crate) fn overlay_walk(lower: &Path, upper_dir: &Path, w: &mut ChangeWriter<'_>) -> Result<()> {
    walk_overlay(&[], lower, true, upper_dir, w)
}

fn walk_overlay(
    rel: &[u8],
    lower_root: &Path,
    lower_is_dir: bool,
    upper: &Path,
    w: &mut ChangeWriter<'_>,
) -> Result<()> {
    for entry in sorted_entries(upper)? {
        let crel = child(rel, &entry.name);
        let up = upper.join(&entry.name);
        let um = entry.lstat(&up)?;
        if is_overlay_whiteout(&um) {
            w.change(ChangeKind::Delete, &crel, None)?;
            continue;
        }
        let marks = overlay_marks(&up)?;
        if !um.is_dir() {
            w.change_with_xattrs(ChangeKind::Add, &crel, Some(&um), Some(marks.layer))?;
            continue;
        }
        let lp = lower_root.join(std::ffi::OsStr::from_bytes(&crel));
        let lm = if lower_is_dir { lstat_opt(&lp)? } else { None };
        let changed = match &lm {
            None => true,
            Some(lm) => {
                marks.opaque
                    || !lm.is_dir()
                    || !same_attrs(lm, &um)
                    || !same_mtime(lm, &um)
                    || xattrs(&lp)? != marks.layer
            }
        };
        if changed {
            let kind = if lm.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Add
            };
            w.change_with_xattrs(kind, &crel, Some(&um), Some(marks.layer.clone()))?;
        }
        if marks.opaque {
            w.opaque(&crel)?;
        }
        let below = !marks.opaque && lm.as_ref().is_some_and(|m| m.is_dir());
        walk_overlay(&crel, lower_root, below, &up, w)?;
    }
    Ok(())
}
