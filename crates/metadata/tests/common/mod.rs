//! Helpers shared by the metadata integration tests: meta.db over a real content backend,
//! blobs written through a store, and waiting on the collector.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage_bolt::{Bucket, ReadTx};
use stowage_content::LocalStore;
use stowage_core_types::content::{write_blob, Ingester};
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest, Labels};
use stowage_digest_identity::Digester;
use stowage_metadata::{Db, Options};

/// Opens meta.db under `root` with `options`, its content backend a [`LocalStore`] at
/// containerd's path under `root`; returns the database and the backend.
pub fn open_with_backend(root: &Path, options: Options) -> (Db, Arc<LocalStore>) {
    let backend =
        Arc::new(LocalStore::open(root.join("io.containerd.content.v1.content")).unwrap());
    let db = Db::open(
        root,
        Options {
            content: Some(backend.clone()),
            ..options
        },
    )
    .unwrap();
    (db, backend)
}

/// [`open_with_backend`] with the snapshotters `snapshotters` (by name) and nothing else set.
pub fn open_with_snapshotters(
    root: &Path,
    snapshotters: Vec<(&str, Arc<dyn Snapshotter>)>,
) -> (Db, Arc<LocalStore>) {
    let snapshotters: BTreeMap<String, Arc<dyn Snapshotter>> = snapshotters
        .into_iter()
        .map(|(name, s)| (name.to_string(), s))
        .collect();
    open_with_backend(
        root,
        Options {
            snapshotters,
            ..Default::default()
        },
    )
}

/// The bucket at `path` from the root of `tx`; panics naming the first one missing.
pub fn bucket_at<'t>(tx: &'t ReadTx, path: &[&str]) -> Bucket<'t> {
    let (first, rest) = path.split_first().expect("a bucket path");
    let mut b = tx
        .bucket(first.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("no bucket {first}"));
    for name in rest {
        b = b
            .bucket(name.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("no bucket {name} on the path {path:?}"));
    }
    b
}

/// The keys `s` walks over.
pub fn snapshot_keys(s: &dyn Snapshotter) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    s.walk(
        &mut |i| {
            keys.insert(i.name);
            Ok(())
        },
        &[],
    )
    .unwrap();
    keys
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    let mut h = Digester::sha256();
    h.update(data);
    h.finish()
}

/// `data` described as an octet stream.
pub fn desc(data: &[u8]) -> Descriptor {
    Descriptor::new("application/octet-stream", sha256(data), data.len() as u64)
}

/// Writes `data` through `store` under the ingest ref `reference`, committing with
/// `labels`; returns its digest.
pub fn put(store: &dyn Ingester, reference: &str, data: &[u8], labels: Labels) -> Digest {
    let desc = desc(data);
    write_blob(store, reference, &mut &data[..], &desc, labels).unwrap();
    desc.digest
}

/// Polls `f` until it holds (true) or 20 s pass (false): for the collector's thread.
pub fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
