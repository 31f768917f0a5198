//! The content sharing policies (containerd's bolt `content_sharing_policy`): the same
//! sequences run under "shared" and "isolated", the conformance suite under "isolated", and
//! the namespace label containerd 1.7 added (`containerd.io/namespace.shareable`), which 1.6
//! and stowage do not honour.

mod common;

use std::io::Write as _;
use std::sync::Arc;

use common::desc;
use stowage_content::testsuite::TestStore;
use stowage_content::LocalStore;
use stowage_core_types::content::{
    read_blob, write_blob, IngestManager, Ingester, Manager, Provider, Writer, WriterOptions,
};
use stowage_core_types::{ErrorKind, Labels};
use stowage_metadata::{ContentSharing, Db, Options, Resource};

/// containerd 1.7's label that makes a namespace's content shared under "isolated".
const SHAREABLE: &str = "containerd.io/namespace.shareable";

fn open(sharing: ContentSharing) -> (tempfile::TempDir, Db, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = common::open_with_backend(
        dir.path(),
        Options {
            content_sharing: sharing,
            no_sync: true,
            ..Default::default()
        },
    );
    (dir, db, backend)
}

fn isolated() -> TestStore {
    let (dir, db, _) = open(ContentSharing::Isolated);
    let store = db.content_store("testing", None).unwrap();
    TestStore::new(Arc::new(store), (dir, db))
}

// Every case holds under "isolated": the suite works in one namespace, where the policies
// differ only for a blob the backend keeps after the namespace deleted it; the one case that
// adds such a blob again (`delete_blob`) goes through `write_blob`, which sends the bytes
// whenever the writer's offset says they are missing, so it passes under both policies.
stowage_content::content_store_conformance!(isolated);

#[test]
fn default_policy_is_shared_and_the_db_reports_its_policy() {
    assert_eq!(Options::default().content_sharing, ContentSharing::Shared);
    assert_eq!(ContentSharing::default(), ContentSharing::Shared);
    for p in [ContentSharing::Shared, ContentSharing::Isolated] {
        let (_d, db, _) = open(p);
        assert_eq!(db.content_sharing(), p);
    }
}

/// A blob committed in namespace `a`, then namespace `b` opens a writer expecting it.
fn committed_in_a(
    sharing: ContentSharing,
    data: &[u8],
) -> (tempfile::TempDir, Db, Arc<LocalStore>) {
    let (dir, db, backend) = open(sharing);
    let a = db.content_store("a", None).unwrap();
    write_blob(&a, "ref-a", &mut &data[..], &desc(data), Labels::new()).unwrap();
    (dir, db, backend)
}

#[test]
fn visibility_is_per_namespace_under_both_policies() {
    let data = b"visible only where committed";
    let d = desc(data);
    for p in [ContentSharing::Shared, ContentSharing::Isolated] {
        let (_dir, db, backend) = committed_in_a(p, data);
        let a = db.content_store("a", None).unwrap();
        let b = db.content_store("b", None).unwrap();
        assert!(backend.info(&d.digest).is_ok(), "{p:?}");
        assert_eq!(a.info(&d.digest).unwrap().size, data.len() as u64, "{p:?}");
        let e = b.info(&d.digest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
        assert!(e.message().contains(d.digest.as_str()), "{p:?}: {e}");
        let e = b.reader_at(&d).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
        let mut seen = 0;
        b.walk(
            &mut |_| {
                seen += 1;
                Ok(())
            },
            &[],
        )
        .unwrap();
        assert_eq!(seen, 0, "{p:?}");
        let e = b.status("ref-a").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
        let e = b.delete(&d.digest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
    }
}

#[test]
fn shared_commits_a_known_digest_without_data() {
    let data = b"shared: digest is enough";
    let d = desc(data);
    let (_dir, db, _) = committed_in_a(ContentSharing::Shared, data);
    let b = db.content_store("b", None).unwrap();
    let mut w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, data.len() as u64);
    // No backend ingest exists for it, so the namespace's Status does not find one (as in
    // containerd, whose Status asks the backend for the namespaced ingest).
    let e = b.status("ref-b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    w.commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap();
    assert_eq!(read_blob(&b, &d).unwrap(), data);
}

#[test]
fn isolated_needs_the_whole_blob_before_commit() {
    let data = b"isolated: prove you have it";
    let d = desc(data);
    let (_dir, db, backend) = committed_in_a(ContentSharing::Isolated, data);
    let b = db.content_store("b", None).unwrap();

    let mut w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    // A real ingest: nothing written yet, though the backend has the blob.
    let st = w.status().unwrap();
    assert_eq!(st.offset, 0);
    assert_eq!(st.total, data.len() as u64);
    assert_eq!(st.reference, "ref-b");
    let st = b.status("ref-b").unwrap();
    assert_eq!((st.offset, st.total), (0, data.len() as u64));
    assert_eq!(backend.list_statuses(&[]).unwrap().len(), 1);

    // Committing without the data fails as containerd's size check does; nothing is added.
    let e = w
        .commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.message().contains("failed size validation"), "{e}");
    assert!(e.message().contains(&format!("0 != {}", data.len())), "{e}");
    assert_eq!(b.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);

    // Without a size the digest check catches it.
    let e = w.commit(None, Some(&d.digest), Labels::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert_eq!(b.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);

    drop(w);

    // The whole blob: committed into b, the backend keeps its one copy and drops the ingest.
    let mut w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    w.write_all(data).unwrap();
    assert_eq!(b.status("ref-b").unwrap().offset, data.len() as u64);
    let labels = Labels::from([("k".to_string(), "v".to_string())]);
    w.commit(Some(data.len() as u64), Some(&d.digest), labels.clone())
        .unwrap();
    let info = b.info(&d.digest).unwrap();
    assert_eq!((info.size, info.labels), (data.len() as u64, labels));
    assert_eq!(read_blob(&b, &d).unwrap(), data);
    assert!(backend.list_statuses(&[]).unwrap().is_empty());
    assert_eq!(b.status("ref-b").unwrap_err().kind(), ErrorKind::NotFound);
    // a's record is untouched.
    assert!(db
        .content_store("a", None)
        .unwrap()
        .info(&d.digest)
        .unwrap()
        .labels
        .is_empty());
    // Now b has it: expecting it again is AlreadyExists, under isolated as under shared.
    let e = b
        .writer(WriterOptions::with_ref("again").expect(d.clone()))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
}

#[test]
fn isolated_rejects_other_bytes_for_a_known_digest() {
    let data = b"the real content";
    let d = desc(data);
    let (_dir, db, backend) = committed_in_a(ContentSharing::Isolated, data);
    let b = db.content_store("b", None).unwrap();
    let mut w = b
        .writer(WriterOptions::with_ref("forged").expect(d.clone()))
        .unwrap();
    w.write_all(b"the fake content").unwrap();
    let e = w
        .commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert_eq!(b.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);
    // The backend copy is the real one still.
    assert_eq!(read_blob(backend.as_ref(), &d).unwrap(), data);
}

#[test]
fn isolated_resumes_a_partial_write_across_writers() {
    let data = b"written in two sessions by namespace b";
    let d = desc(data);
    let (_dir, db, _) = committed_in_a(ContentSharing::Isolated, data);
    let b = db.content_store("b", None).unwrap();
    {
        let mut w = b
            .writer(WriterOptions::with_ref("resume").expect(d.clone()))
            .unwrap();
        w.write_all(&data[..10]).unwrap();
    }
    let mut w = b
        .writer(WriterOptions::with_ref("resume").expect(d.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, 10);
    w.write_all(&data[10..]).unwrap();
    w.commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap();
    assert_eq!(read_blob(&b, &d).unwrap(), data);
}

#[test]
fn isolated_applies_after_delete_in_the_same_namespace() {
    // The backend keeps a blob its last namespace deleted until a collection: re-adding it
    // is free under shared and needs the data again under isolated.
    let data = b"deleted then wanted back";
    let d = desc(data);
    for (p, offset) in [
        (ContentSharing::Shared, data.len() as u64),
        (ContentSharing::Isolated, 0),
    ] {
        let (_dir, db, backend) = committed_in_a(p, data);
        let a = db.content_store("a", None).unwrap();
        a.delete(&d.digest).unwrap();
        assert!(backend.info(&d.digest).is_ok(), "{p:?}");
        let w = a
            .writer(WriterOptions::with_ref("back").expect(d.clone()))
            .unwrap();
        assert_eq!(w.status().unwrap().offset, offset, "{p:?}");
    }
}

#[test]
fn isolated_size_mismatch_and_no_size_expectations() {
    let data = b"sizes";
    let d = desc(data);
    let (_dir, db, _) = committed_in_a(ContentSharing::Isolated, data);
    let b = db.content_store("b", None).unwrap();
    // No size in the descriptor: still a real ingest under isolated.
    let mut nosize = d.clone();
    nosize.size = 0;
    let w = b
        .writer(WriterOptions::with_ref("nosize").expect(nosize))
        .unwrap();
    let st = w.status().unwrap();
    assert_eq!((st.offset, st.total), (0, 0));
    drop(w);
    b.abort("nosize").unwrap();
    assert_eq!(b.status("nosize").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn shareable_namespace_label_is_not_honoured_as_in_containerd_1_6() {
    // containerd 1.7 shares a blob out of a namespace labelled shareable=true even under
    // isolated; 1.6 (and so stowage) ignores the label.
    let data = b"from a labelled namespace";
    let d = desc(data);
    let (_dir, db, _) = open(ContentSharing::Isolated);
    db.create_namespace(
        "a",
        &Labels::from([(SHAREABLE.to_string(), "true".to_string())]),
    )
    .unwrap();
    db.create_namespace("b", &Labels::new()).unwrap();
    let a = db.content_store("a", None).unwrap();
    write_blob(&a, "ref-a", &mut &data[..], &d, Labels::new()).unwrap();
    let b = db.content_store("b", None).unwrap();
    assert_eq!(b.info(&d.digest).unwrap_err().kind(), ErrorKind::NotFound);
    let w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    drop(w);
    // The label on the writing namespace changes nothing either.
    db.set_namespace_label("b", SHAREABLE, "true").unwrap();
    let mut w = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    let e = w
        .commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
}

#[test]
fn isolated_write_under_a_lease_leases_the_blob() {
    let data = b"leased isolated write";
    let d = desc(data);
    let (_dir, db, _) = committed_in_a(ContentSharing::Isolated, data);
    db.leases("b")
        .unwrap()
        .create("work", &Labels::new())
        .unwrap();
    let b = db.content_store("b", Some("work")).unwrap();
    let mut w: Box<dyn Writer> = b
        .writer(WriterOptions::with_ref("ref-b").expect(d.clone()))
        .unwrap();
    w.write_all(data).unwrap();
    w.commit(Some(data.len() as u64), Some(&d.digest), Labels::new())
        .unwrap();
    assert_eq!(
        db.leases("b").unwrap().list_resources("work").unwrap(),
        vec![Resource::content(&d.digest)]
    );
}
