//! The file operations a commit performs (pwrite, fdatasync, fsync, ftruncate), kept behind
//! one seam so that tests can run the engine over a simulated disk.
//!
//! In a normal build [`DbFile`] is the `File` and nothing else: every method is a direct,
//! inlined call. Only `cfg(test)` builds add the optional simulated disk (see `sim`), so
//! production code and the benchmarks carry no branch and no dynamic dispatch for it.
//!
//! Reads never go through the seam: they use the memory map (and `pread` of the metas at
//! open). That is sound because the simulated disk performs every operation on the real
//! file too, so the page cache, and with it the mapping, holds exactly the bytes production
//! would see; the simulation only decides, on a simulated power cut, which of the writes
//! since the last sync reached the platter.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

#[cfg(any(test, feature = "testscript"))]
pub mod script;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

/// The database file as the write path sees it.
pub(crate) struct DbFile {
    file: File,
    #[cfg(test)]
    sim: Option<std::sync::Arc<sim::SimDisk>>,
}

impl DbFile {
    pub(crate) fn new(file: File) -> DbFile {
        DbFile {
            file,
            #[cfg(test)]
            sim: None,
        }
    }

    /// Routes every write-path operation through `sim` (which also performs it on `file`).
    #[cfg(test)]
    pub(crate) fn with_sim(file: File, sim: std::sync::Arc<sim::SimDisk>) -> DbFile {
        DbFile {
            file,
            sim: Some(sim),
        }
    }

    /// The real file, for locking, mapping and reading.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    #[inline]
    pub(crate) fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(sim) = &self.sim {
            return sim.write_all_at(&self.file, buf, off);
        }
        self.file.write_all_at(buf, off)
    }

    /// fdatasync.
    #[inline]
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(sim) = &self.sim {
            return sim.sync(&self.file, false);
        }
        self.file.sync_data()
    }

    /// fsync (also makes a size change durable on every filesystem).
    #[inline]
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(sim) = &self.sim {
            return sim.sync(&self.file, true);
        }
        self.file.sync_all()
    }

    /// ftruncate.
    #[inline]
    pub(crate) fn set_len(&self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(sim) = &self.sim {
            return sim.set_len(&self.file, len);
        }
        self.file.set_len(len)
    }
}
