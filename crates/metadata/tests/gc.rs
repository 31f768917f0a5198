//! Garbage collection over real stores: a table of reachability cases, and backend reclaim.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{bucket_at, open_with_snapshotters, put, snapshot_keys};
use stowage_content::LocalStore;
use stowage_core_types::content::{IngestManager, Ingester, Manager, WriterOptions};
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_metadata::{
    encode_time, format_rfc3339, Any, Container, Db, Image, Node, Resource, ResourceKind,
    SPEC_TYPE_URL,
};
use stowage_snapshots_overlay::OverlaySnapshotter;

struct Env {
    _dir: tempfile::TempDir,
    db: Db,
    backend: Arc<LocalStore>,
    overlay: Option<Arc<OverlaySnapshotter>>,
}

fn env(with_overlay: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let overlay = with_overlay.then(|| {
        Arc::new(
            OverlaySnapshotter::new(dir.path().join("io.containerd.snapshotter.v1.overlayfs"))
                .unwrap(),
        )
    });
    let snapshotters: Vec<(&str, Arc<dyn Snapshotter>)> = overlay
        .iter()
        .map(|o| ("overlayfs", o.clone() as Arc<dyn Snapshotter>))
        .collect();
    let (db, backend) = open_with_snapshotters(dir.path(), snapshotters);
    Env {
        _dir: dir,
        db,
        backend,
        overlay,
    }
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn blob(e: &Env, ns: &str, data: &str, l: Labels) -> Digest {
    let cs = e.db.content_store(ns, None).unwrap();
    put(&cs, &format!("w-{data}"), data.as_bytes(), l)
}

fn blobs_in(e: &Env, ns: &str) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    e.db.content_store(ns, None)
        .unwrap()
        .walk(
            &mut |i| {
                out.insert(i.digest);
                Ok(())
            },
            &[],
        )
        .unwrap();
    out
}

fn set(ds: &[&Digest]) -> BTreeSet<Digest> {
    ds.iter().map(|d| (*d).clone()).collect()
}

#[test]
fn content_edges_suffix_rule_roots_and_backend_reclaim() {
    let e = env(false);
    let config = blob(&e, "ns", "config", Labels::new());
    let layer = blob(&e, "ns", "layer", Labels::new());
    let slash = blob(&e, "ns", "slash", Labels::new());
    let exact = blob(&e, "ns", "exact", Labels::new());
    let lookalike = blob(&e, "ns", "lookalike", Labels::new());
    let manifest = blob(
        &e,
        "ns",
        "manifest",
        labels(&[
            ("containerd.io/gc.ref.content.config", config.as_str()),
            ("containerd.io/gc.ref.content.l.0", layer.as_str()),
            ("containerd.io/gc.ref.content/m", slash.as_str()),
            ("containerd.io/gc.ref.content", exact.as_str()),
            ("containerd.io/gc.ref.contentX", lookalike.as_str()),
        ]),
    );
    // An empty label value is never stored, so this one is not a root.
    let not_rooted = blob(&e, "ns", "rooted", labels(&[("containerd.io/gc.root", "")]));
    let rooted2 = blob(
        &e,
        "ns",
        "rooted2",
        labels(&[("containerd.io/gc.root", "x")]),
    );
    let orphan = blob(&e, "ns", "orphan", Labels::new());
    // The same orphan bytes recorded in another namespace keep the backend blob.
    let shared = blob(&e, "ns", "shared", Labels::new());
    blob(
        &e,
        "other",
        "shared",
        labels(&[("containerd.io/gc.root", "1")]),
    );
    e.db.images("ns")
        .unwrap()
        .create(Image::new(
            "img",
            Descriptor::new(
                "application/vnd.oci.image.manifest.v1+json",
                manifest.clone(),
                8,
            ),
        ))
        .unwrap();

    let stats = e.db.collect().unwrap();
    let kept = blobs_in(&e, "ns");
    assert_eq!(
        kept,
        set(&[&config, &layer, &slash, &exact, &manifest, &rooted2])
    );
    let removed: BTreeSet<String> = stats
        .removed
        .iter()
        .filter(|n| n.kind == ResourceKind::Content && n.namespace == "ns")
        .map(|n| n.key.clone())
        .collect();
    let want: BTreeSet<String> = [&lookalike, &orphan, &shared, &not_rooted]
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(removed, want);
    // The backend lost exactly the blobs no namespace records.
    assert_eq!(
        stats
            .content_deleted
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&[&lookalike, &orphan, &not_rooted])
    );
    assert_eq!(
        e.backend.info(&orphan).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(e.backend.info(&shared).is_ok());
    assert!(e.backend.info(&config).is_ok());

    // Deleting the image frees its tree at the next collection.
    e.db.images("ns").unwrap().delete("img").unwrap();
    e.db.collect().unwrap();
    assert_eq!(blobs_in(&e, "ns"), set(&[&rooted2]));
    assert_eq!(
        e.backend.info(&manifest).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn leases_live_expired_invalid_and_flat() {
    let e = env(false);
    let ls = e.db.leases("ns").unwrap();
    let child = blob(&e, "ns", "child", Labels::new());
    let parent = blob(
        &e,
        "ns",
        "parent",
        labels(&[("containerd.io/gc.ref.content.0", child.as_str())]),
    );
    let in_expired = blob(&e, "ns", "in-expired", Labels::new());
    let in_invalid = blob(&e, "ns", "in-invalid", Labels::new());
    let flat_child = blob(&e, "ns", "flat-child", Labels::new());
    let flat_parent = blob(
        &e,
        "ns",
        "flat-parent",
        labels(&[("containerd.io/gc.ref.content.0", flat_child.as_str())]),
    );
    let future = format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let past = format_rfc3339(SystemTime::now() - Duration::from_secs(3600));
    ls.create("live", &labels(&[("containerd.io/gc.expire", &future)]))
        .unwrap();
    ls.add_resource("live", &Resource::content(&parent))
        .unwrap();
    ls.create("expired", &labels(&[("containerd.io/gc.expire", &past)]))
        .unwrap();
    ls.add_resource("expired", &Resource::content(&in_expired))
        .unwrap();
    ls.create(
        "invalid",
        &labels(&[("containerd.io/gc.expire", "tomorrow")]),
    )
    .unwrap();
    ls.add_resource("invalid", &Resource::content(&in_invalid))
        .unwrap();
    ls.create("flat", &labels(&[("containerd.io/gc.flat", "1")]))
        .unwrap();
    ls.add_resource("flat", &Resource::content(&flat_parent))
        .unwrap();

    let stats = e.db.collect().unwrap();
    assert_eq!(
        blobs_in(&e, "ns"),
        set(&[&child, &parent, &in_invalid, &flat_parent])
    );
    let ids: Vec<String> = ls.list(&[]).unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(ids, ["flat", "invalid", "live"]);
    assert!(stats.removed.contains(&Node {
        kind: ResourceKind::Lease,
        namespace: "ns".into(),
        key: "expired".into()
    }));
}

#[test]
fn ingests_expiry_expected_and_backend_abort() {
    let e = env(false);
    let cs = e.db.content_store("ns", None).unwrap();
    // A backend ingest with an unexpired record, and one whose record we age.
    let mut w = cs.writer(WriterOptions::with_ref("fresh")).unwrap();
    std::io::Write::write_all(&mut w, b"abc").unwrap();
    drop(w);
    let mut w = cs.writer(WriterOptions::with_ref("stale")).unwrap();
    std::io::Write::write_all(&mut w, b"def").unwrap();
    drop(w);
    // A shared ingest: its expected digest is kept through the ingest.
    let exp = blob(&e, "other", "expected", Labels::new());
    let desc = Descriptor::new("application/octet-stream", exp.clone(), 8);
    let _shared = cs
        .writer(WriterOptions::with_ref("shared").expect(desc))
        .unwrap();
    e.db.content_store("other", None)
        .unwrap()
        .delete(&exp)
        .unwrap();
    {
        let mut tx = e.db.bolt().begin_write().unwrap();
        let v1 = tx.bucket_mut(b"v1").unwrap().unwrap();
        let ns = v1.into_bucket_mut(b"ns").unwrap().unwrap();
        let c = ns.into_bucket_mut(b"content").unwrap().unwrap();
        let i = c.into_bucket_mut(b"ingests").unwrap().unwrap();
        let mut s = i.into_bucket_mut(b"stale").unwrap().unwrap();
        s.put(
            b"expireat",
            &encode_time(SystemTime::now() - Duration::from_secs(1)),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let stats = e.db.collect().unwrap();
    let refs: Vec<String> = cs
        .list_statuses(&[])
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    assert_eq!(refs, ["fresh"]);
    assert_eq!(cs.status("stale").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stats.ingests_aborted, ["ns/1/stale"]);
    assert!(e.backend.info(&exp).is_ok(), "kept by the shared ingest");
}

#[test]
fn snapshots_containers_chains_and_backend_removal() {
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let e = env(true);
    let sn = e.db.snapshotter("overlayfs", "ns", None).unwrap();
    sn.prepare("a", "", Labels::new()).unwrap();
    sn.commit("base", "a", Labels::new()).unwrap();
    sn.prepare("b", "base", Labels::new()).unwrap();
    sn.commit("mid", "b", Labels::new()).unwrap();
    sn.prepare("rootfs", "mid", Labels::new()).unwrap();
    sn.prepare("c", "", Labels::new()).unwrap();
    sn.commit("unused", "c", Labels::new()).unwrap();
    sn.prepare("d", "", Labels::new()).unwrap();
    sn.commit("by-label", "d", Labels::new()).unwrap();
    sn.prepare("f", "", Labels::new()).unwrap();
    sn.commit("kept-root", "f", labels(&[("containerd.io/gc.root", "1")]))
        .unwrap();
    let cfg = blob(
        &e,
        "ns",
        "config",
        labels(&[("containerd.io/gc.ref.snapshot.overlayfs/x", "by-label")]),
    );
    let mut c = Container::new(
        "ctr",
        "io.containerd.runc.v2",
        Any::new(SPEC_TYPE_URL, b"{}".to_vec()),
    );
    c.snapshotter = "overlayfs".into();
    c.snapshot_key = "rootfs".into();
    c.labels = labels(&[("containerd.io/gc.ref.content", cfg.as_str())]);
    e.db.containers("ns").unwrap().create(c).unwrap();

    let stats = e.db.collect().unwrap();
    assert_eq!(
        snapshot_keys(&sn),
        ["base", "by-label", "kept-root", "mid", "rootfs"]
            .map(String::from)
            .into()
    );
    assert_eq!(stats.snapshots_removed["overlayfs"], ["ns/7/unused"]);
    let overlay = e.overlay.as_ref().unwrap();
    assert_eq!(
        overlay.stat("ns/7/unused").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Dropping the container frees the chain and its label-referenced content.
    e.db.containers("ns").unwrap().delete("ctr").unwrap();
    e.db.collect().unwrap();
    assert_eq!(snapshot_keys(&sn), ["kept-root".to_string()].into());
    assert!(blobs_in(&e, "ns").is_empty());
    assert_eq!(
        snapshot_keys(overlay.as_ref()),
        ["ns/11/kept-root".to_string()].into()
    );
}

#[test]
fn a_pull_in_progress_under_a_lease_survives_collection() {
    let e = env(false);
    e.db.leases("ns")
        .unwrap()
        .create("pull", &Labels::new())
        .unwrap();
    let cs = e.db.content_store("ns", Some("pull")).unwrap();
    // A committed layer and a half-written one, as a pull leaves them mid-way.
    let layer = put(&cs, "layer", b"layer bytes", Labels::new());
    let mut w = cs.writer(WriterOptions::with_ref("partial")).unwrap();
    std::io::Write::write_all(&mut w, b"half").unwrap();
    drop(w);
    for _ in 0..2 {
        e.db.collect().unwrap();
        assert!(cs.info(&layer).is_ok());
        assert_eq!(cs.status("partial").unwrap().offset, 4);
    }
    // The pull ends without an image: releasing the lease frees everything.
    e.db.leases("ns").unwrap().delete_sync("pull").unwrap();
    assert_eq!(cs.info(&layer).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        cs.status("partial").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        e.backend.info(&layer).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(e.backend.list_statuses(&[]).unwrap().is_empty());
}

#[test]
fn collections_racing_leased_writers_never_lose_their_work() {
    let e = env(false);
    e.db.leases("ns")
        .unwrap()
        .create("busy", &Labels::new())
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                e.db.collect().unwrap();
                n += 1;
            }
            n
        });
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let db = e.db.clone();
                s.spawn(move || {
                    let cs = db.content_store("ns", Some("busy")).unwrap();
                    let mut out = Vec::new();
                    for i in 0..40 {
                        let data = format!("thread {t} blob {i}");
                        let d = put(&cs, &format!("t{t}-{i}"), data.as_bytes(), Labels::new());
                        // Visible right after the commit, whatever the collector is doing.
                        assert!(cs.info(&d).is_ok(), "{d} lost right after commit");
                        out.push(d);
                    }
                    out
                })
            })
            .collect();
        let written: Vec<Digest> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(gc.join().unwrap() > 0);
        written
    });
    e.db.collect().unwrap();
    let cs = e.db.content_store("ns", None).unwrap();
    for d in &written {
        assert!(cs.info(d).is_ok(), "{d} record lost");
        assert!(e.backend.info(d).is_ok(), "{d} blob lost");
    }
    assert_eq!(written.len(), 80);
}

#[test]
fn an_expiring_lease_stops_protecting_once_expired() {
    let e = env(false);
    let ls = e.db.leases("ns").unwrap();
    let l = ls
        .create_expiring("short", &Labels::new(), Duration::from_secs(4))
        .unwrap();
    let exp = stowage_metadata::parse_rfc3339(&l.labels["containerd.io/gc.expire"]).unwrap();
    assert!(exp > SystemTime::now() - Duration::from_secs(1));
    assert!(
        !l.labels["containerd.io/gc.expire"].contains('.'),
        "seconds only"
    );
    let cs = e.db.content_store("ns", Some("short")).unwrap();
    let d = put(&cs, "b", b"held briefly", Labels::new());
    e.db.collect().unwrap();
    // The expiry is stored in whole seconds, so it can be as little as 3 s away: a collection
    // that ended before it certainly saw the lease alive (only a machine stalled for seconds
    // gets past it, and then the check would prove nothing).
    if SystemTime::now() < exp {
        assert!(cs.info(&d).is_ok(), "still protected");
    }
    std::thread::sleep(
        exp.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(1100),
    );
    e.db.collect().unwrap();
    assert_eq!(cs.info(&d).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(ls.list(&[]).unwrap().is_empty());
}

#[test]
fn collection_neither_waits_for_nor_blocks_readers() {
    let e = env(false);
    let keep = blob(&e, "ns", "keep", labels(&[("containerd.io/gc.root", "1")]));
    let gone = blob(&e, "ns", "gone", Labels::new());
    // A long-lived reader (a listing in progress) does not hold the collector up...
    let reader = e.db.bolt().begin_read().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let db = e.db.clone();
    std::thread::spawn(move || {
        let _ = tx.send(db.collect().map(|s| s.removed.len()));
    });
    let removed = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("collection finished while a reader was open")
        .unwrap();
    assert_eq!(removed, 1);
    // ...and keeps its snapshot: the removed record is still visible to it.
    let old_view = bucket_at(&reader, &["v1", "ns", "content", "blob"])
        .bucket(gone.as_str().as_bytes())
        .unwrap();
    assert!(old_view.is_some());
    drop(reader);
    assert!(blobs_in(&e, "ns").contains(&keep));
    assert!(!blobs_in(&e, "ns").contains(&gone));
}
