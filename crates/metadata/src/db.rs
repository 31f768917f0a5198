//! Opening meta.db: file location, lock timeout, schema version and migrations.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use stowage_bolt::{ReadTx, WriteTx};
use stowage_core_types::content::Store;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Error, Result};

use crate::content::ContentSharing;
use crate::encoding::{decode_varint, encode_varint};
use crate::schema::*;

/// The plugin directory containerd keeps meta.db in, below its root.
pub const PLUGIN_DIR: &str = "io.containerd.metadata.v1.bolt";
/// The file name of the database.
pub const DB_FILE: &str = "meta.db";

/// How to open a metadata database.
#[derive(Clone)]
pub struct Options {
    /// How long to wait for the file lock held by another process before failing with
    /// `Unavailable`. containerd waits forever; we fail fast so a running containerd is
    /// reported instead of hanging.
    pub lock_timeout: Duration,
    /// The content store under the namespaced content views and content GC.
    pub content: Option<Arc<dyn Store>>,
    /// Snapshotters by name (`overlayfs`, `native`, ...), wrapped per namespace and collected.
    pub snapshotters: BTreeMap<String, Arc<dyn Snapshotter>>,
    /// Skip fsync of commits (tests and benchmarks only).
    pub no_sync: bool,
    /// How content committed in one namespace is shared with the others.
    pub content_sharing: ContentSharing,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            lock_timeout: Duration::from_millis(200),
            content: None,
            snapshotters: BTreeMap::new(),
            no_sync: false,
            content_sharing: ContentSharing::Shared,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("lock_timeout", &self.lock_timeout)
            .field("content", &self.content.is_some())
            .field(
                "snapshotters",
                &self.snapshotters.keys().collect::<Vec<_>>(),
            )
            .field("no_sync", &self.no_sync)
            .field("content_sharing", &self.content_sharing)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) bolt: stowage_bolt::Db,
    pub(crate) content: Option<Arc<dyn Store>>,
    pub(crate) content_sharing: ContentSharing,
    pub(crate) snapshotters: BTreeMap<String, Arc<dyn Snapshotter>>,
    /// Writers hold it shared; garbage collection holds it exclusively while it marks and
    /// removes records, as containerd's `wlock`.
    pub(crate) wlock: RwLock<()>,
    /// Serialises backend cleanup against namespaced writers of content, as containerd's
    /// content store lock.
    pub(crate) content_lock: RwLock<()>,
    /// Same, per snapshotter.
    pub(crate) snapshot_locks: BTreeMap<String, RwLock<()>>,
    /// Deletions since the last collection (containerd's `dirty` counter).
    pub(crate) dirty: AtomicU64,
    /// Backends with records removed since their last cleanup.
    pub(crate) dirty_backends: Mutex<DirtyBackends>,
    /// Called after every committed write with "deletions pending" (containerd's mutation
    /// callbacks, which feed the GC scheduler).
    pub(crate) mutation_callbacks: RwLock<Vec<MutationCallback>>,
    /// The scheduler collections are requested from, when one runs.
    pub(crate) scheduler: Mutex<Option<std::sync::Weak<crate::scheduler::Shared>>>,
}

/// A callback told about each committed write; its argument says whether deletions are
/// waiting for a collection.
pub type MutationCallback = Box<dyn Fn(bool) + Send + Sync>;

/// Which backends the next collection must clean.
#[derive(Debug, Default)]
pub(crate) struct DirtyBackends {
    pub(crate) content: bool,
    pub(crate) snapshotters: BTreeSet<String>,
}

/// containerd's metadata database: the `v1` schema on a bolt file, shared by every store.
///
/// Cheap to clone; clones share the open file.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.bolt.path())
            .finish()
    }
}

/// Where meta.db lives below a containerd root.
pub fn db_path(root: &Path) -> PathBuf {
    root.join(PLUGIN_DIR).join(DB_FILE)
}

impl Db {
    /// Opens `<root>/io.containerd.metadata.v1.bolt/meta.db`, creating it (mode 0644) and its
    /// directory (0711) when missing, and brings its schema to version 3.
    pub fn open(root: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let dir = root.as_ref().join(PLUGIN_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Db::open_file(dir.join(DB_FILE), opts)
    }

    /// Opens the database file at `path` (created with mode 0644) and initialises or migrates
    /// its schema. A file from a newer or unknown schema is refused and left untouched.
    pub fn open_file(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let path = path.as_ref();
        let bolt = stowage_bolt::Db::open(
            path,
            stowage_bolt::Options {
                mode: 0o644,
                lock_timeout: Some(opts.lock_timeout),
                no_sync: opts.no_sync,
                ..Default::default()
            },
        )
        .map_err(|e| {
            bolt_err(e).context(format!("opening metadata database {}", path.display()))
        })?;
        init(&bolt).map_err(|e| e.context(format!("metadata database {}", path.display())))?;
        let snapshot_locks = opts
            .snapshotters
            .keys()
            .map(|k| (k.clone(), RwLock::new(())))
            .collect();
        // A crash between a backend's commit and meta.db's leaves backend objects no record
        // names, and no removal will ever mark that backend dirty: so every backend starts
        // dirty and the first collection sweeps them all. (containerd 1.6 starts clean.)
        let dirty_backends = DirtyBackends {
            content: opts.content.is_some(),
            snapshotters: opts.snapshotters.keys().cloned().collect(),
        };
        Ok(Db {
            inner: Arc::new(Inner {
                bolt,
                content: opts.content,
                content_sharing: opts.content_sharing,
                snapshotters: opts.snapshotters,
                wlock: RwLock::new(()),
                content_lock: RwLock::new(()),
                snapshot_locks,
                dirty: AtomicU64::new(0),
                dirty_backends: Mutex::new(dirty_backends),
                mutation_callbacks: RwLock::new(Vec::new()),
                scheduler: Mutex::new(None),
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        self.inner.bolt.path()
    }

    /// The underlying bolt database (read access for tools and tests).
    pub fn bolt(&self) -> &stowage_bolt::Db {
        &self.inner.bolt
    }

    /// The schema version stored in the file.
    pub fn version(&self) -> Result<i64> {
        let tx = self.read()?;
        let v1 = tx.bucket(SCHEMA).b()?;
        Ok(match v1.and_then(|b| b.get(KEY_VERSION).ok().flatten()) {
            Some(v) => decode_varint(v).map(|(v, _)| v).unwrap_or(0),
            None => 0,
        })
    }

    /// Deletions since the last garbage collection.
    pub fn dirty(&self) -> u64 {
        self.inner.dirty.load(Ordering::Relaxed)
    }

    /// Whether a backend waits for its sweep (each does until the first collection).
    pub(crate) fn backends_dirty(&self) -> bool {
        let d = self
            .inner
            .dirty_backends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        d.content || !d.snapshotters.is_empty()
    }

    pub(crate) fn mark_dirty(&self) {
        self.inner.dirty.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn mark_content_dirty(&self) {
        self.mark_dirty();
        self.inner
            .dirty_backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .content = true;
    }

    pub(crate) fn mark_snapshotter_dirty(&self, name: &str) {
        self.mark_dirty();
        self.inner
            .dirty_backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshotters
            .insert(name.to_string());
    }

    pub(crate) fn read(&self) -> Result<ReadTx> {
        self.inner.bolt.begin_read().b()
    }

    /// Runs `f` in one write transaction under the shared writer lock; commits on `Ok`.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        let out = {
            let _g = self.writer_guard();
            self.update_locked(f)?
        };
        let dirty = self.dirty() > 0;
        for cb in self
            .inner
            .mutation_callbacks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            cb(dirty);
        }
        Ok(out)
    }

    /// Registers `f` to be called after every committed write.
    pub fn on_mutation(&self, f: MutationCallback) {
        self.inner
            .mutation_callbacks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// As [`Db::update`] for callers already holding the writer lock (or GC, holding it
    /// exclusively).
    pub(crate) fn update_locked<T>(&self, f: impl FnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        let mut tx = self.inner.bolt.begin_write().b()?;
        let out = f(&mut tx)?;
        tx.commit().b()?;
        Ok(out)
    }

    pub(crate) fn writer_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.wlock.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn init(bolt: &stowage_bolt::Db) -> Result<()> {
    let mut tx = bolt.begin_write().b()?;
    // Anything but `v1` at the top level is a schema we do not know: refuse before touching it.
    for name in keys(tx.root())? {
        if name != SCHEMA {
            return Err(Error::failed_precondition(format!(
                "unknown schema {:?} at the top level of meta.db; this build knows only v1 (containerd 1.6)",
                lossy(&name)
            )));
        }
    }
    let version = match tx.bucket(SCHEMA).b()? {
        None => None,
        Some(v1) => Some(match v1.get(KEY_VERSION).b()? {
            // containerd reads a bad version as 0; so do we.
            Some(v) => decode_varint(v).map(|(v, _)| v).unwrap_or(0),
            None => 0,
        }),
    };
    match version {
        Some(v) if v > DB_VERSION => {
            return Err(Error::failed_precondition(format!(
                "meta.db schema v1 version {v} is newer than this build supports (version {DB_VERSION}, containerd 1.6); refusing to open it"
            )));
        }
        Some(v) if v == DB_VERSION => return Ok(()), // nothing to write: roll back
        Some(v) => {
            if v < 1 {
                add_child_links(&mut tx)?;
            }
            if v < 2 {
                migrate_ingests(&mut tx)?;
            }
            // Version 3 only changed the Go bolt package: nothing to do.
        }
        None => {}
    }
    let mut v1 = tx.create_bucket_if_not_exists(SCHEMA).b()?;
    v1.put(KEY_VERSION, &encode_varint(DB_VERSION)).b()?;
    tx.commit().b()
}

/// Migration 1: every snapshot with a parent is recorded in its parent's `children` bucket.
fn add_child_links(tx: &mut WriteTx) -> Result<()> {
    let Some(v1) = tx.bucket(SCHEMA).b()? else {
        return Ok(());
    };
    // Collect first: the read view borrows the transaction.
    // (namespace, snapshotter, parent, child)
    type Link = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    let mut links: Vec<Link> = Vec::new();
    for ns in bucket_names(v1)? {
        let Some(sbkt) = get_path(v1, &[&ns, SNAPSHOTS])? else {
            continue;
        };
        for ss in bucket_names(sbkt)? {
            let Some(ssb) = sbkt.bucket(&ss).b()? else {
                continue;
            };
            for key in bucket_names(ssb)? {
                let Some(kb) = ssb.bucket(&key).b()? else {
                    continue;
                };
                if let Some(parent) = kb.get(PARENT).b()? {
                    // A dangling parent is skipped, not an error, as containerd does.
                    if !parent.is_empty() && ssb.bucket(parent).b()?.is_some() {
                        links.push((ns.clone(), ss.clone(), parent.to_vec(), key.clone()));
                    }
                }
            }
        }
    }
    for (ns, ss, parent, key) in links {
        let pb = open_path(tx, &[SCHEMA, &ns, SNAPSHOTS, &ss, &parent])?
            .ok_or_else(|| Error::unknown("parent snapshot bucket vanished during migration"))?;
        let mut cb = create_child(pb, CHILDREN)?;
        cb.put(&key, b"").b()?;
    }
    Ok(())
}

/// Migration 2: the flat `content/ingest` (ref → backend ref) becomes
/// `content/ingests/<ref>/ref`.
fn migrate_ingests(tx: &mut WriteTx) -> Result<()> {
    let Some(v1) = tx.bucket(SCHEMA).b()? else {
        return Ok(());
    };
    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
    let mut moves: Vec<(Vec<u8>, Pairs)> = Vec::new();
    for ns in bucket_names(v1)? {
        let Some(old) = get_path(v1, &[&ns, CONTENT, DEPRECATED_INGEST])? else {
            continue;
        };
        let mut pairs = Vec::new();
        old.for_each(|k, v| {
            if let Some(v) = v {
                pairs.push((k.to_vec(), v.to_vec()));
            }
            Ok::<(), stowage_bolt::Error>(())
        })
        .b()?;
        moves.push((ns, pairs));
    }
    for (ns, pairs) in moves {
        let cb = open_path(tx, &[SCHEMA, &ns, CONTENT])?
            .ok_or_else(|| Error::unknown("content bucket vanished during migration"))?;
        {
            let mut ib = create_child(cb, INGESTS)?;
            for (r, bref) in &pairs {
                let mut rb = ib.create_bucket_if_not_exists(r).b()?;
                rb.put(REF, bref).b()?;
            }
        }
        let mut cb = open_path(tx, &[SCHEMA, &ns, CONTENT])?
            .ok_or_else(|| Error::unknown("content bucket vanished during migration"))?;
        cb.delete_bucket(DEPRECATED_INGEST).b()?;
    }
    Ok(())
}
