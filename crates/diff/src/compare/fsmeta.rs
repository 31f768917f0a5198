//! File metadata the diff needs beyond `std::fs::Metadata`: extended attributes, read without
//! following symlinks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Extended attributes of one file, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Calls `f(buf, len)` with a buffer of `initial` bytes, growing it to the size the kernel
/// reports when that is too small (`ERANGE`; values can also grow between the size query and
/// the read, hence the loop). Most files have no xattrs or small ones: one call.
fn read_sized(
    initial: usize,
    mut f: impl FnMut(*mut libc::c_void, usize) -> isize,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; initial];
    loop {
        let got = f(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) => {
                let want = f(std::ptr::null_mut(), 0);
                if want < 0 {
                    let err = io::Error::last_os_error();
                    return match err.raw_os_error() {
                        Some(libc::ENODATA) => Ok(None),
                        _ => Err(err),
                    };
                }
                buf = vec![0u8; (want as usize).max(buf.len() * 2)];
            }
            _ => return Err(err),
        }
    }
}

/// Every extended attribute of `path` (not following a final symlink), sorted by name; empty
/// when the filesystem has none.
pub(crate) fn all_xattrs(path: &Path) -> io::Result<Xattrs> {
    let p = c_path(path)?;
    let list = match read_sized(1024, |buf, len| {
        // SAFETY: `p` is a NUL-terminated string alive for the call, and `buf` is either null
        // with `len` 0 (size query) or a writable buffer of `len` bytes.
        unsafe { libc::llistxattr(p.as_ptr(), buf.cast(), len) as isize }
    }) {
        Ok(l) => l.unwrap_or_default(),
        Err(e) if unsupported(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let n = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name contains NUL"))?;
        let value = read_sized(256, |buf, len| {
            // SAFETY: as above; `n` comes from the kernel's own list, NUL-terminated here.
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, len) as isize }
        })?;
        // Removed between listing and reading: it is not there any more.
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an xattr belongs in a layer. `trusted.*` holds overlayfs' own markers (and the
/// applier refuses such xattrs from layers), `user.overlay.*` is the same with `userxattr`,
/// and `security.selinux` is a label the host assigns, not part of the content.
pub(crate) fn is_layer_xattr(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux")
}

/// The xattrs of `path` that belong in a layer, sorted by name.
pub(crate) fn layer_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut x = all_xattrs(path)?;
    x.retain(|(n, _)| is_layer_xattr(n));
    Ok(x)
}
