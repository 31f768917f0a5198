//! Test support for the differential tests: runs a small Go program against containerd's own
//! packages (Debian's Go sources, GOPATH mode) and exchanges one line per case with it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where Debian's `golang-*-dev` packages install Go sources.
pub(crate) const GOPATH: &str = "/usr/share/gocode";

/// Whether the test can run: `true` when `go` and containerd's package `pkg` (e.g. `filters`)
/// are installed; `false` when one is missing and `STOWAGE_SKIP_EXTERNAL=1`; otherwise panics
/// naming what is missing. `what` says what the test runs, for that message.
pub(crate) fn have_containerd_package(pkg: &str, what: &str) -> bool {
    let dir = format!("{GOPATH}/src/github.com/containerd/containerd/{pkg}");
    let go_ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if go_ok && Path::new(&dir).is_dir() {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        return false;
    }
    panic!(
        "this test runs {what}: it needs `go` (apt: golang-go) and {dir} \
         (apt: golang-github-containerd-containerd-dev); set STOWAGE_SKIP_EXTERNAL=1 to skip it"
    );
}

/// Runs `program` with `go run`, writes `lines` to its stdin (one per line) and returns the
/// lines it prints. Panics when Go fails. `tag` names the scratch directory.
pub(crate) fn run_lines(tag: &str, program: &str, lines: &[String]) -> Vec<String> {
    // One directory per call: tests run in parallel and several may use the same tag.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("stowage-{tag}-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let main = dir.join("main.go");
    std::fs::write(&main, program).unwrap();
    let mut child = Command::new("go")
        .arg("run")
        .arg(&main)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "-p=2")
        .envs(
            // `go` needs a build cache; give it one when the environment names none.
            ["GOCACHE", "XDG_CACHE_HOME", "HOME"]
                .iter()
                .all(|v| std::env::var_os(v).is_none())
                .then(|| ("GOCACHE", dir.join("cache"))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start go run");
    let mut stdin = child.stdin.take().unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // Written from another thread so a Go program that answers as it reads cannot deadlock
    // against a full stdout pipe.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for go run");
    let written = writer.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // Go's own failure explains a broken pipe on our side, so it is reported first.
    assert!(
        out.status.success(),
        "go run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    written.expect("writing the cases to go run");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
