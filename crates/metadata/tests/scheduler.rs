//! The GC scheduler: startup collection, deletions, mutation threshold, synchronous deletes.

mod common;

use std::time::Duration;

use common::{open_with_backend, put, wait_until};
use stowage_core_types::content::Manager;
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_metadata::{Db, GcConfig, Image, Options, Scheduler};

fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open_with_backend(dir.path(), Options::default());
    (dir, db)
}

fn blob(db: &Db, data: &str) -> Digest {
    let cs = db.content_store("ns", None).unwrap();
    put(&cs, data, data.as_bytes(), Labels::new())
}

fn present(db: &Db, d: &Digest) -> bool {
    db.content_store("ns", None).unwrap().info(d).is_ok()
}

fn image(db: &Db, name: &str, target: &Digest) {
    db.images("ns")
        .unwrap()
        .create(Image::new(
            name,
            Descriptor::new("application/octet-stream", target.clone(), 1),
        ))
        .unwrap();
}

#[test]
fn collects_at_startup_and_after_a_deletion() {
    let (_d, db) = open();
    let orphan = blob(&db, "orphan");
    let kept = blob(&db, "kept");
    image(&db, "img", &kept);
    let s = Scheduler::start(&db, GcConfig::default()).unwrap();
    assert!(wait_until(|| !present(&db, &orphan)), "startup collection");
    assert!(present(&db, &kept));
    assert!(wait_until(|| s.collections() == 1));
    db.images("ns").unwrap().delete("img").unwrap();
    assert!(
        wait_until(|| !present(&db, &kept)),
        "collection after delete"
    );
    assert!(wait_until(|| s.collections() >= 2));
    s.stop();
}

#[test]
fn synchronous_delete_waits_for_its_collection() {
    let (_d, db) = open();
    let s = Scheduler::start(
        &db,
        GcConfig {
            startup_delay: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    let target = blob(&db, "target");
    image(&db, "img", &target);
    let stats = db.images("ns").unwrap().delete_sync("img").unwrap();
    assert!(!present(&db, &target));
    assert!(stats.content_deleted.contains(&target), "{stats:?}");
    assert!(s.collections() >= 1);
    // After the scheduler stops, synchronous collection still works, directly.
    s.stop();
    let t2 = blob(&db, "t2");
    image(&db, "img2", &t2);
    db.images("ns").unwrap().delete_sync("img2").unwrap();
    assert!(!present(&db, &t2));
    assert_eq!(
        db.images("ns")
            .unwrap()
            .delete_sync("img2")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn mutation_threshold_triggers_a_collection() {
    let (_d, db) = open();
    // The start-up sweep of the backends, done here so that only mutations count below.
    db.collect().unwrap();
    let s = Scheduler::start(
        &db,
        GcConfig {
            startup_delay: Duration::ZERO,
            mutation_threshold: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let ls = db.leases("ns").unwrap();
    ls.create("a", &Labels::new()).unwrap();
    ls.create("b", &Labels::new()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.collections(), 0, "two mutations are below the threshold");
    ls.create("c", &Labels::new()).unwrap();
    assert!(wait_until(|| s.collections() == 1));
    assert!(Scheduler::start(
        &db,
        GcConfig {
            pause_threshold: 0.9,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Scheduler::start(
        &db,
        GcConfig {
            schedule_delay: Duration::MAX,
            ..Default::default()
        }
    )
    .is_err());
    // A tiny threshold is accepted and does not overflow the gap between collections.
    let tiny = Scheduler::start(
        &db,
        GcConfig {
            pause_threshold: 1e-300,
            startup_delay: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    tiny.schedule_and_wait().unwrap();
    tiny.stop();
}
