//! One connection to a daemon, shared by every remote client made from it.

use std::path::Path;
use std::sync::Arc;

use stowage_core_types::{Error, Result};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

use super::content::RemoteContentStore;
use super::diff::RemoteDiffer;
use super::images::RemoteImageStore;
use super::snapshots::RemoteSnapshotter;
use crate::client::{connect, Headers};

/// A channel to a daemon's socket and the runtime that drives it; cheap to clone (clones
/// share both), so one process needs one socket connection and one client runtime however
/// many stores it uses.
///
/// The runtime must not be dropped from inside an async context: hold one clone on an
/// ordinary thread (as `main` does) for as long as any store is in use.
#[derive(Clone)]
pub struct Connection {
    rt: Arc<Runtime>,
    channel: Channel,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts a client runtime and connects to the socket at `address` on it. Call it from
    /// an ordinary thread, not from inside a tokio runtime.
    pub fn open(address: &Path) -> Result<Connection> {
        let rt = runtime()?;
        let channel = rt.block_on(connect(address))?;
        Ok(Connection { rt, channel })
    }

    /// The channel, for generated clients; calls on it may be made from any runtime.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The runtime the channel lives on. A program may run its own async code on it too
    /// (`block_on`), and call the remote stores from its `spawn_blocking` threads.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The connection bound to namespace `ns` and, if given, lease `lease`: what the
    /// remote stores are built from.
    pub fn scope(&self, ns: &str, lease: Option<&str>) -> Result<Scope> {
        Ok(Scope {
            conn: self.clone(),
            headers: Headers::new(Some(ns), lease)?,
            unleased: Headers::new(Some(ns), None)?,
        })
    }

    pub(crate) fn rt(&self) -> Arc<Runtime> {
        self.rt.clone()
    }
}

/// A [`Connection`] in one namespace, under an optional lease; cheap to clone.
#[derive(Clone, Debug)]
pub struct Scope {
    conn: Connection,
    headers: Headers,
    /// The namespace alone, for the image store (images are not held by leases).
    unleased: Headers,
}

impl Scope {
    /// The content store.
    pub fn content_store(&self) -> RemoteContentStore {
        RemoteContentStore::new(&self.conn, self.headers.clone())
    }

    /// Snapshotter `name`.
    pub fn snapshotter(&self, name: &str) -> RemoteSnapshotter {
        RemoteSnapshotter::new(&self.conn, self.headers.clone(), name)
    }

    /// The differ (its compared layers are written under the lease).
    pub fn differ(&self) -> RemoteDiffer {
        RemoteDiffer::new(&self.conn, self.headers.clone())
    }

    /// The image store; it sends no lease.
    pub fn image_store(&self) -> RemoteImageStore {
        RemoteImageStore::new(&self.conn, self.unleased.clone())
    }
}

/// The runtime of one connection: one worker drives the channel while callers block on
/// their own threads.
fn runtime() -> Result<Arc<Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::io("starting the client runtime", e))
}
