//! Positional reads of committed blobs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use stowage_core_types::content::ReaderAt;
use stowage_core_types::error::{Error, Result};

/// A committed blob opened for reading.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    size: u64,
}

impl BlobReader {
    /// Opens the blob file at `path`. Reads do not touch its access time where the kernel lets
    /// us, because the local store reports a blob's atime as its `updated_at`.
    pub(crate) fn open(path: &Path) -> io::Result<BlobReader> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(path)
        {
            // O_NOATIME needs ownership (or CAP_FOWNER); fall back to a plain open.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path)?,
            other => other?,
        };
        let size = file.metadata()?.len();
        Ok(BlobReader { file, size })
    }

    /// The open file, for callers that want to stream it directly (e.g. into a decompressor).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReaderAt for BlobReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        // Never hand out bytes past the size seen at open: a blob is immutable, so anything
        // else means someone is modifying the store under us.
        let want = buf
            .len()
            .min(usize::try_from(self.size - offset).unwrap_or(usize::MAX));
        loop {
            match self.file.read_at(&mut buf[..want], offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("read blob at offset {offset}"), e)),
            }
        }
    }

    fn size(&self) -> u64 {
        self.size
    }
}
