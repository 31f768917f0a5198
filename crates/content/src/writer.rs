//! Writers: resumable ingests that commit into `blobs/` only after verification.

use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use std::time::SystemTime;

use stowage_core_types::content::{Status, Writer, WriterOptions};
use stowage_core_types::digest::{Algorithm, Digest};
use stowage_core_types::error::{Error, Result};
use stowage_core_types::labels::{self, Labels};
use stowage_digest_identity::Digester;

use crate::fsutil;
use crate::hashing::StreamHasher;
use crate::ingest::{self, IngestPaths};
use crate::locks::RefLock;
use crate::store::Inner;
use crate::timefmt;

const HASH_BUF: usize = 1 << 20;
/// Written bytes after which the kernel is asked to start writing them back, so the disk works
/// while we keep writing and hashing and the fsync at commit has little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

/// An open ingest of a [`crate::LocalStore`].
///
/// Data goes straight to `ingest/<hash>/data` with positional writes and is hashed as it goes
/// (on a helper thread once an ingest passes 1 MiB, with at most a few MiB in flight), so no
/// blob is ever held in memory and [`Writer::digest`] is always current. Dropping the writer
/// records `updatedat` and releases the reference; the ingest stays on disk to be resumed.
#[derive(Debug)]
pub struct LocalWriter {
    store: Arc<Inner>,
    reference: String,
    paths: IngestPaths,
    // None once committed (or after a failure that makes the ingest unusable).
    file: Option<File>,
    offset: u64,
    total: u64,
    expected: Option<Digest>,
    hasher: StreamHasher,
    // Start of the written range whose writeback has not been started yet.
    writeback_from: u64,
    // The digest of the last successful commit, for `digest()` after the file is gone.
    committed: Option<Digest>,
    started_at: SystemTime,
    updated_at: SystemTime,
    lock: Option<RefLock>,
}

impl LocalWriter {
    pub(crate) fn open(store: Arc<Inner>, opts: WriterOptions) -> Result<LocalWriter> {
        let reference = opts.reference;
        if reference.is_empty() {
            return Err(Error::invalid_argument("ref must not be empty"));
        }
        let lock = RefLock::acquire(&store.root, &reference)?;

        let (total, expected) = match &opts.expected {
            Some(desc) => (desc.size, Some(desc.digest.clone())),
            None => (opts.total.unwrap_or(0), None),
        };
        if let Some(d) = &expected {
            if store.blob_path(d).exists() {
                return Err(Error::already_exists(format!("content {d}")));
            }
        }
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let paths = store.ingest_paths(&reference);
        let mut w = LocalWriter {
            store,
            reference,
            paths,
            file: None,
            offset: 0,
            total,
            expected,
            hasher: StreamHasher::new(algorithm),
            writeback_from: 0,
            committed: None,
            started_at: SystemTime::now(),
            updated_at: SystemTime::now(),
            lock: Some(lock),
        };

        let mkdir = || DirBuilder::new().mode(0o755).create(&w.paths.dir);
        let made = match mkdir() {
            // `ingest/` itself was removed behind our back: recreate it, as opening does.
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(w.store.root.join("ingest"))
                .and_then(|()| mkdir()),
            other => other,
        };
        let created = match made {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                return Err(Error::io(
                    format!("create ingest dir {}", w.paths.dir.display()),
                    e,
                ))
            }
        };
        let resumed = if created { false } else { w.try_resume()? };
        if !resumed {
            w.start_fresh()?;
        }
        Ok(w)
    }

    /// Picks up an existing ingest. Returns false when there is nothing to resume (no data
    /// file: a previous open died before creating it), true when resumed.
    fn try_resume(&mut self) -> Result<bool> {
        let status = match ingest::read_status(&self.paths, Some(&self.reference)) {
            Ok(s) => s,
            Err(e) if ingest::is_gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        if self.total > 0 && status.total > 0 && self.total != status.total {
            return Err(Error::failed_precondition(format!(
                "ingest ref {:?} was started with total size {}, writer expects {}",
                self.reference, status.total, self.total
            )));
        }
        if self.total == 0 {
            self.total = status.total;
        } else if status.total == 0 {
            fsutil::write_new(&self.paths.total, self.total.to_string().as_bytes())?;
        }
        self.started_at = status.started_at;
        self.updated_at = status.updated_at;
        let file = open_data(&self.paths)?;
        // Re-hash what is there: the digest must cover the bytes on disk, whoever wrote them.
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.paths.data.display()), e))?
            .len();
        let mut d = self.hasher.fresh();
        rehash(&file, len, &mut d)
            .map_err(|e| e.context(format!("resuming ingest ref {:?}", self.reference)))?;
        self.hasher.replace(d);
        self.offset = len;
        self.writeback_from = len;
        self.file = Some(file);
        Ok(true)
    }

    fn start_fresh(&mut self) -> Result<()> {
        let now = SystemTime::now();
        self.started_at = now;
        self.updated_at = now;
        fsutil::write_new(&self.paths.reference, self.reference.as_bytes())?;
        let ts = timefmt::format(now);
        // Synced (containerd writes them O_SYNC) before the data file exists, so an ingest
        // whose data survives a crash also has readable timestamps and stays resumable.
        fsutil::write_replace(&self.paths.started_at, ts.as_bytes(), true)?;
        fsutil::write_replace(&self.paths.updated_at, ts.as_bytes(), true)?;
        if self.total > 0 {
            fsutil::write_new(&self.paths.total, self.total.to_string().as_bytes())?;
        } else {
            match fs::remove_file(&self.paths.total) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("remove {}", self.paths.total.display()),
                        e,
                    ))
                }
            }
        }
        // The data file comes last: its presence is what makes an ingest resumable.
        let file = open_data(&self.paths)?;
        file.set_len(0)
            .map_err(|e| Error::io(format!("truncate {}", self.paths.data.display()), e))?;
        self.file = Some(file);
        self.offset = 0;
        self.writeback_from = 0;
        self.hasher.replace(self.hasher.fresh());
        Ok(())
    }

    fn closed(&self) -> Error {
        Error::failed_precondition(format!(
            "writer for ref {:?} is closed (already committed)",
            self.reference
        ))
    }

    fn write_inner(&mut self, buf: &[u8]) -> Result<usize> {
        let Some(file) = &self.file else {
            return Err(self.closed());
        };
        if self.total > 0 && self.offset + buf.len() as u64 > self.total {
            return Err(Error::failed_precondition(format!(
                "write of {} bytes at offset {} exceeds the expected size {} of ref {:?}",
                buf.len(),
                self.offset,
                self.total,
                self.reference
            )));
        }
        let n = loop {
            match file.write_at(buf, self.offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("write ingest ref {:?} at {}", self.reference, self.offset),
                        e,
                    ))
                }
            }
        };
        self.offset += n as u64;
        self.updated_at = SystemTime::now();
        if self.offset - self.writeback_from >= WRITEBACK_STEP {
            fsutil::start_writeback(file, self.writeback_from, self.offset);
            self.writeback_from = self.offset;
        }
        if self.hasher.update(&buf[..n]).is_err() {
            // The helper thread is gone; the bytes are on disk, so hash them again from there.
            self.rehash_from_disk()?;
        }
        Ok(n)
    }

    fn rehash_from_disk(&mut self) -> Result<()> {
        let file = self.file.as_ref().ok_or_else(|| self.closed())?;
        let mut d = self.hasher.fresh();
        rehash(file, self.offset, &mut d)?;
        self.hasher.replace(d);
        Ok(())
    }

    fn current_digest(&mut self) -> Result<Digest> {
        match self.hasher.digest() {
            Ok(d) => Ok(d),
            Err(_) if self.file.is_some() => {
                self.rehash_from_disk()?;
                self.hasher.digest()
            }
            Err(e) => Err(e),
        }
    }

    /// The digest the blob will be stored under, verified against every expectation.
    fn verify(&mut self, size: Option<u64>, expected: Option<&Digest>) -> Result<Digest> {
        for want in [size, (self.total > 0).then_some(self.total)]
            .into_iter()
            .flatten()
        {
            if want != self.offset {
                return Err(Error::failed_precondition(format!(
                    "unexpected commit size {}, expected {want}",
                    self.offset
                )));
            }
        }
        let actual = self.current_digest()?;
        let mut name = actual.clone();
        for want in [expected, self.expected.as_ref()].into_iter().flatten() {
            let got = if want.algorithm() == actual.algorithm() {
                actual.clone()
            } else {
                // Expected in another algorithm than we hashed with: hash again from disk.
                let mut d = Digester::new(want.algorithm());
                let file = self.file.as_ref().ok_or_else(|| self.closed())?;
                rehash(file, self.offset, &mut d)?;
                d.finish()
            };
            if &got != want {
                return Err(Error::failed_precondition(format!(
                    "unexpected commit digest {got}, expected {want}"
                )));
            }
            name = want.clone();
        }
        Ok(name)
    }

    fn commit_inner(
        &mut self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<()> {
        labels::validate_all(&labels)?;
        let Some(file) = &self.file else {
            return Err(self.closed());
        };
        let data = self.paths.data.clone();
        // No fsync yet: the one below, after the final attributes, makes data and metadata
        // durable together before the rename; one here as well cost a second journal commit.
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", data.display()), e))?
            .len();
        if on_disk != self.offset {
            return Err(Error::data_loss(format!(
                "ingest ref {:?}: data file holds {on_disk} bytes but {} were written; it was modified behind the writer",
                self.reference, self.offset
            )));
        }
        let digest = self.verify(size, expected)?;

        let target = self.store.blob_path(&digest);
        let alg_dir = target
            .parent()
            .ok_or_else(|| Error::unknown("blob path has no parent"))?
            .to_path_buf();
        ensure_dir(&alg_dir)?;
        if target.exists() {
            self.discard_ingest();
            return Err(Error::already_exists(format!("content {digest}")));
        }

        // Final attributes before the blob becomes visible: read-only, created = updated = now.
        let file = self.file.as_ref().ok_or_else(|| self.closed())?;
        let now = SystemTime::now();
        let mode = file
            .metadata()
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        let attrs = || -> io::Result<()> {
            file.set_times(FileTimes::new().set_accessed(now).set_modified(now))?;
            file.set_permissions(Permissions::from_mode(mode & !0o333))?;
            file.sync_all()
        };
        attrs().map_err(|e| Error::io(format!("finalize {}", data.display()), e))?;

        fs::rename(&data, &target).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::not_found(format!(
                "ingest ref {:?} disappeared before commit (aborted?)",
                self.reference
            )),
            _ => Error::io(
                format!("rename {} to {}", data.display(), target.display()),
                e,
            ),
        })?;
        fsutil::sync_dir(&alg_dir)?;

        if let Some(ls) = &self.store.labels {
            ls.set(&digest, labels)?;
        }
        self.committed = Some(digest);
        self.discard_ingest();
        Ok(())
    }

    /// Forgets the ingest: closes the file, removes the directory, releases the reference.
    fn discard_ingest(&mut self) {
        self.file = None;
        // Best effort, as containerd: the commit already happened (or the content already
        // exists); a leftover directory shows up in listings and can be aborted.
        let _ = fs::remove_dir_all(&self.paths.dir);
        self.lock = None;
    }
}

fn open_data(paths: &IngestPaths) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&paths.data)
        .map_err(|e| Error::io(format!("open {}", paths.data.display()), e))
}

/// Creates `dir` (and `blobs/` above it) if missing, syncing the parent so the new entry
/// survives a crash together with the blob renamed into it.
fn ensure_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    if let Some(parent) = dir.parent() {
        fsutil::sync_dir(parent)?;
    }
    Ok(())
}

/// Hashes the first `len` bytes of `file` into `digester` (after resetting it).
fn rehash(file: &File, len: u64, digester: &mut Digester) -> Result<()> {
    digester.reset();
    let mut buf = vec![
        0u8;
        HASH_BUF
            .min(usize::try_from(len).unwrap_or(HASH_BUF))
            .max(1)
    ];
    let mut off = 0u64;
    while off < len {
        let want = buf
            .len()
            .min(usize::try_from(len - off).unwrap_or(buf.len()));
        let n = match file.read_at(&mut buf[..want], off) {
            Ok(0) => {
                return Err(Error::data_loss(format!(
                    "ingest data ended at {off} bytes, expected {len}"
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading ingest data", e)),
        };
        digester.update(&buf[..n]);
        off += n as u64;
    }
    Ok(())
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf).map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Positional writes go straight to the file; durability is commit's job.
        Ok(())
    }
}

impl Writer for LocalWriter {
    fn digest(&mut self) -> Digest {
        match self.current_digest() {
            Ok(d) => d,
            // Only reachable if the hashing thread died after the file was closed; the
            // committed digest is then still the right answer.
            Err(_) => self
                .committed
                .clone()
                .unwrap_or_else(|| self.hasher.fresh().finish()),
        }
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        })
    }

    fn commit(
        &mut self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<()> {
        self.commit_inner(size, expected, labels)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        let Some(file) = &self.file else {
            return Err(self.closed());
        };
        if size > self.offset {
            return Err(Error::invalid_argument(format!(
                "cannot truncate ref {:?} to {size} bytes: only {} written",
                self.reference, self.offset
            )));
        }
        file.set_len(size)
            .map_err(|e| Error::io(format!("truncate {}", self.paths.data.display()), e))?;
        let mut d = self.hasher.fresh();
        rehash(file, size, &mut d)?;
        self.hasher.replace(d);
        self.offset = size;
        self.writeback_from = self.writeback_from.min(size);
        self.updated_at = SystemTime::now();
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Record the last write for `status`; only when the ingest still exists (an abort
            // may have removed it, and we must not recreate it).
            if self.paths.dir.is_dir() {
                let ts = timefmt::format(self.updated_at);
                let _ = fsutil::write_replace(&self.paths.updated_at, ts.as_bytes(), false);
            }
        }
    }
}
