//! containerd.services.snapshots.v1.Snapshots over the namespaced snapshotters, chosen by name.

use std::pin::Pin;
use std::sync::Arc;

use stowage_core_types::snapshot::Snapshotter;
use stowage_metadata::NamespacedSnapshotter;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{blocking, inline};
use crate::api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use crate::api::containerd::services::snapshots::v1 as pb;
use crate::api::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use crate::convert::{labels, mounts_pb, snapshot_info, snapshot_info_pb};
use crate::eager::{extract_chain, WAIT_LIMIT};
use crate::errors::IntoStatus;
use crate::events::topics;
use crate::request::{lease_of, required_namespace};
use crate::server::State;

/// Infos per List response.
const LIST_BATCH: usize = 100;

/// The Snapshots service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

impl Service {
    /// The snapshotter `name` in the request's namespace (and lease). containerd answers an
    /// empty or unknown name with InvalidArgument.
    fn snapshotter<T>(
        &self,
        req: &Request<T>,
        name: &str,
    ) -> Result<(String, NamespacedSnapshotter), Status> {
        let ns = required_namespace(req)?;
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "snapshotter argument missing: invalid argument",
            ));
        }
        if !matches!(self.0.snapshotters.get(name), Some(Ok(()))) {
            return Err(Status::invalid_argument(format!(
                "snapshotter not loaded: {name}: invalid argument"
            )));
        }
        let lease = lease_of(req);
        let sn = self
            .0
            .db
            .snapshotter(name, &ns, lease.as_deref())
            .status()?;
        Ok((ns, sn))
    }

    /// A client asks for `chain` of snapshotter `name` in `ns`: the eager job that made it may
    /// no longer take it back, and while a job has promised it and not yet committed it or
    /// given up, the request waits (on a blocking thread); then it goes on as usual, finding
    /// the job's snapshot or not.
    async fn wait_for_eager(&self, ns: &str, name: &str, chain: &str) -> Result<(), Status> {
        self.0.eager.observe(ns, name, chain);
        let pending = self.0.eager.pending();
        if !pending.is_pending(ns, name, chain) {
            return Ok(());
        }
        let (p, ns, name, chain) = (
            pending.clone(),
            ns.to_string(),
            name.to_string(),
            chain.to_string(),
        );
        // On the blocking pool, as core work is; not through `blocking`, whose "request done"
        // line belongs to the request's own work that follows.
        tokio::task::spawn_blocking(move || {
            if !p.wait(&ns, &name, &chain, WAIT_LIMIT) {
                tracing::info!(namespace = %ns, snapshotter = %name, chain = %chain,
                    "gave up waiting for eager unpack");
            }
        })
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))
    }
}

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let (ns, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let r = req.into_inner();
        let chain = extract_chain(&r.key);
        if let Some(chain) = chain {
            // A client unpacking this layer while an eager job does: let the job finish it.
            self.wait_for_eager(&ns, &r.snapshotter, chain).await?;
        }
        let (key, parent) = (r.key.clone(), r.parent.clone());
        let l = labels(r.labels);
        let mounts = blocking(move || sn.prepare(&key, &parent, l)).await?;
        if let Some(chain) = chain {
            self.0.eager.record_unpack(&ns, &r.snapshotter);
            let wrong = crate::eager::client_unpacks(&self.0.eager, &ns, &r.snapshotter, chain);
            if !wrong.is_empty() {
                // Before the answer, so that once the client's unpack is done the guess is
                // gone; a few removals, paid only by a pull that the guess got wrong.
                let state = self.0.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for g in wrong {
                        crate::eager::withdraw(&state, &g);
                    }
                })
                .await;
            }
        }
        let (topic, ty) = topics::SNAPSHOT_PREPARE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &SnapshotPrepare {
                key: r.key,
                parent: r.parent,
            },
        );
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: mounts_pb(&mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let r = req.into_inner();
        let l = labels(r.labels);
        let mounts = blocking(move || sn.view(&r.key, &r.parent, l)).await?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: mounts_pb(&mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let key = req.into_inner().key;
        // Two short read transactions: cheaper than a hop to the blocking pool.
        let mounts = inline(sn.mounts(&key))?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts_pb(&mounts),
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (ns, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let r = req.into_inner();
        let (name, key) = (r.name.clone(), r.key.clone());
        let l = labels(r.labels);
        blocking(move || sn.commit(&name, &key, l)).await?;
        let (topic, ty) = topics::SNAPSHOT_COMMIT;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &SnapshotCommit {
                key: r.key,
                name: r.name,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (ns, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let key = req.into_inner().key;
        let k = key.clone();
        blocking(move || sn.remove(&k)).await?;
        let (topic, ty) = topics::SNAPSHOT_REMOVE;
        self.0
            .exchange
            .publish(&ns, topic, ty, &SnapshotRemove { key });
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let (ns, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let r = req.into_inner();
        self.wait_for_eager(&ns, &r.snapshotter, &r.key).await?;
        let key = r.key;
        // Two short read transactions: cheaper than a hop to the blocking pool.
        let info = inline(sn.stat(&key))?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(snapshot_info_pb(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let r = req.into_inner();
        let info = r
            .info
            .as_ref()
            .map(snapshot_info)
            .ok_or_else(|| Status::invalid_argument("info is required: invalid argument"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = blocking(move || sn.update(info, &paths)).await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(snapshot_info_pb(&info)),
        }))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let filters = req.into_inner().filters;
        let infos = blocking(move || {
            let mut out = Vec::new();
            sn.walk(
                &mut |i| {
                    out.push(snapshot_info_pb(&i));
                    Ok(())
                },
                &filters,
            )?;
            Ok(out)
        })
        .await?;
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        let key = req.into_inner().key;
        let u = blocking(move || sn.usage(&key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let (_, sn) = self.snapshotter(&req, &req.get_ref().snapshotter)?;
        blocking(move || sn.cleanup()).await?;
        Ok(Response::new(()))
    }
}
