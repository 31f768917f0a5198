//! stowaged killed with SIGKILL: ingests resume after the restart, and an import interrupted
//! by the crash completes when run again, leaving no snapshot directory without a record.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{ctr_at, require_ctr, Stowaged};
use stowage_core_types::content::{IngestManager, Ingester, Manager, WriterOptions};
use stowage_core_types::{Descriptor, Digest, Labels};
use stowage_daemon::remote::content::RemoteContentStore;

fn sha(data: &[u8]) -> Digest {
    use sha2::{Digest as _, Sha256};
    format!(
        "sha256:{}",
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
    .parse()
    .unwrap()
}

#[test]
fn ingest_resumes_after_sigkill() {
    if !require_ctr(false) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = Stowaged::start_with(&root, work.path(), &[]).unwrap();
    d.ok(&["leases", "create", "--id", "keep"]);
    let mut child = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "big-ref"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&data[..3_000_000])
        .unwrap();
    let store = RemoteContentStore::connect(&d.address, "default", None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        if let Ok(s) = store.status("big-ref") {
            if s.offset >= 1 << 20 {
                break s.offset;
            }
        }
        assert!(Instant::now() < deadline, "ingest never progressed");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(store);
    d.kill().unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let d = Stowaged::start_with(&root, work.path(), &[]).unwrap();
    let active = d.ok(&["content", "active"]);
    assert!(active.contains("big-ref"), "{active}");
    let store = RemoteContentStore::connect(&d.address, "default", Some("keep")).unwrap();
    let mut w = store
        .writer(WriterOptions::with_ref("big-ref"))
        .expect("reopen the ingest");
    let at = w.status().unwrap().offset;
    assert!(at >= before.min(1 << 20), "resumed at {at}, had {before}");
    assert!(at <= 3_000_000, "{at}");
    w.write_all(&data[at as usize..]).unwrap();
    let dg = sha(&data);
    w.commit(Some(data.len() as u64), Some(&dg), Labels::new())
        .unwrap();
    drop(w);
    assert_eq!(store.info(&dg).unwrap().size, data.len() as u64);
    let got = stowage_core_types::content::read_blob(
        &store,
        &Descriptor::new("application/octet-stream", dg.clone(), data.len() as u64),
    )
    .unwrap();
    assert!(got == data, "resumed blob differs");
    assert!(!d.ok(&["content", "active"]).contains("big-ref"));
}

#[test]
fn import_interrupted_by_sigkill_completes_on_retry() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    for (i, f) in fixtures.iter().enumerate() {
        let d = Stowaged::start_with(&root, work.path(), &[]).unwrap();
        let archive = f.archive.to_str().unwrap();
        let mut child = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&d.address)
            .args(["images", "import", archive])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different point for each image.
        std::thread::sleep(Duration::from_millis(40 * (i as u64 + 1)));
        d.kill().unwrap();
        // ctr keeps redialling a dead daemon; the interrupted client goes too.
        let _ = child.kill();
        let _ = child.wait();
        // What the crash left half-built goes at the restart.
        let d = Stowaged::start_with(&root, work.path(), &[]).unwrap();
        assert!(d.stop().unwrap());
        assert_no_orphan_dirs(&root);
        let d = Stowaged::start_with(&root, work.path(), &[]).unwrap();
        let r = ctr_at(&d.address, &["images", "import", archive], None).unwrap();
        assert!(r.ok, "{}: retry failed: {}", f.name, r.stderr);
        let check = d.ok(&["images", "check", &format!("name=={}", f.reference)]);
        let line = check.lines().nth(1).unwrap_or_else(|| panic!("{check}"));
        assert!(
            line.contains("complete") && line.trim_end().ends_with("true"),
            "{line}"
        );
        let mnt = work.path().join(format!("m-{}", f.name));
        std::fs::create_dir_all(&mnt).unwrap();
        d.ok(&["images", "mount", &f.reference, mnt.to_str().unwrap()]);
        assert!(!common::tree(&mnt).is_empty());
        d.ok(&["images", "unmount", "--rm", mnt.to_str().unwrap()]);
        // The retry's own removals (the daemon's eager unpack stops when the import deletes
        // its lease) leave overlay directories to the next cleanup, as containerd's
        // asynchronous removal does: no orphan check here.
        assert!(d.stop().unwrap());
    }
}

/// Every directory under the overlay snapshotter's `snapshots/` belongs to a snapshot its
/// metastore records: what a crash left half-built was removed at the restart.
fn assert_no_orphan_dirs(root: &std::path::Path) {
    use stowage_core_types::snapshot::Snapshotter;
    let ov = root.join("io.containerd.snapshotter.v1.overlayfs");
    let dirs = std::fs::read_dir(ov.join("snapshots")).unwrap().count();
    let s = stowage_snapshots_overlay::OverlaySnapshotter::new(&ov).unwrap();
    let mut records = 0;
    s.walk(
        &mut |_| {
            records += 1;
            Ok(())
        },
        &[],
    )
    .unwrap();
    assert_eq!(dirs, records, "snapshot directories without a record");
}
