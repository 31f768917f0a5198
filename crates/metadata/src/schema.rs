//! The bucket tree of containerd 1.6's meta.db (schema `v1`, version 3), and the helpers every
//! store uses to walk it, read and write labels and timestamps.

use std::time::SystemTime;

use stowage_bolt::{Bucket, BucketMut, WriteTx};
use stowage_core_types::{Error, Labels, Result};

use crate::encoding::{decode_time, encode_time};

/// The top-level bucket: the schema name.
pub const SCHEMA: &[u8] = b"v1";
/// The database version containerd 1.6 writes (`dbVersion`).
pub const DB_VERSION: i64 = 3;

/// Key of the version value inside `v1`.
pub const KEY_VERSION: &[u8] = b"version";
pub(crate) const LABELS: &[u8] = b"labels";
pub(crate) const ANNOTATIONS: &[u8] = b"annotations";
pub(crate) const IMAGES: &[u8] = b"images";
pub(crate) const CONTAINERS: &[u8] = b"containers";
pub(crate) const SNAPSHOTS: &[u8] = b"snapshots";
pub(crate) const CONTENT: &[u8] = b"content";
pub(crate) const BLOB: &[u8] = b"blob";
pub(crate) const INGESTS: &[u8] = b"ingests";
pub(crate) const LEASES: &[u8] = b"leases";
/// The pre-1.2 flat ingest bucket that migration 2 replaces.
pub(crate) const DEPRECATED_INGEST: &[u8] = b"ingest";

pub(crate) const DIGEST: &[u8] = b"digest";
pub(crate) const MEDIATYPE: &[u8] = b"mediatype";
pub(crate) const SIZE: &[u8] = b"size";
pub(crate) const IMAGE: &[u8] = b"image";
pub(crate) const RUNTIME: &[u8] = b"runtime";
pub(crate) const NAME: &[u8] = b"name";
pub(crate) const PARENT: &[u8] = b"parent";
pub(crate) const CHILDREN: &[u8] = b"children";
pub(crate) const OPTIONS: &[u8] = b"options";
pub(crate) const SPEC: &[u8] = b"spec";
pub(crate) const SNAPSHOT_KEY: &[u8] = b"snapshotKey";
pub(crate) const SNAPSHOTTER: &[u8] = b"snapshotter";
pub(crate) const TARGET: &[u8] = b"target";
pub(crate) const EXTENSIONS: &[u8] = b"extensions";
pub(crate) const CREATED_AT: &[u8] = b"createdat";
pub(crate) const UPDATED_AT: &[u8] = b"updatedat";
pub(crate) const EXPECTED: &[u8] = b"expected";
pub(crate) const REF: &[u8] = b"ref";
pub(crate) const EXPIRE_AT: &[u8] = b"expireat";

/// Maps engine errors onto our error kinds.
pub(crate) fn bolt_err(e: stowage_bolt::Error) -> Error {
    use stowage_bolt::Error as B;
    match e {
        B::Locked { path, waited_ms } => Error::unavailable(format!(
            "{} is locked by another process (a running containerd or stowage using this root?); gave up after {waited_ms} ms",
            path.display()
        )),
        B::Io { what, source } => Error::io(format!("meta.db: {what}"), source),
        B::Corrupt(m) => Error::data_loss(format!("meta.db: corrupt database: {m}")),
        B::ReadOnly => Error::failed_precondition("meta.db is opened read-only"),
        B::BucketNotFound(b) => Error::not_found(format!("meta.db bucket {b}")),
        B::BucketExists(b) => Error::already_exists(format!("meta.db bucket {b}")),
        B::InvalidArgument(m) => Error::invalid_argument(format!("meta.db: {m}")),
        other => Error::unknown(format!("meta.db: {other}")),
    }
}

/// `.b()?` turns an engine result into ours.
pub(crate) trait BoltResult<T> {
    fn b(self) -> Result<T>;
}

impl<T> BoltResult<T> for stowage_bolt::Result<T> {
    fn b(self) -> Result<T> {
        self.map_err(bolt_err)
    }
}

/// The bucket at `path` below `root`, if every step exists.
pub(crate) fn get_path<'a>(root: Bucket<'a>, path: &[&[u8]]) -> Result<Option<Bucket<'a>>> {
    let mut cur = root;
    for name in path {
        match cur.bucket(name).b()? {
            Some(b) => cur = b,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Opens the bucket at `path` (from the top level) for writing, if every step exists.
pub(crate) fn open_path<'t>(tx: &'t mut WriteTx, path: &[&[u8]]) -> Result<Option<BucketMut<'t>>> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Error::invalid_argument("empty bucket path"));
    };
    let Some(mut cur) = tx.bucket_mut(first).b()? else {
        return Ok(None);
    };
    for name in rest {
        match cur.into_bucket_mut(name).b()? {
            Some(b) => cur = b,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Opens the bucket at `path`, creating missing steps.
pub(crate) fn create_path<'t>(tx: &'t mut WriteTx, path: &[&[u8]]) -> Result<BucketMut<'t>> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Error::invalid_argument("empty bucket path"));
    };
    let mut cur = tx.create_bucket_if_not_exists(first).b()?;
    for name in rest {
        cur = create_child(cur, name)?;
    }
    Ok(cur)
}

/// Creates (if needed) and opens child `name`, consuming the parent handle.
pub(crate) fn create_child<'t>(mut parent: BucketMut<'t>, name: &[u8]) -> Result<BucketMut<'t>> {
    parent.create_bucket_if_not_exists(name).b()?;
    parent
        .into_bucket_mut(name)
        .b()?
        .ok_or_else(|| Error::unknown("bucket vanished right after creation"))
}

/// Opens existing child `name`, consuming the parent handle.
pub(crate) fn child<'t>(parent: BucketMut<'t>, name: &[u8]) -> Result<Option<BucketMut<'t>>> {
    parent.into_bucket_mut(name).b()
}

/// Names of the nested buckets of `b` (values are skipped).
pub(crate) fn bucket_names(b: Bucket<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    b.for_each(|k, v| {
        if v.is_none() {
            out.push(k.to_vec());
        }
        Ok::<(), stowage_bolt::Error>(())
    })
    .b()?;
    Ok(out)
}

/// All keys of `b` (values and buckets).
pub(crate) fn keys(b: Bucket<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    b.for_each(|k, _| {
        out.push(k.to_vec());
        Ok::<(), stowage_bolt::Error>(())
    })
    .b()?;
    Ok(out)
}

/// Whether a bucket has no entries (absent counts as empty).
pub(crate) fn is_empty(b: Option<Bucket<'_>>) -> Result<bool> {
    match b {
        None => Ok(true),
        Some(b) => Ok(b.cursor().first().b()?.is_none()),
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a string map bucket (`labels`, `annotations`); absent reads as empty.
pub(crate) fn read_map(b: Bucket<'_>, name: &[u8]) -> Result<Labels> {
    let mut out = Labels::new();
    if let Some(lb) = b.bucket(name).b()? {
        lb.for_each(|k, v| {
            if let Some(v) = v {
                out.insert(lossy(k), lossy(v));
            }
            Ok::<(), stowage_bolt::Error>(())
        })
        .b()?;
    }
    Ok(out)
}

/// Reads the `labels` bucket.
pub(crate) fn read_labels(b: Bucket<'_>) -> Result<Labels> {
    read_map(b, LABELS)
}

/// Writes a string map bucket as containerd does: the old bucket is deleted, and a new one is
/// created only when there is something to put in it; empty values are dropped.
pub(crate) fn write_map(b: &mut BucketMut<'_>, name: &[u8], map: &Labels) -> Result<()> {
    if b.bucket(name).b()?.is_some() {
        b.delete_bucket(name).b()?;
    }
    if map.values().all(|v| v.is_empty()) {
        return Ok(());
    }
    let mut lb = b.create_bucket(name).b()?;
    for (k, v) in map.iter().filter(|(_, v)| !v.is_empty()) {
        lb.put(k.as_bytes(), v.as_bytes()).b()?;
    }
    Ok(())
}

/// Writes the `labels` bucket.
pub(crate) fn write_labels(b: &mut BucketMut<'_>, labels: &Labels) -> Result<()> {
    write_map(b, LABELS, labels)
}

/// Validates labels with containerd's rule, naming the object.
pub(crate) fn validate_labels(what: &str, labels: &Labels) -> Result<()> {
    stowage_core_types::labels::validate_all(labels).map_err(|e| e.context(what))
}

/// Reads a timestamp value; `None` when absent.
pub(crate) fn read_time(b: Bucket<'_>, key: &[u8]) -> Result<Option<SystemTime>> {
    match b.get(key).b()? {
        None => Ok(None),
        Some(v) => decode_time(v)
            .map(Some)
            .map_err(|e| e.context(format!("reading {}", lossy(key)))),
    }
}

/// Reads `createdat` and `updatedat`, defaulting to the Unix epoch when absent.
pub(crate) fn read_timestamps(b: Bucket<'_>) -> Result<(SystemTime, SystemTime)> {
    Ok((
        read_time(b, CREATED_AT)?.unwrap_or(SystemTime::UNIX_EPOCH),
        read_time(b, UPDATED_AT)?.unwrap_or(SystemTime::UNIX_EPOCH),
    ))
}

/// Writes `createdat` and `updatedat`.
pub(crate) fn write_timestamps(
    b: &mut BucketMut<'_>,
    created: SystemTime,
    updated: SystemTime,
) -> Result<()> {
    b.put(CREATED_AT, &encode_time(created)).b()?;
    b.put(UPDATED_AT, &encode_time(updated)).b()
}
