//! containerd.services.images.v1.Images over the metadata image store.

use std::sync::Arc;

use stowage_metadata::Image;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::api::containerd::services::images::v1 as pb;
use crate::api::containerd::services::images::v1::images_server::Images;
use crate::convert::{descriptor, image_pb, label_map, labels, time};
use crate::errors::IntoStatus;
use crate::events::topics;
use crate::request::{lease_of, required_namespace};
use crate::server::State;

/// The Images service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

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

/// Why go-digest's `Digest.Validate` rejects `s`, in its words, or `None` when it accepts it
/// (with the algorithms containerd is built with: sha256, sha384, sha512).
pub(crate) fn go_digest_problem(s: &str) -> Option<&'static str> {
    const FORMAT: &str = "invalid checksum digest format";
    const LENGTH: &str = "invalid checksum digest length";
    const UNSUPPORTED: &str = "unsupported digest algorithm";
    let Some(i) = s.find(':').filter(|&i| i > 0 && i + 1 < s.len()) else {
        return Some(FORMAT);
    };
    let (alg, enc) = (&s[..i], &s[i + 1..]);
    let bytes = match alg {
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => {
            // An unknown algorithm is "unsupported" only when the whole digest is well formed.
            let alg_ok = alg.split(['.', '+', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            let enc_ok = enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
            return Some(if alg_ok && enc_ok {
                UNSUPPORTED
            } else {
                FORMAT
            });
        }
    };
    if enc.len() != bytes * 2 {
        return Some(LENGTH);
    }
    if enc
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        None
    } else {
        Some(FORMAT)
    }
}

/// containerd's checks of an image target (metadata's `validateTarget`), with its messages.
fn check_target(t: &crate::api::containerd::types::Descriptor) -> Result<(), Status> {
    let bad = |m: String| Err(Status::invalid_argument(format!("{m}: invalid argument")));
    if let Some(p) = go_digest_problem(&t.digest) {
        return bad(format!("Target.Digest {:?} invalid: {p}", t.digest));
    }
    if t.size <= 0 {
        return bad("Target.Size must be greater than zero".into());
    }
    if t.media_type.is_empty() {
        return bad("Target.MediaType must be set".into());
    }
    Ok(())
}

/// The image of an update request; containerd's is not optional, and its name is required
/// before anything else is looked at.
fn required(i: Option<pb::Image>) -> Result<pb::Image, Status> {
    match i {
        Some(i) if !i.name.is_empty() => Ok(i),
        _ => Err(Status::invalid_argument("Image.Name required")),
    }
}

impl Service {
    /// Starts the eager unpack of `image`, written by a request under `lease` (none: nothing
    /// to do). Its plan is made before the response goes out, so the client's own unpack,
    /// which may follow at once, already finds the layers pending and waits for them.
    async fn eager_unpack(&self, ns: &str, lease: Option<String>, image: &Image) {
        let Some(lease) = lease else {
            return;
        };
        if !self.0.eager.config().enabled {
            return;
        }
        let (state, ns, target) = (self.0.clone(), ns.to_string(), image.target.clone());
        let planned = tokio::task::spawn_blocking(move || {
            crate::eager::start(&state, &ns, &lease, &target);
        })
        .await;
        if let Err(e) = planned {
            tracing::info!(error = %e, "eager unpack: planning failed");
        }
    }
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
        let lease = lease_of(&req);
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
        self.eager_unpack(&ns, lease, &created).await;
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(image_pb(&created)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = required_namespace(&req)?;
        let lease = lease_of(&req);
        let req = req.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let img = required(req.image)?;
        // containerd only looks at the target when the update replaces it (no field paths, or
        // `target`); otherwise the stored one is kept, with annotations taken from the request
        // when `annotations` paths ask for them.
        let replaces_target = paths.is_empty() || paths.iter().any(|p| p == "target");
        if replaces_target {
            if let Err(bad) = check_target(&img.target.clone().unwrap_or_default()) {
                // containerd looks the image up first: a missing one is NotFound, whatever
                // the request carries.
                let (db, n, name) = (self.0.db.clone(), ns.clone(), img.name.clone());
                blocking(move || db.images(&n)?.get(&name)).await?;
                return Err(bad);
            }
        }
        // bolt refuses an empty label key when the labels are written (code Unknown); the
        // label checks before that do not look at it.
        if let Some(v) = img.labels.get("") {
            let written = paths.is_empty() || paths.iter().any(|p| p == "labels" || p == "labels.");
            if written {
                return Err(Status::unknown(format!(
                    "writing labels for image {}: failed to set label \"\"={v:?}: key required",
                    img.name
                )));
            }
        }
        let db = self.0.db.clone();
        let n = ns.clone();
        let updated = blocking(move || {
            let images = db.images(&n)?;
            let img = if replaces_target {
                image(img).map_err(|s| {
                    stowage_core_types::Error::invalid_argument(s.message().to_string())
                })?
            } else {
                let mut target = images.get(&img.name)?.target;
                target.annotations = img
                    .target
                    .map(|t| t.annotations.into_iter().collect())
                    .unwrap_or_default();
                let mut i = Image::new(img.name.clone(), target);
                i.labels = labels(img.labels);
                i
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
        if replaces_target {
            self.eager_unpack(&ns, lease, &updated).await;
        }
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

#[cfg(test)]
mod tests {
    use super::go_digest_problem;

    #[test]
    fn go_digest_words() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(go_digest_problem(&format!("sha256:{hex}")), None);
        assert_eq!(go_digest_problem(&format!("sha512:{hex}{hex}")), None);
        let format = Some("invalid checksum digest format");
        let length = Some("invalid checksum digest length");
        let unsupported = Some("unsupported digest algorithm");
        assert_eq!(go_digest_problem(""), format);
        assert_eq!(go_digest_problem("sha256"), format);
        assert_eq!(go_digest_problem("sha256:"), format);
        assert_eq!(go_digest_problem(":abc"), format);
        assert_eq!(go_digest_problem("sha256:abc"), length);
        assert_eq!(go_digest_problem(&format!("sha384:{hex}")), length);
        assert_eq!(
            go_digest_problem(&format!("sha256:{}", hex.to_uppercase())),
            format
        );
        assert_eq!(go_digest_problem("sha1:abcdef"), unsupported);
        assert_eq!(go_digest_problem("my.alg+x:QUJD=_-"), unsupported);
        assert_eq!(go_digest_problem(&format!("SHA256:{hex}")), format);
        assert_eq!(go_digest_problem("alg:a:b"), format);
        assert_eq!(go_digest_problem("a..b:abc"), format);
    }
}
