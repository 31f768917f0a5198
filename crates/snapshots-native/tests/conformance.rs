//! The snapshotter conformance suite on the native snapshotter.

use std::path::Path;

use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::Result;
use stowage_snapshots_native::NativeSnapshotter;

fn factory(root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(Box::new(NativeSnapshotter::new(root)?))
}

stowage_snapshots_storage::snapshotter_conformance!(factory);
