//! The namespaced snapshotter over the real overlay snapshotter: the snapshotter conformance
//! suite, and what the wrapper itself adds (backend keys, children, labels in meta.db,
//! namespaces, leases).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_core_types::snapshot::{Info, Kind, Snapshotter};
use stowage_core_types::{ErrorKind, Labels, Result};
use stowage_metadata::{Db, Options, Resource};
use stowage_snapshots_overlay::OverlaySnapshotter;

fn open_db(root: &Path) -> Result<(Db, Arc<OverlaySnapshotter>)> {
    let overlay = Arc::new(OverlaySnapshotter::new(
        root.join("io.containerd.snapshotter.v1.overlayfs"),
    )?);
    let db = Db::open(
        root,
        Options {
            snapshotters: BTreeMap::from([(
                "overlayfs".to_string(),
                overlay.clone() as Arc<dyn Snapshotter>,
            )]),
            ..Default::default()
        },
    )?;
    Ok((db, overlay))
}

fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
    let (db, _) = open_db(root)?;
    Ok(Box::new(db.snapshotter("overlayfs", "testsuite", None)?))
}

stowage_snapshots_storage::snapshotter_conformance!(factory);

/// The suite again over the native (copying) snapshotter.
mod native {
    use super::*;
    use stowage_snapshots_native::NativeSnapshotter;

    fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
        let native = Arc::new(NativeSnapshotter::new(
            root.join("io.containerd.snapshotter.v1.native"),
        )?);
        let db = Db::open(
            root,
            Options {
                snapshotters: BTreeMap::from([(
                    "native".to_string(),
                    native as Arc<dyn Snapshotter>,
                )]),
                ..Default::default()
            },
        )?;
        Ok(Box::new(db.snapshotter("native", "testsuite", None)?))
    }

    stowage_snapshots_storage::snapshotter_conformance!(factory);
}

/// The suite again with all work done under a lease, as a pull or unpack does.
mod leased {
    use super::*;

    fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
        let (db, _) = open_db(root)?;
        let leases = db.leases("testsuite")?;
        if leases.list(&["id==work".to_string()])?.is_empty() {
            leases.create("work", &Labels::new())?;
        }
        Ok(Box::new(db.snapshotter(
            "overlayfs",
            "testsuite",
            Some("work"),
        )?))
    }

    stowage_snapshots_storage::snapshotter_conformance!(factory);
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(sn: &dyn Snapshotter, filters: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    sn.walk(
        &mut |i: Info| {
            out.push(i.name);
            Ok(())
        },
        &f,
    )
    .unwrap();
    out.sort();
    out
}

#[test]
fn backend_keys_children_labels_and_namespaces() {
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, overlay) = open_db(dir.path()).unwrap();
    let a = db.snapshotter("overlayfs", "a", None).unwrap();
    let b = db.snapshotter("overlayfs", "b", None).unwrap();

    a.prepare("base-active", "", labels(&[("x", "1")])).unwrap();
    a.commit(
        "base",
        "base-active",
        labels(&[("containerd.io/snapshot/keep", "y"), ("plain", "z")]),
    )
    .unwrap();
    a.prepare("child", "base", Labels::new()).unwrap();
    a.view("look", "base", Labels::new()).unwrap();

    // Backend names are <ns>/<seq>/<key>; the parent is recorded by namespaced key.
    let mut backend = BTreeMap::new();
    overlay
        .walk(
            &mut |i: Info| {
                backend.insert(i.name.clone(), i);
                Ok(())
            },
            &[],
        )
        .unwrap();
    let keys: Vec<&String> = backend.keys().collect();
    assert_eq!(keys, ["a/2/base", "a/3/child", "a/4/look"]);
    assert_eq!(backend["a/3/child"].parent, "a/2/base");
    // Only inherited labels reach the backend.
    assert_eq!(
        backend["a/2/base"].labels,
        labels(&[("containerd.io/snapshot/keep", "y")])
    );
    let st = a.stat("child").unwrap();
    assert_eq!(st.parent, "base");
    assert_eq!(st.kind, Kind::Active);
    assert_eq!(a.stat("look").unwrap().kind, Kind::View);
    assert_eq!(a.stat("base").unwrap().labels["plain"], "z");

    // Isolation: b sees nothing and cannot use a's parent.
    assert!(names(&b, &[]).is_empty());
    assert_eq!(
        b.prepare("c", "base", Labels::new()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(b.stat("base").unwrap_err().kind(), ErrorKind::NotFound);

    // Walk with filters.
    assert_eq!(names(&a, &["kind==committed"]), ["base"]);
    assert_eq!(names(&a, &["parent==base"]), ["child", "look"]);
    assert_eq!(names(&a, &["labels.plain==z"]), ["base"]);

    // A parent with children cannot go; once they are gone it can. The children bucket
    // tracks it.
    assert_eq!(
        a.remove("base").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    a.remove("child").unwrap();
    a.remove("look").unwrap();
    // Removal drops the record only; the backend snapshot waits for the collector.
    assert!(overlay.stat("a/3/child").is_ok());
    a.remove("base").unwrap();
    assert_eq!(a.stat("base").unwrap_err().kind(), ErrorKind::NotFound);

    // Unpack's dedupe: preparing with `containerd.io/snapshot.ref` naming a snapshot the
    // namespace already has is AlreadyExists, and nothing is left behind.
    a.prepare("l-active", "", Labels::new()).unwrap();
    a.commit(
        "layer",
        "l-active",
        labels(&[("containerd.io/snapshot.ref", "layer")]),
    )
    .unwrap();
    let err = a
        .prepare(
            "extract-1",
            "",
            labels(&[("containerd.io/snapshot.ref", "layer")]),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(a.stat("extract-1").unwrap_err().kind(), ErrorKind::NotFound);
    // The target label reached the backend (backends use it to find committed layers).
    let mut tagged = Vec::new();
    overlay
        .walk(
            &mut |i: Info| {
                if i.labels
                    .get("containerd.io/snapshot.ref")
                    .map(String::as_str)
                    == Some("layer")
                {
                    tagged.push(i.name);
                }
                Ok(())
            },
            &[],
        )
        .unwrap();
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert!(tagged[0].starts_with("a/") && tagged[0].ends_with("/layer"));

    // Label update: stored in meta.db; bad paths refused.
    a.prepare("u", "", Labels::new()).unwrap();
    let mut info = a.stat("u").unwrap();
    info.labels = labels(&[("k", "v")]);
    let out = a.update(info.clone(), &["labels.k".into()]).unwrap();
    assert_eq!(out.labels, labels(&[("k", "v")]));
    assert_eq!(
        a.update(info, &["parent".into()]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn work_under_a_lease_is_recorded() {
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, _overlay) = open_db(dir.path()).unwrap();
    db.leases("ns")
        .unwrap()
        .create("l", &Labels::new())
        .unwrap();
    let s = db.snapshotter("overlayfs", "ns", Some("l")).unwrap();
    s.prepare("k", "", Labels::new()).unwrap();
    assert_eq!(
        db.leases("ns").unwrap().list_resources("l").unwrap(),
        vec![Resource::snapshot("overlayfs", "k")]
    );
    s.commit("done", "k", Labels::new()).unwrap();
    assert_eq!(
        db.leases("ns").unwrap().list_resources("l").unwrap(),
        vec![Resource::snapshot("overlayfs", "done")]
    );
    assert_eq!(
        db.snapshotter("nope", "ns", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
