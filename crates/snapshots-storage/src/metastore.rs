//! The snapshotter metastore: containerd 1.6's `snapshots/storage` schema on a bbolt file.
//!
//! ```text
//! v1/
//!   snapshots/            sequence = last id handed out
//!     <key>/
//!       id                uvarint
//!       kind              1 byte (1 view, 2 active, 3 committed)
//!       parent            the parent's key, only when there is one
//!       createdat         Go time.MarshalBinary
//!       updatedat         Go time.MarshalBinary
//!       labels/           <name> → <value>, only when there are labels
//!       inodes, size      zigzag varints, written by commit
//!   parents/
//!     uvarint(parent id) 0x00 uvarint(child id) → the child's key
//! ```
//!
//! A snapshotter opens one [`MetaStore`] and runs its operations inside [`MetaStore::view`] or
//! [`MetaStore::update`], so that the record and the directory it names change together: an
//! `update` whose closure fails is rolled back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use stowage_bolt::{Bucket, BucketMut, Db, Options, ReadTx, WriteTx};
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::snapshot::{Info, Kind, Usage};
use stowage_core_types::{fieldpath, Error, Labels, Result};

use crate::codec::{marshal_time, read_uvarint, read_varint, unmarshal_time, uvarint, varint};

const V1: &[u8] = b"v1";
const SNAPSHOTS: &[u8] = b"snapshots";
const PARENTS: &[u8] = b"parents";
const ID: &[u8] = b"id";
const KIND: &[u8] = b"kind";
const PARENT: &[u8] = b"parent";
const CREATED_AT: &[u8] = b"createdat";
const UPDATED_AT: &[u8] = b"updatedat";
const LABELS: &[u8] = b"labels";
const INODES: &[u8] = b"inodes";
const SIZE: &[u8] = b"size";

/// Maps an engine error onto the project's kinds.
pub fn bolt_error(e: stowage_bolt::Error) -> Error {
    use stowage_bolt::Error as B;
    let msg = e.to_string();
    match e {
        B::Io { what, source } => Error::io(what, source),
        B::Corrupt(_) => Error::data_loss(msg),
        B::Locked { .. } => Error::unavailable(msg),
        B::ReadOnly => Error::failed_precondition(msg),
        B::BucketNotFound(_) => Error::not_found(msg),
        B::BucketExists(_) => Error::already_exists(msg),
        B::InvalidArgument(_) => Error::invalid_argument(msg),
        _ => Error::unknown(msg),
    }
}

/// What a snapshotter needs to build the mounts of an active or view snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id, the name of its directory.
    pub id: String,
    /// View or active.
    pub kind: Kind,
    /// The ids of its ancestors, nearest first.
    pub parent_ids: Vec<String>,
}

/// The metastore file, `metadata.db`.
#[derive(Debug)]
pub struct MetaStore {
    db: Db,
}

impl MetaStore {
    /// Opens (creating it with mode 0600 when missing) the metastore at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<MetaStore> {
        let path = path.as_ref();
        // Fail fast on a metastore another process holds, but ride out the instant in which a
        // child being spawned elsewhere in this process still shares a just-closed handle's
        // lock (between fork and exec); 200 ms, as the metadata database uses.
        let opts = Options {
            lock_timeout: Some(std::time::Duration::from_millis(200)),
            ..Options::default()
        };
        let db = Db::open(path, opts)
            .map_err(|e| bolt_error(e).context(format!("open metastore {}", path.display())))?;
        Ok(MetaStore { db })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    /// Runs `f` in a read transaction.
    pub fn view<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_read().map_err(bolt_error)?;
        f(&tx)
    }

    /// Runs `f` in the write transaction and commits when it returns `Ok`; on `Err` nothing
    /// it did is kept.
    pub fn update<T>(&self, f: impl FnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        let mut tx = self.db.begin_write().map_err(bolt_error)?;
        let out = f(&mut tx)?;
        tx.commit().map_err(bolt_error)?;
        Ok(out)
    }
}

/// Read access to the `v1` bucket from either kind of transaction.
pub trait ReadView {
    /// The `v1` bucket, if it exists.
    fn v1(&self) -> Result<Option<Bucket<'_>>>;
}

impl ReadView for ReadTx {
    fn v1(&self) -> Result<Option<Bucket<'_>>> {
        self.bucket(V1).map_err(bolt_error)
    }
}

impl ReadView for WriteTx {
    fn v1(&self) -> Result<Option<Bucket<'_>>> {
        self.bucket(V1).map_err(bolt_error)
    }
}

fn sub<'a>(b: &Bucket<'a>, name: &[u8]) -> Result<Option<Bucket<'a>>> {
    b.bucket(name).map_err(bolt_error)
}

fn get<'a>(b: &Bucket<'a>, key: &[u8]) -> Result<Option<&'a [u8]>> {
    b.get(key).map_err(bolt_error)
}

/// `v1/snapshots` (and `v1/parents`) or NotFound, as containerd's `withBucket`.
fn snapshots_bucket<T: ReadView>(tx: &T) -> Result<(Bucket<'_>, Option<Bucket<'_>>)> {
    let v1 = tx
        .v1()?
        .ok_or_else(|| Error::not_found("snapshot metastore has no v1 bucket"))?;
    let snaps = sub(&v1, SNAPSHOTS)?
        .ok_or_else(|| Error::not_found("snapshot metastore has no v1/snapshots bucket"))?;
    let parents = sub(&v1, PARENTS)?;
    Ok((snaps, parents))
}

fn snapshot_bucket<'a>(snaps: &Bucket<'a>, key: &str) -> Result<Bucket<'a>> {
    sub(snaps, key.as_bytes())?
        .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))
}

fn read_id(b: &Bucket<'_>) -> Result<u64> {
    let raw = get(b, ID)?.unwrap_or_default();
    read_uvarint(raw)
        .map(|(v, _)| v)
        .ok_or_else(|| Error::data_loss(format!("snapshot id {raw:02x?} is not a uvarint")))
}

fn read_kind(b: &Bucket<'_>) -> Result<Kind> {
    match get(b, KIND)? {
        Some([k]) => Kind::from_byte(*k),
        _ => Ok(Kind::Unknown),
    }
}

fn read_labels(b: &Bucket<'_>) -> Result<Labels> {
    let mut labels = Labels::new();
    if let Some(lb) = sub(b, LABELS)? {
        lb.for_each(|k, v| {
            if let Some(v) = v {
                labels.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
            Ok::<(), stowage_bolt::Error>(())
        })
        .map_err(bolt_error)?;
    }
    Ok(labels)
}

fn read_time(b: &Bucket<'_>, key: &[u8]) -> Result<SystemTime> {
    match get(b, key)? {
        Some(v) => unmarshal_time(v),
        None => Ok(SystemTime::UNIX_EPOCH),
    }
}

fn read_info(b: &Bucket<'_>, name: &str) -> Result<Info> {
    Ok(Info {
        kind: read_kind(b)?,
        name: name.to_string(),
        parent: String::from_utf8_lossy(get(b, PARENT)?.unwrap_or_default()).into_owned(),
        labels: read_labels(b)?,
        created_at: read_time(b, CREATED_AT)?,
        updated_at: read_time(b, UPDATED_AT)?,
    })
}

fn read_usage(b: &Bucket<'_>) -> Result<Usage> {
    let field = |key: &[u8]| -> Result<i64> { Ok(get(b, key)?.and_then(read_varint).unwrap_or(0)) };
    Ok(Usage {
        inodes: field(INODES)?,
        size: field(SIZE)?,
    })
}

/// The ids of the chain starting at `parent` (whose id is `pid`), nearest first.
fn parent_chain(snaps: &Bucket<'_>, parent: &Bucket<'_>, pid: u64) -> Result<Vec<String>> {
    let mut ids = vec![pid.to_string()];
    let mut cur = get(parent, PARENT)?.map(<[u8]>::to_vec);
    while let Some(key) = cur.filter(|k| !k.is_empty()) {
        let b = sub(snaps, &key)?.ok_or_else(|| {
            Error::not_found(format!(
                "parent {:?} in the chain does not exist",
                String::from_utf8_lossy(&key)
            ))
        })?;
        ids.push(read_id(&b)?.to_string());
        // A cycle would loop forever; a chain cannot be longer than the number of records.
        if ids.len() > 1 << 20 {
            return Err(Error::data_loss("snapshot parent chain does not end"));
        }
        cur = get(&b, PARENT)?.map(<[u8]>::to_vec);
    }
    Ok(ids)
}

fn parent_key(parent: u64, child: u64) -> Vec<u8> {
    let mut k = uvarint(parent);
    k.push(0);
    k.extend_from_slice(&uvarint(child));
    k
}

fn parent_prefix(parent: u64) -> Vec<u8> {
    let mut k = uvarint(parent);
    k.push(0);
    k
}

/// The id (as a decimal string), info and recorded usage of `key`.
pub fn get_info<T: ReadView>(tx: &T, key: &str) -> Result<(String, Info, Usage)> {
    let (snaps, _) = snapshots_bucket(tx)?;
    let b = snapshot_bucket(&snaps, key)?;
    Ok((
        read_id(&b)?.to_string(),
        read_info(&b, key)?,
        read_usage(&b)?,
    ))
}

/// The id, kind and parent ids of active or view snapshot `key`; FailedPrecondition for a
/// committed one.
pub fn get_snapshot<T: ReadView>(tx: &T, key: &str) -> Result<Snapshot> {
    let (snaps, _) = snapshots_bucket(tx)?;
    let b = snapshot_bucket(&snaps, key)?;
    let kind = read_kind(&b)?;
    if kind != Kind::Active && kind != Kind::View {
        return Err(Error::failed_precondition(format!(
            "snapshot {key:?} is {kind}, expected active or view"
        )));
    }
    let mut parent_ids = Vec::new();
    if let Some(pkey) = get(&b, PARENT)?.filter(|p| !p.is_empty()) {
        let pb = sub(&snaps, pkey)?.ok_or_else(|| {
            Error::not_found(format!(
                "parent {:?} of snapshot {key:?} does not exist",
                String::from_utf8_lossy(pkey)
            ))
        })?;
        parent_ids = parent_chain(&snaps, &pb, read_id(&pb)?)?;
    }
    Ok(Snapshot {
        id: read_id(&b)?.to_string(),
        kind,
        parent_ids,
    })
}

/// How a filter sees a snapshot: `kind`, `name`, `parent`, `labels.<key>`.
fn snapshot_field(info: &Info, path: &[&str]) -> Option<String> {
    match *path.first()? {
        "kind" => match info.kind {
            Kind::Unknown => None,
            k => Some(k.as_str().to_string()),
        },
        "name" => Some(info.name.clone()),
        "parent" => Some(info.parent.clone()),
        "labels" => map_field(&path[1..], &info.labels),
        _ => None,
    }
}

/// The infos of every snapshot matching any of `filters` (all when empty), in key order.
///
/// They are collected first so the caller may call back into the snapshotter for each.
pub fn walk_info<T: ReadView, S: AsRef<str>>(tx: &T, filters: &[S]) -> Result<Vec<Info>> {
    let filter = Filter::parse_all(filters)?;
    let mut out = Vec::new();
    for_each_record(tx, |name, b| {
        let info = read_info(b, &name)?;
        if filter.matches(&|p: &[&str]| snapshot_field(&info, p)) {
            out.push(info);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every record's id (decimal) → key, to find directories no record owns.
pub fn id_map<T: ReadView>(tx: &T) -> Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    for_each_record(tx, |name, b| {
        m.insert(read_id(b)?.to_string(), name);
        Ok(())
    })?;
    Ok(m)
}

/// Calls `f` with the key and bucket of every record in key order; none when the metastore
/// has no `v1/snapshots` yet.
fn for_each_record<T: ReadView>(
    tx: &T,
    mut f: impl FnMut(String, &Bucket<'_>) -> Result<()>,
) -> Result<()> {
    let Some(v1) = tx.v1()? else {
        return Ok(());
    };
    let Some(snaps) = sub(&v1, SNAPSHOTS)? else {
        return Ok(());
    };
    let mut c = snaps.cursor();
    let mut e = c.first().map_err(bolt_error)?;
    while let Some((k, v)) = e {
        if v.is_none() {
            let name = String::from_utf8_lossy(k).into_owned();
            let b = sub(&snaps, k)?
                .ok_or_else(|| Error::data_loss(format!("snapshot bucket {name:?} vanished")))?;
            f(name, &b)?;
        }
        e = c.next().map_err(bolt_error)?;
    }
    Ok(())
}

fn put(b: &mut BucketMut<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    b.put(key, value).map_err(bolt_error)
}

fn write_labels(b: &mut BucketMut<'_>, labels: &Labels) -> Result<()> {
    if b.bucket(LABELS).map_err(bolt_error)?.is_some() {
        b.delete_bucket(LABELS).map_err(bolt_error)?;
    }
    if labels.values().all(String::is_empty) {
        return Ok(());
    }
    let mut lb = b.create_bucket(LABELS).map_err(bolt_error)?;
    for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
        put(&mut lb, k.as_bytes(), v.as_bytes())?;
    }
    Ok(())
}

fn write_times(b: &mut BucketMut<'_>, created: SystemTime, updated: SystemTime) -> Result<()> {
    put(b, CREATED_AT, &marshal_time(created))?;
    put(b, UPDATED_AT, &marshal_time(updated))
}

fn put_snapshot(b: &mut BucketMut<'_>, id: u64, info: &Info) -> Result<()> {
    put(b, ID, &uvarint(id))?;
    put(b, KIND, &[info.kind.as_byte()])?;
    if !info.parent.is_empty() {
        put(b, PARENT, info.parent.as_bytes())?;
    }
    write_times(b, info.created_at, info.updated_at)?;
    write_labels(b, &info.labels)
}

/// Opens `v1` for writing or fails NotFound (for operations on existing records).
fn v1_mut(tx: &mut WriteTx) -> Result<BucketMut<'_>> {
    tx.bucket_mut(V1)
        .map_err(bolt_error)?
        .ok_or_else(|| Error::not_found("snapshot metastore has no v1 bucket"))
}

fn snapshots_mut<'a>(v1: &'a mut BucketMut<'_>) -> Result<BucketMut<'a>> {
    v1.bucket_mut(SNAPSHOTS)
        .map_err(bolt_error)?
        .ok_or_else(|| Error::not_found("snapshot metastore has no v1/snapshots bucket"))
}

/// Records a new active or view snapshot `key` on committed `parent` (empty for none).
///
/// Its id is the next sequence number of `v1/snapshots`. Errors: InvalidArgument for another
/// kind or a parent that is not committed, NotFound for a missing parent, AlreadyExists for a
/// taken key.
pub fn create_snapshot(
    tx: &mut WriteTx,
    kind: Kind,
    key: &str,
    parent: &str,
    labels: Labels,
) -> Result<Snapshot> {
    if kind != Kind::Active && kind != Kind::View {
        return Err(Error::invalid_argument(format!(
            "snapshot kind {kind} cannot be created; expected active or view"
        )));
    }
    if key.is_empty() {
        return Err(Error::invalid_argument("snapshot key is empty"));
    }
    let mut v1 = tx.create_bucket_if_not_exists(V1).map_err(bolt_error)?;
    let mut snaps = v1
        .create_bucket_if_not_exists(SNAPSHOTS)
        .map_err(bolt_error)?;
    let mut parent_ids = Vec::new();
    let mut pid = None;
    if !parent.is_empty() {
        let view = snaps.view();
        let pb = sub(&view, parent.as_bytes())?.ok_or_else(|| {
            Error::not_found(format!("parent snapshot {parent:?} does not exist"))
        })?;
        let pkind = read_kind(&pb)?;
        if pkind != Kind::Committed {
            return Err(Error::invalid_argument(format!(
                "parent {parent:?} is {pkind}, expected a committed snapshot"
            )));
        }
        let id = read_id(&pb)?;
        parent_ids = parent_chain(&view, &pb, id)?;
        pid = Some(id);
    }
    if snaps.bucket(key.as_bytes()).map_err(bolt_error)?.is_some() {
        return Err(Error::already_exists(format!(
            "snapshot {key:?} already exists"
        )));
    }
    let id = snaps.next_sequence().map_err(bolt_error)?;
    let now = SystemTime::now();
    let info = Info {
        kind,
        name: key.to_string(),
        parent: parent.to_string(),
        labels,
        created_at: now,
        updated_at: now,
    };
    {
        let mut sb = snaps.create_bucket(key.as_bytes()).map_err(bolt_error)?;
        put_snapshot(&mut sb, id, &info)?;
    }
    let mut parents = v1
        .create_bucket_if_not_exists(PARENTS)
        .map_err(bolt_error)?;
    if let Some(pid) = pid {
        put(&mut parents, &parent_key(pid, id), key.as_bytes())?;
    }
    Ok(Snapshot {
        id: id.to_string(),
        kind,
        parent_ids,
    })
}

/// Updates the labels of `info.name` as `fieldpaths` say (see
/// [`fieldpath::apply_labels`]), stamps `updatedat`, and returns the stored info.
pub fn update_info(tx: &mut WriteTx, info: Info, fieldpaths: &[String]) -> Result<Info> {
    let mut v1 = v1_mut(tx)?;
    let mut snaps = snapshots_mut(&mut v1)?;
    let mut sb = snaps
        .bucket_mut(info.name.as_bytes())
        .map_err(bolt_error)?
        .ok_or_else(|| Error::not_found(format!("snapshot {:?} does not exist", info.name)))?;
    let mut stored = read_info(&sb.view(), &info.name)?;
    fieldpath::apply_labels(&mut stored.labels, &info.labels, fieldpaths, "labels")
        .map_err(|e| e.context(format!("snapshot {:?}", info.name)))?;
    stored.updated_at = SystemTime::now();
    write_times(&mut sb, stored.created_at, stored.updated_at)?;
    write_labels(&mut sb, &stored.labels)?;
    Ok(stored)
}

/// Commits active snapshot `key` as `name` with `usage` and `labels`; returns the id, which
/// the committed record keeps.
///
/// AlreadyExists when `name` is taken, NotFound when `key` is missing, FailedPrecondition
/// when `key` is not active.
pub fn commit_active(
    tx: &mut WriteTx,
    key: &str,
    name: &str,
    usage: Usage,
    labels: Labels,
) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid_argument("committed snapshot name is empty"));
    }
    let mut v1 = v1_mut(tx)?;
    let mut snaps = snapshots_mut(&mut v1)?;
    let (id, mut info) = {
        let view = snaps.view();
        if sub(&view, name.as_bytes())?.is_some() {
            return Err(Error::already_exists(format!(
                "committed snapshot {name:?} already exists"
            )));
        }
        let sb = sub(&view, key.as_bytes())?
            .ok_or_else(|| Error::not_found(format!("active snapshot {key:?} does not exist")))?;
        (read_id(&sb)?, read_info(&sb, key)?)
    };
    if info.kind != Kind::Active {
        return Err(Error::failed_precondition(format!(
            "snapshot {key:?} is {}, expected active",
            info.kind
        )));
    }
    let pid = if info.parent.is_empty() {
        None
    } else {
        let view = snaps.view();
        let pb = sub(&view, info.parent.as_bytes())?.ok_or_else(|| {
            Error::not_found(format!(
                "parent {:?} of snapshot {key:?} does not exist",
                info.parent
            ))
        })?;
        Some(read_id(&pb)?)
    };
    info.kind = Kind::Committed;
    info.name = name.to_string();
    info.created_at = SystemTime::now();
    info.updated_at = info.created_at;
    info.labels = labels;
    {
        let mut db = snaps.create_bucket(name.as_bytes()).map_err(bolt_error)?;
        put_snapshot(&mut db, id, &info)?;
        put(&mut db, INODES, &varint(usage.inodes))?;
        put(&mut db, SIZE, &varint(usage.size))?;
    }
    snaps.delete_bucket(key.as_bytes()).map_err(bolt_error)?;
    if let Some(pid) = pid {
        let mut parents = v1
            .create_bucket_if_not_exists(PARENTS)
            .map_err(bolt_error)?;
        put(&mut parents, &parent_key(pid, id), name.as_bytes())?;
    }
    Ok(id.to_string())
}

/// Removes the record of `key`; returns its id and kind. FailedPrecondition while another
/// snapshot names it as parent.
pub fn remove(tx: &mut WriteTx, key: &str) -> Result<(String, Kind)> {
    let (id, info, pid) = {
        let (snaps, parents) = snapshots_bucket(tx)?;
        let sb = snapshot_bucket(&snaps, key)?;
        let id = read_id(&sb)?;
        let info = read_info(&sb, key)?;
        if let Some(parents) = &parents {
            let prefix = parent_prefix(id);
            let mut c = parents.cursor();
            if let Some((k, _)) = c.seek(&prefix).map_err(bolt_error)? {
                if k.starts_with(&prefix) {
                    return Err(Error::failed_precondition(format!(
                        "cannot remove snapshot {key:?}: it has children"
                    )));
                }
            }
        }
        let pid = if info.parent.is_empty() {
            None
        } else {
            let pb = snapshot_bucket(&snaps, &info.parent)?;
            Some(read_id(&pb)?)
        };
        (id, info, pid)
    };
    let mut v1 = v1_mut(tx)?;
    if let Some(pid) = pid {
        if let Some(mut parents) = v1.bucket_mut(PARENTS).map_err(bolt_error)? {
            parents.delete(&parent_key(pid, id)).map_err(bolt_error)?;
        }
    }
    let mut snaps = snapshots_mut(&mut v1)?;
    snaps.delete_bucket(key.as_bytes()).map_err(bolt_error)?;
    Ok((id.to_string(), info.kind))
}
