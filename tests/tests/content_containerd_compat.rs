//! Compatibility of stowage's content store with the real containerd 1.6 (Debian's
//! `containerd` and `ctr`): it writes a content directory that stowage reads, and serves blobs
//! and ingests that stowage wrote.
//!
//! Each test starts containerd through the shared harness ([`Containerd`]) on a private root
//! in a temp dir, with garbage collection never triggered so blobs unknown to meta.db
//! survive, and stops it by PID, also on failure. Without containerd (or root) the tests fail
//! saying so, unless STOWAGE_SKIP_EXTERNAL=1.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use stowage_content::{LocalStore, CONTENT_DIR};
use stowage_core_types::content::{read_blob, IngestManager, Ingester, Manager, WriterOptions};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_digest_identity::digest_of;
use stowage_tests::containerd::{require, Containerd, SKIP_ENV};

/// Never collect: the blobs stowage writes are not in meta.db until adopted, and GC would
/// delete them. (Disabling the plugin is not an option: the leases service needs it.)
const NO_GC: &str = r#"
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1000000
  mutation_threshold = 1000000
  startup_delay = "0s"
"#;

/// True when the test can run; false (skip) only when STOWAGE_SKIP_EXTERNAL=1.
fn external_available() -> bool {
    if !require(&["containerd", "ctr"], "apt-get install containerd") {
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipping containerd compatibility test: not root and {SKIP_ENV}=1");
        return false;
    }
    panic!("containerd compatibility test needs root privileges (containerd runs as root), or set {SKIP_ENV}=1 to skip");
}

fn start(root: &Path, work: &Path) -> Containerd {
    Containerd::start_with(root, work, NO_GC).expect("start containerd")
}

/// Runs ctr with `stdin` as input and returns its stdout; panics with the daemon's log tail.
fn ctr_ok(ctrd: &Containerd, args: &[&str], stdin: Stdio) -> Vec<u8> {
    ctrd.ctr_with_input(args, stdin)
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log tail:\n{}", tail(&ctrd.log())))
}

/// `ctr content ingest --expected-size --expected-digest <reference>` of `data`, read from a
/// file under `work` (not a pipe: resuming, ctr seeks its input to the ingest's offset).
fn ingest(ctrd: &Containerd, work: &Path, reference: &str, data: &[u8]) {
    let f = work.join(reference);
    fs::write(&f, data).unwrap();
    ctr_ok(
        ctrd,
        &[
            "content",
            "ingest",
            "--expected-size",
            &data.len().to_string(),
            "--expected-digest",
            digest_of(data).as_str(),
            reference,
        ],
        fs::File::open(&f).unwrap().into(),
    );
}

/// `ctr content active` as (ref, size text) pairs.
fn active(ctrd: &Containerd) -> Vec<(String, String)> {
    let out = String::from_utf8(ctr_ok(ctrd, &["content", "active"], Stdio::null())).unwrap();
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

fn wait_active(ctrd: &Containerd, reference: &str, size: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let act = active(ctrd);
        if act.iter().any(|(r, s)| r == reference && s == size) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ingest {reference} never showed {size} in `ctr content active`: {act:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a spawned process by PID when dropped (SIGKILL; used for `ctr` clients we abandon).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `ctr content ingest <reference>` left running with its stdin open.
fn abandoned_ingest(ctrd: &Containerd, reference: &str) -> ChildGuard {
    ChildGuard(
        ctrd.ctr_command(&["content", "ingest", reference])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn data(size: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678 ^ u32::from(seed);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn workdir() -> tempfile::TempDir {
    // Under /tmp, so the socket path stays well below the 108-byte limit.
    tempfile::Builder::new()
        .prefix("stowage-ctrd-")
        .tempdir_in("/tmp")
        .unwrap()
}

fn desc(d: &Digest, size: usize) -> Descriptor {
    Descriptor::new("application/octet-stream", d.clone(), size as u64)
}

#[test]
fn stowage_reads_what_containerd_wrote() {
    if !external_available() {
        return;
    }
    let work = workdir();
    let root = work.path().join("root");
    let t0 = SystemTime::now();
    let ctrd = start(&root, work.path());

    let blobs = [data(1000, 1), data(3 << 20, 2), Vec::new()];
    for (i, b) in blobs.iter().enumerate() {
        ingest(&ctrd, work.path(), &format!("blob-{i}"), b);
    }

    // An ingest left in progress: ctr sends 1 MiB (its copy buffer) and is killed.
    let partial = data(1_500_000, 3);
    let mut client = abandoned_ingest(&ctrd, "half-done");
    client
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&partial)
        .unwrap();
    wait_active(&ctrd, "half-done", "1.049MB");
    drop(client);
    ctrd.stop().unwrap();
    let t1 = SystemTime::now();

    let store = LocalStore::with_memory_labels(root.join(CONTENT_DIR)).unwrap();
    let mut walked = Vec::new();
    store
        .walk(
            &mut |i| {
                walked.push((i.digest, i.size));
                Ok(())
            },
            &[] as &[String],
        )
        .unwrap();
    walked.sort();
    let mut want: Vec<(Digest, u64)> = blobs
        .iter()
        .map(|b| (digest_of(b), b.len() as u64))
        .collect();
    want.sort();
    assert_eq!(walked, want);
    for b in &blobs {
        let d = digest_of(b);
        let info = store.info(&d).unwrap();
        assert_eq!(info.size, b.len() as u64);
        assert!(info.created_at >= t0 - Duration::from_secs(1) && info.created_at <= t1);
        assert_eq!(read_blob(&store, &desc(&d, b.len())).unwrap(), *b);
    }

    // containerd's metadata layer names backend ingests <namespace>/<seq>/<ref>.
    let statuses = store.list_statuses(&[] as &[String]).unwrap();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let st = &statuses[0];
    assert!(
        st.reference.starts_with("default/") && st.reference.ends_with("/half-done"),
        "{st:?}"
    );
    assert_eq!(st.offset, 1 << 20);
    assert_eq!(st.total, 0, "ctr gave no expected size");
    assert!(
        st.started_at >= t0 - Duration::from_secs(1) && st.started_at <= t1,
        "{st:?}"
    );
    assert!(st.updated_at >= st.started_at);
    let filtered = store
        .list_statuses(&[format!("ref=={}", st.reference)])
        .unwrap();
    assert_eq!(filtered.len(), 1);

    // Resume containerd's ingest with our writer and finish it.
    let mut w = store
        .writer(WriterOptions::with_ref(st.reference.clone()))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, 1 << 20);
    assert_eq!(w.digest(), digest_of(&partial[..1 << 20]));
    w.write_all(&partial[1 << 20..]).unwrap();
    let d = digest_of(&partial);
    w.commit(Some(partial.len() as u64), Some(&d), Labels::new())
        .unwrap();
    assert_eq!(
        read_blob(&store, &desc(&d, partial.len())).unwrap(),
        partial
    );
    assert!(store.list_statuses(&[] as &[String]).unwrap().is_empty());
}

#[test]
fn containerd_serves_what_stowage_wrote() {
    if !external_available() {
        return;
    }
    let work = workdir();
    let root = work.path().join("root");
    let content_dir = root.join(CONTENT_DIR);
    let store = LocalStore::open(&content_dir).unwrap();
    let blobs = [data(777, 10), data(2 << 20, 11)];
    for (i, b) in blobs.iter().enumerate() {
        let d = digest_of(b);
        let mut w = store
            .writer(WriterOptions::with_ref(format!("ours-{i}")).expect(desc(&d, b.len())))
            .unwrap();
        w.write_all(b).unwrap();
        w.commit(None, None, Labels::new()).unwrap();
    }
    let inodes: Vec<u64> = blobs
        .iter()
        .map(|b| fs::metadata(store.blob_path(&digest_of(b))).unwrap().ino())
        .collect();

    let ctrd = start(&root, work.path());
    for (i, b) in blobs.iter().enumerate() {
        let d = digest_of(b);
        // The backend has the blob, meta.db does not know it yet: not visible in the namespace.
        let out = ctrd.ctr(&["content", "get", d.as_str()]);
        assert!(out.is_err(), "blob visible before adoption");
        // Adopt it into the namespace the way a shared-content ingest does: containerd finds
        // the blob already in the backend, checks its size, and records it without copying.
        ingest(&ctrd, work.path(), &format!("adopt-{i}"), b);
        let got = ctr_ok(&ctrd, &["content", "get", d.as_str()], Stdio::null());
        assert!(got == *b, "containerd served different bytes for {d}");
    }
    let ls = String::from_utf8(ctr_ok(&ctrd, &["content", "ls", "-q"], Stdio::null())).unwrap();
    for b in &blobs {
        assert!(ls.contains(digest_of(b).as_str()), "{ls}");
    }

    // Get meta.db to record an ingest (ctr is killed before sending data), then stop.
    let client = abandoned_ingest(&ctrd, "ours-partial");
    wait_active(&ctrd, "ours-partial", "0B");
    // Killed with its stdin still open: closing stdin first would let it commit empty content.
    drop(client);
    ctrd.stop().unwrap();

    // Replace containerd's backend ingest with one written entirely by stowage, half done.
    let backend_ref = store
        .list_statuses(&[] as &[String])
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .find(|r| r.ends_with("/ours-partial"))
        .expect("containerd's backend ingest");
    store.abort(&backend_ref).unwrap();
    let full = data(3_000_000, 12);
    let d = digest_of(&full);
    let mut w = store
        .writer(WriterOptions::with_ref(backend_ref.clone()).expect(desc(&d, full.len())))
        .unwrap();
    w.write_all(&full[..1_500_000]).unwrap();
    drop(w);

    let ctrd = start(&root, work.path());
    // containerd lists our ingest with our offset (ctr prints it in decimal units).
    let act = active(&ctrd);
    assert!(
        act.contains(&("ours-partial".to_string(), "1.5MB".to_string())),
        "`ctr content active` does not show stowage's ingest: {act:?}"
    );
    // And resumes it: ctr seeks its input to our offset and sends only the rest; containerd
    // re-hashes our data file, and the commit's digest check covers our bytes too.
    ingest(&ctrd, work.path(), "ours-partial", &full);
    let log = ctrd.log();
    assert!(
        !log.contains("failed to resume the status"),
        "containerd could not read stowage's ingest and restarted it:\n{}",
        tail(&log)
    );
    let got = ctr_ok(&ctrd, &["content", "get", d.as_str()], Stdio::null());
    assert!(got == full, "resumed blob differs");
    ctrd.stop().unwrap();

    // containerd served our files, it did not rewrite them.
    for (b, ino) in blobs.iter().zip(inodes) {
        assert_eq!(
            fs::metadata(store.blob_path(&digest_of(b))).unwrap().ino(),
            ino
        );
    }
    assert_eq!(
        store.status("anything").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(store.list_statuses(&[] as &[String]).unwrap().is_empty());
}
