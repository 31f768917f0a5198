//! A client of stowaged (or containerd) over its unix socket: the channel, the namespace and
//! lease headers, and the status → error mapping of [`crate::errors`].

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use stowage_core_types::{Error, Result};
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::request::{LEASE_HEADER, NAMESPACE_HEADER};
use crate::server::MAX_MESSAGE;

/// Connects to the gRPC server on the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel> {
    let path: PathBuf = path.to_owned();
    let shown = path.display().to_string();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::try_from("http://[::]:0")
        .map_err(|e| Error::invalid_argument(format!("endpoint: {e}")))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| Error::unavailable(format!("connecting to {shown}: {e}")))
}

/// Adds the `containerd-namespace` (and optionally `containerd-lease`) header to every call.
#[derive(Debug, Clone)]
pub struct Headers {
    namespace: Option<MetadataValue<tonic::metadata::Ascii>>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Headers {
    /// Headers for namespace `ns` (none when `None`) and lease `lease`.
    pub fn new(ns: Option<&str>, lease: Option<&str>) -> Result<Headers> {
        let value = |v: &str| {
            v.parse::<MetadataValue<tonic::metadata::Ascii>>()
                .map_err(|_| Error::invalid_argument(format!("header value {v:?} is not ASCII")))
        };
        Ok(Headers {
            namespace: ns.map(value).transpose()?,
            lease: lease.map(value).transpose()?,
        })
    }
}

impl Interceptor for Headers {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(ns) = &self.namespace {
            req.metadata_mut().insert(NAMESPACE_HEADER, ns.clone());
        }
        if let Some(l) = &self.lease {
            req.metadata_mut().insert(LEASE_HEADER, l.clone());
        }
        Ok(req)
    }
}

/// The message limit clients use both ways (containerd's 16 MiB).
pub const CLIENT_MAX_MESSAGE: usize = MAX_MESSAGE;

/// Builds a generated client `$client` on `channel` with `headers` and 16 MiB limits.
#[macro_export]
macro_rules! client {
    ($client:ty, $channel:expr, $headers:expr) => {
        <$client>::with_interceptor($channel, $headers)
            .max_decoding_message_size($crate::client::CLIENT_MAX_MESSAGE)
            .max_encoding_message_size($crate::client::CLIENT_MAX_MESSAGE)
    };
}
