//! The namespaced content store: `v1/<ns>/content/blob/<digest>/` records over a shared backend
//! store, with ingests under `v1/<ns>/content/ingests/<ref>/`.
//!
//! A blob is visible in a namespace only once committed there. With containerd's default
//! "shared" policy, a writer opened with an expected digest the backend already holds commits
//! into the namespace without transferring the data again. With the "isolated" policy
//! ([`ContentSharing::Isolated`]) that shortcut is gone: a namespace gets a blob only by
//! writing every byte of it, even when the backend already stores it for another namespace
//! (the backend then keeps its one copy). Everything else (visibility of Info, ReaderAt,
//! Status, Walk) is per namespace under both policies. Backend ingests are named
//! `<ns>/<seq>/<ref>` so namespaces never collide.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stowage_bolt::{Bucket, BucketMut, WriteTx};
use stowage_core_types::content::{
    Info, IngestManager, Ingester, Manager, Provider, ReaderAt, Status, Store, Writer,
    WriterOptions,
};
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::{fieldpath, Descriptor, Digest, Error, ErrorKind, Labels, Result};

use crate::db::Db;
use crate::encoding::{encode_time, encode_varint, read_size};
use crate::leases::{add_to_lease, remove_from_lease};
use crate::namespaces::check;
use crate::schema::*;

/// How long an ingest not held by a lease is protected from the collector.
pub const INGEST_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// How committed content is shared between namespaces: containerd's bolt plugin option
/// `content_sharing_policy`. Both policies keep one copy of a blob in the backend; they differ
/// only in what a namespace must do to get a blob another namespace already committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContentSharing {
    /// `"shared"` (containerd's default): a writer opened with an expected digest the backend
    /// holds (at the expected size, or with no size given) is already complete; committing it
    /// adds the blob to the namespace without any data. Knowing a digest is enough to get it.
    #[default]
    Shared,
    /// `"isolated"`: a namespace must write the whole blob before it is added there, proving it
    /// has the content. containerd 1.6 has no per-namespace exception (1.7's
    /// `containerd.io/namespace.shareable` label is not honoured, as 1.6 does not know it).
    Isolated,
}

/// The content store of one namespace, optionally working under a lease.
#[derive(Clone)]
pub struct ContentStore {
    db: Db,
    ns: String,
    lease: Option<String>,
    backend: Arc<dyn Store>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("namespace", &self.ns)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Db {
    /// The content store of namespace `ns`. With `lease`, everything it creates (blobs,
    /// ingests) is added to that lease, which must exist when the work happens.
    /// `FailedPrecondition` when the database was opened without a content backend.
    pub fn content_store(&self, ns: &str, lease: Option<&str>) -> Result<ContentStore> {
        check(ns)?;
        let backend = self.inner.content.clone().ok_or_else(|| {
            Error::failed_precondition("metadata database was opened without a content store")
        })?;
        Ok(ContentStore {
            db: self.clone(),
            ns: ns.to_string(),
            lease: lease.map(str::to_string),
            backend,
        })
    }

    /// The content sharing policy the database was opened with.
    pub fn content_sharing(&self) -> ContentSharing {
        self.inner.content_sharing
    }
}

fn blob_path<'a>(ns: &'a str, d: &'a str) -> [&'a [u8]; 5] {
    [SCHEMA, ns.as_bytes(), CONTENT, BLOB, d.as_bytes()]
}

fn not_found(d: &Digest) -> Error {
    Error::not_found(format!("content digest {d}"))
}

fn read_info(d: &Digest, b: Bucket<'_>) -> Result<Info> {
    let (created_at, updated_at) = read_timestamps(b)?;
    Ok(Info {
        digest: d.clone(),
        size: b.get(SIZE).b()?.map(read_size).unwrap_or(0).max(0) as u64,
        created_at,
        updated_at,
        labels: read_labels(b)?,
    })
}

fn write_info(b: &mut BucketMut<'_>, info: &Info) -> Result<()> {
    write_timestamps(b, info.created_at, info.updated_at)?;
    write_labels(b, &info.labels)?;
    b.put(SIZE, &encode_varint(info.size as i64)).b()
}

fn adapt_info(info: &Info, path: &[&str]) -> Option<String> {
    match path.first().copied() {
        Some("digest") => Some(info.digest.to_string()),
        Some("labels") if !info.labels.is_empty() => map_field(&path[1..], &info.labels),
        _ => None,
    }
}

impl ContentStore {
    fn content_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.db
            .inner
            .content_lock
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lease_content(&self, tx: &mut WriteTx, d: &Digest) -> Result<()> {
        match &self.lease {
            Some(l) => add_to_lease(tx, &self.ns, l, &[CONTENT], d.as_str().as_bytes())
                .map_err(|e| e.context("unable to lease content")),
            None => Ok(()),
        }
    }

    fn unlease(&self, tx: &mut WriteTx, kind: &[u8], key: &[u8]) -> Result<()> {
        match &self.lease {
            Some(l) => remove_from_lease(tx, &self.ns, l, &[kind], key),
            None => Ok(()),
        }
    }

    /// The backend ref of ingest `reference`, if recorded.
    fn backend_ref(&self, reference: &str) -> Result<Option<String>> {
        let tx = self.db.read()?;
        let b = get_path(
            tx.root(),
            &[
                SCHEMA,
                self.ns.as_bytes(),
                CONTENT,
                INGESTS,
                reference.as_bytes(),
            ],
        )?;
        Ok(match b {
            None => None,
            Some(b) => b.get(REF).b()?.filter(|v| !v.is_empty()).map(lossy),
        })
    }
}

impl Provider for ContentStore {
    fn reader_at(&self, desc: &Descriptor) -> Result<Box<dyn ReaderAt>> {
        {
            let tx = self.db.read()?;
            let d = desc.digest.to_string();
            if get_path(tx.root(), &blob_path(&self.ns, &d))?.is_none() {
                return Err(not_found(&desc.digest));
            }
        }
        self.backend.reader_at(desc)
    }
}

impl Manager for ContentStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let tx = self.db.read()?;
        let d = digest.to_string();
        let b = get_path(tx.root(), &blob_path(&self.ns, &d))?.ok_or_else(|| not_found(digest))?;
        read_info(digest, b)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let _g = self.content_lock();
        let d = info.digest.to_string();
        self.db.update(|tx| {
            let Some(mut b) = open_path(tx, &blob_path(&self.ns, &d))? else {
                return Err(not_found(&info.digest));
            };
            let mut updated = read_info(&info.digest, b.view())?;
            for path in fieldpaths {
                if !fieldpath::update_map_path(&mut updated.labels, &info.labels, path, "labels")? {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on content info {:?}",
                        info.digest.as_str()
                    )));
                }
            }
            if fieldpaths.is_empty() {
                fieldpath::apply_labels(&mut updated.labels, &info.labels, &[], "labels")?;
            }
            validate_labels("info.Labels", &updated.labels)?;
            updated.updated_at = SystemTime::now();
            write_info(&mut b, &updated)?;
            Ok(updated)
        })
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let filter = Filter::parse_all(filters)?;
        let mut infos = Vec::new();
        {
            let tx = self.db.read()?;
            if let Some(bb) = get_path(tx.root(), &[SCHEMA, self.ns.as_bytes(), CONTENT, BLOB])? {
                for k in bucket_names(bb)? {
                    // Keys that are not digests are skipped, as containerd does.
                    let Ok(d) = Digest::parse(&lossy(&k)) else {
                        continue;
                    };
                    let Some(b) = bb.bucket(&k).b()? else {
                        continue;
                    };
                    let info = read_info(&d, b)?;
                    if filter.matches(&|p: &[&str]| adapt_info(&info, p)) {
                        infos.push(info);
                    }
                }
            }
        }
        // The callback runs outside the transaction so it may use the store.
        for info in infos {
            f(info)?;
        }
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let _g = self.content_lock();
        let d = digest.to_string();
        self.db.update(|tx| {
            let Some(mut bb) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), CONTENT, BLOB])? else {
                return Err(not_found(digest));
            };
            if bb.bucket(d.as_bytes()).b()?.is_none() {
                return Err(not_found(digest));
            }
            bb.delete_bucket(d.as_bytes()).b()?;
            self.unlease(tx, CONTENT, d.as_bytes())?;
            self.db.mark_content_dirty();
            Ok(())
        })
    }
}

impl IngestManager for ContentStore {
    fn status(&self, reference: &str) -> Result<Status> {
        let bref = self
            .backend_ref(reference)?
            .ok_or_else(|| Error::not_found(format!("reference {reference}")))?;
        let mut st = self.backend.status(&bref)?;
        st.reference = reference.to_string();
        Ok(st)
    }

    fn list_statuses(&self, filters: &[String]) -> Result<Vec<Status>> {
        let filter = Filter::parse_all(filters)?;
        let mut brefs = Vec::new();
        {
            let tx = self.db.read()?;
            if let Some(ib) = get_path(tx.root(), &[SCHEMA, self.ns.as_bytes(), CONTENT, INGESTS])?
            {
                for r in bucket_names(ib)? {
                    if let Some(b) = ib.bucket(&r).b()? {
                        let bref = lossy(b.get(REF).b()?.unwrap_or_default());
                        brefs.push((lossy(&r), bref));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (r, bref) in brefs {
            let mut st = match self.backend.status(&bref) {
                Ok(st) => st,
                Err(e) if e.is(ErrorKind::NotFound) => continue,
                Err(e) => return Err(e),
            };
            st.reference = r;
            let reference = st.reference.clone();
            let adapt = move |p: &[&str]| (p == ["ref"]).then(|| reference.clone());
            if filter.matches(&adapt) {
                out.push(st);
            }
        }
        Ok(out)
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let _g = self.content_lock();
        let nf = || Error::not_found(format!("reference {reference}"));
        self.db.update(|tx| {
            let Some(mut ib) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), CONTENT, INGESTS])?
            else {
                return Err(nf());
            };
            let Some(b) = ib.bucket(reference.as_bytes()).b()? else {
                return Err(nf());
            };
            let bref = lossy(b.get(REF).b()?.unwrap_or_default());
            if bref.is_empty() {
                return Err(nf());
            }
            let shared = b.get(EXPECTED).b()?.is_some_and(|v| !v.is_empty());
            ib.delete_bucket(reference.as_bytes()).b()?;
            self.unlease(tx, INGESTS, reference.as_bytes())?;
            if shared {
                // A shared ingest never opened a backend writer.
                return Ok(());
            }
            match self.backend.abort(&bref) {
                // The backend ingest may never have been written to.
                Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
                other => other,
            }
        })
    }
}

impl Ingester for ContentStore {
    fn writer(&self, opts: WriterOptions) -> Result<Box<dyn Writer>> {
        if opts.reference.is_empty() {
            return Err(Error::invalid_argument("ref must not be empty"));
        }
        let _g = self.content_lock();
        let reference = opts.reference.clone();
        let mut desc = opts.expected.clone();
        let mut exists = false;
        let mut shared = false;
        let (bref, inner) = self.db.update(|tx| {
            let mut backend_has = false;
            if let Some(want) = desc.as_mut() {
                let d = want.digest.to_string();
                if get_path(tx.root(), &blob_path(&self.ns, &d))?.is_some() {
                    self.lease_content(tx, &want.digest)?;
                    exists = true;
                    return Ok((String::new(), None));
                }
                if let Ok(st) = self.backend.info(&want.digest) {
                    backend_has = true;
                    // Isolated: the blob is written again in full (the backend's commit then
                    // finds its copy and keeps it); only the namespace record is new.
                    let sharing = self.db.inner.content_sharing == ContentSharing::Shared;
                    if sharing && (want.size == 0 || want.size == st.size) {
                        shared = true;
                        want.size = st.size;
                    }
                }
            }
            let leased = match &self.lease {
                Some(l) => {
                    add_to_lease(tx, &self.ns, l, &[INGESTS], reference.as_bytes())?;
                    true
                }
                None => false,
            };
            let mut b = create_path(
                tx,
                &[
                    SCHEMA,
                    self.ns.as_bytes(),
                    CONTENT,
                    INGESTS,
                    reference.as_bytes(),
                ],
            )?;
            let bref = match b.get(REF).b()? {
                Some(v) => lossy(v),
                None => {
                    let seq = b.next_sequence().b()?;
                    let bref = format!("{}/{}/{}", self.ns, seq, reference);
                    b.put(REF, bref.as_bytes()).b()?;
                    bref
                }
            };
            if !leased {
                b.put(EXPIRE_AT, &encode_time(SystemTime::now() + INGEST_EXPIRY))
                    .b()?;
            }
            if shared {
                let d = desc
                    .as_ref()
                    .map(|d| d.digest.to_string())
                    .unwrap_or_default();
                b.put(EXPECTED, d.as_bytes()).b()?;
                return Ok((bref, None));
            }
            // A backend that holds the digest (at another size) would refuse an expected
            // descriptor with AlreadyExists; the size and digest are checked at commit instead.
            let mut bopts = WriterOptions::with_ref(bref.clone());
            bopts.total = opts.total;
            if !backend_has {
                bopts.expected = desc.clone();
            } else if let Some(size) = desc.as_ref().map(|d| d.size).filter(|&s| s > 0) {
                // The expected size still sets the ingest's total, as containerd's does.
                bopts.total = Some(size);
            }
            let w = self.backend.writer(bopts)?;
            Ok((bref, Some(w)))
        })?;
        if exists {
            let d = desc.map(|d| d.digest.to_string()).unwrap_or_default();
            return Err(Error::already_exists(format!("content {d}")));
        }
        let backing = match (inner, desc) {
            (Some(w), _) => Backing::Backend(w),
            (None, Some(d)) => Backing::Shared(Box::new(d)),
            (None, None) => return Err(Error::unknown("shared ingest without a descriptor")),
        };
        Ok(Box::new(NamespacedWriter {
            store: self.clone(),
            reference,
            bref,
            backing,
            started: SystemTime::now(),
        }))
    }
}

/// What a namespaced writer writes to.
enum Backing {
    /// Content the backend already has, committed into the namespace without a transfer; a
    /// write or truncate turns it into a real ingest seeded with the blob's bytes.
    Shared(Box<Descriptor>),
    /// A backend ingest.
    Backend(Box<dyn Writer>),
    /// Committed (with this digest); nothing more can be done.
    Done(Digest),
}

/// A writer in one namespace.
struct NamespacedWriter {
    store: ContentStore,
    reference: String,
    bref: String,
    backing: Backing,
    started: SystemTime,
}

impl NamespacedWriter {
    fn closed(&self) -> Error {
        Error::failed_precondition(format!("writer {:?} is already committed", self.reference))
    }

    /// Replaces a shared ingest by a backend ingest holding the first `size` bytes of the blob.
    fn create_and_copy(&mut self, desc: &Descriptor, size: u64) -> Result<()> {
        let mut w = self
            .store
            .backend
            .writer(WriterOptions::with_ref(self.bref.clone()))?;
        if size > 0 {
            let ra = self.store.backend.reader_at(desc)?;
            let mut off = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            while off < size {
                let want = ((size - off) as usize).min(buf.len());
                let n = ra.read_at(&mut buf[..want], off)?;
                if n == 0 {
                    return Err(Error::data_loss(format!(
                        "blob {} ended at {off} bytes, expected {size}",
                        desc.digest
                    )));
                }
                io::Write::write_all(&mut w, &buf[..n]).map_err(Error::from)?;
                off += n as u64;
            }
        }
        self.backing = Backing::Backend(w);
        Ok(())
    }
}

impl io::Write for NamespacedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Backing::Shared(d) = &self.backing {
            if buf.is_empty() {
                return Ok(0);
            }
            let d = (**d).clone();
            self.create_and_copy(&d, d.size).map_err(io::Error::other)?;
        }
        match &mut self.backing {
            Backing::Backend(w) => w.write(buf),
            _ => Err(io::Error::other(self.closed())),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.backing {
            Backing::Backend(w) => w.flush(),
            _ => Ok(()),
        }
    }
}

impl Writer for NamespacedWriter {
    fn digest(&mut self) -> Digest {
        match &mut self.backing {
            Backing::Backend(w) => w.digest(),
            Backing::Shared(d) => d.digest.clone(),
            Backing::Done(d) => d.clone(),
        }
    }

    fn status(&self) -> Result<Status> {
        let mut st = match &self.backing {
            Backing::Backend(w) => w.status()?,
            Backing::Shared(d) => Status {
                reference: String::new(),
                offset: d.size,
                total: d.size,
                expected: Some(d.digest.clone()),
                started_at: self.started,
                updated_at: self.started,
            },
            Backing::Done(_) => return Err(self.closed()),
        };
        st.reference = self.reference.clone();
        Ok(st)
    }

    fn commit(
        &mut self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<()> {
        if matches!(self.backing, Backing::Done(_)) {
            return Err(self.closed());
        }
        validate_labels("info.Labels", &labels)?;
        let store = self.store.clone();
        let _g = store.content_lock();
        let mut already = None;
        let ns = store.ns.clone();
        let reference = self.reference.clone();
        let backing = &mut self.backing;
        let committed = store.db.update(|tx| {
            let (actual, size) = match backing {
                Backing::Shared(desc) => {
                    if let Some(s) = size.filter(|&s| s != desc.size) {
                        return Err(Error::failed_precondition(format!(
                            "{reference:?} failed size validation: {} != {s}",
                            desc.size
                        )));
                    }
                    if let Some(e) = expected.filter(|e| **e != desc.digest) {
                        return Err(Error::failed_precondition(format!(
                            "{reference:?} unexpected commit digest {}, expected {e}",
                            desc.digest
                        )));
                    }
                    (desc.digest.clone(), desc.size)
                }
                Backing::Backend(w) => {
                    let st = w.status()?;
                    if let Some(s) = size.filter(|&s| s != st.offset) {
                        return Err(Error::failed_precondition(format!(
                            "{reference:?} failed size validation: {} != {s}",
                            st.offset
                        )));
                    }
                    match w.commit(Some(st.offset), expected, Labels::new()) {
                        Err(e) if !e.is(ErrorKind::AlreadyExists) => return Err(e),
                        _ => {}
                    }
                    (w.digest(), st.offset)
                }
                Backing::Done(_) => {
                    return Err(Error::failed_precondition("writer already committed"))
                }
            };
            let d = actual.to_string();
            let mut bb = create_path(tx, &[SCHEMA, ns.as_bytes(), CONTENT, BLOB])?;
            if bb.bucket(d.as_bytes()).b()?.is_some() {
                already = Some(Error::already_exists(format!("content {d}")));
            } else {
                let mut b = bb.create_bucket(d.as_bytes()).b()?;
                let now = SystemTime::now();
                write_info(
                    &mut b,
                    &Info {
                        digest: actual.clone(),
                        size,
                        created_at: now,
                        updated_at: now,
                        labels,
                    },
                )?;
            }
            if let Some(mut ib) = open_path(tx, &[SCHEMA, ns.as_bytes(), CONTENT, INGESTS])? {
                if ib.bucket(reference.as_bytes()).b()?.is_some() {
                    ib.delete_bucket(reference.as_bytes()).b()?;
                }
            }
            store.unlease(tx, INGESTS, reference.as_bytes())?;
            store.lease_content(tx, &actual)?;
            Ok(actual)
        })?;
        self.backing = Backing::Done(committed);
        match already {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        match &mut self.backing {
            Backing::Backend(w) => w.truncate(size),
            Backing::Shared(d) => {
                let d = (**d).clone();
                self.create_and_copy(&d, size.min(d.size))
            }
            Backing::Done(_) => Err(self.closed()),
        }
    }
}
