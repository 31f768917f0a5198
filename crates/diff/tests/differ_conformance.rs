//! The differ conformance suite on the local differ over a local content store (labels kept in
//! memory, as the suite needs a store that keeps labels), with the
//! mounts of the native and the overlayfs snapshotter.

use std::sync::Arc;

use stowage_content::LocalStore;
use stowage_core_types::snapshot::Snapshotter;
use stowage_diff::testsuite::TestDiffer;
use stowage_diff::LocalDiffer;

fn local(snapshotter: impl FnOnce(&std::path::Path) -> Arc<dyn Snapshotter>) -> TestDiffer {
    let dir = tempfile::tempdir().expect("temp dir");
    let content = Arc::new(
        LocalStore::with_memory_labels(dir.path().join("io.containerd.content.v1.content"))
            .expect("opening the content store"),
    );
    let sn = snapshotter(dir.path());
    let differ = Arc::new(LocalDiffer::new(content.clone()));
    TestDiffer::new(differ, content, sn, dir)
}

mod native {
    fn factory() -> stowage_diff::testsuite::TestDiffer {
        super::local(|root| {
            std::sync::Arc::new(
                stowage_snapshots_native::NativeSnapshotter::new(
                    root.join("io.containerd.snapshotter.v1.native"),
                )
                .expect("native snapshotter"),
            )
        })
    }
    stowage_diff::differ_conformance!(factory);
}

mod overlayfs {
    fn factory() -> stowage_diff::testsuite::TestDiffer {
        super::local(|root| {
            std::sync::Arc::new(
                stowage_snapshots_overlay::OverlaySnapshotter::new(
                    root.join("io.containerd.snapshotter.v1.overlayfs"),
                )
                .expect("overlayfs snapshotter"),
            )
        })
    }
    stowage_diff::differ_conformance!(factory);
}
