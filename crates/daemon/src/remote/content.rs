//! `core_types::content::Store` over the Content service.

use std::io;
use std::path::Path;
use std::sync::Arc;

use stowage_core_types::content::{
    Info, IngestManager, Ingester, Manager, Provider, ReaderAt, Status, Writer, WriterOptions,
};
use stowage_core_types::{Descriptor, Digest, Error, Labels, Result};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Streaming;

use super::Connection;
use crate::api::containerd::services::content::v1 as pb;
use crate::client::Headers;
use crate::convert::{label_map, labels, time, timestamp};
use crate::errors::from_status;

type Client = pb::content_client::ContentClient<InterceptedService<Channel, Headers>>;

/// Largest data carried by one Write request (well under the 16 MiB message limit).
const WRITE_CHUNK: usize = 1 << 20;

/// A content store reached over gRPC, in one namespace (and optionally a lease).
#[derive(Clone)]
pub struct RemoteContentStore {
    rt: Arc<Runtime>,
    client: Client,
}

impl std::fmt::Debug for RemoteContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteContentStore").finish_non_exhaustive()
    }
}

fn st(s: tonic::Status) -> Error {
    from_status(&s)
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse::<Digest>()
}

fn info_of(i: pb::Info) -> Result<Info> {
    Ok(Info {
        digest: parse_digest(&i.digest)?,
        size: u64::try_from(i.size).unwrap_or(0),
        created_at: time(i.created_at.as_ref()),
        updated_at: time(i.updated_at.as_ref()),
        labels: labels(i.labels),
    })
}

fn status_of(s: pb::Status) -> Result<Status> {
    Ok(Status {
        reference: s.r#ref,
        offset: u64::try_from(s.offset).unwrap_or(0),
        total: u64::try_from(s.total).unwrap_or(0),
        expected: if s.expected.is_empty() {
            None
        } else {
            Some(parse_digest(&s.expected)?)
        },
        started_at: time(s.started_at.as_ref()),
        updated_at: time(s.updated_at.as_ref()),
    })
}

impl RemoteContentStore {
    /// Opens a connection of its own to the socket at `address` and works in namespace `ns`
    /// (under `lease`); [`Scope::content_store`](super::Scope::content_store) shares one instead.
    pub fn connect(address: &Path, ns: &str, lease: Option<&str>) -> Result<RemoteContentStore> {
        Ok(Connection::open(address)?.scope(ns, lease)?.content_store())
    }

    pub(super) fn new(conn: &Connection, headers: Headers) -> RemoteContentStore {
        let client = crate::client!(
            pb::content_client::ContentClient<_>,
            conn.channel(),
            headers
        );
        RemoteContentStore {
            rt: conn.rt(),
            client,
        }
    }
}

impl Manager for RemoteContentStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.info(pb::InfoRequest {
            digest: digest.to_string(),
        }));
        info_of(r.map_err(st)?.into_inner().info.unwrap_or_default())
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.update(pb::UpdateRequest {
            info: Some(pb::Info {
                digest: info.digest.to_string(),
                size: i64::try_from(info.size).unwrap_or(0),
                created_at: Some(timestamp(info.created_at)),
                updated_at: Some(timestamp(info.updated_at)),
                labels: label_map(&info.labels),
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: fieldpaths.to_vec(),
            }),
        }));
        info_of(r.map_err(st)?.into_inner().info.unwrap_or_default())
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let mut c = self.client.clone();
        let infos = self.rt.block_on(async {
            let mut s = c
                .list(pb::ListContentRequest {
                    filters: filters.to_vec(),
                })
                .await
                .map_err(st)?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                out.extend(m.map_err(st)?.info);
            }
            Ok::<_, Error>(out)
        })?;
        for i in infos {
            f(info_of(i)?)?;
        }
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.delete(pb::DeleteContentRequest {
                digest: digest.to_string(),
            }))
            .map_err(st)?;
        Ok(())
    }
}

/// Reads a blob with one Read call per positional read.
struct RemoteReader {
    rt: Arc<Runtime>,
    client: Client,
    digest: Digest,
    size: u64,
}

impl ReaderAt for RemoteReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.size - offset).min(buf.len() as u64);
        let mut c = self.client.clone();
        self.rt.block_on(async {
            let mut s = c
                .read(pb::ReadContentRequest {
                    digest: self.digest.to_string(),
                    offset: i64::try_from(offset).unwrap_or(i64::MAX),
                    size: i64::try_from(want).unwrap_or(i64::MAX),
                })
                .await
                .map_err(st)?
                .into_inner();
            let mut n = 0usize;
            while let Some(m) = s.next().await {
                let m = m.map_err(st)?;
                let end = (n + m.data.len()).min(buf.len());
                buf[n..end].copy_from_slice(&m.data[..end - n]);
                n = end;
            }
            Ok(n)
        })
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl Provider for RemoteContentStore {
    fn reader_at(&self, desc: &Descriptor) -> Result<Box<dyn ReaderAt>> {
        let info = self.info(&desc.digest)?;
        Ok(Box::new(RemoteReader {
            rt: self.rt.clone(),
            client: self.client.clone(),
            digest: desc.digest.clone(),
            size: info.size,
        }))
    }
}

impl IngestManager for RemoteContentStore {
    fn status(&self, reference: &str) -> Result<Status> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.status(pb::StatusRequest {
                r#ref: reference.into(),
            }))
            .map_err(st)?;
        status_of(r.into_inner().status.unwrap_or_default())
    }

    fn list_statuses(&self, filters: &[String]) -> Result<Vec<Status>> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.list_statuses(pb::ListStatusesRequest {
                filters: filters.to_vec(),
            }))
            .map_err(st)?;
        r.into_inner().statuses.into_iter().map(status_of).collect()
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.abort(pb::AbortRequest {
                r#ref: reference.into(),
            }))
            .map_err(st)?;
        Ok(())
    }
}

/// One open Write stream.
struct RemoteWriter {
    rt: Arc<Runtime>,
    /// The stream, and the error that ended it (later calls fail the same way).
    stream: std::sync::Mutex<(Stream, Option<Error>)>,
    reference: String,
    offset: u64,
    expected: Option<Digest>,
    /// The digest of what was written, as the server last reported it.
    digest: Digest,
}

type Stream = (
    mpsc::Sender<pb::WriteContentRequest>,
    Streaming<pb::WriteContentResponse>,
);

impl RemoteWriter {
    /// Sends one request and waits for its answer.
    fn send(&self, req: pb::WriteContentRequest) -> Result<pb::WriteContentResponse> {
        let mut guard = self
            .stream
            .lock()
            .map_err(|_| Error::unknown("write stream lock poisoned"))?;
        let ((tx, rx), ended) = &mut *guard;
        if let Some(e) = ended {
            return Err(Error::new(e.kind(), e.message()));
        }
        let r = self.rt.block_on(async {
            tx.send(req)
                .await
                .map_err(|_| Error::unavailable("write stream closed by the server"))?;
            match rx.next().await {
                Some(Ok(m)) => Ok(m),
                Some(Err(s)) => Err(st(s)),
                None => Err(Error::unavailable("write stream ended without an answer")),
            }
        });
        if let Err(e) = &r {
            *ended = Some(Error::new(e.kind(), e.message()));
        }
        r
    }
}

impl Drop for RemoteWriter {
    /// Closes our side of the stream and waits (briefly) for the server to end it, which it
    /// does after releasing the ingest: a writer reopened right after this one was dropped
    /// finds the reference free, as with a local store.
    fn drop(&mut self) {
        let Ok(mut guard) = self.stream.lock() else {
            return;
        };
        let ((tx, rx), _) = &mut *guard;
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(tx, closed));
        self.rt.block_on(async {
            let drain = async { while let Some(Ok(_)) = rx.next().await {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        });
    }
}

impl io::Write for RemoteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(WRITE_CHUNK);
        if n == 0 {
            return Ok(0);
        }
        let resp = self
            .send(pb::WriteContentRequest {
                action: pb::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
                data: prost::bytes::Bytes::copy_from_slice(&buf[..n]),
                ..Default::default()
            })
            .map_err(io::Error::other)?;
        self.offset = u64::try_from(resp.offset).unwrap_or(0);
        self.digest = parse_digest(&resp.digest).map_err(io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Writer for RemoteWriter {
    fn digest(&mut self) -> Digest {
        self.digest.clone()
    }

    fn status(&self) -> Result<Status> {
        let resp = self.send(pb::WriteContentRequest {
            action: pb::WriteAction::Stat as i32,
            r#ref: self.reference.clone(),
            ..Default::default()
        })?;
        Ok(Status {
            reference: self.reference.clone(),
            offset: u64::try_from(resp.offset).unwrap_or(0),
            total: u64::try_from(resp.total).unwrap_or(0),
            expected: self.expected.clone(),
            started_at: time(resp.started_at.as_ref()),
            updated_at: time(resp.updated_at.as_ref()),
        })
    }

    fn commit(
        &mut self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<()> {
        let resp = self.send(pb::WriteContentRequest {
            action: pb::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            total: size
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX))
                .unwrap_or(0),
            expected: expected.map(ToString::to_string).unwrap_or_default(),
            labels: label_map(&labels),
            ..Default::default()
        })?;
        if let Some(size) = size {
            if u64::try_from(resp.offset).unwrap_or(0) != size {
                return Err(Error::failed_precondition(format!(
                    "unexpected size {}, expected {size}",
                    resp.offset
                )));
            }
        }
        if let Some(exp) = expected {
            if resp.digest != exp.to_string() {
                return Err(Error::failed_precondition(format!(
                    "unexpected digest {}, expected {exp}",
                    resp.digest
                )));
            }
        }
        Ok(())
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        if size > self.offset {
            return Err(Error::invalid_argument(format!(
                "truncate to {size} past the end of the ingest ({} bytes)",
                self.offset
            )));
        }
        if size != 0 {
            return Err(Error::not_implemented(format!(
                "truncate to {size}: only 0 is supported"
            )));
        }
        // The next write at offset 0 makes the server restart the ingest (containerd's
        // protocol); do it now with an empty write so the state is visible at once.
        let resp = self.send(pb::WriteContentRequest {
            action: pb::WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: 0,
            ..Default::default()
        })?;
        self.offset = u64::try_from(resp.offset).unwrap_or(0);
        self.digest = parse_digest(&resp.digest)?;
        Ok(())
    }
}

impl Ingester for RemoteContentStore {
    fn writer(&self, opts: WriterOptions) -> Result<Box<dyn Writer>> {
        if opts.reference.is_empty() {
            return Err(Error::invalid_argument("ref must not be empty"));
        }
        let (tx, rx) = mpsc::channel(1);
        let mut c = self.client.clone();
        let (total, expected) = match &opts.expected {
            Some(d) if d.size > 0 => (d.size, Some(d.digest.clone())),
            Some(d) => (opts.total.unwrap_or(0), Some(d.digest.clone())),
            None => (opts.total.unwrap_or(0), None),
        };
        let first = pb::WriteContentRequest {
            action: pb::WriteAction::Stat as i32,
            r#ref: opts.reference.clone(),
            total: i64::try_from(total).unwrap_or(i64::MAX),
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ..Default::default()
        };
        let stream = self.rt.block_on(async {
            tx.send(first)
                .await
                .map_err(|_| Error::unavailable("write stream closed"))?;
            let r = c
                .write(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(st)?;
            Ok::<_, Error>(r.into_inner())
        })?;
        let mut rx = stream;
        let first = match self.rt.block_on(rx.next()) {
            Some(Ok(m)) => m,
            Some(Err(s)) => return Err(st(s)),
            None => return Err(Error::unavailable("write stream ended without an answer")),
        };
        Ok(Box::new(RemoteWriter {
            rt: self.rt.clone(),
            stream: std::sync::Mutex::new(((tx, rx), None)),
            reference: opts.reference,
            offset: u64::try_from(first.offset).unwrap_or(0),
            expected,
            digest: parse_digest(&first.digest)?,
        }))
    }
}
