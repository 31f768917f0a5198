//! stowaged with `[stream_processors]` in its config.toml: Diff.Apply (through our gRPC
//! clients) runs the configured program for a layer of the type it accepts, with its args,
//! env, the input media type and the request's payload on fd 3, and applies what it writes;
//! a processor that fails makes the apply fail with its standard error.
//!
//! Needs root (the daemon mounts snapshots) and `ctr` (the harness waits on `ctr version`);
//! without them the tests fail unless `STOWAGE_SKIP_EXTERNAL=1`.

mod common;

use std::fs;

use common::{require_ctr, Stowaged};
use stowage_core_types::diff::{Applier, ApplyConfig, Payload};
use stowage_core_types::snapshot::{Kind, Snapshotter};
use stowage_core_types::{mediatype, Descriptor, Labels};
use stowage_daemon::remote::content::RemoteContentStore;
use stowage_daemon::remote::diff::RemoteDiffer;
use stowage_daemon::remote::snapshots::RemoteSnapshotter;
use stowage_diff::testsuite::util::{
    fill, put_blob, sha256, tar_layer, tree_of, write_file, Entry,
};
use stowage_tests::shell::{base64, script};

const B64: &str = "application/vnd.example.layer.v1.tar+b64";
const FAILS: &str = "application/vnd.example.layer.v1.tar+sealed";
const NS: &str = "sp";

fn ready() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!("skipping: needs root to mount snapshots");
            return false;
        }
        panic!("needs root to mount snapshots (set STOWAGE_SKIP_EXTERNAL=1 to skip)");
    }
    require_ctr(false)
}

struct Setup {
    work: tempfile::TempDir,
    _daemon: Stowaged,
    content: RemoteContentStore,
    snapshots: RemoteSnapshotter,
    differ: RemoteDiffer,
}

/// A stowaged whose config declares a base64-decoding processor (which records its media
/// type, env and payload under `<work>/out`, and refuses to run without a payload) and one
/// that always fails; clients in namespace `sp` under a lease.
fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let decode = script(
        work.path(),
        "decode",
        "printf '%s %s\\n' \"$STREAM_PROCESSOR_MEDIATYPE\" \"$MARK\" > \"$1/seen\"\n\
         cat <&3 > \"$1/payload\" || { echo 'no payload on fd 3' >&2; exit 9; }\n\
         exec base64 -d\n",
    )
    .unwrap();
    let fails = script(
        work.path(),
        "fails",
        "echo 'cannot unseal: no key for this layer' >&2\nexit 3\n",
    )
    .unwrap();
    let cfg = work.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            r#"version = 2
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
[stream_processors."example.b64"]
  accepts = ["{B64}"]
  returns = "{}"
  path = "{}"
  args = ["{}"]
  env = ["MARK=from-config"]
[stream_processors."example.sealed"]
  accepts = ["{FAILS}"]
  returns = "{}"
  path = "{}"
"#,
            mediatype::OCI_LAYER,
            decode.display(),
            out.display(),
            mediatype::OCI_LAYER,
            fails.display(),
        ),
    )
    .unwrap();
    let d = Stowaged::start_with(
        &work.path().join("root"),
        work.path(),
        &["--config", cfg.to_str().unwrap()],
    )
    .expect("starting stowaged");
    d.ok(&["-n", NS, "leases", "create", "--id", "work"]);
    let content =
        RemoteContentStore::connect(&d.address, NS, Some("work")).expect("connect content");
    let snapshots = RemoteSnapshotter::connect(&d.address, "overlayfs", NS, Some("work"))
        .expect("connect snapshots");
    let differ = RemoteDiffer::connect(&d.address, NS, Some("work")).expect("connect diff");
    Setup {
        work,
        _daemon: d,
        content,
        snapshots,
        differ,
    }
}

#[test]
fn configured_processor_decodes_the_layer_with_its_payload() {
    if !ready() {
        return;
    }
    let s = setup();
    let tar = tar_layer(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/motd", 0o644, b"decoded by a stream processor\n"),
    ]);
    let desc = put_blob(&s.content, B64, &base64(&tar).unwrap());
    let mounts = s
        .snapshots
        .prepare("target", "", Labels::new())
        .expect("prepare");
    let mut config = ApplyConfig::default();
    config.payloads.insert(
        "example.b64".into(),
        Payload {
            type_url: "example.com/Key".into(),
            value: vec![7, 8, 9],
        },
    );
    let applied = s.differ.apply(&desc, &mounts, &config).expect("apply");
    assert_eq!(
        applied,
        Descriptor::new(mediatype::OCI_LAYER, sha256(&tar), tar.len() as u64)
    );
    let tree = tree_of(&mounts);
    assert!(
        tree["etc/motd"].starts_with(&format!(
            "file {}",
            sha256(b"decoded by a stream processor\n")
        )),
        "{tree:#?}"
    );
    let out = s.work.path().join("out");
    assert_eq!(
        fs::read_to_string(out.join("seen")).unwrap(),
        format!("{B64} from-config\n")
    );
    // The payload as a protobuf google.protobuf.Any { type_url = 1, value = 2 }.
    let mut want = vec![0x0a, 15];
    want.extend_from_slice(b"example.com/Key");
    want.extend_from_slice(&[0x12, 3, 7, 8, 9]);
    assert_eq!(fs::read(out.join("payload")).unwrap(), want);
}

#[test]
fn failing_processor_fails_the_apply_with_its_stderr() {
    if !ready() {
        return;
    }
    let s = setup();
    let tar = tar_layer(&[Entry::File("sealed", 0o644, b"never applied\n")]);
    let desc = put_blob(&s.content, FAILS, &tar);
    let mounts = s
        .snapshots
        .prepare("target", "", Labels::new())
        .expect("prepare");
    fill(&mounts, |root| {
        write_file(&root.join("before"), b"x", 0o644)
    });
    let before = tree_of(&mounts);
    let err = s
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect_err("a failing processor");
    assert!(
        err.to_string()
            .contains("cannot unseal: no key for this layer"),
        "{err}"
    );
    assert_eq!(tree_of(&mounts), before);
    let mut kinds = Vec::new();
    s.snapshots
        .walk(
            &mut |info| {
                kinds.push((info.name, info.kind));
                Ok(())
            },
            &[],
        )
        .expect("walk");
    assert_eq!(kinds, vec![("target".to_string(), Kind::Active)]);
}
