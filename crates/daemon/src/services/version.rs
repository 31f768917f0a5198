//! containerd.services.version.v1.Version.

use tonic::{Request, Response, Status};

use crate::api::containerd::services::version::v1::{version_server::Version, VersionResponse};

/// The Version service.
#[derive(Debug)]
pub struct Service;

#[tonic::async_trait]
impl Version for Service {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: format!("v{}-stowage", crate::VERSION),
            revision: String::new(),
        }))
    }
}
