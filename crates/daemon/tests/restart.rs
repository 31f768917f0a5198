//! A restart after SIGKILL removes what the crash left behind (snapshot directories no
//! metastore record owns, half-replaced ingest files, ingests that never got data) and keeps
//! everything live: snapshots, blobs, and an in-progress ingest, which resumes. The collector
//! then runs on its own once `startup_delay` has passed, as containerd's scheduler does, and
//! that first collection also removes the snapshots the backend committed but meta.db never
//! recorded (a crash between the two commits).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{require_ctr, Stowaged};
use stowage_core_types::content::{read_blob, Ingester, WriterOptions};
use stowage_core_types::{Descriptor, Digest, Labels};
use stowage_daemon::remote::content::RemoteContentStore;

fn sha_hex(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(data: &[u8]) -> Digest {
    format!("sha256:{}", sha_hex(data)).parse().unwrap()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn start(work: &Path, gc: &str) -> Stowaged {
    let cfg = work.join("config.toml");
    fs::write(
        &cfg,
        format!("version = 2\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n{gc}"),
    )
    .unwrap();
    Stowaged::start_with(
        &work.join("root"),
        work,
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap()
}

const QUIET: &str = "  startup_delay = \"1h\"\n  mutation_threshold = 100000\n";

#[test]
fn restart_after_sigkill_cleans_orphans_and_keeps_live_data() {
    if !require_ctr(false) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let overlay = root.join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let native = root.join("io.containerd.snapshotter.v1.native/snapshots");
    let ingest = root.join("io.containerd.content.v1.content/ingest");

    let d = start(work.path(), QUIET);
    d.ok(&["leases", "create", "--id", "keep"]);
    // Live snapshots (ctr labels them containerd.io/gc.root), and one unreferenced for the
    // collector later.
    d.ok(&["snapshots", "prepare", "live", ""]);
    d.ok(&["snapshots", "label", "live", "containerd.io/gc.root=yes"]);
    d.ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "prepare",
        "nlive",
        "",
    ]);
    d.ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "label",
        "nlive",
        "containerd.io/gc.root=yes",
    ]);
    d.ok(&["snapshots", "prepare", "scratch", ""]);
    // ctr roots what it prepares with a gc.root label; without it, nothing holds `scratch`.
    d.ok(&["snapshots", "label", "scratch", "containerd.io/gc.root="]);
    let live_overlay = entries(&overlay);
    let live_native = entries(&native);
    assert_eq!((live_overlay.len(), live_native.len()), (2, 1));
    for id in &live_overlay {
        fs::write(overlay.join(id).join("fs/kept"), id).unwrap();
    }
    for id in &live_native {
        fs::write(native.join(id).join("kept"), id).unwrap();
    }

    // A blob under the lease, and an ingest halfway through when the daemon dies.
    let store = RemoteContentStore::connect(&d.address, "default", Some("keep")).unwrap();
    let blob = b"a committed blob".to_vec();
    let mut w = store.writer(WriterOptions::with_ref("blob-ref")).unwrap();
    w.write_all(&blob).unwrap();
    w.commit(Some(blob.len() as u64), Some(&digest(&blob)), Labels::new())
        .unwrap();
    drop(w);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = store.writer(WriterOptions::with_ref("half-ref")).unwrap();
    w.write_all(&data[..100_000]).unwrap();
    assert_eq!(w.status().unwrap().offset, 100_000);
    d.kill().unwrap();
    drop(w);
    drop(store);

    // What a crash leaves, in every shape our code makes: snapshot directories being built
    // (`new-*`) or removed (`rm-*`, native), directories renamed into place whose metastore
    // transaction never committed, a timestamp file being replaced, an ingest that never got
    // its data file.
    let orphans = [
        overlay.join("new-Ab12Cd"),
        overlay.join("9999"),
        native.join("new-Xy34Zw"),
        native.join("rm-7"),
        native.join("8888"),
    ];
    for o in &orphans {
        fs::create_dir_all(o.join("fs/usr/bin")).unwrap();
        fs::write(o.join("fs/usr/bin/tool"), "half-extracted").unwrap();
    }
    // The store's ref is the namespaced one the metadata layer made of ours.
    // Snapshots the backend committed but meta.db never recorded (a crash between the two
    // commits): a committed parent and an active child on it, in the backend's own metastore.
    {
        use stowage_core_types::snapshot::Snapshotter;
        let ov =
            stowage_snapshots_overlay::OverlaySnapshotter::new(overlay.parent().unwrap()).unwrap();
        ov.prepare("default/9000/orphan-base", "", Labels::new())
            .unwrap();
        ov.commit(
            "default/9001/orphan-layer",
            "default/9000/orphan-base",
            Labels::new(),
        )
        .unwrap();
        ov.prepare(
            "default/9002/orphan-top",
            "default/9001/orphan-layer",
            Labels::new(),
        )
        .unwrap();
    }
    let uncommitted: BTreeSet<String> = ["new-Ab12Cd", "9999"].map(String::from).into();
    let unrecorded: BTreeSet<String> = entries(&overlay)
        .difference(&live_overlay)
        .filter(|e| !uncommitted.contains(*e))
        .cloned()
        .collect();
    assert_eq!(unrecorded.len(), 2, "{unrecorded:?}");
    let live_ingest = entries(&ingest)
        .into_iter()
        .map(|e| ingest.join(e))
        .find(|p| fs::read_to_string(p.join("ref")).is_ok_and(|r| r.ends_with("half-ref")))
        .expect("the ingest directory of half-ref");
    assert!(live_ingest.join("data").is_file());
    fs::write(live_ingest.join("updatedat.tmp"), "2026-").unwrap();
    let dead_ingest = ingest.join(sha_hex(b"never-got-data"));
    fs::create_dir_all(&dead_ingest).unwrap();
    fs::write(dead_ingest.join("ref"), "never-got-data").unwrap();
    fs::write(dead_ingest.join("startedat.tmp"), "").unwrap();

    let d = start(work.path(), QUIET);
    for o in &orphans {
        assert!(!o.exists(), "{} survived the restart", o.display());
    }
    assert!(!dead_ingest.exists());
    assert!(!live_ingest.join("updatedat.tmp").exists());
    // Unrecorded snapshots wait for the first collection, an hour away here.
    assert_eq!(
        entries(&overlay),
        live_overlay.union(&unrecorded).cloned().collect()
    );
    assert_eq!(entries(&native), live_native);
    for id in &live_overlay {
        assert_eq!(
            fs::read_to_string(overlay.join(id).join("fs/kept")).unwrap(),
            *id
        );
    }
    for id in &live_native {
        assert_eq!(
            fs::read_to_string(native.join(id).join("kept")).unwrap(),
            *id
        );
    }
    let ls = d.ok(&["snapshots", "ls"]);
    assert!(ls.contains("live") && ls.contains("scratch"), "{ls}");
    d.ok(&["snapshots", "--snapshotter", "native", "info", "nlive"]);

    let active = d.ok(&["content", "active"]);
    assert!(active.contains("half-ref"), "{active}");
    assert!(!active.contains("never-got-data"), "{active}");
    let store = RemoteContentStore::connect(&d.address, "default", Some("keep")).unwrap();
    let got = read_blob(
        &store,
        &Descriptor::new("application/octet-stream", digest(&blob), blob.len() as u64),
    )
    .unwrap();
    assert_eq!(got, blob);
    let mut w = store.writer(WriterOptions::with_ref("half-ref")).unwrap();
    let at = w.status().unwrap().offset;
    assert_eq!(at, 100_000, "the ingest did not resume where it stopped");
    w.write_all(&data[at as usize..]).unwrap();
    w.commit(Some(data.len() as u64), Some(&digest(&data)), Labels::new())
        .unwrap();
    drop(w);
    let got = read_blob(
        &store,
        &Descriptor::new("application/octet-stream", digest(&data), data.len() as u64),
    )
    .unwrap();
    assert!(got == data, "the resumed blob differs");
    assert!(!d.ok(&["content", "active"]).contains("half-ref"));
    drop(store);
    // New snapshots still get fresh directories after the cleanup.
    d.ok(&["snapshots", "prepare", "after", ""]);
    let after = entries(&overlay);
    assert_eq!(after.len(), live_overlay.len() + unrecorded.len() + 1);
    assert!(d.stop().unwrap());

    // Restarted with a short startup delay and nothing asked of it, the collector runs by
    // itself: the unreferenced snapshot and the unrecorded ones go, rooted snapshots and
    // leased content stay.
    let d = start(
        work.path(),
        "  startup_delay = \"50ms\"\n  mutation_threshold = 100000\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = d.ok(&["snapshots", "ls"]);
        // The records go first; the backend sweep follows in the same collection.
        let left = entries(&overlay);
        if !ls.contains("scratch") && left.is_disjoint(&unrecorded) {
            assert!(ls.contains("live") && ls.contains("after"), "{ls}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no collection after startup_delay:\n{ls}\n{left:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["snapshots", "--snapshotter", "native", "info", "nlive"]);
    let blobs = d.ok(&["content", "ls", "-q"]);
    assert!(blobs.contains(&sha_hex(&data)), "{blobs}");
    assert!(blobs.contains(&sha_hex(&blob)), "{blobs}");
    // `scratch` and the two unrecorded snapshots went; `live` and `after` stayed.
    assert_eq!(entries(&overlay).len(), after.len() - 3);
    assert!(d.stop().unwrap());
    let ov = stowage_snapshots_overlay::OverlaySnapshotter::new(overlay.parent().unwrap()).unwrap();
    let mut keys = Vec::new();
    stowage_core_types::snapshot::Snapshotter::walk(
        &ov,
        &mut |i| {
            keys.push(i.name);
            Ok(())
        },
        &[],
    )
    .unwrap();
    assert!(!keys.iter().any(|k| k.contains("orphan")), "{keys:?}");
    assert_eq!(keys.len(), 2, "{keys:?}");
}
