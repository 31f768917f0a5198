//! The event exchange: services publish envelopes, subscribers receive those matching their
//! filters (containerd's `events/exchange`).

use std::time::SystemTime;

use stowage_core_types::filters::{Adaptor, Filter};
use tokio::sync::broadcast;

use crate::api::containerd::services::events::v1::Envelope;
use crate::convert::{any_of, timestamp};

/// Envelopes waiting for a slow subscriber before it starts losing them.
const BACKLOG: usize = 1024;

/// Broadcasts envelopes to every subscriber.
#[derive(Debug, Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Envelope>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    /// An exchange with no subscribers.
    pub fn new() -> Exchange {
        let (tx, _) = broadcast::channel(BACKLOG);
        Exchange { tx }
    }

    /// Sends `envelope` to current subscribers (none is fine).
    pub fn forward(&self, envelope: Envelope) {
        tracing::debug!(topic = %envelope.topic, namespace = %envelope.namespace, "event");
        let _ = self.tx.send(envelope);
    }

    /// Publishes `event` (of protobuf type `type_name`) on `topic` in namespace `ns`, stamped now.
    pub fn publish<M: prost::Message>(&self, ns: &str, topic: &str, type_name: &str, event: &M) {
        self.forward(Envelope {
            timestamp: Some(timestamp(SystemTime::now())),
            namespace: ns.to_string(),
            topic: topic.to_string(),
            event: Some(any_of(type_name, event)),
        });
    }

    /// A receiver of everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }
}

/// Envelope fields for filters: `namespace`, `topic` (containerd also looks inside `event`,
/// which needs the payload's schema; those paths match nothing here).
#[derive(Debug)]
pub struct EnvelopeFields<'a>(pub &'a Envelope);

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[&str]) -> Option<String> {
        match path {
            ["namespace"] => Some(self.0.namespace.clone()),
            ["topic"] => Some(self.0.topic.clone()),
            _ => None,
        }
    }
}

/// True when `filter` accepts `envelope`.
pub fn matches(filter: &Filter, envelope: &Envelope) -> bool {
    filter.matches(&EnvelopeFields(envelope))
}

/// Topics and type names of the events the storage services publish.
pub mod topics {
    /// `/images/create`, payload `containerd.services.images.v1.ImageCreate`.
    pub const IMAGE_CREATE: (&str, &str) = (
        "/images/create",
        "containerd.services.images.v1.ImageCreate",
    );
    /// `/images/update`.
    pub const IMAGE_UPDATE: (&str, &str) = (
        "/images/update",
        "containerd.services.images.v1.ImageUpdate",
    );
    /// `/images/delete`.
    pub const IMAGE_DELETE: (&str, &str) = (
        "/images/delete",
        "containerd.services.images.v1.ImageDelete",
    );
    /// `/content/delete`.
    pub const CONTENT_DELETE: (&str, &str) = ("/content/delete", "containerd.events.ContentDelete");
    /// `/snapshot/prepare`.
    pub const SNAPSHOT_PREPARE: (&str, &str) =
        ("/snapshot/prepare", "containerd.events.SnapshotPrepare");
    /// `/snapshot/commit`.
    pub const SNAPSHOT_COMMIT: (&str, &str) =
        ("/snapshot/commit", "containerd.events.SnapshotCommit");
    /// `/snapshot/remove`.
    pub const SNAPSHOT_REMOVE: (&str, &str) =
        ("/snapshot/remove", "containerd.events.SnapshotRemove");
    /// `/namespaces/create`.
    pub const NAMESPACE_CREATE: (&str, &str) =
        ("/namespaces/create", "containerd.events.NamespaceCreate");
    /// `/namespaces/update`.
    pub const NAMESPACE_UPDATE: (&str, &str) =
        ("/namespaces/update", "containerd.events.NamespaceUpdate");
    /// `/namespaces/delete`.
    pub const NAMESPACE_DELETE: (&str, &str) =
        ("/namespaces/delete", "containerd.events.NamespaceDelete");
    /// `/containers/create`.
    pub const CONTAINER_CREATE: (&str, &str) =
        ("/containers/create", "containerd.events.ContainerCreate");
    /// `/containers/update`.
    pub const CONTAINER_UPDATE: (&str, &str) =
        ("/containers/update", "containerd.events.ContainerUpdate");
    /// `/containers/delete`.
    pub const CONTAINER_DELETE: (&str, &str) =
        ("/containers/delete", "containerd.events.ContainerDelete");
}
