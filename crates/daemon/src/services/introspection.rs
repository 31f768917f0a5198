//! containerd.services.introspection.v1.Introspection: the plugins stowaged runs, under
//! containerd's plugin types and IDs, and the daemon's persistent UUID.

use std::sync::Arc;

use stowage_core_types::filters::Filter;
use tonic::{Request, Response, Status};

use crate::api::containerd::services::introspection::v1::{
    introspection_server::Introspection, Plugin, PluginsRequest, PluginsResponse, ServerResponse,
};
use crate::api::containerd::types::Platform;
use crate::api::google::rpc::Status as RpcStatus;
use crate::errors::IntoStatus;
use crate::server::State;

/// The Introspection service.
#[derive(Debug)]
pub struct Service {
    state: Arc<State>,
    plugins: Vec<Plugin>,
}

fn plugin(ty: &str, id: &str, requires: &[&str]) -> Plugin {
    Plugin {
        r#type: ty.into(),
        id: id.into(),
        requires: requires.iter().map(|s| s.to_string()).collect(),
        ..Plugin::default()
    }
}

impl Service {
    /// The plugin list is fixed at start-up.
    pub fn new(state: Arc<State>) -> Service {
        let host = stowage_core_types::platform::Platform::host();
        let platform = Platform {
            os: host.os.clone(),
            architecture: host.architecture.clone(),
            variant: host.variant.clone(),
        };
        let mut plugins = vec![plugin("io.containerd.content.v1", "content", &[])];
        for (name, loaded) in &state.snapshotters {
            let mut p = plugin("io.containerd.snapshotter.v1", name, &[]);
            p.platforms = vec![platform.clone()];
            p.exports.insert(
                "root".into(),
                state
                    .snapshotter_roots
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| {
                        state
                            .root
                            .join(format!("io.containerd.snapshotter.v1.{name}"))
                    })
                    .display()
                    .to_string(),
            );
            if let Err(e) = loaded {
                p.init_err = Some(RpcStatus {
                    code: tonic::Code::Unknown as i32,
                    message: e.clone(),
                    details: Vec::new(),
                });
            }
            plugins.push(p);
        }
        plugins.push(plugin(
            "io.containerd.metadata.v1",
            "bolt",
            &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
        ));
        let mut walking = plugin(
            "io.containerd.differ.v1",
            "walking",
            &["io.containerd.metadata.v1"],
        );
        walking.platforms = vec![platform];
        plugins.push(walking);
        plugins.push(plugin(
            "io.containerd.gc.v1",
            "scheduler",
            &["io.containerd.metadata.v1"],
        ));
        for id in [
            "containers",
            "content",
            "diff",
            "events",
            "images",
            "leases",
            "namespaces",
            "snapshots",
        ] {
            plugins.push(plugin(
                "io.containerd.service.v1",
                &format!("{id}-service"),
                &["io.containerd.metadata.v1"],
            ));
        }
        for id in [
            "containers",
            "content",
            "diff",
            "events",
            "healthcheck",
            "images",
            "introspection",
            "leases",
            "namespaces",
            "snapshots",
            "version",
        ] {
            plugins.push(plugin(
                "io.containerd.grpc.v1",
                id,
                &["io.containerd.service.v1"],
            ));
        }
        Service { state, plugins }
    }
}

struct PluginFields<'a>(&'a Plugin);

impl stowage_core_types::filters::Adaptor for PluginFields<'_> {
    fn field(&self, path: &[&str]) -> Option<String> {
        match path {
            ["type"] => Some(self.0.r#type.clone()),
            ["id"] => Some(self.0.id.clone()),
            ["capabilities"] => Some(self.0.capabilities.join(",")),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Introspection for Service {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse_all(&req.get_ref().filters).status()?;
        let plugins = self
            .plugins
            .iter()
            .filter(|p| filter.matches(&PluginFields(p)))
            .cloned()
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.state.uuid.clone(),
        }))
    }
}
