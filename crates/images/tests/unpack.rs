//! Unpacking into the real overlay and native snapshotters on temporary roots: every fixture,
//! reuse of committed layers, and failures that must leave nothing half applied.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use common::{differ, load_layout, put, require_root, sha256, tree, Mounting};
use stowage_content::LocalStore;
use stowage_core_types::diff::{Applier, ApplyConfig, Payload};
use stowage_core_types::mediatype;
use stowage_core_types::platform::{Matcher, Platform};
use stowage_core_types::snapshot::{Info, Kind, Snapshotter};
use stowage_core_types::{Descriptor, Digest, ErrorKind};
use stowage_images::unpack::SNAPSHOT_REF_LABEL;
use stowage_images::{children, read_config, resolve_manifest, unpack, UnpackOptions};
use stowage_snapshots_native::NativeSnapshotter;
use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_snapshots_storage::mount::TempMount;
use stowage_tests::fixtures;

/// A snapshotter and how layers reach it.
#[derive(Clone, Copy, Debug)]
enum Kindof {
    /// Overlay, the local differ writing into the upper directory.
    Overlay,
    /// Overlay, every layer applied through a mount of the snapshot.
    OverlayMounted,
    Native,
}

const KINDS: [Kindof; 3] = [Kindof::Overlay, Kindof::OverlayMounted, Kindof::Native];

fn snapshotter(kind: Kindof, root: &Path) -> Box<dyn Snapshotter> {
    match kind {
        Kindof::Overlay | Kindof::OverlayMounted => {
            Box::new(OverlaySnapshotter::new(root).unwrap())
        }
        Kindof::Native => Box::new(NativeSnapshotter::new(root).unwrap()),
    }
}

fn applier(kind: Kindof, store: &LocalStore) -> Box<dyn Applier> {
    match kind {
        Kindof::OverlayMounted => Box::new(Mounting(differ(store))),
        Kindof::Overlay | Kindof::Native => Box::new(differ(store)),
    }
}

fn options() -> UnpackOptions {
    UnpackOptions::default()
}

fn all(sn: &dyn Snapshotter) -> BTreeMap<String, Info> {
    let mut out = BTreeMap::new();
    sn.walk(
        &mut |i| {
            out.insert(i.name.clone(), i);
            Ok(())
        },
        &[],
    )
    .unwrap();
    out
}

/// ChainIDs computed here from the image-spec definition, independently of the crate.
fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn config_diff_ids(store: &LocalStore, manifest: &Descriptor) -> Vec<Digest> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&manifest.digest)).unwrap()).unwrap();
    let cfg = Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap();
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&cfg)).unwrap()).unwrap();
    c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Digest::parse(d.as_str().unwrap()).unwrap())
        .collect()
}

/// Mounts a read-only view of `chain` and runs `f` on it.
fn with_view<T>(sn: &dyn Snapshotter, chain: &Digest, f: impl FnOnce(&Path) -> T) -> T {
    let key = format!("view-{}", &chain.encoded()[..12]);
    let mounts = sn.view(&key, chain.as_str(), Default::default()).unwrap();
    let m = TempMount::new(&mounts).unwrap();
    let out = f(m.path());
    m.unmount().unwrap();
    sn.remove(&key).unwrap();
    out
}

fn snapshot_dirs(root: &Path) -> usize {
    std::fs::read_dir(root.join("snapshots")).unwrap().count()
}

#[test]
fn fixtures_unpack_into_overlay_and_native_and_reuse_layers() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let mut trees = BTreeMap::new();
    for (n, kind) in KINDS.into_iter().enumerate() {
        let store = LocalStore::open(work.path().join(format!("content-{n}"))).unwrap();
        let sn_root = work.path().join(format!("sn-{n}"));
        let sn = snapshotter(kind, &sn_root);
        let ap = applier(kind, &store);
        for img in &images {
            let target = load_layout(&store, &img.layout);
            let got = unpack(&store, &*sn, &*ap, &target, &Matcher::host(), &options())
                .unwrap_or_else(|e| panic!("{kind:?} {}: {e}", img.name));
            let diff_ids = config_diff_ids(&store, &got.manifest);
            let chains = chain_ids(&diff_ids);
            assert_eq!(&got.chain_id, chains.last().unwrap(), "{}", img.name);
            let listed: Vec<Digest> = got.layers.iter().map(|l| l.chain_id.clone()).collect();
            assert_eq!(listed, chains, "{}", img.name);
            // `docker` shares its base layer with `base`, unpacked before it.
            let reused_base = img.name == "docker";
            assert_eq!(
                got.layers
                    .iter()
                    .map(|l| l.diff_id.clone())
                    .collect::<Vec<_>>(),
                diff_ids
            );
            for (i, layer) in got.layers.iter().enumerate() {
                let chain = &layer.chain_id;
                assert_eq!(
                    layer.applied,
                    !(reused_base && i == 0),
                    "{} layer {i}",
                    img.name
                );
                let info = sn.stat(chain.as_str()).unwrap();
                assert_eq!(info.kind, Kind::Committed);
                let parent = if i == 0 {
                    String::new()
                } else {
                    chains[i - 1].to_string()
                };
                assert_eq!(info.parent, parent);
                assert_eq!(
                    info.labels.get(SNAPSHOT_REF_LABEL).map(String::as_str),
                    Some(chain.as_str()),
                    "{} layer {i} labels {:?}",
                    img.name,
                    info.labels
                );
            }
            let snaps = all(&*sn);
            assert!(
                snaps.keys().all(|k| !k.starts_with("extract-")),
                "extraction snapshots left: {:?}",
                snaps.keys()
            );
            assert!(snaps.values().all(|i| i.kind == Kind::Committed));

            // A second unpack reuses every layer and creates nothing.
            let dirs = snapshot_dirs(&sn_root);
            let again = unpack(&store, &*sn, &*ap, &target, &Matcher::host(), &options()).unwrap();
            assert_eq!(again.chain_id, got.chain_id);
            assert!(again.layers.iter().all(|l| !l.applied));
            assert_eq!(all(&*sn).len(), snaps.len());
            assert_eq!(snapshot_dirs(&sn_root), dirs);

            let t = with_view(&*sn, &got.chain_id, |root| {
                check_fixture(&img.name, root);
                tree::describe(root)
            });
            trees
                .entry(img.name.clone())
                .or_insert_with(Vec::new)
                .push((kind, t));
        }
    }
    // The three ways of unpacking give the same trees.
    for (name, ts) in &trees {
        let (ka, a) = &ts[0];
        for (kb, b) in &ts[1..] {
            let diffs = tree::differences(&format!("{ka:?}"), a, &format!("{kb:?}"), b);
            assert!(diffs.is_empty(), "{name}:\n{}", diffs.join("\n"));
        }
    }
}

/// Spot checks of what each fixture is built to exercise.
fn check_fixture(name: &str, r: &Path) {
    use std::os::unix::fs::MetadataExt;
    match name {
        "whiteouts" => {
            assert!(!r.join("keep/a").exists());
            assert!(!r.join("keep/b").exists());
            assert_eq!(std::fs::read(r.join("keep/c")).unwrap(), b"upper c\n");
            assert!(!r.join("opaque/old1").exists());
            assert!(r.join("opaque/new").exists());
            assert!(!r.join("hardlink-src").exists());
            assert_eq!(std::fs::read(r.join("hardlink-dst")).unwrap(), b"linked\n");
        }
        "base" | "docker" => {
            let su = std::fs::symlink_metadata(r.join("usr/bin/su")).unwrap();
            assert_eq!(su.mode() & 0o7777, 0o4755);
            let tool = std::fs::symlink_metadata(r.join("usr/bin/tool")).unwrap();
            let link = std::fs::symlink_metadata(r.join("usr/bin/tool-hardlink")).unwrap();
            assert_eq!(tool.ino(), link.ino());
            assert_eq!(
                std::fs::symlink_metadata(r.join("dev/null"))
                    .unwrap()
                    .rdev(),
                libc::makedev(1, 3)
            );
        }
        "compressions" => {
            for tag in ["gz", "zst", "plain"] {
                assert_eq!(
                    std::fs::read(r.join(tag).join("hello")).unwrap(),
                    format!("hello from {tag}\n").into_bytes()
                );
            }
        }
        _ => {}
    }
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Stores an image whose layers are `blobs` (gzip media type) and whose config lists
/// `diff_ids`; returns the manifest descriptor.
fn image(store: &LocalStore, blobs: &[Vec<u8>], diff_ids: &[Digest]) -> Descriptor {
    let layers: Vec<Descriptor> = blobs
        .iter()
        .map(|b| put(store, mediatype::OCI_LAYER_GZIP, b))
        .collect();
    let host = Platform::host();
    let config = serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = put(
        store,
        mediatype::OCI_CONFIG,
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": mediatype::OCI_MANIFEST,
        "config": config, "layers": layers,
    });
    put(
        store,
        mediatype::OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    )
}

/// The digest of layer `i` of the manifest `manifest`.
fn target_layer(store: &LocalStore, manifest: &Descriptor, i: usize) -> Digest {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&manifest.digest)).unwrap()).unwrap();
    Digest::parse(m["layers"][i]["digest"].as_str().unwrap()).unwrap()
}

#[test]
fn failed_layers_leave_only_the_committed_parents() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path().join("content")).unwrap();
    let l1 = tar_of(&[("one", b"1")]);
    let l2 = tar_of(&[("two", b"2")]);
    let l3 = tar_of(&[("three", b"3")]);
    let (d1, d2, d3) = (sha256(&l1), sha256(&l2), sha256(&l3));
    let wrong = sha256(b"not the layer");
    // A truncated gzip stream: the applier fails part way.
    let mut corrupt = gzip(&tar_of(&[("big", &vec![7u8; 200_000])]));
    corrupt.truncate(corrupt.len() / 2);

    let cases = [
        (
            "diffid mismatch",
            vec![gzip(&l1), gzip(&l2), gzip(&l3)],
            vec![d1.clone(), wrong, d3.clone()],
        ),
        (
            "corrupt layer",
            vec![gzip(&l1), corrupt, gzip(&l3)],
            vec![d1.clone(), d2.clone(), d3.clone()],
        ),
    ];
    for (n, kind) in KINDS.into_iter().enumerate() {
        let ap = applier(kind, &store);
        for (m, (what, blobs, diff_ids)) in cases.iter().enumerate() {
            let sn_root = work.path().join(format!("sn-{n}-{m}"));
            let sn = snapshotter(kind, &sn_root);
            let target = image(&store, blobs, diff_ids);
            let err =
                unpack(&store, &*sn, &*ap, &target, &Matcher::host(), &options()).expect_err(what);
            let msg = err.to_string();
            assert!(
                msg.contains("failed to extract layer"),
                "{kind:?} {what}: {msg}"
            );
            assert!(msg.contains(diff_ids[1].as_str()), "{kind:?} {what}: {msg}");
            if *what == "diffid mismatch" {
                assert_eq!(err.kind(), ErrorKind::DataLoss, "{msg}");
                // The layer blob and the DiffID the applier reported are named too.
                assert!(msg.contains(d2.as_str()), "{msg}");
                assert!(
                    msg.contains(target_layer(&store, &target, 1).as_str()),
                    "{msg}"
                );
            }
            let snaps = all(&*sn);
            assert_eq!(
                snaps.keys().cloned().collect::<Vec<_>>(),
                vec![d1.to_string()],
                "{kind:?} {what}: only the first layer stays"
            );
            assert_eq!(snaps[d1.as_str()].kind, Kind::Committed);
            assert_eq!(
                snapshot_dirs(&sn_root),
                1,
                "{kind:?} {what}: directories left"
            );

            // With the broken layer fixed the unpack resumes on the committed base.
            let good = image(
                &store,
                &[gzip(&l1), gzip(&l2), gzip(&l3)],
                &[d1.clone(), d2.clone(), d3.clone()],
            );
            let done = unpack(&store, &*sn, &*ap, &good, &Matcher::host(), &options()).unwrap();
            assert_eq!(
                done.layers.iter().map(|l| l.applied).collect::<Vec<_>>(),
                vec![false, true, true]
            );
            with_view(&*sn, &done.chain_id, |r| {
                for (f, c) in [("one", "1"), ("two", "2"), ("three", "3")] {
                    assert_eq!(std::fs::read_to_string(r.join(f)).unwrap(), c);
                }
            });
        }
    }
}

#[test]
fn config_and_manifest_must_agree() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path().join("content")).unwrap();
    let sn = NativeSnapshotter::new(work.path().join("sn")).unwrap();
    let ap = differ(&store);
    let l1 = tar_of(&[("one", b"1")]);
    let target = image(&store, &[gzip(&l1)], &[sha256(&l1), sha256(b"x")]);
    let err = unpack(
        &store,
        &sn,
        &ap,
        &target,
        &Matcher::host(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("1 layers in manifest"), "{err}");
    assert!(err.to_string().contains("2 diff_ids"), "{err}");
    assert!(all(&sn).is_empty());

    // A config descriptor that is not a config type is refused before anything is read.
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&target.digest)).unwrap()).unwrap();
    m["config"]["mediaType"] = mediatype::OCI_LAYER.into();
    let bad = put(
        &store,
        mediatype::OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    );
    let err = unpack(
        &store,
        &sn,
        &ap,
        &bad,
        &Matcher::host(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not an image config type"),
        "{err}"
    );
}

#[test]
fn platforms_are_chosen_from_the_multiplatform_index() {
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let mp = images.iter().find(|i| i.name == "multiplatform").unwrap();
    let store = LocalStore::open(work.path().join("content")).unwrap();
    let target = load_layout(&store, &mp.layout);
    assert!(
        mediatype::is_index(&target.media_type),
        "{}",
        target.media_type
    );
    let kids = children(&store, &target).unwrap();
    assert_eq!(kids.len(), 3);

    for (spec, want) in [
        ("linux/arm64", "linux/arm64"),
        ("linux/amd64", "linux/amd64"),
        ("linux/arm/v7", "linux/arm/v7"),
        // A v8 ARM host runs v7 binaries: the best available.
        ("linux/arm/v8", "linux/arm/v7"),
    ] {
        let m = Matcher::only(&Platform::parse(spec).unwrap());
        let (desc, manifest) = resolve_manifest(&store, &target, &m).unwrap();
        let p = desc.platform.clone().unwrap();
        assert_eq!(
            p.normalize(),
            Platform::parse(want).unwrap().normalize(),
            "{spec}"
        );
        let config = read_config(&store, &manifest.config).unwrap();
        assert_eq!(config.platform().architecture, p.normalize().architecture);
        let kids = children(&store, &desc).unwrap();
        assert_eq!(kids.len(), 1 + manifest.layers.len());
        assert!(mediatype::is_config(&kids[0].media_type));
    }

    let err = resolve_manifest(
        &store,
        &target,
        &Matcher::only(&Platform::parse("linux/s390x").unwrap()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let msg = err.to_string();
    for p in ["linux/s390x", "linux/amd64", "linux/arm64", "linux/arm/v7"] {
        assert!(msg.contains(p), "{p} missing from {msg}");
    }

    // Unpacking on a temp snapshotter picks the same manifest the resolver does.
    let sn = NativeSnapshotter::new(work.path().join("sn")).unwrap();
    let arm64 = Matcher::only(&Platform::parse("linux/arm64").unwrap());
    let got = unpack(
        &store,
        &sn,
        &differ(&store),
        &target,
        &arm64,
        &UnpackOptions::default(),
    );
    if require_root_quiet() {
        let got = got.unwrap();
        assert_eq!(
            got.manifest,
            resolve_manifest(&store, &target, &arm64).unwrap().0
        );
    }
}

fn require_root_quiet() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn labels_are_recorded_like_containerds_unpacker() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::with_memory_labels(work.path().join("content")).unwrap();
    let sn = NativeSnapshotter::new(work.path().join("sn")).unwrap();
    let (l1, l2) = (tar_of(&[("one", b"1")]), tar_of(&[("two", b"2")]));
    let (d1, d2) = (sha256(&l1), sha256(&l2));
    let base = image(&store, &[gzip(&l1)], std::slice::from_ref(&d1));
    let both = image(&store, &[gzip(&l1), gzip(&l2)], &[d1.clone(), d2.clone()]);
    let ap = differ(&store);

    let first = unpack(
        &store,
        &sn,
        &ap,
        &base,
        &Matcher::host(),
        &UnpackOptions::default(),
    )
    .unwrap();
    stowage_images::record_labels(&store, &first, "native").unwrap();
    let second = unpack(
        &store,
        &sn,
        &ap,
        &both,
        &Matcher::host(),
        &UnpackOptions::default(),
    )
    .unwrap();
    // Only the layer applied now is labelled by the second record (the base was reused).
    use stowage_core_types::content::Manager;
    let l1_desc = &second.layers[0].descriptor;
    let before = store.info(&l1_desc.digest).unwrap().labels;
    stowage_images::record_labels(&store, &second, "native").unwrap();
    assert_eq!(store.info(&l1_desc.digest).unwrap().labels, before);
    assert_eq!(
        before.get("containerd.io/uncompressed").map(String::as_str),
        Some(d1.as_str())
    );
    let l2_labels = store
        .info(&second.layers[1].descriptor.digest)
        .unwrap()
        .labels;
    assert_eq!(
        l2_labels
            .get("containerd.io/uncompressed")
            .map(String::as_str),
        Some(d2.as_str())
    );
    for (u, cfg) in [(&first, &first.config), (&second, &second.config)] {
        let labels = store.info(&cfg.digest).unwrap().labels;
        assert_eq!(
            labels
                .get("containerd.io/gc.ref.snapshot.native")
                .map(String::as_str),
            Some(u.chain_id.as_str())
        );
    }
}

#[test]
fn concurrent_unpacks_of_one_image_share_the_snapshots() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path().join("content")).unwrap();
    let sn_root = work.path().join("sn");
    let sn = OverlaySnapshotter::new(&sn_root).unwrap();
    let blobs: Vec<Vec<u8>> = (0..4)
        .map(|i| tar_of(&[(&format!("f{i}"), &vec![i as u8; 300_000][..])]))
        .collect();
    let diff_ids: Vec<Digest> = blobs.iter().map(|b| sha256(b)).collect();
    let gz: Vec<Vec<u8>> = blobs.iter().map(|b| gzip(b)).collect();
    let target = image(&store, &gz, &diff_ids);
    let ap = differ(&store);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    unpack(
                        &store,
                        &sn,
                        &ap,
                        &target,
                        &Matcher::host(),
                        &UnpackOptions::default(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let chains = chain_ids(&diff_ids);
    let mut applied = vec![0; 4];
    for r in results {
        let r = r.unwrap();
        assert_eq!(&r.chain_id, chains.last().unwrap());
        for (i, l) in r.layers.iter().enumerate() {
            applied[i] += usize::from(l.applied);
        }
    }
    // Every layer committed exactly once, whoever won; losers' extraction snapshots are gone.
    assert_eq!(applied, vec![1; 4]);
    let snaps = all(&sn);
    assert_eq!(
        snaps
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        chains.iter().map(|c| c.to_string()).collect()
    );
    assert_eq!(snapshot_dirs(&sn_root), 4);
}

/// Keeps what each apply was asked to do, and lets the local differ do it.
struct Recording {
    inner: stowage_diff::LocalDiffer,
    calls: std::sync::Mutex<
        Vec<(
            Descriptor,
            Vec<stowage_core_types::mount::Mount>,
            ApplyConfig,
        )>,
    >,
}

impl Applier for Recording {
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[stowage_core_types::mount::Mount],
        config: &ApplyConfig,
    ) -> stowage_core_types::Result<Descriptor> {
        self.calls
            .lock()
            .unwrap()
            .push((desc.clone(), mounts.to_vec(), config.clone()));
        self.inner.apply(desc, mounts, config)
    }
}

#[test]
fn each_new_layer_goes_to_the_applier_with_the_options() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path().join("content")).unwrap();
    let sn = OverlaySnapshotter::new(work.path().join("sn")).unwrap();
    let (l1, l2) = (tar_of(&[("one", b"1")]), tar_of(&[("two", b"2")]));
    let (d1, d2) = (sha256(&l1), sha256(&l2));
    let target = image(&store, &[gzip(&l1), gzip(&l2)], &[d1.clone(), d2.clone()]);
    let ap = Recording {
        inner: differ(&store),
        calls: Default::default(),
    };
    let mut options = UnpackOptions::default();
    options.apply.payloads.insert(
        "io.example.processor".into(),
        Payload {
            type_url: "example/params".into(),
            value: b"key".to_vec(),
        },
    );
    let got = unpack(&store, &sn, &ap, &target, &Matcher::host(), &options).unwrap();
    let calls = std::mem::take(&mut *ap.calls.lock().unwrap());
    assert_eq!(calls.len(), 2);
    for (i, (desc, mounts, config)) in calls.iter().enumerate() {
        assert_eq!(desc, &got.layers[i].descriptor, "layer {i}");
        assert_eq!(config, &options.apply, "layer {i}");
        // The extraction snapshot's mounts, as the snapshotter handed them out: a base layer
        // is a bind mount, the next an overlay with the base below.
        let [m] = &mounts[..] else {
            panic!("layer {i}: {mounts:?}")
        };
        assert_eq!(m.kind, if i == 0 { "bind" } else { "overlay" }, "{m:?}");
    }
    // A second unpack finds every layer and applies none.
    let again = unpack(&store, &sn, &ap, &target, &Matcher::host(), &options).unwrap();
    assert_eq!(again.chain_id, got.chain_id);
    assert!(ap.calls.lock().unwrap().is_empty());
}
