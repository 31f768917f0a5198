//! Round trip of the diff engine over every fixture (issue 5): each fixture is unpacked into a
//! real snapshotter; for each layer, `compare` of the parent snapshot and the layer's snapshot
//! produces a layer which, applied onto a fresh snapshot of the parent, must give exactly the
//! layer's tree again. `compare` must also be deterministic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{differ, load_layout, require_root, tree};
use stowage_content::LocalStore;
use stowage_core_types::content::Manager;
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_core_types::platform::{Matcher, Platform};
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest};
use stowage_diff::{
    apply_layer_to_mounts, compare, ApplyOptions, CompareOptions, LayerEncoding, UNCOMPRESSED_LABEL,
};
use stowage_images::{unpack, UnpackOptions};
use stowage_snapshots_native::NativeSnapshotter;
use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_snapshots_storage::mount::TempMount;
use stowage_tests::fixtures;

/// Describes the tree `mounts` give, without overlayfs' private xattrs (the snapshotter's own
/// bookkeeping, not part of the image), and with the modification time of every directory but
/// the root: `compare` writes a directory whose time changed, so its time must survive too,
/// while no layer has an entry for the root itself (as in containerd).
fn describe_mounts(mounts: &[Mount]) -> BTreeMap<String, tree::Node> {
    use std::os::unix::fs::MetadataExt;
    let m = TempMount::new(mounts).unwrap();
    let mut t = tree::describe(m.path());
    for (path, node) in t.iter_mut() {
        node.xattrs
            .retain(|k, _| !k.starts_with("trusted.overlay."));
        if node.kind == "dir" && path != "." {
            let md = std::fs::symlink_metadata(m.path().join(path)).unwrap();
            node.mtime = Some((md.mtime(), md.mtime_nsec()));
        }
    }
    m.unmount().unwrap();
    t
}

fn compare_options() -> CompareOptions {
    CompareOptions {
        media_type: mediatype::OCI_LAYER_GZIP.to_string(),
        ..Default::default()
    }
}

/// The DiffID label `compare` put on the blob of `desc`.
fn diff_id_label(store: &LocalStore, desc: &Descriptor) -> Digest {
    let info = store.info(&desc.digest).unwrap();
    let label = info
        .labels
        .get(UNCOMPRESSED_LABEL)
        .unwrap_or_else(|| panic!("{} has no {UNCOMPRESSED_LABEL} label", desc.digest));
    Digest::parse(label).unwrap()
}

/// What the fixtures' trees hold, so a round trip that passes is known to have carried it.
#[derive(Debug, Default)]
struct Coverage {
    deletions: usize,
    hardlinks: usize,
    devices: usize,
    fifos: usize,
    symlinks: usize,
    xattrs: usize,
    special_modes: usize,
}

impl Coverage {
    fn add(&mut self, lower: &BTreeMap<String, tree::Node>, upper: &BTreeMap<String, tree::Node>) {
        self.deletions += lower.keys().filter(|p| !upper.contains_key(*p)).count();
        for n in upper.values() {
            self.hardlinks += usize::from(!n.hardlinks.is_empty());
            self.devices += usize::from(n.rdev.is_some());
            self.fifos += usize::from(n.kind == "fifo");
            self.symlinks += usize::from(n.link.is_some());
            self.xattrs += usize::from(!n.xattrs.is_empty());
            self.special_modes += usize::from(n.mode & 0o7000 != 0);
        }
    }

    fn check(&self, what: &str) {
        let all = [
            self.deletions,
            self.hardlinks,
            self.devices,
            self.fifos,
            self.symlinks,
            self.xattrs,
            self.special_modes,
        ];
        assert!(
            all.iter().all(|n| *n > 0),
            "{what}: fixtures cover too little: {self:?}"
        );
    }
}

/// The names in the gzip layer `digest`, in order.
fn layer_entries(store: &LocalStore, digest: &Digest) -> Vec<String> {
    let f = std::fs::File::open(store.blob_path(digest)).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Produces the layer from `lower` to `upper` with `compare` (twice: the digests must match),
/// applies it onto a fresh active snapshot of `parent` and checks the result is `want`.
/// Returns the layer's digest.
fn round_trip(
    sn: &dyn Snapshotter,
    store: &LocalStore,
    ctx: &str,
    lower: &[Mount],
    upper: &[Mount],
    parent: &str,
    want: &BTreeMap<String, tree::Node>,
) -> Digest {
    let desc = compare(lower, upper, store, &compare_options())
        .unwrap_or_else(|e| panic!("{ctx}: compare: {e}"));
    assert_eq!(desc.media_type, mediatype::OCI_LAYER_GZIP, "{ctx}");
    let again = compare(lower, upper, store, &compare_options())
        .unwrap_or_else(|e| panic!("{ctx}: second compare: {e}"));
    assert_eq!(
        again.digest, desc.digest,
        "{ctx}: compare is not deterministic"
    );
    assert_eq!(again.size, desc.size, "{ctx}");

    let key = format!("{ctx}-apply").replace(' ', "-");
    let mounts = sn.prepare(&key, parent, Default::default()).unwrap();
    let blob = std::fs::File::open(store.blob_path(&desc.digest)).unwrap();
    let applied = apply_layer_to_mounts(
        blob,
        LayerEncoding::MediaType(&desc.media_type),
        &mounts,
        &ApplyOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{ctx}: apply: {e}"));
    assert_eq!(
        applied.diff_id,
        diff_id_label(store, &desc),
        "{ctx}: DiffID label vs applied stream"
    );
    let got = describe_mounts(&mounts);
    sn.remove(&key).unwrap();
    let diffs = tree::differences("snapshot", want, "round-trip", &got);
    assert!(diffs.is_empty(), "{ctx}:\n{}", diffs.join("\n"));
    desc.digest
}

/// Round-trips every layer of every fixture through `sn`; returns the digests `compare` gave
/// for views of the layer's snapshot and its parent, keyed by fixture name and layer index.
///
/// With `from_active`, each layer is also applied from its original blob onto an active
/// snapshot of its parent and that active snapshot's mounts are compared (for overlay, the
/// path that reads the upper directory and its whiteouts), and that layer round-tripped too.
fn round_trip_all(
    sn: &dyn Snapshotter,
    work: &Path,
    what: &str,
    from_active: bool,
) -> BTreeMap<(String, usize), Digest> {
    let images = fixtures::generate(&work.join("fixtures"), true).unwrap();
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    for want in [
        "base",
        "whiteouts",
        "compressions",
        "docker",
        "multiplatform",
    ] {
        assert!(names.contains(&want), "fixture {want} missing: {names:?}");
    }
    let store = LocalStore::with_memory_labels(work.join("content")).unwrap();
    let amd64 = Matcher::only(&Platform::parse("linux/amd64").unwrap());
    let applier = differ(&store);
    let mut digests = BTreeMap::new();
    let mut coverage = Coverage::default();
    let mut opaque_markers = 0;
    for img in &images {
        let target = load_layout(&store, &img.layout);
        let got = unpack(
            &store,
            sn,
            &applier,
            &target,
            &amd64,
            &UnpackOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{what} unpack {}: {e}", img.name));
        assert!(!got.layers.is_empty(), "{}", img.name);
        for (i, layer) in got.layers.iter().enumerate() {
            let ctx = format!("{what} {} layer {i}", img.name);
            let parent = if i == 0 {
                String::new()
            } else {
                got.layers[i - 1].chain_id.to_string()
            };
            let lower_key = format!("rt-lower-{}-{i}", img.name);
            let upper_key = format!("rt-upper-{}-{i}", img.name);
            let lower = if i == 0 {
                Vec::new()
            } else {
                sn.view(&lower_key, &parent, Default::default()).unwrap()
            };
            let upper = sn
                .view(&upper_key, layer.chain_id.as_str(), Default::default())
                .unwrap();
            let want = describe_mounts(&upper);
            let lower_tree = if i == 0 {
                BTreeMap::new()
            } else {
                describe_mounts(&lower)
            };
            coverage.add(&lower_tree, &want);

            let digest = round_trip(sn, &store, &ctx, &lower, &upper, &parent, &want);
            digests.insert((img.name.clone(), i), digest.clone());

            if from_active {
                let active = format!("rt-active-{}-{i}", img.name);
                let mounts = sn.prepare(&active, &parent, Default::default()).unwrap();
                let blob = std::fs::File::open(store.blob_path(&layer.descriptor.digest)).unwrap();
                apply_layer_to_mounts(
                    blob,
                    LayerEncoding::MediaType(&layer.descriptor.media_type),
                    &mounts,
                    &ApplyOptions::default().with_expected_diff_id(layer.diff_id.clone()),
                )
                .unwrap_or_else(|e| panic!("{ctx}: applying the original layer: {e}"));
                let ctx = format!("{ctx} from active");
                let from_active = round_trip(sn, &store, &ctx, &lower, &mounts, &parent, &want);
                let names = layer_entries(&store, &from_active);
                opaque_markers += names.iter().filter(|n| n.ends_with(".wh..wh..opq")).count();
                if what == "native" {
                    // Both mount sets are plain trees, walked the same way.
                    assert_eq!(from_active, digest, "{ctx}: layer differs from the view's");
                }
                sn.remove(&active).unwrap();
            }

            sn.remove(&upper_key).unwrap();
            if i > 0 {
                sn.remove(&lower_key).unwrap();
            }
        }
    }
    coverage.check(what);
    if from_active && what == "overlay" {
        // The whiteouts fixture makes a directory opaque: read from the active snapshot's
        // upper directory (not walked as a tree), it must come back as an opaque marker, which
        // shows the overlay path of `compare` was taken and round-trips.
        assert!(
            opaque_markers > 0,
            "{what}: no layer compared from an active overlay snapshot has an opaque marker"
        );
    }
    digests
}

#[test]
fn compare_then_apply_gives_back_every_overlay_layer() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sn = OverlaySnapshotter::new(work.path().join("sn")).unwrap();
    round_trip_all(&sn, work.path(), "overlay", true);
}

#[test]
fn compare_then_apply_gives_back_every_native_layer() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sn = NativeSnapshotter::new(work.path().join("sn")).unwrap();
    round_trip_all(&sn, work.path(), "native", true);
}

#[test]
fn compare_gives_the_same_layers_over_overlay_and_native() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let overlay = OverlaySnapshotter::new(work.path().join("sn-overlay")).unwrap();
    let native = NativeSnapshotter::new(work.path().join("sn-native")).unwrap();
    let a = round_trip_all(&overlay, &work.path().join("overlay"), "overlay", false);
    let b = round_trip_all(&native, &work.path().join("native"), "native", false);
    // The same image trees, walked the same way: the same bytes.
    assert_eq!(a, b);
}
