//! containerd.services.content.v1.Content over the namespaced content store.
//!
//! Write follows containerd's protocol: the first request names the ingest (`ref`, required)
//! and optionally its total and expected digest; every request is answered with the ingest's
//! offset (and, for stat, its times and total). A write or commit at a non-zero offset must be
//! at the current offset (OutOfRange otherwise); at offset 0 it restarts the ingest. An
//! expected digest that is already stored aborts the ingest with AlreadyExists.

use std::pin::Pin;
use std::sync::Arc;

use stowage_core_types::content::{
    Info, IngestManager, Ingester, Manager, Provider, WriterOptions,
};
use stowage_core_types::{Descriptor, Error, Labels};
use stowage_metadata::ContentStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::blocking;
use crate::api::containerd::events::ContentDelete;
use crate::api::containerd::services::content::v1::*;
use crate::convert::{content_info_pb, content_status_pb, digest, labels, time, timestamp};
use crate::errors::{to_status, IntoStatus};
use crate::events::topics;
use crate::request::{lease_of, required_namespace};
use crate::server::State;

/// Blobs read per Read response (containerd streams 1 MiB chunks).
const READ_CHUNK: usize = 1 << 20;
/// Infos per List response.
const LIST_BATCH: usize = 100;

/// The Content service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Service {
    fn store<T>(&self, req: &Request<T>) -> Result<(String, ContentStore), Status> {
        let ns = required_namespace(req)?;
        let lease = lease_of(req);
        let cs = self.0.db.content_store(&ns, lease.as_deref()).status()?;
        Ok((ns, cs))
    }
}

#[tonic::async_trait]
impl content_server::Content for Service {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let (_, cs) = self.store(&req)?;
        let d = digest(&req.get_ref().digest, "digest").status()?;
        let info = blocking(move || cs.info(&d)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(content_info_pb(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let (_, cs) = self.store(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("info is required: invalid argument"))?;
        let d = digest(&info.digest, "digest").status()?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = Info {
            digest: d,
            size: u64::try_from(info.size).unwrap_or(0),
            created_at: time(info.created_at.as_ref()),
            updated_at: time(info.updated_at.as_ref()),
            labels: labels(info.labels),
        };
        let info = blocking(move || cs.update(info, &paths)).await?;
        Ok(Response::new(UpdateResponse {
            info: Some(content_info_pb(&info)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let (_, cs) = self.store(&req)?;
        let filters = req.into_inner().filters;
        let infos = blocking(move || {
            let mut out = Vec::new();
            cs.walk(
                &mut |i| {
                    out.push(content_info_pb(&i));
                    Ok(())
                },
                &filters,
            )?;
            Ok(out)
        })
        .await?;
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let (ns, cs) = self.store(&req)?;
        let d = digest(&req.get_ref().digest, "digest").status()?;
        let d2 = d.clone();
        blocking(move || cs.delete(&d2)).await?;
        let (topic, ty) = topics::CONTENT_DELETE;
        self.0.exchange.publish(
            &ns,
            topic,
            ty,
            &ContentDelete {
                digest: d.to_string(),
            },
        );
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let (_, cs) = self.store(&req)?;
        let req = req.into_inner();
        let d = digest(&req.digest, "digest").status()?;
        let offset = u64::try_from(req.offset).map_err(|_| {
            Status::invalid_argument(format!(
                "offset {} is negative: invalid argument",
                req.offset
            ))
        })?;
        let ra = {
            let d = d.clone();
            blocking(move || {
                let info = cs.info(&d)?;
                let ra = cs.reader_at(&Descriptor::new("", d.clone(), info.size))?;
                Ok(ra)
            })
            .await?
        };
        let size = ra.size();
        if offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes: out of range"
            )));
        }
        let end = if req.size > 0 {
            size.min(offset.saturating_add(u64::try_from(req.size).unwrap_or(0)))
        } else {
            size
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut pos = offset;
            while pos < end {
                let want =
                    usize::try_from((end - pos).min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match ra.read_at(&mut buf[got..], pos + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(to_status(&e)));
                            return;
                        }
                    }
                }
                if got == 0 {
                    let _ = tx.blocking_send(Err(to_status(&Error::unknown(format!(
                        "blob {d} ended at {pos}, expected {end} bytes"
                    )))));
                    return;
                }
                buf.truncate(got);
                // containerd numbers the chunks from the start of the requested range, not
                // from the start of the blob.
                let msg = ReadContentResponse {
                    offset: i64::try_from(pos - offset).unwrap_or(i64::MAX),
                    data: buf,
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return;
                }
                pos += got as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (_, cs) = self.store(&req)?;
        let r = req.into_inner().r#ref;
        let st = blocking(move || cs.status(&r)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(content_status_pb(&st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let (_, cs) = self.store(&req)?;
        let filters = req.into_inner().filters;
        let sts = blocking(move || cs.list_statuses(&filters)).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: sts.iter().map(content_status_pb).collect(),
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let (_, cs) = self.store(&req)?;
        let mut inbound = req.into_inner();
        let (in_tx, in_rx) = mpsc::channel::<Result<WriteContentRequest, Status>>(2);
        let (out_tx, out_rx) = mpsc::channel::<Result<WriteContentResponse, Status>>(2);
        tokio::spawn(async move {
            while let Some(m) = inbound.next().await {
                let stop = m.is_err();
                if in_tx.send(m).await.is_err() || stop {
                    break;
                }
            }
        });
        tokio::task::spawn_blocking(move || {
            if let Err(st) = write_session(&cs, in_rx, &out_tx) {
                if st.code() != tonic::Code::AlreadyExists {
                    tracing::warn!(error = %st.message(), "content write failed");
                }
                let _ = out_tx.blocking_send(Err(st));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let (_, cs) = self.store(&req)?;
        let r = req.into_inner().r#ref;
        blocking(move || cs.abort(&r)).await?;
        Ok(Response::new(()))
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Drives one Write stream on a blocking thread. Returns the status that ends the stream with
/// an error; `Ok` when the client closed its side.
fn write_session(
    cs: &ContentStore,
    mut rx: mpsc::Receiver<Result<WriteContentRequest, Status>>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(first) = rx.blocking_recv() else {
        return Ok(());
    };
    let mut req = first?;
    let reference = req.r#ref.clone();
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "first message must have a reference",
        ));
    }
    let mut total = req.total;
    let mut expected = if req.expected.is_empty() {
        None
    } else {
        Some(digest(&req.expected, "expected").status()?)
    };
    let mut opts = WriterOptions::with_ref(reference.clone());
    if let Some(d) = &expected {
        opts = opts.expect(Descriptor::new(
            "",
            d.clone(),
            u64::try_from(total).unwrap_or(0),
        ));
    }
    // A total without a digest is not handed to the store as an expectation: containerd
    // checks it only at commit (and reports it in stat answers), so an oversized write still
    // goes through and the commit fails, as `ctr content ingest --expected-size` shows.
    let mut wr = cs.writer(opts).status()?;
    // One response message for the whole session, as containerd keeps it: fields set by an
    // earlier answer (the total and times of a stat) stay in later ones.
    let mut msg = WriteContentResponse::default();
    loop {
        let action = req.action;
        let ws = wr.status().status()?;
        msg.action = action;
        msg.offset = i64_of(ws.offset);
        if !req.expected.is_empty() {
            let d = digest(&req.expected, "expected").status()?;
            if cs.info(&d).is_ok() {
                drop(wr);
                if let Err(e) = cs.abort(&reference) {
                    tracing::warn!(error = %e, reference, "abort after existing blob");
                }
                return Err(Status::already_exists(format!(
                    "blob with expected digest {d} exists"
                )));
            }
            expected = Some(d);
        }
        if req.total > 0 {
            total = req.total;
        }
        match WriteAction::try_from(action) {
            Ok(WriteAction::Stat) => {
                msg.digest = wr.digest().to_string();
                msg.started_at = Some(timestamp(ws.started_at));
                msg.updated_at = Some(timestamp(ws.updated_at));
                msg.total = total;
            }
            Ok(WriteAction::Write | WriteAction::Commit) => {
                if req.offset > 0 && req.offset != i64_of(ws.offset) {
                    return Err(Status::out_of_range(format!(
                        "write @{} must occur at current offset {}",
                        req.offset, ws.offset
                    )));
                }
                if req.offset < 0 {
                    return Err(Status::invalid_argument(format!(
                        "write offset {} is negative",
                        req.offset
                    )));
                }
                if req.offset == 0 && ws.offset > 0 {
                    wr.truncate(0)
                        .map_err(|e| to_status(&e.context("truncate failed")))?;
                    msg.offset = 0;
                }
                if !req.data.is_empty() {
                    use std::io::Write as _;
                    wr.write_all(&req.data)
                        .map_err(|e| to_status(&Error::from(e)))?;
                    msg.offset += i64_of(req.data.len() as u64);
                }
                if action == WriteAction::Commit as i32 {
                    let size = (total > 0).then(|| u64::try_from(total).unwrap_or(0));
                    let l: Labels = labels(std::mem::take(&mut req.labels));
                    wr.commit(size, expected.as_ref(), l).status()?;
                }
                msg.digest = wr.digest().to_string();
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown write action {action}"
                )))
            }
        }
        if tx.blocking_send(Ok(msg.clone())).is_err() {
            // The client went away; the ingest stays resumable under its reference.
            return Ok(());
        }
        match rx.blocking_recv() {
            None => break,
            Some(Err(st)) => {
                tracing::debug!(error = %st.message(), reference, "write stream ended");
                return Ok(());
            }
            Some(Ok(next)) => req = next,
        }
    }
    // containerd answers the client's close with the last response once more.
    let _ = tx.blocking_send(Ok(msg));
    Ok(())
}
