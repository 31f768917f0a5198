//! containerd.services.diff.v1.Diff, served through the `core_types::diff` traits by the local
//! differ over the request's namespaced content store (under the request's lease), as
//! containerd wraps its walking differ with the metadata content store: Apply reads the layer
//! from the namespace and applies it onto the given mounts; Diff writes the compared layer
//! into the namespace.

use std::sync::Arc;

use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer, Payload};
use stowage_core_types::mount::Mount;
use stowage_diff::LocalDiffer;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::api::containerd::services::diff::v1 as pb;
use crate::api::containerd::services::diff::v1::diff_server::Diff;
use crate::convert::{descriptor, descriptor_pb, labels, mount};
use crate::errors::IntoStatus;
use crate::request::{lease_of, required_namespace};
use crate::server::State;

/// The Diff service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

impl Service {
    /// The differ for one request: the local differ over namespace `ns`'s content store,
    /// with the configured stream processors (containerd registers them once, globally, for
    /// its walking differ; ours is built per request, so each one gets the list).
    fn differ(&self, ns: &str, lease: Option<&str>) -> stowage_core_types::Result<LocalDiffer> {
        let cs = self.0.db.content_store(ns, lease)?;
        Ok(LocalDiffer::new(Arc::new(cs)).with_processors(self.0.stream_processors.clone()))
    }
}

#[tonic::async_trait]
impl Diff for Service {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = required_namespace(&req)?;
        let lease = lease_of(&req);
        let r = req.into_inner();
        let layer = r.diff.as_ref().ok_or_else(|| {
            Status::invalid_argument("diff descriptor is required: invalid argument")
        })?;
        let layer = descriptor(layer).status()?;
        let mounts: Vec<Mount> = r.mounts.iter().map(mount).collect();
        if mounts.is_empty() {
            return Err(Status::invalid_argument(
                "mounts are required to apply a layer: invalid argument",
            ));
        }
        let config = ApplyConfig {
            payloads: r
                .payloads
                .into_iter()
                .map(|(id, any)| {
                    (
                        id,
                        Payload {
                            type_url: any.type_url,
                            value: any.value,
                        },
                    )
                })
                .collect(),
        };
        let differ = self.differ(&ns, lease.as_deref()).status()?;
        let applied = blocking(move || differ.apply(&layer, &mounts, &config)).await?;
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(descriptor_pb(&applied)),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ns = required_namespace(&req)?;
        let lease = lease_of(&req);
        let r = req.into_inner();
        let lower: Vec<Mount> = r.left.iter().map(mount).collect();
        let upper: Vec<Mount> = r.right.iter().map(mount).collect();
        let opts = CompareOptions {
            media_type: r.media_type,
            labels: labels(r.labels),
            reference: r.r#ref,
        };
        let differ = self.differ(&ns, lease.as_deref()).status()?;
        let desc = blocking(move || differ.compare(&lower, &upper, &opts)).await?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(descriptor_pb(&desc)),
        }))
    }
}
