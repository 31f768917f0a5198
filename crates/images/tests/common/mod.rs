//! Helpers shared by the integration tests: loading OCI layouts into a content store, the
//! appliers unpacks use, describing a mounted tree.

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use stowage_content::LocalStore;
use stowage_core_types::content::write_blob;
use stowage_core_types::diff::{Applier, ApplyConfig};
use stowage_core_types::mount::Mount;
use stowage_core_types::{Descriptor, Digest, Result};
use stowage_diff::LocalDiffer;
use stowage_snapshots_storage::mount::with_temp_mount;

/// Copies every blob of the OCI layout at `layout` into `store` and returns the descriptor
/// `index.json` names first (the image's top manifest or index).
pub fn load_layout(store: &LocalStore, layout: &Path) -> Descriptor {
    let blobs = layout.join("blobs/sha256");
    for e in fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let digest = Digest::parse(&format!("sha256:{name}")).unwrap();
        let size = e.metadata().unwrap().len();
        let desc = Descriptor::new("application/octet-stream", digest, size);
        let mut f = fs::File::open(e.path()).unwrap();
        write_blob(
            store,
            &format!("load-{name}"),
            &mut f,
            &desc,
            Default::default(),
        )
        .unwrap();
    }
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    serde_json::from_value(index["manifests"][0].clone()).unwrap()
}

/// Puts `data` into `store` and returns its descriptor with `media_type`.
pub fn put(store: &LocalStore, media_type: &str, data: &[u8]) -> Descriptor {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(data));
    let desc = Descriptor::new(
        media_type,
        Digest::parse(&format!("sha256:{hex}")).unwrap(),
        data.len() as u64,
    );
    write_blob(
        store,
        &format!("put-{hex}"),
        &mut &data[..],
        &desc,
        Default::default(),
    )
    .unwrap();
    desc
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest::parse(&format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(data))
    ))
    .unwrap()
}

/// True when the test may run: root is needed for mounts, device nodes and ownership. Fails
/// (panics) when not root, unless `STOWAGE_SKIP_EXTERNAL=1`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: not root and STOWAGE_SKIP_EXTERNAL=1");
        return false;
    }
    panic!(
        "this test needs root (mounts, device nodes, ownership); or set STOWAGE_SKIP_EXTERNAL=1"
    );
}
/// The local differ over `store` (the applier the daemon would use for it).
pub fn differ(store: &LocalStore) -> LocalDiffer {
    LocalDiffer::new(Arc::new(store.clone()))
}

/// An applier that always writes through a real mount of the snapshot: it mounts the mounts
/// on a temporary directory and has the inner applier write onto a bind mount of that
/// directory, so whiteouts delete through overlayfs instead of being written as overlay's
/// markers into the upper directory.
pub struct Mounting<A>(pub A);

impl<A: Applier> Applier for Mounting<A> {
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<Descriptor> {
        with_temp_mount(mounts, |root| {
            let bind = Mount::new("bind", root.to_string_lossy(), ["rbind", "rw"]);
            self.0.apply(desc, &[bind], config)
        })
    }
}

pub mod tree;
