//! containerd.services.containers.v1.Containers: container records (metadata only).

use std::pin::Pin;
use std::sync::Arc;

use stowage_core_types::{Error, ErrorKind};
use stowage_metadata::{Container, Runtime};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::api::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use crate::api::containerd::services::containers::v1 as pb;
use crate::api::containerd::services::containers::v1::containers_server::Containers;
use crate::convert::{any, any_pb, label_map, labels, time, timestamp};
use crate::events::topics;
use crate::request::required_namespace;
use crate::server::State;

/// The Containers service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

fn container_pb(c: &Container) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        labels: label_map(&c.labels),
        image: c.image.clone(),
        runtime: Some(pb::container::Runtime {
            name: c.runtime.name.clone(),
            options: c.runtime.options.as_ref().map(any_pb),
        }),
        spec: c.spec.as_ref().map(any_pb),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any_pb(v)))
            .collect(),
    }
}

fn container(c: pb::Container) -> Container {
    let runtime = c.runtime.unwrap_or_default();
    Container {
        id: c.id,
        labels: labels(c.labels),
        image: c.image,
        runtime: Runtime {
            name: runtime.name,
            options: runtime.options.as_ref().map(any),
        },
        spec: c.spec.as_ref().map(any),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: time(c.created_at.as_ref()),
        updated_at: time(c.updated_at.as_ref()),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any(v)))
            .collect(),
    }
}

fn required(c: Option<pb::Container>) -> Result<pb::Container, Status> {
    c.ok_or_else(|| Status::invalid_argument("container is required: invalid argument"))
}

/// containerd's container is not optional on the wire, and its id is checked first.
fn required_id(c: Option<pb::Container>) -> Result<pb::Container, Status> {
    match c {
        Some(c) if !c.id.is_empty() => Ok(c),
        _ => Err(Status::invalid_argument("Container.ID required")),
    }
}

/// containerd's container store wraps a filter error (already an invalid-argument error)
/// in invalid argument once more, so the kind appears twice in the message.
fn list_error(e: Error) -> Error {
    if e.is(ErrorKind::InvalidArgument) {
        Error::invalid_argument(format!("{}: invalid argument", e.message()))
    } else {
        e
    }
}

#[tonic::async_trait]
impl Containers for Service {
    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let ns = required_namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.0.db.clone();
        let c = blocking(move || db.containers(&ns)?.get(&id)).await?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(container_pb(&c)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let ns = required_namespace(&req)?;
        let filters = req.into_inner().filters;
        let db = self.0.db.clone();
        let list = blocking(move || db.containers(&ns)?.list(&filters).map_err(list_error)).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: list.iter().map(container_pb).collect(),
        }))
    }

    type ListStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::ListContainerMessage, Status>> + Send>>;

    async fn list_stream(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = required_namespace(&req)?;
        let filters = req.into_inner().filters;
        let db = self.0.db.clone();
        let list = blocking(move || db.containers(&ns)?.list(&filters).map_err(list_error)).await?;
        let items: Vec<Result<pb::ListContainerMessage, Status>> = list
            .iter()
            .map(|c| {
                Ok(pb::ListContainerMessage {
                    container: Some(container_pb(c)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ns = required_namespace(&req)?;
        let c = container(required(req.into_inner().container)?);
        let db = self.0.db.clone();
        let n = ns.clone();
        let created = blocking(move || db.containers(&n)?.create(c)).await?;
        let (topic, ty) = topics::CONTAINER_CREATE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created.runtime.options.as_ref().map(any_pb),
                }),
            },
        );
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(container_pb(&created)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let ns = required_namespace(&req)?;
        let r = req.into_inner();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let c = container(required_id(r.container)?);
        let db = self.0.db.clone();
        let n = ns.clone();
        let updated = blocking(move || db.containers(&n)?.update(c, &paths)).await?;
        let (topic, ty) = topics::CONTAINER_UPDATE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: label_map(&updated.labels),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(container_pb(&updated)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.0.db.clone();
        let (n, i) = (ns.clone(), id.clone());
        blocking(move || db.containers(&n)?.delete(&i)).await?;
        let (topic, ty) = topics::CONTAINER_DELETE;
        self.0
            .exchange
            .publish(&ns, topic, ty, &ContainerDelete { id });
        Ok(Response::new(()))
    }
}
