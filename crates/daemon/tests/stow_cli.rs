//! The `stow` CLI against stowaged, cross-checked with what `ctr` sees; and against
//! containerd itself, which speaks the same API.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{require_ctr, tree, Stowaged};
use stowage_tests::containerd::Containerd;

/// A daemon stow can be pointed at.
trait Socket {
    fn socket(&self) -> &Path;
}

impl Socket for Stowaged {
    fn socket(&self) -> &Path {
        &self.address
    }
}

impl Socket for Containerd {
    fn socket(&self) -> &Path {
        &self.address
    }
}

fn stow_run(d: &impl Socket, args: &[&str], stdin: &[u8]) -> std::process::Output {
    common::stow_at(d.socket(), args, stdin)
}

fn stow_in(d: &impl Socket, args: &[&str], stdin: &[u8]) -> String {
    let out = stow_run(d, args, stdin);
    assert!(
        out.status.success(),
        "stow {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stow(d: &impl Socket, args: &[&str]) -> String {
    stow_in(d, args, b"")
}

fn stow_fails(d: &impl Socket, args: &[&str]) -> String {
    let out = stow_run(d, args, b"");
    assert!(!out.status.success(), "stow {} succeeded", args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Lines with their columns' spacing ignored (ctr pads with tabwriter, stow with spaces).
fn words(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn stow_lists_what_ctr_lists() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let dir = tempfile::tempdir().unwrap();
    // The listings below are compared across time: garbage the imports leave (ctr's own
    // index blob, the daemon's eager unpack stopped by the import's lease going) must not be
    // collected between two of them.
    let d = Stowaged::start_quiet_gc(dir.path()).unwrap();
    for f in &fixtures[..2] {
        d.ok(&["images", "import", f.archive.to_str().unwrap()]);
    }
    let v = stow(&d, &["version"]);
    assert!(v.contains("UUID: ") && v.contains("-stowage"), "{v}");

    assert_eq!(
        lines(&stow(&d, &["images", "ls", "-q"])),
        lines(&d.ok(&["images", "ls", "-q"]))
    );
    assert_eq!(
        lines(&stow(&d, &["content", "ls", "-q"])),
        lines(&d.ok(&["content", "ls", "-q"]))
    );
    let ctr_keys: Vec<String> = {
        let mut v: Vec<String> = d
            .ok(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert!(!ctr_keys.is_empty());
    assert_eq!(lines(&stow(&d, &["snapshots", "ls", "-q"])), ctr_keys);
    let js: serde_json::Value =
        serde_json::from_str(&stow(&d, &["--format", "json", "images", "ls"])).unwrap();
    let arr = js.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for f in &fixtures[..2] {
        assert!(
            arr.iter()
                .any(|i| i["name"] == f.reference.as_str()
                    && i["digest"] == f.manifest_digest.as_str()),
            "{js}"
        );
    }
    // ctr's columns word for word, sizes and platforms included.
    assert_eq!(
        lines(&words(&stow(&d, &["images", "ls"])).join("\n")),
        lines(&words(&d.ok(&["images", "ls"])).join("\n"))
    );

    stow(&d, &["namespaces", "create", "tools", "a=1"]);
    stow(&d, &["namespaces", "label", "tools", "b=2", "a="]);
    let ns = d.ok(&["namespaces", "ls"]);
    let line = ns.lines().find(|l| l.starts_with("tools")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["tools", "b=2"],
        "{ns}"
    );
    stow(&d, &["namespaces", "rm", "tools"]);
    assert!(!d.ok(&["namespaces", "ls", "-q"]).contains("tools"));

    let id = stow(&d, &["leases", "create", "--id", "stow-lease"]);
    assert_eq!(id.trim(), "stow-lease");
    assert!(d.ok(&["leases", "ls", "-q"]).contains("stow-lease"));
    stow(&d, &["leases", "rm", "stow-lease"]);
    assert!(!d.ok(&["leases", "ls", "-q"]).contains("stow-lease"));

    let plugins = stow(
        &d,
        &["plugins", "ls", "-q", "type==io.containerd.snapshotter.v1"],
    );
    assert_eq!(lines(&plugins), ["native", "overlayfs"]);

    // As ctr: a missing image is a warning, not a failure.
    let out = stow_run(&d, &["images", "rm", "nope"], b"");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope: image not found"));
    let err = stow_fails(&d, &["snapshots", "--snapshotter", "zfs", "ls"]);
    assert!(err.contains("snapshotter not loaded: zfs"), "{err}");
}

#[test]
fn stow_images_check_mount_and_unmount_agree_with_ctr() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let (base, layered) = (&fixtures[0], &fixtures[1]);
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&base.archive, &layered.archive]);
    // Break the base image: one of its layers goes.
    let layer = json(&stow(&d, &["content", "get", &base.manifest_digest]))["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(&["content", "rm", &layer]);
    let ours = words(&stow(&d, &["images", "check"]));
    assert_eq!(
        lines(&ours.join("\n")),
        lines(&words(&d.ok(&["images", "check"])).join("\n"))
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with(&format!("{} ", base.reference)) && l.contains("incomplete")),
        "{ours:?}"
    );
    assert_eq!(
        stow(&d, &["images", "check", "-q"]).trim(),
        layered.reference
    );
    let js = json(&stow(&d, &["--format", "json", "images", "check"]));
    let b = js
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == base.reference.as_str())
        .unwrap();
    assert_eq!(b["missing"], serde_json::json!([layer]), "{js}");

    // stow unpacks on the client side (namespace default), ctr through the Diff service
    // (namespace other, so nothing is shared): the mounted trees must be the same.
    let archive = layered.archive.to_str().unwrap();
    d.ok(&["-n", "other", "images", "import", "--no-unpack", archive]);
    let (ta, tb) = (dir.path().join("stow-mnt"), dir.path().join("ctr-mnt"));
    std::fs::create_dir_all(&ta).unwrap();
    std::fs::create_dir_all(&tb).unwrap();
    let (a, b) = (ta.to_str().unwrap(), tb.to_str().unwrap());
    let out = stow(&d, &["images", "mount", &layered.reference, a]);
    let chain = out.lines().next().unwrap().to_string();
    assert_eq!(out.lines().nth(1), Some(a), "{out}");
    d.ok(&["-n", "other", "images", "mount", &layered.reference, b]);
    let listing = tree(&ta);
    assert!(!listing.is_empty());
    assert_eq!(listing, tree(&tb));
    let snaps = words(&d.ok(&["snapshots", "ls"]));
    assert!(
        snaps
            .iter()
            .any(|l| l.starts_with(&format!("{chain} ")) && l.ends_with(" Committed")),
        "{snaps:?}"
    );
    assert!(snaps.contains(&format!("{a} {chain} View")), "{snaps:?}");
    assert!(d.ok(&["leases", "ls", "-q"]).lines().any(|l| l == a));
    // The unpack was recorded in the content labels as containerd's unpacker records it.
    let labels = d.ok(&["content", "ls"]);
    assert!(
        labels.contains(&format!("containerd.io/gc.ref.snapshot.overlayfs={chain}")),
        "{labels}"
    );
    assert!(
        labels.contains("containerd.io/uncompressed=sha256:"),
        "{labels}"
    );
    let unpacked = |sn: &str| {
        let out = stow(&d, &["images", "check", "--snapshotter", sn]);
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{} ", layered.reference)))
            .unwrap()
            .to_string();
        line.ends_with(" true")
    };
    assert!(unpacked("overlayfs"));
    assert!(!unpacked("native"));

    assert_eq!(stow(&d, &["images", "unmount", "--rm", a]).trim(), a);
    assert_eq!(std::fs::read_dir(&ta).unwrap().count(), 0, "still mounted");
    assert!(!d
        .ok(&["snapshots", "ls"])
        .lines()
        .any(|l| l.starts_with(&format!("{a} "))));
    assert!(!d.ok(&["leases", "ls", "-q"]).lines().any(|l| l == a));
    d.ok(&["-n", "other", "images", "unmount", "--rm", b]);
    let err = stow_fails(&d, &["images", "mount", "nope:1", a]);
    assert!(
        err.contains("not found") && err.contains("stow images ls"),
        "{err}"
    );
    assert!(
        !d.ok(&["leases", "ls", "-q"]).lines().any(|l| l == a),
        "lease left after a failed mount"
    );
}

#[test]
fn stow_snapshots_content_and_containers_as_ctr_sees_them() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start_quiet_gc(dir.path()).unwrap();

    // content ingest: checked against the expected size and digest.
    let data = b"stowed through stdin\n";
    let digest = format!("sha256:{}", {
        use sha2::Digest as _;
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    });
    let size = data.len().to_string();
    stow_in(
        &d,
        &[
            "content",
            "ingest",
            "--expected-size",
            &size,
            "--expected-digest",
            &digest,
            "ing-1",
        ],
        data,
    );
    assert!(d.ok(&["content", "ls", "-q"]).lines().any(|l| l == digest));
    assert_eq!(d.ok(&["content", "get", &digest]).as_bytes(), data);
    let bad = stow_run(
        &d,
        &["content", "ingest", "--expected-size", "3", "ing-2"],
        data,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ing-2"));
    // The failed ingest stays for a retry, as in containerd; both tools list it.
    assert_eq!(stow(&d, &["content", "active", "-q"]).trim(), "ing-2");
    assert!(d.ok(&["content", "active"]).contains("ing-2"));
    assert_eq!(
        stow(&d, &["content", "label", &digest, "a=1"]).trim(),
        "a=1"
    );

    // Snapshots made with stow, seen by ctr.
    let out = stow(
        &d,
        &["snapshots", "prepare", "--target", "/mnt/x", "s-active"],
    );
    assert!(
        out.starts_with("mount -t ") && out.contains(" /mnt/x -o "),
        "{out}"
    );
    stow(&d, &["snapshots", "commit", "s-base", "s-active"]);
    stow(&d, &["snapshots", "prepare", "s-child", "s-base"]);
    let view = json(&stow(
        &d,
        &["snapshots", "view", "--mounts", "s-view", "s-base"],
    ));
    assert!(
        view[0]["Type"].is_string() && view[0]["Options"].is_array(),
        "{view}"
    );
    let ls = words(&d.ok(&["snapshots", "ls"]));
    for row in [
        "s-base Committed",
        "s-child s-base Active",
        "s-view s-base View",
    ] {
        assert!(ls.iter().any(|l| l == row), "{row} not in {ls:?}");
    }
    assert_eq!(
        stow(&d, &["snapshots", "tree"]),
        d.ok(&["snapshots", "tree"])
    );
    assert!(stow(&d, &["snapshots", "tree"]).contains("  \\_ s-child"));
    let labels = stow(&d, &["snapshots", "label", "s-base", "team=storage"]);
    assert!(
        labels.contains("team=storage") && labels.contains("containerd.io/gc.root="),
        "{labels}"
    );
    assert_eq!(
        json(&stow(&d, &["snapshots", "info", "s-base"])),
        json(&d.ok(&["snapshots", "info", "s-base"]))
    );
    assert_eq!(
        words(&stow(&d, &["snapshots", "usage", "-b"])),
        words(&d.ok(&["snapshots", "usage", "-b"]))
    );
    assert_eq!(
        stow(&d, &["snapshots", "mounts", "/mnt/y", "s-child"]),
        d.ok(&["snapshots", "mounts", "/mnt/y", "s-child"])
    );
    let js = json(&stow(&d, &["snapshots", "ls", "--format", "json"]));
    assert_eq!(js.as_array().unwrap().len(), 3, "{js}");
    stow(&d, &["snapshots", "rm", "s-view", "s-child"]);
    assert!(!d.ok(&["snapshots", "ls"]).contains("s-child"));

    // A container record on an image: unpacked, its snapshot prepared, seen by ctr.
    let f = &fixtures[0];
    d.ok(&[
        "images",
        "import",
        "--no-unpack",
        f.archive.to_str().unwrap(),
    ]);
    let created = stow(
        &d,
        &[
            "containers",
            "create",
            "--label",
            "k=v",
            &f.reference,
            "c1",
            "/bin/true",
            "-x",
        ],
    );
    assert!(
        created.is_empty(),
        "create prints nothing, as ctr: {created:?}"
    );
    let ls = words(&d.ok(&["containers", "ls"]));
    assert!(
        ls.iter()
            .any(|l| l == &format!("c1 {} io.containerd.runc.v2", f.reference)),
        "{ls:?}"
    );
    let info = json(&d.ok(&["containers", "info", "c1"]));
    assert_eq!(info["SnapshotKey"], "c1");
    assert_eq!(info["Snapshotter"], "overlayfs");
    assert_eq!(info["Labels"]["k"], "v");
    assert_eq!(
        info["Spec"]["process"]["args"],
        serde_json::json!(["/bin/true", "-x"]),
        "{info}"
    );
    assert!(words(&d.ok(&["snapshots", "ls"]))
        .iter()
        .any(|l| l.starts_with("c1 sha256:") && l.ends_with(" Active")));
    assert!(
        d.ok(&["leases", "ls", "-q"]).trim().is_empty(),
        "the create's lease must end"
    );
    // As with ctr, the record also carries the image's stop signal (SIGTERM by default).
    assert_eq!(
        stow(&d, &["containers", "label", "c1", "k=", "team=x"]).trim(),
        "io.containerd.image.config.stop-signal=SIGTERM,team=x"
    );
    assert_eq!(
        json(&d.ok(&["containers", "info", "c1"]))["Labels"],
        serde_json::json!({"team": "x", "io.containerd.image.config.stop-signal": "SIGTERM"})
    );
    let img_labels = stow(&d, &["images", "label", &f.reference, "a=1", "b=2"]);
    assert_eq!(img_labels.trim(), "a=1,b=2");
    assert!(words(&d.ok(&["images", "ls"]))
        .iter()
        .any(|l| l.starts_with(&f.reference) && l.ends_with(" a=1,b=2")));
    assert_eq!(
        stow(&d, &["images", "label", "-r", &f.reference, "c=3"]).trim(),
        "c=3"
    );
    stow(&d, &["containers", "rm", "c1"]);
    assert!(d.ok(&["containers", "ls", "-q"]).trim().is_empty());
    assert!(!d.ok(&["snapshots", "ls"]).contains("c1 "));
}

/// Reads `child`'s stdout lines on a thread.
fn line_reader(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line about the namespace or tag made last (earlier tags may still be queued).
fn next_of_ours(rx: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("no event within a minute");
        if l.contains("evns") || l.contains("tagged:last") {
            return l;
        }
    }
}

#[test]
fn stow_events_sees_what_ctr_does() {
    if !require_ctr(false) {
        return;
    }
    let f = &common::fixtures()[0];
    let dir = tempfile::tempdir().unwrap();
    // No collector runs to publish events of its own.
    let d = common::quiet_gc_with_images(dir.path(), &[&f.archive]);
    let spawn = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stow"))
            .arg("--address")
            .arg(&d.address)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut all = spawn(&["events"]);
    // The filtered stream also speaks JSON, one object a line.
    let mut only_images = spawn(&["--format", "json", "events", "topic==\"/images/create\""]);
    let (all_rx, img_rx) = (line_reader(&mut all), line_reader(&mut only_images));
    // The subscriptions start at some point after spawn: tag until both have seen one.
    let wait = std::time::Duration::from_millis(500);
    let mut seen_all = None;
    let mut seen_img = None;
    for n in 0..120 {
        let name = format!("tagged:{n}");
        d.ok(&["images", "tag", &f.reference, &name]);
        seen_all = seen_all.or_else(|| all_rx.recv_timeout(wait).ok());
        seen_img = seen_img.or_else(|| img_rx.recv_timeout(wait).ok());
        if seen_all.is_some() && seen_img.is_some() {
            break;
        }
    }
    let first = seen_all.expect("stow events printed nothing for a minute of tags");
    // ctr's form: Go timestamp, namespace, topic, event JSON.
    let parts: Vec<&str> = first.splitn(6, ' ').collect();
    assert_eq!(parts[2..4], ["+0000", "UTC"], "{first}");
    assert_eq!(parts[4], "default", "{first}");
    assert!(
        parts[5].starts_with("/images/create {\"name\":\"tagged:"),
        "{first}"
    );
    let img = json(&seen_img.unwrap());
    assert_eq!(img["topic"], "/images/create", "{img}");
    assert_eq!(img["namespace"], "default", "{img}");
    // Both subscribed now: a namespace event reaches the unfiltered stream only.
    d.ok(&["namespaces", "create", "evns"]);
    d.ok(&["images", "tag", &f.reference, "tagged:last"]);
    let next_all = next_of_ours(&all_rx);
    // The envelope's namespace field is the daemon's choice (containerd stamps the request's
    // namespace), not stow's: only the topic and payload are checked.
    assert!(
        next_all.contains(" /namespaces/create {\"name\":\"evns\"}"),
        "{next_all}"
    );
    let next_img = next_of_ours(&img_rx);
    assert!(
        json(&next_img)["event"] == serde_json::json!({"name": "tagged:last"}),
        "{next_img}"
    );
    for mut c in [all, only_images] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

#[test]
fn stow_speaks_to_containerd_as_ctr_does() {
    if !require_ctr(true) {
        return;
    }
    let fixtures = common::fixtures();
    let f = &fixtures[1];
    let dir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&dir.path().join("root"), dir.path()).unwrap();
    let ctr = |a: &[&str]| {
        c.ctr(a)
            .unwrap_or_else(|e| panic!("containerd: {e}\n{}", c.log()))
    };
    let archive = f.archive.to_str().unwrap();
    ctr(&["images", "import", "--no-unpack", archive]);
    ctr(&["-n", "other", "images", "import", "--no-unpack", archive]);
    assert_eq!(
        words(&stow(&c, &["images", "ls"])),
        words(&ctr(&["images", "ls"]))
    );

    // stow's client-side unpack into containerd's overlayfs gives the tree containerd's own
    // unpack gives (in another namespace, so nothing is shared).
    let (ta, tb) = (dir.path().join("stow-mnt"), dir.path().join("ctr-mnt"));
    std::fs::create_dir_all(&ta).unwrap();
    std::fs::create_dir_all(&tb).unwrap();
    let (a, b) = (ta.to_str().unwrap(), tb.to_str().unwrap());
    stow(&c, &["images", "mount", &f.reference, a]);
    ctr(&["-n", "other", "images", "mount", &f.reference, b]);
    let listing = tree(&ta);
    assert!(!listing.is_empty());
    assert_eq!(listing, tree(&tb));
    assert_eq!(
        words(&stow(&c, &["images", "check"])),
        words(&ctr(&["images", "check"]))
    );
    assert_eq!(
        stow(&c, &["snapshots", "tree"]),
        ctr(&["snapshots", "tree"])
    );
    stow(&c, &["images", "unmount", "--rm", a]);
    ctr(&["-n", "other", "images", "unmount", "--rm", b]);
    assert!(!ctr(&["snapshots", "ls"]).contains(a));
    assert!(ctr(&["leases", "ls", "-q"]).trim().is_empty());
}

/// A pass-through socket in front of a daemon's that counts the connections made to it.
struct CountingProxy {
    path: std::path::PathBuf,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Socket for CountingProxy {
    fn socket(&self) -> &Path {
        &self.path
    }
}

impl CountingProxy {
    /// Listens at `path` and forwards each connection to `upstream`, both ways.
    fn start(path: &Path, upstream: &Path) -> CountingProxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let listener = UnixListener::bind(path).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, upstream) = (accepted.clone(), upstream.to_path_buf());
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let pipe = |mut from: UnixStream, mut to: UnixStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                pipe(up, down);
            }
        });
        CountingProxy {
            path: path.to_path_buf(),
            accepted,
        }
    }

    /// The connections accepted since the last call. Every connection that carried a call
    /// was accepted before the call could be answered, so after a command has finished its
    /// connections are all counted.
    fn take(&self) -> usize {
        self.accepted.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn each_stow_command_makes_one_connection() {
    if !require_ctr(false) {
        return;
    }
    let f = &common::fixtures()[1];
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&f.archive]);
    let p = CountingProxy::start(&dir.path().join("proxy.sock"), &d.address);
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let t = target.to_str().unwrap();
    // Each of these uses the generated clients and one or more of the remote stores
    // (content, snapshotter, differ; `mount` and `create` all three, under a lease).
    let commands: [&[&str]; 6] = [
        &["images", "ls"],
        &["images", "mount", &f.reference, t],
        &["images", "check"],
        &["images", "unmount", "--rm", t],
        &["containers", "create", &f.reference, "one-conn"],
        &["content", "ls"],
    ];
    for args in commands {
        stow(&p, args);
        assert_eq!(p.take(), 1, "connections made by stow {args:?}");
    }
    assert!(d.ok(&["containers", "ls", "-q"]).contains("one-conn"));
    // And the daemon saw the unpack and the mount through the proxy.
    assert!(d.ok(&["snapshots", "ls"]).contains("one-conn"));
}
