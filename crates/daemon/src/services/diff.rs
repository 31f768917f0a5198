//! containerd.services.diff.v1.Diff: the walking differ. Apply streams a layer from the
//! content store onto the snapshot behind the given mounts (straight into an overlay upper
//! directory when the mounts are a single overlay mount, as containerd does; otherwise onto
//! the mounts mounted on a temporary directory); Diff compares two mount sets into a new blob.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage_core_types::content::{Info, Manager, Provider, SectionReader};
use stowage_core_types::mount::Mount;
use stowage_core_types::{mediatype, Descriptor, Error, Result};
use stowage_diff::{
    apply_layer, compare, ApplyOptions, CompareOptions, LayerEncoding, WhiteoutMode,
};
use stowage_snapshots_storage::mount::with_temp_mount;
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

/// The upper directory, lower directories and `userxattr` flag of a single overlay mount with
/// absolute paths: the case containerd applies into the upper directory directly.
fn overlay_upper(mounts: &[Mount]) -> Option<(PathBuf, Vec<PathBuf>, bool)> {
    let [m] = mounts else { return None };
    if m.kind != "overlay" {
        return None;
    }
    let upper = Path::new(m.option_value("upperdir")?);
    let lowers: Vec<PathBuf> = m.lower_dirs().iter().map(Into::into).collect();
    if !upper.is_absolute() || lowers.iter().any(|l| !l.is_absolute()) {
        return None;
    }
    Some((upper.to_path_buf(), lowers, m.has_option("userxattr")))
}

fn apply(provider: &dyn Provider, layer: &Descriptor, mounts: &[Mount]) -> Result<Descriptor> {
    let ra = provider.reader_at(layer)?;
    let reader = SectionReader::new(&*ra, 0);
    let encoding = LayerEncoding::MediaType(&layer.media_type);
    let result = if let Some((upper, lowers, user_xattr)) = overlay_upper(mounts) {
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay { user_xattr },
            parents: lowers,
            ..ApplyOptions::default()
        };
        apply_layer(reader, encoding, &upper, &opts)?
    } else {
        with_temp_mount(mounts, |root| {
            apply_layer(reader, encoding, root, &ApplyOptions::default())
        })?
    };
    Ok(Descriptor::new(
        mediatype::OCI_LAYER,
        result.diff_id,
        result.size,
    ))
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
        let db = self.0.db.clone();
        let applied = blocking(move || {
            let cs = db.content_store(&ns, lease.as_deref())?;
            apply(&cs, &layer, &mounts)
                .map_err(|e| e.context(format!("apply layer {}", layer.digest)))
        })
        .await?;
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
        let db = self.0.db.clone();
        let desc = blocking(move || {
            let cs = db.content_store(&ns, lease.as_deref())?;
            let d = compare(&lower, &upper, &cs, &opts)?;
            // The blob's labels live in the namespaced store; make sure they are recorded.
            if !opts.labels.is_empty() {
                let info: Info = cs.info(&d.digest)?;
                let mut merged = info.clone();
                merged.labels.extend(opts.labels.clone());
                let paths: Vec<String> =
                    opts.labels.keys().map(|k| format!("labels.{k}")).collect();
                cs.update(merged, &paths)
                    .map_err(|e: Error| e.context("labelling the diff"))?;
            }
            Ok(d)
        })
        .await?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(descriptor_pb(&desc)),
        }))
    }
}
