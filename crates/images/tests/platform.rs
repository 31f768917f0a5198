//! Manifest selection through real content: nested indexes, index entries without a platform
//! (checked against their config, as containerd does), and what is reported when nothing fits.

mod common;

use common::put;
use stowage_content::LocalStore;
use stowage_core_types::mediatype;
use stowage_core_types::platform::{Matcher, Platform};
use stowage_core_types::{Descriptor, ErrorKind};
use stowage_images::resolve_manifest;

fn manifest(store: &LocalStore, os: &str, arch: &str) -> Descriptor {
    let config = serde_json::json!({
        "architecture": arch, "os": os,
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = put(
        store,
        mediatype::OCI_CONFIG,
        &serde_json::to_vec(&config).unwrap(),
    );
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": mediatype::OCI_MANIFEST, "config": config, "layers": [],
    });
    put(
        store,
        mediatype::OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    )
}

fn with_platform(mut d: Descriptor, spec: &str) -> Descriptor {
    d.platform = Some(Platform::parse(spec).unwrap());
    d
}

fn index(store: &LocalStore, entries: &[Descriptor]) -> Descriptor {
    let i = serde_json::json!({
        "schemaVersion": 2, "mediaType": mediatype::OCI_INDEX, "manifests": entries,
    });
    put(
        store,
        mediatype::OCI_INDEX,
        &serde_json::to_vec(&i).unwrap(),
    )
}

fn only(spec: &str) -> Matcher {
    Matcher::only(&Platform::parse(spec).unwrap())
}

#[test]
fn nested_indexes_and_unplatformed_entries() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path()).unwrap();
    let amd = manifest(&store, "linux", "amd64");
    let arm = manifest(&store, "linux", "arm64");
    let inner = index(
        &store,
        &[
            with_platform(arm.clone(), "linux/arm64"),
            with_platform(amd.clone(), "linux/amd64"),
        ],
    );
    let top = index(&store, &[inner]);
    let (d, _) = resolve_manifest(&store, &top, &only("linux/amd64")).unwrap();
    assert_eq!(d.digest, amd.digest);
    let (d, _) = resolve_manifest(&store, &top, &only("linux/arm64")).unwrap();
    assert_eq!(d.digest, arm.digest);

    // An entry without a platform is judged by its config's OS and architecture.
    let bare = index(&store, std::slice::from_ref(&arm));
    let (d, m) = resolve_manifest(&store, &bare, &only("linux/arm64")).unwrap();
    assert_eq!((d.digest, m.layers.len()), (arm.digest.clone(), 0));
    let err = resolve_manifest(&store, &bare, &only("linux/amd64")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("linux/arm64"), "{err}");

    // A manifest given directly is taken whatever its platform, as containerd does.
    let (d, _) = resolve_manifest(&store, &arm, &only("linux/amd64")).unwrap();
    assert_eq!(d.digest, arm.digest);
}

#[test]
fn nothing_matching_names_what_is_available() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::open(work.path()).unwrap();
    let top = index(
        &store,
        &[
            with_platform(manifest(&store, "linux", "arm64"), "linux/arm64"),
            with_platform(manifest(&store, "windows", "amd64"), "windows/amd64"),
        ],
    );
    let err = resolve_manifest(&store, &top, &only("linux/ppc64le")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let msg = err.to_string();
    for want in [
        top.digest.as_str(),
        "linux/ppc64le",
        "linux/arm64",
        "windows/amd64",
    ] {
        assert!(msg.contains(want), "{want} missing from {msg}");
    }

    // A child that is neither manifest nor index is refused by name.
    let odd = Descriptor::new("application/octet-stream", top.digest.clone(), top.size);
    let wrapper = index(&store, &[with_platform(odd, "linux/ppc64le")]);
    let err = resolve_manifest(&store, &wrapper, &only("linux/ppc64le")).unwrap_err();
    assert!(err.to_string().contains("unexpected media type"), "{err}");

    // A blob that is not JSON fails with the digest named.
    let junk = put(&store, mediatype::OCI_MANIFEST, b"\x00\x01 not json");
    let err = resolve_manifest(&store, &junk, &Matcher::host()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains(junk.digest.as_str()), "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");
}
