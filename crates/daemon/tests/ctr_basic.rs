//! The real `ctr` 1.6.20 against stowaged: version, plugins, namespaces, content, leases,
//! snapshots, start-up and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{ctr_at, require_ctr, Stowaged};

fn uuid_of(version: &str) -> String {
    version
        .lines()
        .find_map(|l| l.trim().strip_prefix("UUID:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| panic!("no UUID in `ctr version` output:\n{version}"))
}

#[test]
fn version_plugins_uuid_and_root_lock() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let v = d.ok(&["version"]);
    assert!(v.contains("-stowage"), "{v}");
    let uuid = uuid_of(&v);
    assert_eq!(uuid.len(), 36, "{uuid}");

    let plugins = d.ok(&["plugins", "ls"]);
    for (ty, id) in [
        ("io.containerd.content.v1", "content"),
        ("io.containerd.snapshotter.v1", "overlayfs"),
        ("io.containerd.snapshotter.v1", "native"),
        ("io.containerd.metadata.v1", "bolt"),
        ("io.containerd.differ.v1", "walking"),
        ("io.containerd.gc.v1", "scheduler"),
        ("io.containerd.grpc.v1", "images"),
        ("io.containerd.grpc.v1", "content"),
    ] {
        assert!(
            plugins.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 4 && f[0] == ty && f[1] == id && f[3] == "ok"
            }),
            "plugin {ty} {id} missing or not ok:\n{plugins}"
        );
    }
    let only = d.ok(&["plugins", "ls", "type==io.containerd.snapshotter.v1"]);
    assert_eq!(only.lines().count(), 3, "{only}");

    // A second daemon on the same root refuses quickly and says why.
    let dir2 = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowaged"))
        .arg("--root")
        .arg(&d.root)
        .arg("--state")
        .arg(dir2.path().join("state"))
        .arg("--address")
        .arg(dir2.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another daemon"), "{err}");

    // Graceful stop, and the UUID survives the restart.
    assert!(
        d.stop().unwrap(),
        "stowaged did not exit cleanly on SIGTERM"
    );
    let d = Stowaged::start(dir.path()).unwrap();
    assert_eq!(uuid_of(&d.ok(&["version"])), uuid);
    assert!(d.stop().unwrap());
}

#[test]
fn socket_is_0660() {
    if !require_ctr(false) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let mode = std::fs::metadata(&d.address).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
}

#[test]
fn namespaces() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start_quiet_gc(dir.path()).unwrap();
    d.ok(&["namespaces", "create", "team-a", "owner=alice"]);
    d.ok(&["namespaces", "create", "team-b"]);
    let ls = d.ok(&["namespaces", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["team-a", "owner=alice"]),
        "{ls}"
    );
    assert!(ls.lines().any(|l| l.trim() == "team-b"), "{ls}");
    let err = d.fails(&["namespaces", "create", "team-a"]);
    assert!(err.contains("already exists"), "{err}");

    d.ok(&["namespaces", "label", "team-a", "owner=bob", "tier=1"]);
    let ls = d.ok(&["namespaces", "ls"]);
    let line = ls.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert!(
        line.contains("owner=bob") && line.contains("tier=1"),
        "{ls}"
    );
    d.ok(&["namespaces", "label", "team-a", "tier="]);
    let ls = d.ok(&["namespaces", "ls", "-q"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["team-a", "team-b"]);

    d.ok(&["namespaces", "rm", "team-b"]);
    let ls = d.ok(&["namespaces", "ls", "-q"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["team-a"]);
    // A namespace holding content cannot go.
    let r = ctr_at(
        &d.address,
        &["-n", "team-a", "content", "ingest", "x"],
        Some(b"data"),
    )
    .unwrap();
    assert!(r.ok, "{}", r.stderr);
    let err = d.fails(&["namespaces", "rm", "team-a"]);
    assert!(err.contains("failed precondition"), "{err}");
}

#[test]
fn content() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start_quiet_gc(dir.path()).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = ctr_at(&d.address, &["content", "ingest", "blob-1"], Some(&data)).unwrap();
    assert!(r.ok, "{}", r.stderr);
    use sha2::{Digest as _, Sha256};
    let dgst = format!(
        "sha256:{}",
        Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let ls = d.ok(&["content", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&dgst))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains("\t3MB\t"), "{line}");

    // get streams it back in 1 MiB reads.
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&d.address)
        .args(["content", "get", &dgst])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data, "content get returned different bytes");

    d.ok(&["content", "label", &dgst, "a=1", "b=2"]);
    let ls = d.ok(&["content", "ls"]);
    let line = ls.lines().find(|l| l.starts_with(&dgst)).unwrap();
    let mut got: Vec<&str> = line.rsplit('\t').next().unwrap().split(',').collect();
    got.sort();
    assert_eq!(got, ["a=1", "b=2"], "{line}");
    // `a=` removes a label (a bare `a` would set it to "true", as ctr does).
    d.ok(&["content", "label", &dgst, "a="]);
    let ls = d.ok(&["content", "ls"]);
    let line = ls.lines().find(|l| l.starts_with(&dgst)).unwrap();
    assert_eq!(line.rsplit('\t').next(), Some("b=2"), "{line}");

    // An ingest in progress shows in `active` with its offset.
    let mut child = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "slow-ref"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(&vec![1u8; 2 << 20]).unwrap();
        stdin.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let active = loop {
        let a = d.ok(&["content", "active"]);
        if a.contains("slow-ref") || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(active.contains("slow-ref"), "{active}");
    // The client goes away mid-write: the ingest stays, resumable.
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let active = d.ok(&["content", "active"]);
    assert!(active.contains("slow-ref"), "{active}");

    d.ok(&["content", "rm", &dgst]);
    let err = d.fails(&["content", "get", &dgst]);
    assert!(err.contains("not found"), "{err}");
    assert!(!d.ok(&["content", "ls", "-q"]).contains(&dgst));
}

#[test]
fn leases() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    d.ok(&["leases", "create", "--id", "l1", "--expires", "1h"]);
    let generated = d.ok(&["leases", "create"]);
    let generated = generated.trim().to_string();
    assert!(!generated.is_empty());
    let ls = d.ok(&["leases", "ls"]);
    let l1 = ls
        .lines()
        .find(|l| l.starts_with("l1 "))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(l1.contains("containerd.io/gc.expire="), "{l1}");
    assert!(ls.contains(&generated), "{ls}");
    let err = d.fails(&["leases", "create", "--id", "l1"]);
    assert!(err.contains("already exists"), "{err}");
    d.ok(&["leases", "rm", "l1"]);
    let ls = d.ok(&["leases", "ls", "-q"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), [generated.as_str()]);
    let err = d.fails(&["leases", "rm", "l1"]);
    assert!(err.contains("not found"), "{err}");
}

fn snapshots_on(d: &Stowaged, sn: &str) {
    let s = |args: &[&str]| {
        let mut a = vec!["snapshots", "--snapshotter", sn];
        a.extend_from_slice(args);
        d.ok(&a)
    };
    let mounts = s(&["prepare", "base-active", ""]);
    let mounts_line = s(&["mounts", "/mnt", "base-active"]);
    assert!(mounts_line.starts_with("mount "), "{mounts_line}");
    let _ = mounts;
    s(&["commit", "base", "base-active"]);
    s(&["prepare", "child", "base"]);
    s(&["view", "child-view", "base"]);
    let info = s(&["info", "child"]);
    let v: serde_json::Value =
        serde_json::from_str(&info).unwrap_or_else(|e| panic!("{e}: {info}"));
    assert_eq!(v["Name"], "child");
    assert_eq!(v["Parent"], "base");
    assert_eq!(v["Kind"], "Active");
    s(&["label", "child", "color=blue"]);
    let info: serde_json::Value = serde_json::from_str(&s(&["info", "child"])).unwrap();
    assert_eq!(info["Labels"]["color"], "blue");
    let ls = s(&["ls"]);
    let rows: Vec<Vec<&str>> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.contains(&vec!["base", "Committed"]), "{ls}");
    assert!(rows.contains(&vec!["child", "base", "Active"]), "{ls}");
    assert!(rows.contains(&vec!["child-view", "base", "View"]), "{ls}");
    let tree = s(&["tree"]);
    assert!(
        tree.contains("base") && tree.contains("\\_ child"),
        "{tree}"
    );
    let usage = s(&["usage", "base"]);
    assert!(
        usage.lines().nth(1).is_some_and(|l| l.starts_with("base")),
        "{usage}"
    );
    let mut a = vec!["snapshots", "--snapshotter", sn, "rm", "base"];
    let err = d.fails(&a);
    assert!(err.contains("failed precondition"), "{err}");
    s(&["rm", "child", "child-view"]);
    a.truncate(5);
    d.ok(&a);
    assert_eq!(s(&["ls"]).lines().count(), 1);
}

#[test]
fn snapshots_overlayfs_and_native() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ctr's `view` sets no gc.root label, so keep the collector from removing the views
    // while the test looks at them (and read the config file on the way).
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "version = 2\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n  startup_delay = \"1h\"\n  mutation_threshold = 100000\n",
    )
    .unwrap();
    let d = Stowaged::start_with(
        &dir.path().join("root"),
        dir.path(),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    snapshots_on(&d, "overlayfs");
    snapshots_on(&d, "native");
    let err = d.fails(&["snapshots", "--snapshotter", "zfs", "ls"]);
    assert!(err.contains("snapshotter not loaded: zfs"), "{err}");
}
