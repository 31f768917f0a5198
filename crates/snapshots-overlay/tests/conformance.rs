//! The snapshotter conformance suite on the overlay snapshotter.

use std::path::Path;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Result;
use stowage_snapshots_overlay::OverlaySnapshotter;

fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(Box::new(OverlaySnapshotter::new(root)?))
}

stowage_snapshots_storage::snapshotter_conformance!(factory);

/// The cases that remove snapshots again, with asynchronous removal (how stowaged runs the
/// snapshotter unless `sync_remove` is set).
mod async_remove {
    use super::*;
    use stowage_snapshots_overlay::Options;

    fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
        let options = Options {
            async_remove: true,
            ..Options::default()
        };
        Ok(Box::new(OverlaySnapshotter::with_options(root, options)?))
    }

    stowage_snapshots_storage::snapshotter_conformance!(@cases factory;
        basic remove remove_intermediate walk layers_128 cleanup reopen concurrent);
}
