//! containerd.services.images.v1.Images over the metadata image store.

use std::sync::Arc;

use stowage_metadata::Image;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::api::containerd::services::images::v1 as pb;
use crate::api::containerd::services::images::v1::images_server::Images;
use crate::convert::{descriptor, descriptor_pb, label_map, labels, time, timestamp};
use crate::errors::IntoStatus;
use crate::events::topics;
use crate::request::required_namespace;
use crate::server::State;

/// The Images service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

fn image_pb(i: &Image) -> pb::Image {
    pb::Image {
        name: i.name.clone(),
        labels: label_map(&i.labels),
        target: Some(descriptor_pb(&i.target)),
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
    }
}

fn image(i: pb::Image) -> Result<Image, Status> {
    let target = i
        .target
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("image target is required: invalid argument"))?;
    let mut out = Image::new(i.name, descriptor(target).status()?);
    out.labels = labels(i.labels);
    out.created_at = time(i.created_at.as_ref());
    out.updated_at = time(i.updated_at.as_ref());
    Ok(out)
}

fn required(i: Option<pb::Image>) -> Result<pb::Image, Status> {
    i.ok_or_else(|| Status::invalid_argument("image is required: invalid argument"))
}

#[tonic::async_trait]
impl Images for Service {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ns = required_namespace(&req)?;
        let db = self.0.db.clone();
        let name = req.into_inner().name;
        let i = blocking(move || db.images(&ns)?.get(&name)).await?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(image_pb(&i)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = required_namespace(&req)?;
        let db = self.0.db.clone();
        let filters = req.into_inner().filters;
        let list = blocking(move || db.images(&ns)?.list(&filters)).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: list.iter().map(image_pb).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = required_namespace(&req)?;
        let img = image(required(req.into_inner().image)?)?;
        let db = self.0.db.clone();
        let n = ns.clone();
        let created = blocking(move || db.images(&n)?.create(img)).await?;
        let (topic, ty) = topics::IMAGE_CREATE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &pb::ImageCreate {
                name: created.name.clone(),
                labels: label_map(&created.labels),
            },
        );
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(image_pb(&created)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let img = required(req.image)?;
        // An update by field paths may leave the target out; the store only reads the fields
        // named, but our record type needs one, so borrow the stored target then.
        let db = self.0.db.clone();
        let n = ns.clone();
        let updated = blocking(move || {
            let images = db.images(&n)?;
            let img = if img.target.is_none() && !paths.is_empty() {
                let stored = images.get(&img.name)?;
                let mut i = Image::new(img.name.clone(), stored.target);
                i.labels = labels(img.labels);
                i
            } else {
                image(img).map_err(|s| {
                    stowage_core_types::Error::invalid_argument(s.message().to_string())
                })?
            };
            images.update(img, &paths)
        })
        .await?;
        let (topic, ty) = topics::IMAGE_UPDATE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &pb::ImageUpdate {
                name: updated.name.clone(),
                labels: label_map(&updated.labels),
            },
        );
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(image_pb(&updated)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let req = req.into_inner();
        let db = self.0.db.clone();
        let (n, name, sync) = (ns.clone(), req.name.clone(), req.sync);
        blocking(move || {
            let images = db.images(&n)?;
            if sync {
                images.delete_sync(&name).map(|_| ())
            } else {
                images.delete(&name)
            }
        })
        .await?;
        let (topic, ty) = topics::IMAGE_DELETE;
        self.0
            .exchange
            .publish(&ns, topic, ty, &pb::ImageDelete { name: req.name });
        Ok(Response::new(()))
    }
}
