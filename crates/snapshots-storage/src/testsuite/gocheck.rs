//! Cross-checks with containerd 1.6's own Go snapshotters: a small Go program (built from
//! Debian's containerd sources, `golang-github-containerd-containerd-dev`) opens a root with
//! containerd's `overlay` or `native` package and prints every snapshot it sees; the tests
//! compare that with what a stowage snapshotter reports, in both directions (Go reads a root
//! we wrote; we read a root Go wrote).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use serde_json::Value;
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Labels;

use super::Factory;
use crate::mount::TempMount;

/// The Go program's source.
pub const GO_SOURCE: &str = include_str!("gocheck.go");

const GOPATH: &str = "/usr/share/gocode";
const CONTAINERD_SRC: &str =
    "/usr/share/gocode/src/github.com/containerd/containerd/snapshots/overlay";

/// Builds the checker once per process; `None` when Go or containerd's sources are missing
/// and `STOWAGE_SKIP_EXTERNAL=1`; panics naming what is missing otherwise.
pub fn checker() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(build).clone()
}

fn build() -> Option<PathBuf> {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_src = Path::new(CONTAINERD_SRC).is_dir();
    if !have_go || !have_src {
        let missing = if have_go {
            "containerd's Go sources (apt-get install golang-github-containerd-containerd-dev)"
        } else {
            "go (apt-get install golang-go golang-github-containerd-containerd-dev)"
        };
        if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!("skipping: {missing} not installed and STOWAGE_SKIP_EXTERNAL=1");
            return None;
        }
        panic!("this test needs {missing}, or set STOWAGE_SKIP_EXTERNAL=1 to skip");
    }
    let dir = std::env::temp_dir().join(format!("stowage-gocheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.go"), GO_SOURCE).unwrap();
    let bin = dir.join("gocheck");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&dir)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build of the checker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(bin)
}

/// Runs the checker (`dump` or `populate`) for snapshotter `kind` (`overlayfs`, `native`).
pub fn run(bin: &Path, mode: &str, kind: &str, root: &Path) -> Vec<Value> {
    let out = Command::new(bin)
        .args([mode, kind])
        .arg(root)
        .output()
        .expect("run gocheck");
    assert!(
        out.status.success(),
        "gocheck {mode} {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("gocheck prints JSON") {
        Value::Array(rows) => rows,
        other => panic!("gocheck printed {other}"),
    }
}

fn nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Asserts `sn` reports exactly what the Go snapshotter printed in `rows`.
pub fn assert_same(rows: &[Value], sn: &dyn Snapshotter) {
    let mut ours = Vec::new();
    sn.walk(
        &mut |i| {
            ours.push(i.name);
            Ok(())
        },
        &[],
    )
    .unwrap();
    ours.sort();
    let theirs: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(ours, theirs, "snapshot names");
    for r in rows {
        let name = r["name"].as_str().unwrap();
        let info = sn.stat(name).unwrap();
        assert_eq!(
            info.kind.as_str(),
            r["kind"].as_str().unwrap().to_lowercase(),
            "{name} kind"
        );
        assert_eq!(info.parent, r["parent"].as_str().unwrap(), "{name} parent");
        let labels: Labels = r["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(info.labels, labels, "{name} labels");
        assert_eq!(
            nanos(info.created_at),
            r["created"].as_i64().unwrap(),
            "{name} created"
        );
        assert_eq!(
            nanos(info.updated_at),
            r["updated"].as_i64().unwrap(),
            "{name} updated"
        );
        let u = sn.usage(name).unwrap();
        assert_eq!(
            (u.inodes, u.size),
            (r["inodes"].as_i64().unwrap(), r["size"].as_i64().unwrap()),
            "{name} usage"
        );
        if let Some(ms) = r["mounts"].as_array() {
            let theirs: Vec<Mount> = ms
                .iter()
                .map(|m| {
                    Mount::new(
                        m["type"].as_str().unwrap(),
                        m["source"].as_str().unwrap(),
                        m["options"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|o| o.as_str().unwrap().to_string()),
                    )
                })
                .collect();
            assert_eq!(sn.mounts(name).unwrap(), theirs, "{name} mounts");
        }
    }
}

fn write_through(
    sn: &dyn Snapshotter,
    key: &str,
    parent: &str,
    labels: Labels,
    file: &str,
    data: &[u8],
    scratch: &Path,
) {
    let m = sn.prepare(key, parent, labels).unwrap();
    let tm = TempMount::new_in(scratch, &m).unwrap();
    std::fs::write(tm.path().join(file), data).unwrap();
    tm.unmount().unwrap();
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Our snapshotter writes a root; containerd's Go snapshotter of `kind` reads it and must
/// see what ours sees; then it writes its own root and ours must see what it sees.
pub fn check_both_directions(kind: &str, factory: Factory<'_>) {
    if !super::require_root() {
        return;
    }
    let Some(bin) = checker() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // Go reads ours.
    let root = tmp.path().join("ours");
    {
        let sn = factory(&root).unwrap();
        let sn = &*sn;
        write_through(
            sn,
            "a",
            "",
            l(&[("x", "1")]),
            "base",
            &[b'b'; 10_000],
            tmp.path(),
        );
        sn.commit(
            "c1",
            "a",
            l(&[("y", "2"), ("containerd.io/gc.root", "now")]),
        )
        .unwrap();
        write_through(sn, "b", "c1", Labels::new(), "second", b"two", tmp.path());
        sn.commit("c2", "b", Labels::new()).unwrap();
        write_through(
            sn,
            "active",
            "c2",
            l(&[("z", "3")]),
            "third",
            b"three",
            tmp.path(),
        );
        sn.view("view1", "c1", Labels::new()).unwrap();
        sn.view("view2", "c2", Labels::new()).unwrap();
        let mut info = sn.stat("c2").unwrap();
        info.labels = l(&[("u", "updated")]);
        sn.update(info, &["labels.u".to_string()]).unwrap();
    }
    let rows = run(&bin, "dump", kind, &root);
    assert_eq!(rows.len(), 5, "{rows:?}");
    let sn = factory(&root).unwrap();
    assert_same(&rows, &*sn);
    drop(sn);

    // We read Go's.
    let root = tmp.path().join("go");
    let rows = run(&bin, "populate", kind, &root);
    assert_eq!(rows.len(), 5, "{rows:?}");
    let sn = factory(&root).unwrap();
    assert_same(&rows, &*sn);
    // And we can build on Go's snapshots.
    let m = sn.view("ours-on-go", "go-c2", Labels::new()).unwrap();
    let tm = TempMount::new_in(tmp.path(), &m).unwrap();
    assert_eq!(std::fs::read(tm.path().join("second")).unwrap(), b"two");
    assert_eq!(std::fs::read(tm.path().join("base")).unwrap().len(), 10_000);
    tm.unmount().unwrap();
    sn.remove("ours-on-go").unwrap();
    assert_eq!(
        sn.remove("go-c1").unwrap_err().kind(),
        stowage_core_types::ErrorKind::FailedPrecondition
    );
}

/// Median latencies of one snapshotter's basic operations.
#[derive(Debug, Clone, Copy)]
pub struct OpTimes {
    /// Prepare of an empty snapshot.
    pub prepare: std::time::Duration,
    /// Commit of that empty snapshot.
    pub commit: std::time::Duration,
    /// Remove of the committed snapshot.
    pub remove: std::time::Duration,
    /// View of a committed parent.
    pub view: std::time::Duration,
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times `n` rounds of prepare, commit, remove (empty snapshots) and view (of a committed
/// parent) on `sn`, the same sequence the Go checker's `bench` mode runs.
pub fn bench_ops(sn: &dyn Snapshotter, n: usize) -> OpTimes {
    use std::time::Instant;
    sn.prepare("parent-a", "", Labels::new()).unwrap();
    sn.commit("parent", "parent-a", Labels::new()).unwrap();
    let (mut p, mut c, mut r, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n.max(1) {
        let (key, name, view) = (format!("a{i}"), format!("c{i}"), format!("v{i}"));
        let t = Instant::now();
        sn.prepare(&key, "", Labels::new()).unwrap();
        p.push(t.elapsed());
        let t = Instant::now();
        sn.commit(&name, &key, Labels::new()).unwrap();
        c.push(t.elapsed());
        let t = Instant::now();
        sn.remove(&name).unwrap();
        r.push(t.elapsed());
        let t = Instant::now();
        sn.view(&view, "parent", Labels::new()).unwrap();
        v.push(t.elapsed());
        sn.remove(&view).unwrap();
    }
    OpTimes {
        prepare: median(p),
        commit: median(c),
        remove: median(r),
        view: median(v),
    }
}

/// The same rounds run by containerd's Go snapshotter `kind` on a fresh `root`; `None` when
/// Go is missing and `STOWAGE_SKIP_EXTERNAL=1`.
pub fn go_bench_ops(kind: &str, root: &Path, n: usize) -> Option<OpTimes> {
    let bin = checker()?;
    let out = Command::new(bin)
        .args(["bench", kind])
        .arg(root)
        .arg(n.max(1).to_string())
        .output()
        .expect("run gocheck bench");
    assert!(
        out.status.success(),
        "gocheck bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("gocheck bench prints JSON");
    let d = |k: &str| std::time::Duration::from_nanos(v[k].as_u64().expect("nanoseconds"));
    Some(OpTimes {
        prepare: d("prepare"),
        commit: d("commit"),
        remove: d("remove"),
        view: d("view"),
    })
}

/// The per-operation median of several runs' medians.
pub fn median_times(runs: Vec<OpTimes>) -> OpTimes {
    let pick = |f: fn(&OpTimes) -> std::time::Duration| median(runs.iter().map(f).collect());
    OpTimes {
        prepare: pick(|t| t.prepare),
        commit: pick(|t| t.commit),
        remove: pick(|t| t.remove),
        view: pick(|t| t.view),
    }
}

/// Prints our and containerd's medians side by side with the ratio (ours / containerd's).
pub fn print_comparison(what: &str, ours: &OpTimes, theirs: Option<&OpTimes>) {
    println!("{what}: median latency per operation");
    println!(
        "{:<10} {:>12} {:>14} {:>8}",
        "op", "stowage", "containerd", "ratio"
    );
    let rows = [
        ("prepare", ours.prepare, theirs.map(|t| t.prepare)),
        ("commit", ours.commit, theirs.map(|t| t.commit)),
        ("remove", ours.remove, theirs.map(|t| t.remove)),
        ("view", ours.view, theirs.map(|t| t.view)),
    ];
    for (op, o, t) in rows {
        match t {
            Some(t) => println!(
                "{op:<10} {:>10.3}ms {:>12.3}ms {:>8.2}",
                o.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e3,
                o.as_secs_f64() / t.as_secs_f64()
            ),
            None => println!(
                "{op:<10} {:>10.3}ms {:>14} {:>8}",
                o.as_secs_f64() * 1e3,
                "-",
                "-"
            ),
        }
    }
}
