//! `core_types::snapshot::Snapshotter` over the Snapshots service.

use std::path::Path;
use std::sync::Arc;

use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Snapshotter, Usage};
use stowage_core_types::{Error, Labels, Result};
use tokio::runtime::Runtime;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Connection;
use crate::api::containerd::services::snapshots::v1 as pb;
use crate::client::Headers;
use crate::convert::{label_map, mount, snapshot_info, snapshot_info_pb};
use crate::errors::from_status;

type Client = pb::snapshots_client::SnapshotsClient<InterceptedService<Channel, Headers>>;

/// One snapshotter of a daemon, by name, in one namespace (and optionally a lease).
#[derive(Clone)]
pub struct RemoteSnapshotter {
    rt: Arc<Runtime>,
    client: Client,
    name: String,
}

impl std::fmt::Debug for RemoteSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSnapshotter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn st(s: tonic::Status) -> Error {
    from_status(&s)
}

fn mounts(ms: Vec<crate::api::containerd::types::Mount>) -> Vec<Mount> {
    ms.iter().map(mount).collect()
}

impl RemoteSnapshotter {
    /// Opens a connection of its own to the socket at `address` and uses snapshotter `name`
    /// in namespace `ns` (under `lease`); [`Scope::snapshotter`](super::Scope::snapshotter) shares one instead.
    pub fn connect(
        address: &Path,
        name: &str,
        ns: &str,
        lease: Option<&str>,
    ) -> Result<RemoteSnapshotter> {
        Ok(Connection::open(address)?
            .scope(ns, lease)?
            .snapshotter(name))
    }

    pub(super) fn new(conn: &Connection, headers: Headers, name: &str) -> RemoteSnapshotter {
        let client = crate::client!(
            pb::snapshots_client::SnapshotsClient<_>,
            conn.channel(),
            headers
        );
        RemoteSnapshotter {
            rt: conn.rt(),
            client,
            name: name.to_string(),
        }
    }
}

impl Snapshotter for RemoteSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.stat(pb::StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        }));
        Ok(snapshot_info(
            &r.map_err(st)?.into_inner().info.unwrap_or_default(),
        ))
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.update(pb::UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            info: Some(snapshot_info_pb(&info)),
            update_mask: Some(prost_types::FieldMask {
                paths: fieldpaths.to_vec(),
            }),
        }));
        Ok(snapshot_info(
            &r.map_err(st)?.into_inner().info.unwrap_or_default(),
        ))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.usage(pb::UsageRequest {
                snapshotter: self.name.clone(),
                key: key.into(),
            }))
            .map_err(st)?
            .into_inner();
        Ok(Usage {
            inodes: r.inodes,
            size: r.size,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.mounts(pb::MountsRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        }));
        Ok(mounts(r.map_err(st)?.into_inner().mounts))
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
            parent: parent.into(),
            labels: label_map(&labels),
        }));
        Ok(mounts(r.map_err(st)?.into_inner().mounts))
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.view(pb::ViewSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
            parent: parent.into(),
            labels: label_map(&labels),
        }));
        Ok(mounts(r.map_err(st)?.into_inner().mounts))
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.commit(pb::CommitSnapshotRequest {
                snapshotter: self.name.clone(),
                name: name.into(),
                key: key.into(),
                labels: label_map(&labels),
            }))
            .map_err(st)?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.remove(pb::RemoveSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.into(),
            }))
            .map_err(st)?;
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let mut c = self.client.clone();
        let infos = self.rt.block_on(async {
            let mut s = c
                .list(pb::ListSnapshotsRequest {
                    snapshotter: self.name.clone(),
                    filters: filters.to_vec(),
                })
                .await
                .map_err(st)?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                out.extend(m.map_err(st)?.info);
            }
            Ok::<_, Error>(out)
        })?;
        for i in &infos {
            f(snapshot_info(i))?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.cleanup(pb::CleanupRequest {
                snapshotter: self.name.clone(),
            }))
            .map_err(st)?;
        Ok(())
    }
}
