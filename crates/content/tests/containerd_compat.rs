//! Compatibility with the real containerd 1.6 (Debian's `containerd` and `ctr`): it writes a
//! content directory that stowage reads, and serves blobs and ingests that stowage wrote.
//!
//! Each test starts containerd on a private root, state dir and socket in a temp dir, with a
//! minimal config (CRI and the snapshotters we do not need disabled, garbage collection never
//! triggered so blobs unknown to meta.db survive), and stops it by PID, also on failure.
//! Without containerd the tests fail saying so, unless STOWAGE_SKIP_EXTERNAL=1.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use stowage_content::{LocalStore, CONTENT_DIR};
use stowage_core_types::content::{read_blob, IngestManager, Ingester, Manager, WriterOptions};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_digest_identity::digest_of;

const SKIP_ENV: &str = "STOWAGE_SKIP_EXTERNAL";

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// True when the test can run; false (skip) only when STOWAGE_SKIP_EXTERNAL=1.
fn external_available() -> bool {
    let mut missing: Vec<String> = ["containerd", "ctr"]
        .iter()
        .filter(|p| !have(p))
        .map(|p| p.to_string())
        .collect();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root privileges (containerd runs as root)".into());
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipping containerd compatibility test: missing {missing:?} and {SKIP_ENV}=1");
        return false;
    }
    panic!(
        "containerd compatibility test needs {missing:?}: install Debian's `containerd` package \
         (apt-get install containerd) and run as root, or set {SKIP_ENV}=1 to skip"
    );
}

/// Kills a spawned process by PID when dropped (SIGKILL; used for `ctr` clients we abandon).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A containerd on a private root; stopped by PID (SIGTERM, then SIGKILL) on drop.
struct Containerd {
    child: Option<Child>,
    socket: PathBuf,
    work: PathBuf,
}

impl Containerd {
    fn start(work: &Path, root: &Path) -> Containerd {
        let state = work.join("state");
        let socket = work.join("c.sock");
        fs::create_dir_all(&state).unwrap();
        fs::create_dir_all(root).unwrap();
        let config = work.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

# Never collect: the blobs stowage writes are not in meta.db until adopted, and GC would
# delete them. (Disabling the plugin is not an option: the leases service needs it.)
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1000000
  mutation_threshold = 1000000
  startup_delay = "0s"
"#,
                root = root.display(),
                state = state.display(),
                socket = socket.display(),
                opt = work.join("opt").display(),
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(work.join("containerd.out")).unwrap())
            .stderr(fs::File::create(work.join("containerd.log")).unwrap())
            .spawn()
            .expect("start containerd");
        let mut me = Containerd {
            child: Some(child),
            socket,
            work: work.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.ctr(&["version"], Stdio::null()).status.success() {
                break;
            }
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "containerd exited with {status} during start-up:\n{}",
                    me.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up:\n{}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    fn log(&self) -> String {
        fs::read_to_string(self.work.join("containerd.log")).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["-n", "default"])
            .args(args);
        c
    }

    fn ctr(&self, args: &[&str], stdin: Stdio) -> Output {
        self.command(args).stdin(stdin).output().expect("run ctr")
    }

    fn ctr_ok(&self, args: &[&str], stdin: Stdio) -> Vec<u8> {
        let out = self.ctr(args, stdin);
        assert!(
            out.status.success(),
            "ctr {} failed: {}\ncontainerd log tail:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log())
        );
        out.stdout
    }

    /// `ctr content active` as (ref, size text) pairs.
    fn active(&self) -> Vec<(String, String)> {
        let out = String::from_utf8(self.ctr_ok(&["content", "active"], Stdio::null())).unwrap();
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }

    fn wait_active(&self, reference: &str, size: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let act = self.active();
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

    fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop_inner();
    }
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
    let ctrd = Containerd::start(work.path(), &root);

    let blobs = [data(1000, 1), data(3 << 20, 2), Vec::new()];
    for (i, b) in blobs.iter().enumerate() {
        let f = work.path().join(format!("blob{i}"));
        fs::write(&f, b).unwrap();
        let size = b.len().to_string();
        let digest = digest_of(b).to_string();
        ctrd.ctr_ok(
            &[
                "content",
                "ingest",
                "--expected-size",
                &size,
                "--expected-digest",
                &digest,
                &format!("blob-{i}"),
            ],
            fs::File::open(&f).unwrap().into(),
        );
    }

    // An ingest left in progress: ctr sends 1 MiB (its copy buffer) and is killed.
    let partial = data(1_500_000, 3);
    let mut client = ChildGuard(
        ctrd.command(&["content", "ingest", "half-done"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    client
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&partial)
        .unwrap();
    ctrd.wait_active("half-done", "1.049MB");
    drop(client);
    ctrd.stop();
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

    let ctrd = Containerd::start(work.path(), &root);
    for (i, b) in blobs.iter().enumerate() {
        let d = digest_of(b);
        // The backend has the blob, meta.db does not know it yet: not visible in the namespace.
        let out = ctrd.ctr(&["content", "get", d.as_str()], Stdio::null());
        assert!(!out.status.success(), "blob visible before adoption");
        // Adopt it into the namespace the way a shared-content ingest does: containerd finds
        // the blob already in the backend, checks its size, and records it without copying.
        let f = work.path().join(format!("adopt{i}"));
        fs::write(&f, b).unwrap();
        ctrd.ctr_ok(
            &[
                "content",
                "ingest",
                "--expected-size",
                &b.len().to_string(),
                "--expected-digest",
                d.as_str(),
                &format!("adopt-{i}"),
            ],
            fs::File::open(&f).unwrap().into(),
        );
        let got = ctrd.ctr_ok(&["content", "get", d.as_str()], Stdio::null());
        assert!(got == *b, "containerd served different bytes for {d}");
    }
    let ls = String::from_utf8(ctrd.ctr_ok(&["content", "ls", "-q"], Stdio::null())).unwrap();
    for b in &blobs {
        assert!(ls.contains(digest_of(b).as_str()), "{ls}");
    }

    // Get meta.db to record an ingest (ctr is killed before sending data), then stop.
    let client = ChildGuard(
        ctrd.command(&["content", "ingest", "ours-partial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    ctrd.wait_active("ours-partial", "0B");
    // Killed with its stdin still open: closing stdin first would let it commit empty content.
    drop(client);
    ctrd.stop();

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

    let ctrd = Containerd::start(work.path(), &root);
    // containerd lists our ingest with our offset (ctr prints it in decimal units).
    let act = ctrd.active();
    assert!(
        act.contains(&("ours-partial".to_string(), "1.5MB".to_string())),
        "`ctr content active` does not show stowage's ingest: {act:?}"
    );
    // And resumes it: ctr seeks its input to our offset and sends only the rest; containerd
    // re-hashes our data file, and the commit's digest check covers our bytes too.
    let f = work.path().join("full");
    fs::write(&f, &full).unwrap();
    ctrd.ctr_ok(
        &[
            "content",
            "ingest",
            "--expected-size",
            &full.len().to_string(),
            "--expected-digest",
            d.as_str(),
            "ours-partial",
        ],
        fs::File::open(&f).unwrap().into(),
    );
    let log = ctrd.log();
    assert!(
        !log.contains("failed to resume the status"),
        "containerd could not read stowage's ingest and restarted it:\n{}",
        tail(&log)
    );
    let got = ctrd.ctr_ok(&["content", "get", d.as_str()], Stdio::null());
    assert!(got == full, "resumed blob differs");
    ctrd.stop();

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
