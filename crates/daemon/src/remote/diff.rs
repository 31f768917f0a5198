//! `core_types::diff::{Applier, Comparer}` over the Diff service.

use std::path::Path;
use std::sync::Arc;

use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer};
use stowage_core_types::mount::Mount;
use stowage_core_types::{Descriptor, Error, Result};
use tokio::runtime::Runtime;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Connection;
use crate::api::containerd::services::diff::v1 as pb;
use crate::client::Headers;
use crate::convert::{descriptor, descriptor_pb, label_map, mounts_pb};
use crate::errors::from_status;

type Client = pb::diff_client::DiffClient<InterceptedService<Channel, Headers>>;

/// The differ of a daemon, in one namespace (and optionally a lease, under which compared
/// layers are written).
#[derive(Clone)]
pub struct RemoteDiffer {
    rt: Arc<Runtime>,
    client: Client,
}

impl std::fmt::Debug for RemoteDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDiffer").finish_non_exhaustive()
    }
}

impl RemoteDiffer {
    /// Opens a connection of its own to the socket at `address` and works in namespace
    /// `ns` (under `lease`); [`Scope::differ`](super::Scope::differ) shares one instead.
    pub fn connect(address: &Path, ns: &str, lease: Option<&str>) -> Result<RemoteDiffer> {
        Ok(Connection::open(address)?.scope(ns, lease)?.differ())
    }

    pub(super) fn new(conn: &Connection, headers: Headers) -> RemoteDiffer {
        let client = crate::client!(pb::diff_client::DiffClient<_>, conn.channel(), headers);
        RemoteDiffer {
            rt: conn.rt(),
            client,
        }
    }
}

/// The descriptor a response must carry.
fn returned(
    d: Option<crate::api::containerd::types::Descriptor>,
    what: &str,
) -> Result<Descriptor> {
    let d = d.ok_or_else(|| Error::unknown(format!("the daemon returned no {what} descriptor")))?;
    descriptor(&d)
}

impl Applier for RemoteDiffer {
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<Descriptor> {
        let payloads = config
            .payloads
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    prost_types::Any {
                        type_url: p.type_url.clone(),
                        value: p.value.clone(),
                    },
                )
            })
            .collect();
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.apply(pb::ApplyRequest {
                diff: Some(descriptor_pb(desc)),
                mounts: mounts_pb(mounts),
                payloads,
            }))
            .map_err(|s| from_status(&s))?;
        returned(r.into_inner().applied, "applied")
    }
}

impl Comparer for RemoteDiffer {
    fn compare(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        options: &CompareOptions,
    ) -> Result<Descriptor> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.diff(pb::DiffRequest {
                left: mounts_pb(lower),
                right: mounts_pb(upper),
                media_type: options.media_type.clone(),
                r#ref: options.reference.clone(),
                labels: label_map(&options.labels),
            }))
            .map_err(|s| from_status(&s))?;
        returned(r.into_inner().diff, "diff")
    }
}
