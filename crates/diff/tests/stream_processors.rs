//! Stream processors (containerd's `[stream_processors]`): configured programs that turn a
//! blob into a layer stream before it is applied, with the processor's payload on fd 3 and
//! the input media type in `STREAM_PROCESSOR_MEDIATYPE`.
//!
//! Needs root (the trees are read through mounts); without it the tests fail unless
//! `STOWAGE_SKIP_EXTERNAL=1`.

use std::fs;
use std::sync::Arc;

use stowage_content::LocalStore;
use stowage_core_types::diff::{Applier, ApplyConfig, Payload};
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{mediatype, Descriptor, ErrorKind, Labels};
use stowage_diff::testsuite::util::{
    fill, gzip, put_blob, sha256, tar_layer, tree_of, write_file, Entry,
};
use stowage_diff::{LocalDiffer, StreamProcessor};
use stowage_snapshots_native::NativeSnapshotter;
use stowage_tests::shell::{base64, script};

const B64: &str = "application/vnd.example.layer.v1.tar+gzip+base64";
const B64_TWICE: &str = "application/vnd.example.twice";
const FAILS: &str = "application/vnd.example.fails";

fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: needs root to mount snapshots");
        return false;
    }
    panic!("needs root to mount snapshots (set STOWAGE_SKIP_EXTERNAL=1 to skip)");
}

struct Setup {
    dir: tempfile::TempDir,
    content: Arc<LocalStore>,
    sn: NativeSnapshotter,
    differ: LocalDiffer,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    // Records what it was given (media type, payload), then decodes base64.
    let decode = script(
        dir.path(),
        "decode",
        "printf '%s\\n' \"$STREAM_PROCESSOR_MEDIATYPE\" >> \"$OUT_DIR/mediatypes\"\n\
         if [ -e /dev/fd/3 ]; then cat <&3 > \"$OUT_DIR/payload\"; fi\n\
         exec base64 -d\n",
    )
    .unwrap();
    let fails = script(
        dir.path(),
        "fails",
        "echo 'cannot decrypt: no key for this layer' >&2\nexit 3\n",
    )
    .unwrap();
    let env = vec![format!("OUT_DIR={}", out.display())];
    let processors = vec![
        StreamProcessor {
            id: "example.decode".into(),
            accepts: vec![B64.into()],
            returns: mediatype::OCI_LAYER_GZIP.into(),
            path: decode.clone(),
            env: env.clone(),
            ..StreamProcessor::default()
        },
        StreamProcessor {
            id: "example.outer".into(),
            accepts: vec![B64_TWICE.into()],
            returns: B64.into(),
            path: decode,
            env,
            ..StreamProcessor::default()
        },
        StreamProcessor {
            id: "example.fails".into(),
            accepts: vec![FAILS.into()],
            returns: mediatype::OCI_LAYER.into(),
            path: fails,
            ..StreamProcessor::default()
        },
    ];
    let content = Arc::new(LocalStore::with_memory_labels(dir.path().join("content")).unwrap());
    let sn = NativeSnapshotter::new(dir.path().join("native")).unwrap();
    let differ = LocalDiffer::new(content.clone()).with_processors(processors);
    Setup {
        dir,
        content,
        sn,
        differ,
    }
}

fn layer() -> Vec<u8> {
    tar_layer(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/secret", 0o600, b"decrypted contents\n"),
    ])
}

fn out(s: &Setup, name: &str) -> Option<Vec<u8>> {
    fs::read(s.dir.path().join("out").join(name)).ok()
}

#[test]
fn processor_output_is_applied_and_gets_its_payload() {
    if !need_root() {
        return;
    }
    let s = setup();
    let tar = layer();
    let desc = put_blob(&*s.content, B64, &base64(&gzip(&tar)).unwrap());
    let mounts = s.sn.prepare("target", "", Labels::new()).unwrap();
    let mut config = ApplyConfig::default();
    config.payloads.insert(
        "example.decode".into(),
        Payload {
            type_url: "example.com/Key".into(),
            value: vec![1, 2, 3],
        },
    );
    config.payloads.insert(
        "not.configured".into(),
        Payload {
            type_url: "ignored".into(),
            value: vec![9],
        },
    );
    let applied = s.differ.apply(&desc, &mounts, &config).expect("apply");
    assert_eq!(
        applied,
        Descriptor::new(mediatype::OCI_LAYER, sha256(&tar), tar.len() as u64)
    );
    let tree = tree_of(&mounts);
    assert!(
        tree["etc/secret"].starts_with(&format!("file {}", sha256(b"decrypted contents\n"))),
        "{tree:#?}"
    );
    assert_eq!(
        out(&s, "mediatypes").unwrap(),
        format!("{B64}\n").into_bytes()
    );
    // google.protobuf.Any { type_url = 1, value = 2 }, as containerd's processors read it.
    let mut want = vec![0x0a, 15];
    want.extend_from_slice(b"example.com/Key");
    want.extend_from_slice(&[0x12, 3, 1, 2, 3]);
    assert_eq!(out(&s, "payload").unwrap(), want);
}

#[test]
fn processors_chain_and_run_without_payloads() {
    if !need_root() {
        return;
    }
    let s = setup();
    let tar = layer();
    let desc = put_blob(
        &*s.content,
        B64_TWICE,
        &base64(&base64(&gzip(&tar)).unwrap()).unwrap(),
    );
    let mounts = s.sn.prepare("target", "", Labels::new()).unwrap();
    let applied = s
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect("apply through two processors");
    assert_eq!(applied.digest, sha256(&tar));
    // Each processor was given the type it accepts (they run at the same time, so the
    // order of their records is not fixed).
    let seen = String::from_utf8(out(&s, "mediatypes").unwrap()).unwrap();
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort_unstable();
    let mut want = vec![B64_TWICE, B64];
    want.sort_unstable();
    assert_eq!(seen, want);
    assert!(out(&s, "payload").is_none(), "no payload was given");
}

#[test]
fn failing_processor_fails_the_apply_with_its_stderr() {
    if !need_root() {
        return;
    }
    let s = setup();
    let desc = put_blob(&*s.content, FAILS, &vec![0x5a; 200_000]);
    let mounts = s.sn.prepare("target", "", Labels::new()).unwrap();
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
            .contains("cannot decrypt: no key for this layer"),
        "{err}"
    );
    assert_eq!(tree_of(&mounts), before);
}

#[test]
fn types_no_processor_takes_are_refused() {
    if !need_root() {
        return;
    }
    let s = setup();
    let desc = put_blob(&*s.content, "application/vnd.example.other", &layer());
    let mounts = s.sn.prepare("target", "", Labels::new()).unwrap();
    let err = s
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect_err("no processor");
    assert_eq!(err.kind(), ErrorKind::Unknown);
    assert_eq!(
        err.message(),
        "failed to get stream processor for application/vnd.example.other: no processor for media-type"
    );
}
