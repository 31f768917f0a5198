//! The content store traits: how blobs are read, written, listed and removed.
//!
//! They mirror containerd's `content` package: [`Provider`] (read), [`Ingester`] (write),
//! [`Manager`] (info, update, walk, delete) and [`IngestManager`] (in-progress writes). A
//! [`Store`] is all four. Every implementation (the local store, the namespaced metadata view,
//! the gRPC client) passes the one conformance suite in `stowage-content`'s `testsuite`.
//!
//! The traits are synchronous; async callers use `spawn_blocking`.

use std::io;
use std::time::SystemTime;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::labels::Labels;

/// What is known about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the blob was committed (in this namespace, for namespaced stores).
    pub created_at: SystemTime,
    /// When its record last changed.
    pub updated_at: SystemTime,
    /// Its labels.
    pub labels: Labels,
}

/// The state of an in-progress write (an ingest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The caller's name for this write.
    pub reference: String,
    /// Bytes written so far; a resumed writer continues from here.
    pub offset: u64,
    /// Expected total size, 0 when unknown.
    pub total: u64,
    /// The digest the content is expected to have, when the writer was opened with one.
    pub expected: Option<Digest>,
    /// When the ingest was started.
    pub started_at: SystemTime,
    /// When data was last written.
    pub updated_at: SystemTime,
}

/// Random-access read of one blob.
pub trait ReaderAt: Send + Sync {
    /// Reads into `buf` from `offset`; returns 0 only at or past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// The blob's size.
    fn size(&self) -> u64;
}

/// Opens blobs for reading.
pub trait Provider: Send + Sync {
    /// Opens the blob `desc` points at. `NotFound` when it is not there.
    fn reader_at(&self, desc: &Descriptor) -> Result<Box<dyn ReaderAt>>;
}

/// Options for opening a writer.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// The ingest reference; required. Reopening the same reference resumes the write.
    pub reference: String,
    /// The expected descriptor: its size (when non-zero) and digest are checked at commit, and
    /// an existing blob with this digest makes the open fail with `AlreadyExists`.
    pub expected: Option<Descriptor>,
    /// The expected total size when no descriptor is known (containerd's Write with a `total`
    /// but no `expected` digest, `ctr content ingest --expected-size`). Checked at commit and
    /// reported in the status; a descriptor's size takes precedence.
    pub total: Option<u64>,
}

impl WriterOptions {
    /// Options with only a reference.
    pub fn with_ref(reference: impl Into<String>) -> Self {
        WriterOptions {
            reference: reference.into(),
            expected: None,
            total: None,
        }
    }

    /// Sets the expected descriptor.
    pub fn expect(mut self, desc: Descriptor) -> Self {
        self.expected = Some(desc);
        self
    }

    /// Sets the expected total size without a digest.
    pub fn expect_size(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }
}

/// An open ingest. Data written goes to the ingest; [`Writer::commit`] moves it into the store.
///
/// `io::Write` errors carry a [`crate::Error`] inside when the store raised one; converting the
/// `io::Error` back with `Error::from` recovers its kind. Dropping the writer releases the
/// reference so another writer can resume it.
pub trait Writer: io::Write + Send {
    /// The digest of everything written so far.
    fn digest(&mut self) -> Digest;
    /// The ingest's status.
    fn status(&self) -> Result<Status>;
    /// Verifies and commits the written data. `size` and `expected`, when given, must match what
    /// was written (`FailedPrecondition` otherwise, the ingest left in place). Committing content
    /// that already exists fails with `AlreadyExists` and discards the ingest.
    fn commit(
        &mut self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<()>;
    /// Cuts the ingest back to `size` bytes; only 0 is required to be supported.
    fn truncate(&mut self, size: u64) -> Result<()>;
}

/// Opens writers.
pub trait Ingester: Send + Sync {
    /// Opens (or resumes) the ingest named by `opts.reference`. A reference already held by
    /// another writer fails with `Unavailable`.
    fn writer(&self, opts: WriterOptions) -> Result<Box<dyn Writer>>;
}

/// Manages committed blobs.
pub trait Manager: Send + Sync {
    /// Information about one blob; `NotFound` when absent.
    fn info(&self, digest: &Digest) -> Result<Info>;
    /// Updates the fields named by `fieldpaths` (`labels`, `labels.<key>`) from `info`; with no
    /// field paths, replaces all labels. Returns the stored result.
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info>;
    /// Calls `f` for each blob matching any of `filters` (all blobs when empty).
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()>;
    /// Removes a blob; `NotFound` when absent.
    fn delete(&self, digest: &Digest) -> Result<()>;
}

/// Manages in-progress writes.
pub trait IngestManager: Send + Sync {
    /// The status of one ingest; `NotFound` when absent.
    fn status(&self, reference: &str) -> Result<Status>;
    /// Statuses of ingests matching any of `filters` (field `ref`).
    fn list_statuses(&self, filters: &[String]) -> Result<Vec<Status>>;
    /// Discards an ingest; `NotFound` when absent.
    fn abort(&self, reference: &str) -> Result<()>;
}

/// A full content store.
pub trait Store: Manager + Provider + IngestManager + Ingester {}

impl<T: Manager + Provider + IngestManager + Ingester + ?Sized> Store for T {}

/// Reads a whole blob into memory; for small blobs (manifests, configs) only.
pub fn read_blob(provider: &dyn Provider, desc: &Descriptor) -> Result<Vec<u8>> {
    let ra = provider.reader_at(desc)?;
    let size = usize::try_from(ra.size()).map_err(|_| {
        Error::invalid_argument(format!("blob {} too large to read whole", desc.digest))
    })?;
    let mut buf = vec![0u8; size];
    let mut off = 0;
    while off < size {
        let n = ra.read_at(&mut buf[off..], off as u64)?;
        if n == 0 {
            return Err(Error::data_loss(format!(
                "blob {} ended at {off} bytes, expected {size}",
                desc.digest
            )));
        }
        off += n;
    }
    Ok(buf)
}

/// Sequential `io::Read` over a [`ReaderAt`], starting at an offset.
pub struct SectionReader<'a> {
    inner: &'a dyn ReaderAt,
    offset: u64,
}

impl std::fmt::Debug for SectionReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectionReader")
            .field("offset", &self.offset)
            .finish()
    }
}

impl<'a> SectionReader<'a> {
    /// Reads `inner` from `offset` on.
    pub fn new(inner: &'a dyn ReaderAt, offset: u64) -> Self {
        SectionReader { inner, offset }
    }
}

impl io::Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read_at(buf, self.offset)
            .map_err(io::Error::other)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Writes all of `data` through `ingester` under `reference` and commits it, as containerd's
/// `content.WriteBlob` does: content already present is not an error.
pub fn write_blob(
    ingester: &dyn Ingester,
    reference: &str,
    data: &mut dyn io::Read,
    desc: &Descriptor,
    labels: Labels,
) -> Result<()> {
    let opts = WriterOptions::with_ref(reference).expect(desc.clone());
    let mut w = match ingester.writer(opts) {
        Ok(w) => w,
        Err(e) if e.is(crate::ErrorKind::AlreadyExists) => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = w.status()?;
    if status.offset > 0 {
        // Resume: skip what the ingest already holds. The digest check at commit protects
        // against an ingest whose prefix is not ours.
        io::copy(
            &mut io::Read::take(&mut *data, status.offset),
            &mut io::sink(),
        )
        .map_err(|e| Error::io("skipping already-written bytes", e))?;
    }
    io::copy(data, &mut w).map_err(Error::from)?;
    match w.commit(Some(desc.size), Some(&desc.digest), labels) {
        Err(e) if e.is(crate::ErrorKind::AlreadyExists) => Ok(()),
        other => other,
    }
}
