//! containerd.services.events.v1.Events: publish, forward and subscribe on the exchange.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use stowage_core_types::filters::Filter;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::containerd::services::events::v1 as pb;
use crate::api::containerd::services::events::v1::events_server::Events;
use crate::convert::timestamp;
use crate::errors::IntoStatus;
use crate::events::matches;
use crate::request::required_namespace;
use crate::server::State;

/// The Events service.
#[derive(Debug)]
pub struct Service(pub Arc<State>);

fn validate_topic(topic: &str) -> Result<(), Status> {
    if topic.is_empty() || !topic.starts_with('/') || topic.ends_with('/') || topic.contains("//") {
        return Err(Status::invalid_argument(format!(
            "topic {topic:?} must be a path of elements separated by \"/\": invalid argument"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Events for Service {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = required_namespace(&req)?;
        let r = req.into_inner();
        validate_topic(&r.topic)?;
        self.0.exchange.forward(pb::Envelope {
            timestamp: Some(timestamp(SystemTime::now())),
            namespace: ns,
            topic: r.topic,
            event: r.event,
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope is required: invalid argument"))?;
        validate_topic(&env.topic)?;
        stowage_core_types::namespace::validate(&env.namespace).status()?;
        self.0.exchange.forward(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Envelope, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse_all(&req.get_ref().filters).status()?;
        let mut rx = self.0.exchange.subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(env) => {
                        if matches(&filter, &env) && tx.send(Ok(env)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event subscriber too slow");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
