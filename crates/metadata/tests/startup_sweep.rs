//! Every backend starts dirty: the first collection after opening meta.db removes what a
//! crash between a backend's commit and meta.db's left (snapshots and blobs no record names),
//! children before parents with one removal attempt each; later collections leave backends
//! nothing dirtied alone.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{open_with_snapshotters, put, snapshot_keys, wait_until};
use stowage_content::LocalStore;
use stowage_core_types::content::Manager;
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Snapshotter, Usage};
use stowage_core_types::{Digest, ErrorKind, Labels, Result};
use stowage_metadata::{Db, GcConfig, GcStats, NamespacedSnapshotter, Scheduler};
use stowage_snapshots_native::NativeSnapshotter;

/// The native snapshotter, counting the removals asked of it and those it refused, with the
/// faults of [`Faults`] laid over it.
#[derive(Debug)]
struct Counting {
    inner: NativeSnapshotter,
    removes: AtomicUsize,
    refused: AtomicUsize,
    faults: Mutex<Faults>,
}

/// How a backend can disagree with what the sweep's walk told it.
#[derive(Debug, Default)]
struct Faults {
    /// Left out of `walk`, as a corrupt backend that lists a parent it does not have.
    hidden: Option<String>,
    /// (key, parent) reported by `walk` instead of the real parent.
    reparent: Option<(String, String)>,
    /// (key, child): the child is prepared on the key just before its removal, as a client
    /// racing the sweep would.
    child_on_remove: Option<(String, String)>,
    /// Removals of this key fail with an I/O error (a failing disk), while set.
    fail_remove: Option<String>,
}

impl Snapshotter for Counting {
    fn stat(&self, key: &str) -> Result<Info> {
        self.inner.stat(key)
    }
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        self.inner.update(info, fieldpaths)
    }
    fn usage(&self, key: &str) -> Result<Usage> {
        self.inner.usage(key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.inner.mounts(key)
    }
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.inner.prepare(key, parent, labels)
    }
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.inner.view(key, parent, labels)
    }
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.inner.commit(name, key, labels)
    }
    fn remove(&self, key: &str) -> Result<()> {
        self.removes.fetch_add(1, Ordering::Relaxed);
        if self.faults.lock().unwrap().fail_remove.as_deref() == Some(key) {
            return Err(stowage_core_types::Error::io(
                format!("removing {key}"),
                std::io::Error::other("injected disk failure"),
            ));
        }
        let race = self.faults.lock().unwrap().child_on_remove.clone();
        if let Some((_, child)) = race.filter(|(k, _)| k == key) {
            self.inner.prepare(&child, key, Labels::new())?;
        }
        let r = self.inner.remove(key);
        if r.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let faults = self.faults.lock().unwrap();
        self.inner.walk(
            &mut |mut i| {
                if faults.hidden.as_ref() == Some(&i.name) {
                    return Ok(());
                }
                if let Some((_, p)) = faults.reparent.as_ref().filter(|(k, _)| *k == i.name) {
                    i.parent = p.clone();
                }
                f(i)
            },
            filters,
        )
    }
    fn cleanup(&self) -> Result<()> {
        self.inner.cleanup()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    db: Db,
    content: Arc<LocalStore>,
    native: Arc<Counting>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let native = Arc::new(Counting {
        inner: NativeSnapshotter::new(dir.path().join("io.containerd.snapshotter.v1.native"))
            .unwrap(),
        removes: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        faults: Mutex::default(),
    });
    let (db, content) = open_with_snapshotters(dir.path(), vec![("native", native.clone())]);
    Env {
        _dir: dir,
        db,
        content,
        native,
    }
}

/// Writes `data` straight into the content backend, as a crash before meta.db's commit
/// leaves it.
fn backend_blob(e: &Env, data: &str) -> Digest {
    put(e.content.as_ref(), data, data.as_bytes(), Labels::new())
}

/// Commits `base` through meta.db (a GC root, so no collection removes it); returns the
/// namespaced snapshotter and the backend's keys, the one snapshot meta.db records.
fn recorded_base(e: &Env) -> (NamespacedSnapshotter, BTreeSet<String>) {
    let sn = e.db.snapshotter("native", "ns", None).unwrap();
    sn.prepare("base-a", "", Labels::new()).unwrap();
    sn.commit(
        "base",
        "base-a",
        [("containerd.io/gc.root".to_string(), "1".to_string())].into(),
    )
    .unwrap();
    let recorded = snapshot_keys(&e.native.inner);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    (sn, recorded)
}

/// The native snapshots a collection removed, in no order.
fn removed_set(stats: &GcStats) -> BTreeSet<&str> {
    stats.snapshots_removed["native"]
        .iter()
        .map(String::as_str)
        .collect()
}

#[test]
fn first_collection_sweeps_what_no_record_names_children_first() {
    let e = env();
    let (sn, recorded) = recorded_base(&e);
    let base_key = recorded.iter().next().unwrap().clone();

    // The backend's own commits, which meta.db never recorded: a chain three deep, a child
    // of a recorded snapshot, a lone one.
    let b = &e.native.inner;
    b.prepare("o1-a", "", Labels::new()).unwrap();
    b.commit("o1", "o1-a", Labels::new()).unwrap();
    b.prepare("o2-a", "o1", Labels::new()).unwrap();
    b.commit("o2", "o2-a", Labels::new()).unwrap();
    b.prepare("o3", "o2", Labels::new()).unwrap();
    b.prepare("child", &base_key, Labels::new()).unwrap();
    b.prepare("lone", "", Labels::new()).unwrap();
    let orphan_blob = backend_blob(&e, "no record names me");

    let stats = e.db.collect().unwrap();
    assert!(stats.removed.is_empty(), "{:?}", stats.removed);
    assert_eq!(snapshot_keys(e.native.as_ref()), recorded);
    let removed = &stats.snapshots_removed["native"];
    let at = |k: &str| {
        removed
            .iter()
            .position(|r| r == k)
            .unwrap_or_else(|| panic!("{k} not removed: {removed:?}"))
    };
    assert!(at("o3") < at("o2") && at("o2") < at("o1"), "{removed:?}");
    at("child");
    at("lone");
    assert_eq!(removed.len(), 5, "{removed:?}");
    // One attempt per snapshot, none refused for a child still in place.
    assert_eq!(e.native.removes.load(Ordering::Relaxed), 5);
    assert_eq!(e.native.refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.content_deleted, std::slice::from_ref(&orphan_blob));
    assert_eq!(
        e.content.info(&orphan_blob).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    sn.stat("base").unwrap();

    // Swept once: a later orphan stays until something dirties its backend again.
    b.prepare("late", "", Labels::new()).unwrap();
    let stats = e.db.collect().unwrap();
    assert!(stats.snapshots_removed.is_empty(), "{stats:?}");
    assert!(snapshot_keys(e.native.as_ref()).contains("late"));
}

#[test]
fn scheduler_sweeps_at_start_even_without_a_startup_delay() {
    let e = env();
    let orphan = backend_blob(&e, "left by a crash");
    e.native.inner.prepare("left", "", Labels::new()).unwrap();
    let s = Scheduler::start(
        &e.db,
        GcConfig {
            startup_delay: Duration::ZERO,
            mutation_threshold: 100_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        wait_until(|| s.collections() >= 1),
        "no collection at start-up"
    );
    assert_eq!(
        e.content.info(&orphan).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(snapshot_keys(e.native.as_ref()).is_empty());
    s.stop();
}

/// Commits `name` on `parent` straight in the backend, as a crash before meta.db's commit
/// leaves it.
fn backend_commit(e: &Env, name: &str, parent: &str) {
    let key = format!("{name}-active");
    e.native.inner.prepare(&key, parent, Labels::new()).unwrap();
    e.native.inner.commit(name, &key, Labels::new()).unwrap();
}

#[test]
fn a_chain_hundreds_deep_goes_top_down_and_spares_its_recorded_base() {
    let e = env();
    let (sn, recorded) = recorded_base(&e);
    let mut parent = recorded.iter().next().unwrap().clone();
    const DEPTH: usize = 300;
    for i in 0..DEPTH {
        let name = format!("layer-{i:03}");
        backend_commit(&e, &name, &parent);
        parent = name;
    }

    let stats = e.db.collect().unwrap();
    let removed = &stats.snapshots_removed["native"];
    let expected: Vec<String> = (0..DEPTH).rev().map(|i| format!("layer-{i:03}")).collect();
    assert_eq!(removed, &expected);
    assert_eq!(e.native.removes.load(Ordering::Relaxed), DEPTH);
    assert_eq!(e.native.refused.load(Ordering::Relaxed), 0);
    assert_eq!(snapshot_keys(&e.native.inner), recorded);
    sn.stat("base").unwrap();
}

#[test]
fn a_refused_removal_keeps_its_parents_unattempted_and_the_sweep_goes_on() {
    let e = env();
    backend_commit(&e, "o1", "");
    backend_commit(&e, "o2", "o1");
    e.native.inner.prepare("o3", "o2", Labels::new()).unwrap();
    e.native.inner.prepare("lone", "", Labels::new()).unwrap();
    // A client prepares on o2 after the sweep's walk: o2 is refused, and o1 with it.
    e.native.faults.lock().unwrap().child_on_remove = Some(("o2".into(), "racer".into()));

    let stats = e.db.collect().unwrap();
    let removed = removed_set(&stats);
    assert_eq!(removed, ["lone", "o3"].into());
    // o3, o2 and lone asked once each; o1 not at all.
    assert_eq!(e.native.removes.load(Ordering::Relaxed), 3);
    assert_eq!(e.native.refused.load(Ordering::Relaxed), 1);
    assert_eq!(
        snapshot_keys(&e.native.inner),
        ["o1", "o2", "racer"].map(String::from).into()
    );
}

#[test]
fn a_parent_the_walk_does_not_list_ends_the_chain() {
    let e = env();
    backend_commit(&e, "unlisted", "");
    backend_commit(&e, "mid", "unlisted");
    e.native.inner.prepare("top", "mid", Labels::new()).unwrap();
    e.native.faults.lock().unwrap().hidden = Some("unlisted".into());

    let stats = e.db.collect().unwrap();
    assert_eq!(stats.snapshots_removed["native"], ["top", "mid"]);
    assert_eq!(e.native.removes.load(Ordering::Relaxed), 2);
    assert_eq!(
        snapshot_keys(&e.native.inner),
        ["unlisted".to_string()].into()
    );
}

#[test]
fn a_cycle_in_the_walk_is_left_alone_and_the_rest_swept() {
    let e = env();
    backend_commit(&e, "c1", "");
    backend_commit(&e, "c2", "c1");
    e.native.inner.prepare("c3", "c2", Labels::new()).unwrap();
    e.native.inner.prepare("lone", "", Labels::new()).unwrap();
    // c1 and c2 each claim the other as parent: neither can be known childless.
    e.native.faults.lock().unwrap().reparent = Some(("c1".into(), "c2".into()));

    let stats = e.db.collect().unwrap();
    let removed = removed_set(&stats);
    assert_eq!(removed, ["c3", "lone"].into());
    assert_eq!(e.native.removes.load(Ordering::Relaxed), 2);
    assert_eq!(
        snapshot_keys(&e.native.inner),
        ["c1", "c2"].map(String::from).into()
    );
}

#[test]
fn a_sweep_stopped_by_an_error_is_retried_by_the_next_collection() {
    let e = env();
    backend_commit(&e, "orphan", "");
    e.native.faults.lock().unwrap().fail_remove = Some("orphan".into());
    let err = e.db.collect().unwrap_err();
    assert!(
        err.to_string().contains("orphan"),
        "the error names the snapshot: {err}"
    );
    assert!(snapshot_keys(&e.native.inner).contains("orphan"));

    // Nothing was removed since: only the backend left dirty brings the sweep back.
    e.native.faults.lock().unwrap().fail_remove = None;
    let stats = e.db.collect().unwrap();
    assert_eq!(
        stats.snapshots_removed["native"],
        vec!["orphan".to_string()]
    );
    assert!(snapshot_keys(&e.native.inner).is_empty());
}
