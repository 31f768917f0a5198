//! The local content store: blobs and ingests in containerd 1.6's directory layout.

use std::fs::{self, DirBuilder, File, FileTimes};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use stowage_core_types::content::{
    Info, IngestManager, Ingester, Manager, Provider, ReaderAt, Status, Writer, WriterOptions,
};
use stowage_core_types::descriptor::Descriptor;
use stowage_core_types::digest::{Algorithm, Digest};
use stowage_core_types::error::{Error, Result};
use stowage_core_types::fieldpath;
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::labels::{self, Labels};

use crate::ingest::{self, IngestPaths};
use crate::labels::{LabelStore, MemoryLabelStore};
use crate::reader::BlobReader;
use crate::writer::LocalWriter;

/// A content store in a directory, laid out exactly as containerd 1.6's local store
/// (`io.containerd.content.v1.content`):
///
/// ```text
/// <root>/blobs/<algorithm>/<hex>       committed blobs, mode 0444
/// <root>/ingest/<sha256(ref)>/...      in-progress writes (see the ingest module)
/// ```
///
/// so containerd can read what stowage wrote and the other way round. Like containerd's, it
/// keeps no labels on disk: open it with a [`LabelStore`] to have labels at all (the metadata
/// layer keeps labels in meta.db and uses a bare store). Cloning is cheap; clones share state.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) labels: Option<Arc<dyn LabelStore>>,
    // Serializes read-modify-write of labels so concurrent updates of one blob don't lose keys.
    update_lock: Mutex<()>,
}

impl LocalStore {
    /// Opens (creating if needed) a store at `root`, without labels: `update` fails with
    /// `FailedPrecondition` and blobs report no labels, as containerd's `local.NewStore`.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore> {
        Self::build(root.as_ref(), None)
    }

    /// Opens a store at `root` whose labels live in `labels`.
    pub fn with_label_store(
        root: impl AsRef<Path>,
        labels: Arc<dyn LabelStore>,
    ) -> Result<LocalStore> {
        Self::build(root.as_ref(), Some(labels))
    }

    /// Opens a store at `root` with labels kept in memory.
    pub fn with_memory_labels(root: impl AsRef<Path>) -> Result<LocalStore> {
        Self::with_label_store(root, Arc::new(MemoryLabelStore::new()))
    }

    fn build(root: &Path, labels: Option<Arc<dyn LabelStore>>) -> Result<LocalStore> {
        let ingest = root.join("ingest");
        DirBuilder::new()
            .recursive(true)
            .mode(0o777)
            .create(&ingest)
            .map_err(|e| Error::io(format!("create {}", ingest.display()), e))?;
        // Canonical, so the process-wide ref locks see one store however its path was spelled.
        let root = fs::canonicalize(root)
            .map_err(|e| Error::io(format!("resolve {}", root.display()), e))?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root,
                labels,
                update_lock: Mutex::new(()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blob_path(digest)
    }

    /// Opens a committed blob for positional reads; the concrete type gives access to the file.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        BlobReader::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::not_found(format!("content {digest}")),
            _ => Error::io(format!("open blob {digest} at {}", path.display()), e),
        })
    }

    /// The ingest directory `reference` uses (whether or not it exists).
    pub fn ingest_path(&self, reference: &str) -> PathBuf {
        self.inner.ingest_paths(reference).dir
    }

    fn labels_of(&self, digest: &Digest) -> Result<Labels> {
        match &self.inner.labels {
            Some(ls) => ls.get(digest),
            None => Ok(Labels::new()),
        }
    }

    fn info_from(&self, digest: Digest, meta: &fs::Metadata) -> Result<Info> {
        let labels = self.labels_of(&digest)?;
        Ok(Info {
            digest,
            size: meta.len(),
            created_at: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            // containerd records label updates by bumping the blob's atime.
            updated_at: meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
            labels,
        })
    }

    fn stat_blob(&self, digest: &Digest) -> Result<fs::Metadata> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(m),
            Ok(_) => Err(Error::data_loss(format!(
                "content {digest}: {} is not a regular file",
                path.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("content {digest}")))
            }
            Err(e) => Err(Error::io(format!("stat {}", path.display()), e)),
        }
    }
}

impl Inner {
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        // Digest is validated on construction (known algorithm, fixed-length lowercase hex), so
        // both components are safe path names.
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.encoded())
    }

    pub(crate) fn ingest_paths(&self, reference: &str) -> IngestPaths {
        IngestPaths::for_dir(self.root.join("ingest").join(ingest::dir_name(reference)))
    }
}

fn adapt_info(info: &Info) -> impl Fn(&[&str]) -> Option<String> + '_ {
    move |path: &[&str]| match path.first().copied() {
        Some("digest") => Some(info.digest.to_string()),
        // containerd's content adaptor leaves `size` unsupported; so do we, to filter alike.
        Some("labels") if !info.labels.is_empty() => map_field(&path[1..], &info.labels),
        _ => None,
    }
}

impl Provider for LocalStore {
    fn reader_at(&self, desc: &Descriptor) -> Result<Box<dyn ReaderAt>> {
        Ok(Box::new(self.open_blob(&desc.digest)?))
    }
}

impl Ingester for LocalStore {
    fn writer(&self, opts: WriterOptions) -> Result<Box<dyn Writer>> {
        Ok(Box::new(LocalWriter::open(self.inner.clone(), opts)?))
    }
}

impl Manager for LocalStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let meta = self.stat_blob(digest)?;
        self.info_from(digest.clone(), &meta)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let Some(ls) = &self.inner.labels else {
            return Err(Error::failed_precondition(
                "update not supported on immutable content store (opened without a label store)",
            ));
        };
        let _guard = self
            .inner
            .update_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let meta = self.stat_blob(&info.digest)?;
        let mut stored = ls.get(&info.digest)?;
        fieldpath::apply_labels(&mut stored, &info.labels, fieldpaths, "labels")
            .map_err(|e| e.context(format!("content {}", info.digest)))?;
        labels::validate_all(&stored)?;
        ls.set(&info.digest, stored)?;

        // Keep mtime (creation) and move atime (last update), as containerd does.
        let created = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let now = SystemTime::now();
        let path = self.blob_path(&info.digest);
        if let Ok(f) = File::open(&path) {
            // Best effort like containerd: a blob whose times cannot be changed still has its
            // labels updated.
            let _ = f.set_times(FileTimes::new().set_accessed(now).set_modified(created));
        }
        let mut out = self.info(&info.digest)?;
        out.updated_at = now;
        Ok(out)
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let filter = Filter::parse_all(filters)?;
        let blobs = self.inner.root.join("blobs");
        let mut algs = match read_dir_sorted(&blobs) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", blobs.display()), e)),
        };
        algs.retain(|(name, _)| Algorithm::ALL.iter().any(|a| a.as_str() == name));
        for (alg, alg_path) in algs {
            let entries = match read_dir_sorted(&alg_path) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("read {}", alg_path.display()), e)),
            };
            for (name, path) in entries {
                // Anything that is not a well-formed digest (a stray temp file, a foreign
                // name) is not content; skip it rather than report a bogus digest.
                let Ok(digest) = Digest::parse(&format!("{alg}:{name}")) else {
                    continue;
                };
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    // Deleted while we walk.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
                };
                let info = self.info_from(digest, &meta)?;
                if filter.matches(&adapt_info(&info)) {
                    f(info)?;
                }
            }
        }
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("content {digest}")));
            }
            Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
        }
        // Labels belong to the blob; a later blob with the same digest starts without them.
        if let Some(ls) = &self.inner.labels {
            ls.set(digest, Labels::new())?;
        }
        Ok(())
    }
}

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Non-UTF-8 names cannot be digests or hashed refs.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl IngestManager for LocalStore {
    fn status(&self, reference: &str) -> Result<Status> {
        let paths = self.inner.ingest_paths(reference);
        ingest::read_status(&paths, Some(reference))
    }

    fn list_statuses(&self, filters: &[String]) -> Result<Vec<Status>> {
        let filter = Filter::parse_all(filters)?;
        let dir = self.inner.root.join("ingest");
        let entries = match read_dir_sorted(&dir) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for (_, path) in entries {
            if !path.is_dir() {
                continue;
            }
            let status = match ingest::read_status(&IngestPaths::for_dir(path), None) {
                Ok(s) => s,
                // Committed or aborted while we list.
                Err(e) if ingest::is_gone(&e) => continue,
                Err(e) => return Err(e),
            };
            let adaptor = |p: &[&str]| match p {
                ["ref"] => Some(status.reference.clone()),
                _ => None,
            };
            if filter.matches(&adaptor) {
                out.push(status);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let paths = self.inner.ingest_paths(reference);
        match fs::remove_dir_all(&paths.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("ingest ref {reference:?}")))
            }
            Err(e) => Err(Error::io(format!("remove {}", paths.dir.display()), e)),
        }
    }
}
