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

/// The suite must be able to fail: differs that get one thing wrong are caught by the cases
/// about that thing, and still pass the others.
mod suite_catches_mutants {
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Arc;

    use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer};
    use stowage_core_types::mount::Mount;
    use stowage_core_types::{Descriptor, Result};
    use stowage_diff::testsuite::{run_one, TestDiffer};
    use stowage_diff::LocalDiffer;

    /// What the mutant gets wrong.
    #[derive(Clone, Copy)]
    enum Flaw {
        /// Apply returns the blob's descriptor instead of the uncompressed layer's.
        ReturnsBlobDescriptor,
        /// Compare drops the caller's labels and media type.
        IgnoresCompareOptions,
    }

    struct Mutant(LocalDiffer, Flaw);

    impl Applier for Mutant {
        fn apply(
            &self,
            desc: &Descriptor,
            mounts: &[Mount],
            c: &ApplyConfig,
        ) -> Result<Descriptor> {
            let applied = self.0.apply(desc, mounts, c)?;
            Ok(match self.1 {
                Flaw::ReturnsBlobDescriptor => desc.clone(),
                Flaw::IgnoresCompareOptions => applied,
            })
        }
    }

    impl Comparer for Mutant {
        fn compare(&self, l: &[Mount], u: &[Mount], o: &CompareOptions) -> Result<Descriptor> {
            match self.1 {
                Flaw::IgnoresCompareOptions => self.0.compare(l, u, &CompareOptions::default()),
                Flaw::ReturnsBlobDescriptor => self.0.compare(l, u, o),
            }
        }
    }

    fn mutant(flaw: Flaw) -> TestDiffer {
        let honest = super::local(|root| {
            Arc::new(
                stowage_snapshots_native::NativeSnapshotter::new(root.join("native"))
                    .expect("native snapshotter"),
            )
        });
        let differ = LocalDiffer::new(honest.content.clone());
        TestDiffer::new(
            Arc::new(Mutant(differ, flaw)),
            honest.content.clone(),
            honest.snapshotter.clone(),
            honest,
        )
    }

    fn fails(case: &str, flaw: Flaw) -> bool {
        panic::catch_unwind(AssertUnwindSafe(|| run_one(case, &|| mutant(flaw)))).is_err()
    }

    #[test]
    fn flawed_differs_fail_the_suite() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
            // The suite skips every case without root, so nothing could fail here.
            return;
        }
        for case in ["apply_gzip_layer", "apply_zstd_layer", "compare_round_trip"] {
            assert!(
                fails(case, Flaw::ReturnsBlobDescriptor),
                "{case} passed on a differ that returns the compressed blob's descriptor"
            );
        }
        for case in [
            "compare_labels",
            "compare_media_types",
            "compare_unknown_media_type",
        ] {
            assert!(
                fails(case, Flaw::IgnoresCompareOptions),
                "{case} passed on a differ that ignores the compare options"
            );
        }
        // The honest halves still pass: each mutant differs only where it should.
        run_one("compare_labels", &|| mutant(Flaw::ReturnsBlobDescriptor));
        run_one("apply_gzip_layer", &|| mutant(Flaw::IgnoresCompareOptions));
    }
}
