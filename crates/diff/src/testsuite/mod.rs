//! The differ conformance suite, written once and run by every `Applier` + `Comparer`: the
//! local differ over a local content store, the same over a namespaced (metadata) store, and
//! the gRPC client against stowaged.
//!
//! It pins down what containerd's walking differ does: apply of gzip, zstd and plain layers
//! returning the DiffID, whiteouts, refusal of missing or corrupt blobs and of media types no
//! stream processor takes (leaving the target as it was), payloads ignored without a
//! processor; compare producing a layer that applied onto the lower tree gives the upper
//! tree, compressed as the media type says, labelled with its DiffID, byte-for-byte
//! deterministic, with the caller's labels, empty when nothing changed, and containerd's error
//! for media types it cannot write.
//!
//! The suite is given a snapshotter to make the mounts it applies onto and compares (any
//! snapshotter: native, overlayfs, namespaced or remote) and the content store the differ
//! reads layers from and writes them into. It mounts snapshots itself to fill and inspect
//! them, so it needs root. The content store must keep labels.
//!
//! ```ignore
//! fn factory() -> TestDiffer { ... }
//! stowage_diff::differ_conformance!(factory);
//! ```

use std::any::Any;
use std::sync::Arc;

use stowage_core_types::content::Store;
use stowage_core_types::diff::Differ;
use stowage_core_types::snapshot::Snapshotter;

pub mod cases;
pub mod util;

/// A differ under test, with the content store it uses, a snapshotter for mounts, and
/// whatever backs them (temp dirs, a daemon).
pub struct TestDiffer {
    /// The differ.
    pub differ: Arc<dyn Differ>,
    /// The content store the differ reads layers from and writes compared layers into.
    pub content: Arc<dyn Store>,
    /// Makes the snapshots the suite applies onto and compares.
    pub snapshotter: Arc<dyn Snapshotter>,
    // Dropped after the stores (field order), so what backs them outlives them.
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for TestDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDiffer").finish_non_exhaustive()
    }
}

impl TestDiffer {
    /// Bundles the parts; `guard` is dropped after them.
    pub fn new(
        differ: Arc<dyn Differ>,
        content: Arc<dyn Store>,
        snapshotter: Arc<dyn Snapshotter>,
        guard: impl Any + Send,
    ) -> Self {
        TestDiffer {
            differ,
            content,
            snapshotter,
            _guard: Box::new(guard),
        }
    }
}

/// One case of the suite.
pub type Case = fn(&TestDiffer);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("apply_gzip_layer", cases::apply_gzip_layer),
    ("apply_zstd_layer", cases::apply_zstd_layer),
    ("apply_plain_layer", cases::apply_plain_layer),
    ("apply_whiteouts", cases::apply_whiteouts),
    ("apply_missing_blob", cases::apply_missing_blob),
    ("apply_corrupt_blob", cases::apply_corrupt_blob),
    ("apply_unknown_media_type", cases::apply_unknown_media_type),
    (
        "apply_payloads_without_processor",
        cases::apply_payloads_without_processor,
    ),
    ("compare_round_trip", cases::compare_round_trip),
    ("compare_media_types", cases::compare_media_types),
    ("compare_deterministic", cases::compare_deterministic),
    ("compare_labels", cases::compare_labels),
    ("compare_empty_diff", cases::compare_empty_diff),
    (
        "compare_unknown_media_type",
        cases::compare_unknown_media_type,
    ),
];

/// Runs the case `name` on a fresh differ from `factory`. Panics when it fails or is unknown.
///
/// The suite mounts snapshots, so it needs root: without it a case fails saying so, unless
/// `STOWAGE_SKIP_EXTERNAL=1` is set, when it is skipped.
pub fn run_one(name: &str, factory: &dyn Fn() -> TestDiffer) {
    let Some((_, case)) = CASES.iter().find(|(n, _)| *n == name) else {
        panic!("no differ conformance case named {name:?}");
    };
    if crate::sys::effective_ids().0 != 0 {
        if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!("skipping differ conformance case {name}: needs root to mount snapshots");
            return;
        }
        panic!("differ conformance case {name} needs root (it mounts snapshots); run as root or set STOWAGE_SKIP_EXTERNAL=1 to skip");
    }
    let fixture = factory();
    case(&fixture);
}

/// Runs every case, each on a fresh differ, and panics listing the ones that failed.
pub fn run_all(factory: &dyn Fn() -> TestDiffer) {
    stowage_core_types::conformance::run_all("differ", CASES.iter().map(|(n, _)| *n), |name| {
        run_one(name, factory)
    });
}

/// Generates one `#[test]` per conformance case, each calling `$factory` (an expression of type
/// `impl Fn() -> TestDiffer`) for a fresh differ.
#[macro_export]
macro_rules! differ_conformance {
    ($factory:expr) => {
        $crate::differ_conformance!(@cases $factory;
            apply_gzip_layer apply_zstd_layer apply_plain_layer apply_whiteouts
            apply_missing_blob apply_corrupt_blob apply_unknown_media_type
            apply_payloads_without_processor compare_round_trip compare_media_types
            compare_deterministic compare_labels compare_empty_diff
            compare_unknown_media_type);
    };
    (@cases $factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::testsuite::run_one(stringify!($name), &$factory);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_lists_every_case() {
        // The macro repeats the case names; keep it in step with CASES.
        let src = include_str!("mod.rs");
        let macro_body = src
            .split("(@cases $factory;")
            .nth(1)
            .and_then(|s| s.split(");").next())
            .unwrap_or_default();
        let in_macro: Vec<&str> = macro_body.split_whitespace().collect();
        let in_cases: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        assert_eq!(in_macro, in_cases);
    }
}
