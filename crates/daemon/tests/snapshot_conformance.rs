//! The snapshotter conformance suite through our gRPC client against stowaged, for overlayfs
//! and native: each case gets a daemon on the suite's root (restarted for the reopen case).

mod common;

use std::path::Path;

use common::Stowaged;
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Snapshotter, Usage};
use stowage_core_types::{Labels, Result};
use stowage_daemon::remote::snapshots::RemoteSnapshotter;

/// A remote snapshotter that owns the daemon it talks to (stopped when it is dropped).
struct Owned {
    sn: RemoteSnapshotter,
    _daemon: Stowaged,
}

impl Snapshotter for Owned {
    fn stat(&self, key: &str) -> Result<Info> {
        self.sn.stat(key)
    }
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        self.sn.update(info, fieldpaths)
    }
    fn usage(&self, key: &str) -> Result<Usage> {
        self.sn.usage(key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.sn.mounts(key)
    }
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.sn.prepare(key, parent, labels)
    }
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.sn.view(key, parent, labels)
    }
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.sn.commit(name, key, labels)
    }
    fn remove(&self, key: &str) -> Result<()> {
        self.sn.remove(key)
    }
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        self.sn.walk(f, filters)
    }
    fn cleanup(&self) -> Result<()> {
        self.sn.cleanup()
    }
}

fn remote(root: &Path, name: &str) -> Result<Box<dyn Snapshotter>> {
    let run = root.with_extension("run");
    std::fs::create_dir_all(&run).map_err(|e| stowage_core_types::Error::io("mkdir", e))?;
    let d = Stowaged::start_with(root, &run, &[])
        .map_err(|e| stowage_core_types::Error::unknown(format!("{e:#}")))?;
    // Work under a lease, so the collector leaves the suite's snapshots alone; creating it a
    // second time (after a reopen) finds it there.
    let _ = d.ctr(&["-n", "conformance", "leases", "create", "--id", "suite"]);
    let sn = RemoteSnapshotter::connect(&d.address, name, "conformance", Some("suite"))?;
    Ok(Box::new(Owned { sn, _daemon: d }))
}

mod overlayfs {
    fn factory(
        root: &std::path::Path,
    ) -> stowage_core_types::Result<Box<dyn stowage_core_types::snapshot::Snapshotter>> {
        super::remote(root, "overlayfs")
    }
    stowage_snapshots_storage::snapshotter_conformance!(factory);
}

mod native {
    fn factory(
        root: &std::path::Path,
    ) -> stowage_core_types::Result<Box<dyn stowage_core_types::snapshot::Snapshotter>> {
        super::remote(root, "native")
    }
    stowage_snapshots_storage::snapshotter_conformance!(factory);
}
