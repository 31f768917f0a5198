//! The namespaced content store: the conformance suite, namespace isolation, sharing, ingest
//! records and leases.

mod common;

use std::io::Write as _;
use std::sync::Arc;

use common::{bucket_at, desc};
use stowage_content::testsuite::TestStore;
use stowage_content::LocalStore;
use stowage_core_types::content::{
    read_blob, write_blob, IngestManager, Ingester, Manager, Provider, WriterOptions,
};
use stowage_core_types::{ErrorKind, Labels};
use stowage_metadata::{decode_time, Db, Options, Resource};

fn open_with_backend() -> (tempfile::TempDir, Db, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = common::open_with_backend(dir.path(), Options::default());
    (dir, db, backend)
}

fn namespaced() -> TestStore {
    let (dir, db, _) = open_with_backend();
    let store = db.content_store("testing", None).unwrap();
    TestStore::new(Arc::new(store), (dir, db))
}

stowage_content::content_store_conformance!(namespaced);

/// The suite again with every write done under a lease.
mod leased {
    use super::*;

    fn namespaced_leased() -> TestStore {
        let (dir, db, _) = open_with_backend();
        db.leases("testing")
            .unwrap()
            .create("work", &Labels::new())
            .unwrap();
        let store = db.content_store("testing", Some("work")).unwrap();
        TestStore::new(Arc::new(store), (dir, db))
    }

    stowage_content::content_store_conformance!(namespaced_leased);
}

#[test]
fn blobs_are_visible_only_where_committed_and_shared_without_transfer() {
    let (_d, db, backend) = open_with_backend();
    let a = db.content_store("a", None).unwrap();
    let b = db.content_store("b", None).unwrap();
    let data = b"shared blob data";
    let d = desc(data);
    write_blob(&a, "ref-a", &mut &data[..], &d, Labels::new()).unwrap();
    assert_eq!(a.info(&d.digest).unwrap().size, data.len() as u64);
    assert_eq!(b.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(b.reader_at(&d).err().unwrap().kind(), ErrorKind::NotFound);

    // Namespace b opens a writer with the expected digest: no data needed, commit directly.
    let mut w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    let st = w.status().unwrap();
    assert_eq!(st.offset, data.len() as u64);
    // The ingest record says it is shared: `expected` set, backend ref namespaced.
    {
        let tx = db.bolt().begin_read().unwrap();
        let ing = bucket_at(&tx, &["v1", "b", "content", "ingests", "ref-b"]);
        assert_eq!(ing.get(b"ref").unwrap(), Some(&b"b/1/ref-b"[..]));
        assert_eq!(
            ing.get(b"expected").unwrap(),
            Some(d.digest.as_str().as_bytes())
        );
        let exp = decode_time(ing.get(b"expireat").unwrap().unwrap()).unwrap();
        let left = exp.duration_since(std::time::SystemTime::now()).unwrap();
        assert!(left > std::time::Duration::from_secs(23 * 3600), "{left:?}");
    }
    w.commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap();
    assert_eq!(read_blob(&b, &d).unwrap(), data);
    // Deleting from one namespace leaves the other and the backend alone.
    a.delete(&d.digest).unwrap();
    assert_eq!(a.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(b.info(&d.digest).is_ok());
    assert!(backend.info(&d.digest).is_ok());
    // An expected digest already in the namespace is AlreadyExists.
    assert_eq!(
        b.writer(WriterOptions::with_ref("again").expect(d.clone()))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::AlreadyExists
    );
    // Statuses are per namespace.
    let _w = a.writer(WriterOptions::with_ref("pending")).unwrap();
    assert_eq!(a.list_statuses(&[]).unwrap().len(), 1);
    assert!(b.list_statuses(&[]).unwrap().is_empty());
}

#[test]
fn work_under_a_lease_is_added_to_it_and_ingests_get_no_expiry() {
    let (_d, db, _) = open_with_backend();
    db.leases("ns")
        .unwrap()
        .create("pull", &Labels::new())
        .unwrap();
    let cs = db.content_store("ns", Some("pull")).unwrap();
    let data = b"leased content";
    let d = desc(data);
    let mut w = cs
        .writer(WriterOptions::with_ref("r1").expect(d.clone()))
        .unwrap();
    {
        let tx = db.bolt().begin_read().unwrap();
        let ing = bucket_at(&tx, &["v1", "ns", "content", "ingests", "r1"]);
        assert!(ing.get(b"expireat").unwrap().is_none());
    }
    assert_eq!(
        db.leases("ns").unwrap().list_resources("pull").unwrap(),
        vec![Resource::ingest("r1")]
    );
    w.write_all(data).unwrap();
    w.commit(None, Some(&d.digest), Labels::new()).unwrap();
    assert_eq!(
        db.leases("ns").unwrap().list_resources("pull").unwrap(),
        vec![Resource::content(&d.digest)]
    );
    // A lease that does not exist makes the work fail.
    let bad = db.content_store("ns", Some("missing")).unwrap();
    assert_eq!(
        bad.writer(WriterOptions::with_ref("r2"))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn abort_removes_the_record_and_backend_ingest() {
    let (_d, db, backend) = open_with_backend();
    let cs = db.content_store("ns", None).unwrap();
    let mut w = cs.writer(WriterOptions::with_ref("r")).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert_eq!(cs.status("r").unwrap().offset, 7);
    assert_eq!(backend.status("ns/1/r").unwrap().offset, 7);
    cs.abort("r").unwrap();
    assert_eq!(cs.status("r").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        backend.status("ns/1/r").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(cs.abort("r").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn without_backend_content_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        db.content_store("ns", None).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
}
