//! The snapshotter conformance suite on the overlay snapshotter.

use std::path::Path;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Result;
use stowage_snapshots_overlay::OverlaySnapshotter;

fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(Box::new(OverlaySnapshotter::new(root)?))
}

stowage_snapshots_storage::snapshotter_conformance!(factory);
