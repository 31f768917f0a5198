//! Small filesystem helpers with the durability and modes the on-disk format needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use stowage_core_types::error::{Error, Result};

/// Flushes a directory's entries (a rename or create in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

/// Writes `data` to `path` through `<path>.tmp` and a rename, as containerd does for the ingest
/// timestamp files, so a reader never sees a half-written file.
pub(crate) fn write_replace(path: &Path, data: &[u8], sync: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o666)
            .open(tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_data()?;
        }
        fs::rename(tmp, path)
    };
    write().map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Creates `path` with `data` (mode 0666 before umask, as Go's `os.WriteFile(p, b, 0666)`).
pub(crate) fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o666)
            .open(path)?;
        f.write_all(data)
    };
    write().map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Asks the kernel to start writing `[from, to)` of `file` back to disk, without waiting.
///
/// Purely a performance hint (durability still comes from fsync at commit), so failure, e.g.
/// on a filesystem without support, is ignored.
pub(crate) fn start_writeback(file: &File, from: u64, to: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from))) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is owned by
    // `file`, which outlives the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}
