//! containerd.services.namespaces.v1.Namespaces.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use crate::api::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use crate::api::containerd::services::namespaces::v1::*;
use crate::convert::{label_map, labels};
use crate::events::topics;
use crate::request::namespace_of;
use crate::server::State;

/// The Namespaces service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("{what} is required: invalid argument"))
}

#[tonic::async_trait]
impl namespaces_server::Namespaces for Service {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let db = self.0.db.clone();
        let n = name.clone();
        let l = blocking(move || db.namespace_labels(&n)).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(Namespace {
                name,
                labels: label_map(&l),
            }),
        }))
    }

    async fn list(
        &self,
        _: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let db = self.0.db.clone();
        let namespaces = blocking(move || {
            let mut out = Vec::new();
            for name in db.list_namespaces()? {
                let l = db.namespace_labels(&name)?;
                out.push(Namespace {
                    name,
                    labels: label_map(&l),
                });
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let caller = namespace_of(&req);
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| missing("namespace"))?;
        let db = self.0.db.clone();
        let (name, l) = (ns.name.clone(), labels(ns.labels.clone()));
        blocking(move || db.create_namespace(&name, &l)).await?;
        let (topic, ty) = topics::NAMESPACE_CREATE;
        self.0.exchange.publish(
            &publisher_namespace(caller)?,
            topic,
            ty,
            &NamespaceCreate {
                name: ns.name.clone(),
                labels: ns.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(ns),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let caller = namespace_of(&req);
        let req = req.into_inner();
        let ns = req.namespace.ok_or_else(|| missing("namespace"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let db = self.0.db.clone();
        let (name, l) = (ns.name.clone(), labels(ns.labels));
        let stored = blocking(move || db.update_namespace(&name, &l, &paths)).await?;
        let (topic, ty) = topics::NAMESPACE_UPDATE;
        self.0.exchange.publish(
            &publisher_namespace(caller)?,
            topic,
            ty,
            &NamespaceUpdate {
                name: ns.name.clone(),
                labels: label_map(&stored),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(Namespace {
                name: ns.name,
                labels: label_map(&stored),
            }),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let db = self.0.db.clone();
        let n = name.clone();
        blocking(move || db.delete_namespace(&n)).await?;
        // containerd publishes a deletion in the deleted namespace itself.
        let (topic, ty) = topics::NAMESPACE_DELETE;
        self.0
            .exchange
            .publish(&name, topic, ty, &NamespaceDelete { name: name.clone() });
        Ok(Response::new(()))
    }
}

/// The namespace a create or update event is published in: the caller's, as containerd's
/// exchange takes it from the request. containerd makes the change first and then fails to
/// publish when the caller named none; so do we, with its error.
fn publisher_namespace(caller: Option<String>) -> Result<String, Status> {
    caller.filter(|n| !n.is_empty()).ok_or_else(|| {
        Status::unknown("failed publishing event: namespace is required: failed precondition")
    })
}
