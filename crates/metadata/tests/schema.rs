//! Opening meta.db: location, mode, version, migrations, refusal of newer schemas, locking.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use stowage_bolt::Options as BoltOptions;
use stowage_core_types::ErrorKind;
use stowage_metadata::{db_path, Db, Options};

fn raw(path: &std::path::Path) -> stowage_bolt::Db {
    stowage_bolt::Db::open(path, BoltOptions::default()).unwrap()
}

#[test]
fn fresh_root_gets_v1_version_3_at_containerd_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let path = dir.path().join("io.containerd.metadata.v1.bolt/meta.db");
    assert_eq!(db.path(), path);
    assert_eq!(db_path(dir.path()), path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // umask may clear bits but never adds them
    assert_eq!(mode & !0o644, 0, "mode {mode:o}");
    assert_eq!(db.version().unwrap(), 3);
    drop(db);
    let b = raw(&path);
    let tx = b.begin_read().unwrap();
    let v1 = tx.bucket(b"v1").unwrap().expect("v1 bucket");
    assert_eq!(v1.get(b"version").unwrap(), Some(&[0x06][..]));
    assert!(tx.bucket(b"version").unwrap().is_none());
}

#[test]
fn second_open_fails_fast_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), Options::default()).unwrap();
    let t = std::time::Instant::now();
    let err = Db::open(
        dir.path(),
        Options {
            lock_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("locked by another process"), "{msg}");
    assert!(msg.contains("meta.db"), "{msg}");
}

fn file_bytes(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn newer_version_is_refused_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let b = raw(&path);
        let mut tx = b.begin_write().unwrap();
        let mut v1 = tx.create_bucket(b"v1").unwrap();
        v1.put(b"version", &stowage_metadata::encode_varint(4))
            .unwrap();
        tx.commit().unwrap();
    }
    let before = file_bytes(&path);
    let err = Db::open_file(&path, Options::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("version 4 is newer"), "{err}");
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn unknown_schema_is_refused_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let b = raw(&path);
        let mut tx = b.begin_write().unwrap();
        tx.create_bucket(b"v2").unwrap();
        tx.commit().unwrap();
    }
    let before = file_bytes(&path);
    let err = Db::open_file(&path, Options::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("unknown schema \"v2\""), "{err}");
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn version_3_open_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(Db::open_file(&path, Options::default()).unwrap());
    let txid = raw(&path).begin_read().unwrap().id();
    drop(Db::open_file(&path, Options::default()).unwrap());
    assert_eq!(raw(&path).begin_read().unwrap().id(), txid);
}

#[test]
fn migrates_version_0_child_links_and_flat_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let b = raw(&path);
        let mut tx = b.begin_write().unwrap();
        let mut v1 = tx.create_bucket(b"v1").unwrap();
        v1.put(b"version", &stowage_metadata::encode_varint(0))
            .unwrap();
        let mut ns = v1.create_bucket(b"default").unwrap();
        let mut snaps = ns.create_bucket(b"snapshots").unwrap();
        let mut ov = snaps.create_bucket(b"overlayfs").unwrap();
        ov.create_bucket(b"base")
            .unwrap()
            .put(b"name", b"default/1/base")
            .unwrap();
        let mut child = ov.create_bucket(b"child").unwrap();
        child.put(b"name", b"default/2/child").unwrap();
        child.put(b"parent", b"base").unwrap();
        let mut orphan = ov.create_bucket(b"orphan").unwrap();
        orphan.put(b"parent", b"missing").unwrap();
        let mut content = ns.create_bucket(b"content").unwrap();
        let mut old = content.create_bucket(b"ingest").unwrap();
        old.put(b"pull-1", b"default/1/pull-1").unwrap();
        tx.commit().unwrap();
    }
    let db = Db::open_file(&path, Options::default()).unwrap();
    assert_eq!(db.version().unwrap(), 3);
    drop(db);
    let b = raw(&path);
    let tx = b.begin_read().unwrap();
    let ns = tx
        .bucket(b"v1")
        .unwrap()
        .unwrap()
        .bucket(b"default")
        .unwrap()
        .unwrap();
    let ov = ns
        .bucket(b"snapshots")
        .unwrap()
        .unwrap()
        .bucket(b"overlayfs")
        .unwrap()
        .unwrap();
    let children = ov
        .bucket(b"base")
        .unwrap()
        .unwrap()
        .bucket(b"children")
        .unwrap()
        .unwrap();
    assert_eq!(children.get(b"child").unwrap(), Some(&b""[..]));
    assert!(ov.bucket(b"missing").unwrap().is_none());
    let content = ns.bucket(b"content").unwrap().unwrap();
    assert!(content.bucket(b"ingest").unwrap().is_none());
    let ing = content
        .bucket(b"ingests")
        .unwrap()
        .unwrap()
        .bucket(b"pull-1")
        .unwrap()
        .unwrap();
    assert_eq!(ing.get(b"ref").unwrap(), Some(&b"default/1/pull-1"[..]));
}

#[test]
fn a_file_that_is_not_bolt_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let junk: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    let err = Db::open_file(&path, Options::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("meta.db"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}
