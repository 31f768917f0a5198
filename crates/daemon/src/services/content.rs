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
    Info, IngestManager, Ingester, Manager, Provider, ReaderAt, WriterOptions,
};
use stowage_core_types::{Descriptor, Digest, Error, Labels};
use stowage_metadata::ContentStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, inline};
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
        // Inline on the async thread: the metadata lookup is one short bolt read transaction,
        // which never waits on writers, so a blocking-pool hop would cost more than the work.
        let info = inline(cs.info(&d))?;
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
        let want = u64::try_from(req.size).ok().filter(|&n| n > 0);
        // One blocking hop opens the blob and, for a small range, reads it whole: ctr reads
        // every manifest, index and config this way, so the answer is a ready one-message
        // stream. Larger ranges are streamed chunk by chunk from a second blocking task.
        // A range the client sized small (ctr asks for a manifest or config by its size) is
        // read inline: a short bolt read, an open and one small read of a blob the page cache
        // usually holds, cheaper than the hop to the blocking pool.
        let opened = match want {
            Some(n) if n <= INLINE_READ => inline(open_range(&cs, &d, offset, want))?,
            _ => blocking(move || open_range(&cs, &d, offset, want)).await?,
        };
        let (ra, end, d) = match opened {
            Opened::PastEnd(size) => {
                return Err(Status::out_of_range(format!(
                    "read past object length {size} bytes: out of range"
                )))
            }
            Opened::Ready(msgs) => return Ok(Response::new(Box::pin(tokio_stream::iter(msgs)))),
            Opened::Stream { ra, end, digest } => (ra, end, digest),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut pos = offset;
            while pos < end {
                let (msg, ok) = read_chunk(ra.as_ref(), &d, offset, pos, end);
                let got = msg.as_ref().map(|m| m.data.len() as u64).unwrap_or(0);
                if tx.blocking_send(msg).is_err() || !ok {
                    return;
                }
                pos += got;
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
        // One message queued: a pull runs a write per layer at once, each message up to the
        // client's chunk size (1 MiB from ctr), so every slot counts per layer.
        let (in_tx, in_rx) = mpsc::channel::<Result<WriteContentRequest, Status>>(1);
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

/// Largest range a Read answers in one message read on its first blocking hop.
const SMALL_READ: u64 = READ_CHUNK as u64;
/// Largest requested size a Read serves on the async thread, without a blocking-pool hop.
const INLINE_READ: u64 = 64 << 10;

/// What opening a Read's range found.
enum Opened {
    /// The offset lies past the blob's end (its size).
    PastEnd(u64),
    /// The whole answer, already read.
    Ready(Vec<Result<ReadContentResponse, Status>>),
    /// A range too large to read up front: stream `offset..end` from `ra`.
    Stream {
        ra: Box<dyn ReaderAt>,
        end: u64,
        digest: Digest,
    },
}

/// Opens `d` for a Read from `offset` of `want` bytes (`None`: to the end), reading the range
/// at once when it is at most [`SMALL_READ`] bytes.
fn open_range(
    cs: &ContentStore,
    d: &Digest,
    offset: u64,
    want: Option<u64>,
) -> stowage_core_types::Result<Opened> {
    let info = cs.info(d)?;
    let ra = cs.reader_at(&Descriptor::new("", d.clone(), info.size))?;
    let size = ra.size();
    if offset > size {
        return Ok(Opened::PastEnd(size));
    }
    let end = match want {
        Some(n) => size.min(offset.saturating_add(n)),
        None => size,
    };
    if end - offset > SMALL_READ {
        return Ok(Opened::Stream {
            ra,
            end,
            digest: d.clone(),
        });
    }
    let mut msgs = Vec::with_capacity(1);
    let mut pos = offset;
    while pos < end {
        let (msg, ok) = read_chunk(ra.as_ref(), d, offset, pos, end);
        let got = msg.as_ref().map(|m| m.data.len() as u64).unwrap_or(0);
        msgs.push(msg);
        if !ok {
            break;
        }
        pos += got;
    }
    Ok(Opened::Ready(msgs))
}

/// Reads the next chunk of a Read, `pos..end` capped at [`READ_CHUNK`], as its response;
/// `false` with an error (or with a short chunk followed by nothing) ends the stream.
fn read_chunk(
    ra: &dyn ReaderAt,
    d: &Digest,
    offset: u64,
    pos: u64,
    end: u64,
) -> (Result<ReadContentResponse, Status>, bool) {
    let want = usize::try_from((end - pos).min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match ra.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return (Err(to_status(&e)), false),
        }
    }
    if got == 0 {
        return (
            Err(to_status(&Error::unknown(format!(
                "blob {d} ended at {pos}, expected {end} bytes"
            )))),
            false,
        );
    }
    buf.truncate(got);
    // containerd numbers the chunks from the start of the requested range, not from the
    // start of the blob.
    let msg = ReadContentResponse {
        offset: i64::try_from(pos - offset).unwrap_or(i64::MAX),
        data: buf,
    };
    (Ok(msg), true)
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;

    use stowage_content::LocalStore;
    use stowage_metadata::{Db, Options};

    use super::*;

    /// A namespaced store over a real local store, holding one blob a little over
    /// [`SMALL_READ`] bytes, so both the one-message and the streaming paths are reachable.
    fn store_with_blob(dir: &std::path::Path) -> (ContentStore, Digest, Vec<u8>) {
        let content = Arc::new(LocalStore::open(dir.join("content")).unwrap());
        let db = Db::open(
            dir,
            Options {
                content: Some(content),
                no_sync: true,
                ..Default::default()
            },
        )
        .unwrap();
        let cs = db.content_store("ns", None).unwrap();
        let data: Vec<u8> = (0..SMALL_READ + 5).map(|i| (i % 251) as u8).collect();
        let mut wr = cs
            .writer(WriterOptions::with_ref("blob".to_string()))
            .unwrap();
        wr.write_all(&data).unwrap();
        wr.commit(Some(data.len() as u64), None, Labels::new())
            .unwrap();
        let d = wr.digest();
        (cs, d, data)
    }

    /// The messages of a ready answer as (offset, data), failing on errors.
    fn ready(o: Opened) -> Vec<(i64, Vec<u8>)> {
        let Opened::Ready(msgs) = o else {
            panic!("expected a ready answer");
        };
        msgs.into_iter()
            .map(|m| m.map(|m| (m.offset, m.data)).unwrap())
            .collect()
    }

    #[test]
    fn small_ranges_are_answered_in_one_message_and_large_ones_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (cs, d, data) = store_with_blob(dir.path());
        let size = data.len() as u64;
        let start = usize::try_from(SMALL_READ).unwrap();

        // A range of exactly the limit: one message, numbered from the range's start.
        let got = ready(open_range(&cs, &d, 3, Some(SMALL_READ)).unwrap());
        assert_eq!(got, vec![(0, data[3..3 + start].to_vec())]);
        // A size past the end is cut at the end.
        let got = ready(open_range(&cs, &d, 10, Some(u64::MAX)).unwrap());
        assert_eq!(got, vec![(0, data[10..].to_vec())]);
        // At the end: nothing; past it: out of range with the blob's size.
        assert!(ready(open_range(&cs, &d, size, None).unwrap()).is_empty());
        assert!(matches!(
            open_range(&cs, &d, size + 1, None).unwrap(),
            Opened::PastEnd(s) if s == size
        ));

        // The whole blob is over the limit: streamed in READ_CHUNK pieces.
        let Opened::Stream { ra, end, digest } = open_range(&cs, &d, 0, None).unwrap() else {
            panic!("expected a stream for {size} bytes");
        };
        assert_eq!(end, size);
        let mut pos = 0;
        let mut chunks = Vec::new();
        while pos < end {
            let (msg, ok) = read_chunk(ra.as_ref(), &digest, 0, pos, end);
            let msg = msg.unwrap();
            assert!(ok);
            pos += msg.data.len() as u64;
            chunks.push((msg.offset, msg.data));
        }
        assert_eq!(
            chunks,
            vec![
                (0, data[..READ_CHUNK].to_vec()),
                (READ_CHUNK as i64, data[READ_CHUNK..].to_vec())
            ]
        );

        // A missing blob is NotFound before anything is read.
        let missing = Digest::from_bytes(stowage_core_types::Algorithm::Sha256, &[7; 32]).unwrap();
        let err = open_range(&cs, &missing, 0, None).err().unwrap();
        assert_eq!(err.kind(), stowage_core_types::ErrorKind::NotFound);
    }
}
