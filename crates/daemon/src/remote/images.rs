//! `core_types::image::Store` over the Images service.

use std::path::Path;
use std::sync::Arc;

use stowage_core_types::image::{DeleteOptions, Image, Store};
use stowage_core_types::{Error, Result};
use tokio::runtime::Runtime;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Connection;
use crate::api::containerd::services::images::v1 as pb;
use crate::client::Headers;
use crate::convert::{descriptor, image_pb, labels, time};
use crate::errors::from_status;

type Client = pb::images_client::ImagesClient<InterceptedService<Channel, Headers>>;

/// The images of one namespace of a daemon, reached over gRPC.
///
/// Unlike the content and snapshot clients it takes no lease: images are roots of their own
/// and the Images service does not attach them to the request's lease.
#[derive(Clone)]
pub struct RemoteImageStore {
    rt: Arc<Runtime>,
    client: Client,
}

impl std::fmt::Debug for RemoteImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteImageStore").finish_non_exhaustive()
    }
}

fn st(s: tonic::Status) -> Error {
    from_status(&s)
}

/// The image in a response; one the server sent without an image or with a target we cannot
/// read is a broken reply, not the caller's mistake.
fn image_of(i: Option<pb::Image>) -> Result<Image> {
    let i = i.ok_or_else(|| Error::unknown("the server's reply carries no image"))?;
    let t = i.target.as_ref().ok_or_else(|| {
        Error::unknown(format!(
            "image {:?} in the server's reply has no target",
            i.name
        ))
    })?;
    let target = descriptor(t).map_err(|e| {
        Error::unknown(format!(
            "image {:?} in the server's reply: {}",
            i.name,
            e.message()
        ))
    })?;
    Ok(Image {
        target,
        labels: labels(i.labels),
        created_at: time(i.created_at.as_ref()),
        updated_at: time(i.updated_at.as_ref()),
        name: i.name,
    })
}

impl RemoteImageStore {
    /// Opens a connection of its own to the socket at `address` and works in namespace
    /// `ns`; [`Scope::image_store`](super::Scope::image_store) shares one instead.
    pub fn connect(address: &Path, ns: &str) -> Result<RemoteImageStore> {
        Ok(Connection::open(address)?.scope(ns, None)?.image_store())
    }

    pub(super) fn new(conn: &Connection, headers: Headers) -> RemoteImageStore {
        let client = crate::client!(pb::images_client::ImagesClient<_>, conn.channel(), headers);
        RemoteImageStore {
            rt: conn.rt(),
            client,
        }
    }
}

impl Store for RemoteImageStore {
    fn get(&self, name: &str) -> Result<Image> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.get(pb::GetImageRequest { name: name.into() }))
            .map_err(st)?;
        image_of(r.into_inner().image)
    }

    fn list(&self, filters: &[String]) -> Result<Vec<Image>> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.list(pb::ListImagesRequest {
                filters: filters.to_vec(),
            }))
            .map_err(st)?;
        r.into_inner()
            .images
            .into_iter()
            .map(|i| image_of(Some(i)))
            .collect()
    }

    fn create(&self, image: Image) -> Result<Image> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.create(pb::CreateImageRequest {
                image: Some(image_pb(&image)),
            }))
            .map_err(st)?;
        image_of(r.into_inner().image)
    }

    fn update(&self, image: Image, fieldpaths: &[String]) -> Result<Image> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.update(pb::UpdateImageRequest {
                image: Some(image_pb(&image)),
                // No mask and an empty one both mean "every field" to containerd.
                update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                    paths: fieldpaths.to_vec(),
                }),
            }))
            .map_err(st)?;
        image_of(r.into_inner().image)
    }

    fn delete(&self, name: &str, opts: DeleteOptions) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.delete(pb::DeleteImageRequest {
                name: name.into(),
                sync: opts.synchronous,
            }))
            .map_err(st)?;
        Ok(())
    }
}
