//! The gRPC services, one module each, and the router that serves them all.

use std::sync::Arc;

use stowage_core_types::Result;
use tonic::Status;

use crate::errors::to_status;
use crate::server::{State, MAX_MESSAGE};

pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod version;

/// Runs blocking core work on the blocking pool and maps its error to a status.
pub(crate) async fn blocking<T, F>(f: F) -> std::result::Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(f).await;
    // How long the work took, pool hop included: what to look at first when a call is slow.
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        // Logged inside the request's span (method and namespace, see `router`).
        Ok(Ok(v)) => {
            tracing::debug!(outcome = "ok", micros, "request done");
            Ok(v)
        }
        Ok(Err(e)) => {
            let status = to_status(&e);
            tracing::debug!(outcome = ?status.code(), micros, error = %e, "request failed");
            Err(status)
        }
        Err(e) => Err(Status::internal(format!("worker failed: {e}"))),
    }
}

/// Maps the result of core work done inline on the async thread to a gRPC result, logging
/// it as [`blocking`] does. For short work that never waits (bolt read transactions), where a
/// hop to the blocking pool would cost more than the work itself.
pub(crate) fn inline<T>(r: Result<T>) -> std::result::Result<T, Status> {
    match r {
        Ok(v) => {
            tracing::debug!(outcome = "ok", "request done");
            Ok(v)
        }
        Err(e) => {
            let status = to_status(&e);
            tracing::debug!(outcome = ?status.code(), error = %e, "request failed");
            Err(status)
        }
    }
}

macro_rules! limits {
    ($server:expr) => {
        $server
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    };
}

/// Every service, with containerd's 16 MiB message limits, ready to serve.
pub fn router(state: Arc<State>) -> tonic::transport::server::Router {
    use crate::api::containerd::services as s;
    use crate::api::grpc::health::v1::health_server::HealthServer;
    tonic::transport::Server::builder()
        .trace_fn(|req| {
            let ns = req
                .headers()
                .get(crate::request::NAMESPACE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            tracing::debug_span!("rpc", method = %req.uri().path(), namespace = %ns)
        })
        .add_service(limits!(s::version::v1::version_server::VersionServer::new(
            version::Service
        )))
        .add_service(limits!(
            s::introspection::v1::introspection_server::IntrospectionServer::new(
                introspection::Service::new(state.clone())
            )
        ))
        .add_service(limits!(
            s::namespaces::v1::namespaces_server::NamespacesServer::new(namespaces::Service(
                state.clone()
            ))
        ))
        .add_service(limits!(s::content::v1::content_server::ContentServer::new(
            content::Service(state.clone())
        )))
        .add_service(limits!(s::images::v1::images_server::ImagesServer::new(
            images::Service(state.clone())
        )))
        .add_service(limits!(s::leases::v1::leases_server::LeasesServer::new(
            leases::Service(state.clone())
        )))
        .add_service(limits!(
            s::snapshots::v1::snapshots_server::SnapshotsServer::new(snapshots::Service(
                state.clone()
            ))
        ))
        .add_service(limits!(s::diff::v1::diff_server::DiffServer::new(
            diff::Service(state.clone())
        )))
        .add_service(limits!(
            s::containers::v1::containers_server::ContainersServer::new(containers::Service(
                state.clone()
            ))
        ))
        .add_service(limits!(s::events::v1::events_server::EventsServer::new(
            events::Service(state.clone())
        )))
        .add_service(limits!(HealthServer::new(health::Service)))
}
