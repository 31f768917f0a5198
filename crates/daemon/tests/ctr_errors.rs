//! Bad input: the same `ctr` commands against containerd 1.6 and stowaged fail the same way
//! (exit status and the error text ctr prints, which carries containerd's gRPC code class).

mod common;

use common::{ctr_at, require_ctr, Stowaged};
use stowage_tests::containerd::Containerd;

/// Cases where stowaged words a message differently from containerd: there the exit status,
/// the output and the error class (the trailing `: <kind>`) must still match. Empty now that
/// snapshot keys, container not-found errors and the identifier pattern use containerd's
/// wording; a new entry needs a reason.
const TEXT_DIFFERS: &[&str] = &[];

fn kind_suffix(stderr: &str) -> &str {
    let last = stderr.trim().lines().last().unwrap_or("");
    last.rsplit(": ").next().unwrap_or("")
}

const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn errors_match_containerd() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&cdir.path().join("root"), cdir.path()).unwrap();
    let cases: Vec<(Vec<&str>, Option<&[u8]>)> = vec![
        (vec!["namespaces", "rm", "nope"], None),
        (vec!["content", "get", ZERO], None),
        (vec!["content", "rm", ZERO], None),
        (vec!["content", "label", ZERO, "a=b"], None),
        (vec!["content", "get", "sha256:zz"], None),
        (
            vec![
                "content",
                "ingest",
                "--expected-digest",
                ZERO,
                "wrong-digest",
            ],
            Some(b"some bytes"),
        ),
        (
            vec!["content", "ingest", "--expected-size", "3", "wrong-size"],
            Some(b"some bytes"),
        ),
        (vec!["snapshots", "--snapshotter", "nope", "ls"], None),
        (vec!["snapshots", "info", "nope"], None),
        (vec!["snapshots", "rm", "nope"], None),
        (vec!["snapshots", "commit", "x", "nope"], None),
        (vec!["snapshots", "prepare", "k", "missing-parent"], None),
        (vec!["leases", "rm", "nope"], None),
        (vec!["containers", "info", "nope"], None),
        (vec!["containers", "rm", "nope"], None),
        (vec!["images", "check", "nope"], None),
        (vec!["-n", "bad..namespace", "images", "ls"], None),
        (vec!["-n", "bad..namespace", "content", "ls"], None),
        (vec!["namespaces", "create", "Bad_Name"], None),
        (vec!["leases", "create", "--id", "bad id"], None),
    ];
    let mut diffs = Vec::new();
    for (args, stdin) in &cases {
        let ours = ctr_at(&d.address, args, *stdin).unwrap();
        let theirs = ctr_at(&c.address, args, *stdin).unwrap();
        let joined = args.join(" ");
        let same = if TEXT_DIFFERS.contains(&joined.as_str()) {
            if ours.stderr != theirs.stderr {
                eprintln!(
                    "known wording difference: ctr {joined}\n  containerd: {}\n  stowaged:   {}",
                    theirs.stderr.trim(),
                    ours.stderr.trim()
                );
            }
            ours.ok == theirs.ok
                && ours.stdout == theirs.stdout
                && kind_suffix(&ours.stderr) == kind_suffix(&theirs.stderr)
                && !ours.stderr.is_empty()
        } else {
            ours.ok == theirs.ok && ours.stderr == theirs.stderr && ours.stdout == theirs.stdout
        };
        if !same {
            diffs.push(format!(
                "ctr {}\n  containerd: ok={} out={:?} err={:?}\n  stowaged:   ok={} out={:?} err={:?}",
                args.join(" "),
                theirs.ok,
                theirs.stdout,
                theirs.stderr.trim(),
                ours.ok,
                ours.stdout,
                ours.stderr.trim()
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
