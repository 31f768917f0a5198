//! The cases of the differ conformance suite. Each gets a fresh [`TestDiffer`]; snapshot keys
//! need only be unique within a case.

use std::fs;
use std::path::Path;

use stowage_core_types::diff::{ApplyConfig, CompareOptions, Payload};
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_core_types::{Descriptor, ErrorKind, Labels};

use super::util::{
    decompress, fill, get_blob, gzip, make_symlink, paths, put_blob, set_xattr, sha256, tar_layer,
    tree_of, tree_of_key, write_file, zstd, Entry, Tree, LAYER_TIME,
};
use super::TestDiffer;
use crate::UNCOMPRESSED_LABEL;

fn prepare(f: &TestDiffer, key: &str, parent: &str) -> Vec<Mount> {
    f.snapshotter
        .prepare(key, parent, Labels::new())
        .unwrap_or_else(|e| panic!("prepare {key} on {parent:?}: {e}"))
}

fn view(f: &TestDiffer, key: &str, parent: &str) -> Vec<Mount> {
    f.snapshotter
        .view(key, parent, Labels::new())
        .unwrap_or_else(|e| panic!("view {key} of {parent}: {e}"))
}

fn commit(f: &TestDiffer, name: &str, key: &str) {
    f.snapshotter
        .commit(name, key, Labels::new())
        .unwrap_or_else(|e| panic!("commit {key} as {name}: {e}"));
}

/// The layer the apply cases unpack, and what it must give.
fn sample_layer() -> Vec<u8> {
    tar_layer(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/hosts", 0o640, b"127.0.0.1 localhost\n"),
        Entry::Dir("opt/", 0o711),
        Entry::File("opt/tool", 0o4755, b"#!/bin/sh\necho tool\n"),
        Entry::Symlink("hosts", "etc/hosts"),
    ])
}

fn check_sample_tree(tree: &Tree) {
    assert_eq!(
        paths(tree),
        ["etc", "etc/hosts", "hosts", "opt", "opt/tool"],
        "applied tree: {tree:#?}"
    );
    let hosts = &tree["etc/hosts"];
    assert!(
        hosts.starts_with(&format!("file {}", sha256(b"127.0.0.1 localhost\n"))),
        "{hosts}"
    );
    assert!(hosts.contains("mode=640 owner=0:0"), "{hosts}");
    assert!(hosts.contains(&format!("mtime={LAYER_TIME}")), "{hosts}");
    assert!(
        tree["opt/tool"].contains("mode=4755"),
        "{}",
        tree["opt/tool"]
    );
    assert!(tree["opt"].starts_with("dir mode=711"), "{}", tree["opt"]);
    assert!(
        tree["hosts"].starts_with("symlink -> etc/hosts"),
        "{}",
        tree["hosts"]
    );
}

/// Applies `blob` stored as `media_type` onto a new empty snapshot and checks the result.
fn apply_sample(f: &TestDiffer, media_type: &str, blob: &[u8]) {
    let tar = sample_layer();
    let desc = put_blob(&*f.content, media_type, blob);
    let mounts = prepare(f, "target", "");
    let applied = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .unwrap_or_else(|e| panic!("apply {media_type}: {e}"));
    assert_eq!(
        applied,
        Descriptor::new(mediatype::OCI_LAYER, sha256(&tar), tar.len() as u64),
        "apply returns the uncompressed layer: its DiffID and size"
    );
    check_sample_tree(&tree_of_key(&*f.snapshotter, "target"));
}

/// A gzip layer applies and apply returns its DiffID.
pub fn apply_gzip_layer(f: &TestDiffer) {
    apply_sample(f, mediatype::OCI_LAYER_GZIP, &gzip(&sample_layer()));
}

/// A zstd layer applies and apply returns its DiffID.
pub fn apply_zstd_layer(f: &TestDiffer) {
    apply_sample(f, mediatype::OCI_LAYER_ZSTD, &zstd(&sample_layer()));
}

/// A plain tar layer applies (OCI and Docker media types) and apply returns its DiffID.
pub fn apply_plain_layer(f: &TestDiffer) {
    apply_sample(f, mediatype::OCI_LAYER, &sample_layer());
    // Docker's tar type: containerd detects the compression from the stream, so even a gzip
    // blob under the plain type applies.
    let tar = sample_layer();
    let desc = put_blob(&*f.content, mediatype::DOCKER_LAYER, &gzip(&tar));
    let mounts = prepare(f, "docker", "");
    let applied = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect("apply a gzip blob with Docker's tar media type");
    assert_eq!(applied.digest, sha256(&tar));
    check_sample_tree(&tree_of_key(&*f.snapshotter, "docker"));
}

/// A committed parent with a few files, for the cases that apply onto or compare against one.
fn base_snapshot(f: &TestDiffer, name: &str) {
    let key = format!("{name}-active");
    let mounts = prepare(f, &key, "");
    fill(&mounts, |root| {
        write_file(&root.join("a"), b"a", 0o644);
        fs::create_dir(root.join("d")).expect("mkdir d");
        write_file(&root.join("d/x"), b"x", 0o644);
        write_file(&root.join("d/y"), b"y", 0o600);
        fs::create_dir(root.join("o")).expect("mkdir o");
        write_file(&root.join("o/p"), b"p", 0o644);
        fs::create_dir(root.join("gone")).expect("mkdir gone");
        write_file(&root.join("gone/f"), b"f", 0o644);
        write_file(&root.join("keep"), b"keep", 0o644);
        write_file(&root.join("mod"), b"old contents", 0o644);
        write_file(&root.join("chmod"), b"chmod", 0o644);
        make_symlink("keep", &root.join("s"));
    });
    commit(f, name, &key);
}

/// OCI whiteouts delete lower entries, opaque markers hide a lower directory's contents.
pub fn apply_whiteouts(f: &TestDiffer) {
    base_snapshot(f, "base");
    let layer = tar_layer(&[
        Entry::File(".wh.a", 0o644, b""),
        Entry::Dir("d/", 0o755),
        Entry::File("d/.wh.x", 0o644, b""),
        Entry::Dir("o/", 0o755),
        Entry::File("o/.wh..wh..opq", 0o644, b""),
        Entry::File("o/new", 0o644, b"new"),
        Entry::File(".wh.gone", 0o644, b""),
    ]);
    let desc = put_blob(&*f.content, mediatype::OCI_LAYER_GZIP, &gzip(&layer));
    let mounts = prepare(f, "upper", "base");
    let applied = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect("apply a layer with whiteouts");
    assert_eq!(applied.digest, sha256(&layer));
    let tree = tree_of_key(&*f.snapshotter, "upper");
    assert_eq!(
        paths(&tree),
        ["chmod", "d", "d/y", "keep", "mod", "o", "o/new", "s"],
        "{tree:#?}"
    );
}

/// Fills a fresh snapshot with one file, so a failed apply can be seen to leave it as it was.
fn untouched_target(f: &TestDiffer) -> (Vec<Mount>, Tree) {
    let mounts = prepare(f, "target", "");
    fill(&mounts, |root| {
        write_file(&root.join("before"), b"before", 0o644)
    });
    let before = tree_of(&mounts);
    (mounts, before)
}

/// A descriptor naming a blob the store does not have is refused as not found, naming it.
pub fn apply_missing_blob(f: &TestDiffer) {
    let tar = sample_layer();
    let blob = gzip(&tar);
    let desc = Descriptor::new(mediatype::OCI_LAYER_GZIP, sha256(&blob), blob.len() as u64);
    // A different blob is there; the descriptor's digest is what decides.
    put_blob(
        &*f.content,
        mediatype::OCI_LAYER_GZIP,
        &gzip(b"not this one"),
    );
    let (mounts, before) = untouched_target(f);
    let err = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect_err("applying a blob the store does not hold");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains(desc.digest.as_str()),
        "the error names the missing digest: {err}"
    );
    assert_eq!(
        tree_of(&mounts),
        before,
        "a failed apply changed the target"
    );
}

/// A blob that is not the compressed tar its media type claims is refused, naming the
/// problem, before anything is written.
pub fn apply_corrupt_blob(f: &TestDiffer) {
    // A gzip header and then garbage: the stream is unreadable from its first block.
    let mut blob = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    blob.extend(std::iter::repeat_n(0xa5u8, 4096));
    let desc = put_blob(&*f.content, mediatype::OCI_LAYER_GZIP, &blob);
    let (mounts, before) = untouched_target(f);
    let err = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect_err("applying a corrupt gzip blob");
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("deflate") || text.contains("gzip") || text.contains("corrupt"),
        "the error names the bad compressed stream: {err}"
    );
    assert_eq!(
        tree_of(&mounts),
        before,
        "a failed apply changed the target"
    );

    // A plain tar whose header checksum is broken.
    let mut tar = sample_layer();
    tar[148..156].copy_from_slice(b"0000000\0");
    let desc = put_blob(&*f.content, mediatype::OCI_LAYER, &tar);
    let err = f
        .differ
        .apply(&desc, &mounts, &ApplyConfig::default())
        .expect_err("applying a tar with a broken header");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("invalid tar header"),
        "the error names the broken header: {err}"
    );
    assert_eq!(
        tree_of(&mounts),
        before,
        "a failed apply changed the target"
    );
}

/// A media type no stream processor takes fails with containerd's `ErrNoProcessor` text.
pub fn apply_unknown_media_type(f: &TestDiffer) {
    let tar = sample_layer();
    let (mounts, before) = untouched_target(f);
    for mt in [mediatype::OCI_MANIFEST, "application/octet-stream"] {
        let desc = put_blob(&*f.content, mt, &tar);
        let err = f
            .differ
            .apply(&desc, &mounts, &ApplyConfig::default())
            .expect_err("applying a blob that is no layer type");
        assert_eq!(err.kind(), ErrorKind::Unknown, "{err}");
        assert_eq!(
            err.message(),
            format!("failed to get stream processor for {mt}: no processor for media-type")
        );
    }
    assert_eq!(
        tree_of(&mounts),
        before,
        "a failed apply changed the target"
    );
}

/// Payloads are for configured stream processors; with none that takes the layer's media
/// type they are ignored, as containerd ignores them.
pub fn apply_payloads_without_processor(f: &TestDiffer) {
    let tar = sample_layer();
    let desc = put_blob(&*f.content, mediatype::OCI_LAYER_GZIP, &gzip(&tar));
    let mounts = prepare(f, "target", "");
    let mut config = ApplyConfig::default();
    config.payloads.insert(
        "io.containerd.ocicrypt.decoder.v1.tar.gzip".to_string(),
        Payload {
            type_url: "example.com/Keys".to_string(),
            value: b"\x0a\x03key".to_vec(),
        },
    );
    let applied = f
        .differ
        .apply(&desc, &mounts, &config)
        .expect("apply with payloads nobody asks for");
    assert_eq!(
        applied,
        Descriptor::new(mediatype::OCI_LAYER, sha256(&tar), tar.len() as u64)
    );
    check_sample_tree(&tree_of_key(&*f.snapshotter, "target"));
}

/// Changes an active snapshot on [`base_snapshot`]'s tree in every way a layer records.
fn change_everything(root: &Path) {
    write_file(&root.join("d/new"), b"new file", 0o640);
    set_xattr(&root.join("d/new"), "user.suite", b"value");
    write_file(&root.join("mod"), b"new contents, longer", 0o644);
    fs::remove_file(root.join("d/x")).expect("rm d/x");
    fs::remove_file(root.join("gone/f")).expect("rm gone/f");
    fs::remove_dir(root.join("gone")).expect("rmdir gone");
    fs::set_permissions(
        root.join("chmod"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    fs::remove_file(root.join("s")).expect("rm s");
    make_symlink("mod", &root.join("s"));
    fs::create_dir_all(root.join("newdir/sub")).expect("mkdir -p");
    write_file(&root.join("newdir/sub/file"), b"deep", 0o600);
    fs::hard_link(root.join("newdir/sub/file"), root.join("newdir/link")).expect("link");
    fs::remove_file(root.join("o/p")).expect("rm o/p");
    write_file(&root.join("o/q"), b"q", 0o644);
}

/// The layer compare writes, applied onto the lower tree, gives the upper tree.
pub fn compare_round_trip(f: &TestDiffer) {
    base_snapshot(f, "a");
    let upper = prepare(f, "b", "a");
    fill(&upper, change_everything);
    let lower = view(f, "a-view", "a");
    let desc = f
        .differ
        .compare(&lower, &upper, &CompareOptions::default())
        .expect("compare");
    assert_eq!(desc.media_type, mediatype::OCI_LAYER_GZIP);

    let target = prepare(f, "c", "a");
    let applied = f
        .differ
        .apply(&desc, &target, &ApplyConfig::default())
        .expect("apply the compared layer");
    let info = f.content.info(&desc.digest).expect("info of the layer");
    assert_eq!(
        info.labels.get(UNCOMPRESSED_LABEL),
        Some(&applied.digest.to_string()),
        "the uncompressed label names the DiffID apply computes"
    );
    let want = tree_of(&upper);
    let got = tree_of(&target);
    assert_eq!(got, want, "apply(compare(a, b)) onto a is not b");
    assert!(got.contains_key("newdir/link") && !got.contains_key("gone"));
}

/// Makes `a` and an active `b` on it with every kind of change; returns (lower, upper) mounts.
fn changed_pair(f: &TestDiffer) -> (Vec<Mount>, Vec<Mount>) {
    base_snapshot(f, "a");
    let upper = prepare(f, "b", "a");
    fill(&upper, change_everything);
    (view(f, "a-view", "a"), upper)
}

fn compare_with(f: &TestDiffer, lower: &[Mount], upper: &[Mount], mt: &str) -> Descriptor {
    let opts = CompareOptions {
        media_type: mt.to_string(),
        ..CompareOptions::default()
    };
    f.differ
        .compare(lower, upper, &opts)
        .unwrap_or_else(|e| panic!("compare as {mt:?}: {e}"))
}

/// The media type picks the compression (empty means OCI gzip); every form carries the same
/// DiffID in its `containerd.io/uncompressed` label, the digest of the decompressed blob.
pub fn compare_media_types(f: &TestDiffer) {
    let (lower, upper) = changed_pair(f);
    let mut diff_ids = Vec::new();
    for (asked, want_mt, magic) in [
        ("", mediatype::OCI_LAYER_GZIP, &[0x1f, 0x8b][..]),
        (
            mediatype::OCI_LAYER_GZIP,
            mediatype::OCI_LAYER_GZIP,
            &[0x1f, 0x8b][..],
        ),
        (
            mediatype::OCI_LAYER_ZSTD,
            mediatype::OCI_LAYER_ZSTD,
            &[0x28, 0xb5, 0x2f, 0xfd][..],
        ),
        (mediatype::OCI_LAYER, mediatype::OCI_LAYER, &[][..]),
    ] {
        let desc = compare_with(f, &lower, &upper, asked);
        assert_eq!(desc.media_type, want_mt, "media type for {asked:?}");
        let blob = get_blob(&*f.content, &desc);
        assert_eq!(blob.len() as u64, desc.size);
        assert_eq!(sha256(&blob), desc.digest);
        assert!(
            blob.starts_with(magic),
            "{asked:?} blob starts {:02x?}",
            &blob[..8]
        );
        let tar = decompress(&blob);
        assert_eq!(&tar[257..262], b"ustar", "{asked:?} holds a tar");
        if asked == mediatype::OCI_LAYER {
            assert_eq!(tar, blob, "an uncompressed layer is the tar itself");
        }
        let label = f
            .content
            .info(&desc.digest)
            .expect("info")
            .labels
            .get(UNCOMPRESSED_LABEL)
            .cloned()
            .expect("the uncompressed label is set");
        assert_eq!(label, sha256(&tar).to_string(), "label of {asked:?}");
        diff_ids.push(label);
    }
    diff_ids.dedup();
    assert_eq!(diff_ids.len(), 1, "one tree, one DiffID: {diff_ids:?}");
}

/// The same trees give the same bytes, whatever the reference.
pub fn compare_deterministic(f: &TestDiffer) {
    let (lower, upper) = changed_pair(f);
    let first = compare_with(f, &lower, &upper, mediatype::OCI_LAYER_GZIP);
    let opts = CompareOptions {
        reference: "suite-second-compare".to_string(),
        ..CompareOptions::default()
    };
    let second = f
        .differ
        .compare(&lower, &upper, &opts)
        .expect("compare again");
    assert_eq!(first, second);
    // The ingest under the given reference was committed, not left behind.
    let err = f
        .content
        .status("suite-second-compare")
        .expect_err("the ingest is gone after commit");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// The caller's labels are on the committed blob with the DiffID label; a compare that finds
/// the blob already there still leaves it with the labels asked for.
pub fn compare_labels(f: &TestDiffer) {
    let (lower, upper) = changed_pair(f);
    let labels = Labels::from([
        ("suite.example/one".to_string(), "1".to_string()),
        ("suite.example/two".to_string(), "two".to_string()),
    ]);
    let opts = CompareOptions {
        labels: labels.clone(),
        ..CompareOptions::default()
    };
    let desc = f.differ.compare(&lower, &upper, &opts).expect("compare");
    let info = f.content.info(&desc.digest).expect("info");
    for (k, v) in &labels {
        assert_eq!(info.labels.get(k), Some(v), "label {k}: {:?}", info.labels);
    }
    assert!(info.labels.contains_key(UNCOMPRESSED_LABEL));

    let more = CompareOptions {
        labels: Labels::from([("suite.example/three".to_string(), "3".to_string())]),
        ..CompareOptions::default()
    };
    let again = f
        .differ
        .compare(&lower, &upper, &more)
        .expect("compare again");
    assert_eq!(again.digest, desc.digest);
    let info = f.content.info(&desc.digest).expect("info");
    assert_eq!(
        info.labels.get("suite.example/three").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        info.labels.get("suite.example/one").map(String::as_str),
        Some("1")
    );
}

/// Comparing a tree with itself gives a layer with no entries, which applies as a no-op.
pub fn compare_empty_diff(f: &TestDiffer) {
    base_snapshot(f, "a");
    let upper = prepare(f, "b", "a");
    let lower = view(f, "a-view", "a");
    let desc = compare_with(f, &lower, &upper, mediatype::OCI_LAYER);
    let blob = get_blob(&*f.content, &desc);
    let mut archive = tar::Archive::new(&blob[..]);
    let entries = archive.entries().expect("tar").count();
    assert_eq!(entries, 0, "an empty diff has no entries");
    assert!(
        !blob.is_empty() && blob.iter().all(|b| *b == 0),
        "an empty diff is just the end-of-archive blocks"
    );

    let target = prepare(f, "c", "a");
    let before = tree_of(&target);
    let applied = f
        .differ
        .apply(&desc, &target, &ApplyConfig::default())
        .expect("apply an empty diff");
    assert_eq!(applied.digest, desc.digest);
    assert_eq!(tree_of(&target), before);
}

/// A media type the comparer cannot write is containerd's not-implemented error, and no
/// ingest is left behind.
pub fn compare_unknown_media_type(f: &TestDiffer) {
    let (lower, upper) = changed_pair(f);
    for mt in [
        mediatype::OCI_MANIFEST,
        "application/vnd.oci.image.layer.v1.tar+lz4",
    ] {
        let opts = CompareOptions {
            media_type: mt.to_string(),
            ..CompareOptions::default()
        };
        let err = f
            .differ
            .compare(&lower, &upper, &opts)
            .expect_err("compare into a media type that is no layer we write");
        assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");
        assert_eq!(err.message(), format!("unsupported diff media type: {mt}"));
    }
    let left = f.content.list_statuses(&[]).expect("list ingests");
    assert!(left.is_empty(), "ingests left behind: {left:?}");
}
