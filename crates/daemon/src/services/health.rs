//! grpc.health.v1.Health: the daemon is serving once it answers.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::grpc::health::v1::{
    health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
    HealthCheckResponse,
};

/// The health service.
#[derive(Debug)]
pub struct Service;

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for Service {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(serving()))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The status never changes while the server runs: send it once and keep the stream
        // open until the client leaves or the server stops.
        let s = tokio_stream::once(Ok(serving())).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(s)))
    }
}

use tokio_stream::StreamExt as _;
