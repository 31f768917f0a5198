//! containerd.services.leases.v1.Leases over the metadata lease store.

use std::sync::Arc;

use stowage_core_types::{Error, ErrorKind};
use stowage_metadata::{Lease, Resource};
use tonic::{Request, Response, Status};

use super::blocking;
use super::images::go_digest_problem;
use crate::api::containerd::services::leases::v1 as pb;
use crate::api::containerd::services::leases::v1::leases_server::Leases;
use crate::convert::{label_map, labels, timestamp};
use crate::errors::to_status;
use crate::request::required_namespace;
use crate::server::State;

/// The Leases service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

fn lease_pb(l: &Lease) -> pb::Lease {
    pb::Lease {
        id: l.id.clone(),
        created_at: Some(timestamp(l.created_at)),
        labels: label_map(&l.labels),
    }
}

/// containerd's resource is not optional on the wire: a missing one is an empty one, which
/// is then refused for its empty type.
fn resource(r: Option<pb::Resource>) -> Resource {
    let r = r.unwrap_or_default();
    Resource {
        id: r.id,
        kind: r.r#type,
    }
}

/// Rewrites a store error about `r` into what containerd 1.6 answers for the same resource:
/// go-digest's words for a bad content digest, and bolt's own (code Unknown, bare message)
/// for an empty snapshotter name or an empty key, which containerd does not check before
/// writing.
fn as_containerd(e: Error, r: &Resource, adding: bool) -> Status {
    if e.is(ErrorKind::InvalidArgument) {
        if r.kind == "content" {
            if let Some(p) = go_digest_problem(&r.id) {
                return to_status(&Error::invalid_argument(format!(
                    "invalid content resource id {}: {p}",
                    r.id
                )));
            }
        }
        if adding && r.kind == "snapshots/" {
            return Status::unknown("bucket name required");
        }
        if adding && r.id.is_empty() && (r.kind == "ingests" || r.kind.starts_with("snapshots/")) {
            return Status::unknown("key required");
        }
    }
    to_status(&e)
}

/// A fresh lease id when the client leaves it empty (containerd uses random ones too).
fn generated_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}-{}", &u[..12])
}

#[tonic::async_trait]
impl Leases for Service {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let id = if req.id.is_empty() {
            generated_id()
        } else {
            req.id
        };
        let l = labels(req.labels);
        let db = self.0.db.clone();
        let lease = blocking(move || db.leases(&ns)?.create(&id, &l)).await?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(lease_pb(&lease)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let db = self.0.db.clone();
        let (n, id) = (ns.clone(), req.id.clone());
        blocking(move || {
            let leases = db.leases(&n)?;
            if req.sync {
                leases.delete_sync(&req.id).map(|_| ())
            } else {
                leases.delete(&req.id)
            }
        })
        .await?;
        // An eager unpack under this lease can commit nothing more: clients waiting for its
        // layers go on without it.
        self.0.eager.lease_deleted(&ns, &id);
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = required_namespace(&req)?;
        let filters = req.into_inner().filters;
        let db = self.0.db.clone();
        let list = blocking(move || db.leases(&ns)?.list(&filters)).await?;
        Ok(Response::new(pb::ListResponse {
            leases: list.iter().map(lease_pb).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource);
        let db = self.0.db.clone();
        blocking(move || {
            let leases = db.leases(&ns)?;
            Ok(leases
                .add_resource(&req.id, &r)
                .map_err(|e| as_containerd(e, &r, true)))
        })
        .await??;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource);
        let db = self.0.db.clone();
        blocking(move || {
            let leases = db.leases(&ns)?;
            Ok(leases
                .delete_resource(&req.id, &r)
                .map_err(|e| as_containerd(e, &r, false)))
        })
        .await??;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ns = required_namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.0.db.clone();
        let rs = blocking(move || db.leases(&ns)?.list_resources(&id)).await?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: rs
                .into_iter()
                .map(|r| pb::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
