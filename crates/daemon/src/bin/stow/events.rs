//! `events`: the daemon's event stream, printed as ctr prints it.

use anyhow::{Context as _, Result};
use prost::Message;
use serde_json::{json, Map, Value};
use stowage_daemon::api::containerd::events as ev;
use stowage_daemon::api::containerd::services::events::v1::{
    events_client::EventsClient, Envelope, SubscribeRequest,
};
use stowage_daemon::api::containerd::services::images::v1 as img;
use tokio_stream::StreamExt;

use crate::output::{go_time, rfc3339_nano, system_time};
use crate::{rpc, Ctx};

/// Subscribes with `filters` and prints each envelope until interrupted or the daemon ends
/// the stream.
pub async fn run(ctx: &Ctx, filters: Vec<String>) -> Result<()> {
    let mut c = svc!(ctx, EventsClient<_>);
    let mut st = c
        .subscribe(SubscribeRequest { filters })
        .await
        .map_err(rpc)
        .context("subscribing to events")?
        .into_inner();
    loop {
        let next = tokio::select! {
            n = st.next() => n,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(e) = next else { return Ok(()) };
        let e = e.map_err(rpc).context("receiving events")?;
        match event_json(e.event.as_ref()) {
            Ok(payload) => print_envelope(ctx, &e, payload),
            // As ctr: an event that cannot be decoded is reported and skipped.
            Err(msg) => eprintln!("stow: skipping event on {}: {msg}", e.topic),
        }
    }
}

fn print_envelope(ctx: &Ctx, e: &Envelope, payload: Value) {
    let when = system_time(e.timestamp.as_ref());
    if ctx.json() {
        println!(
            "{}",
            json!({"timestamp": rfc3339_nano(when), "namespace": e.namespace,
                   "topic": e.topic, "event": payload})
        );
    } else {
        println!("{} {} {} {}", go_time(when), e.namespace, e.topic, payload);
    }
}

/// Drops empty strings, maps and nulls, as Go's `omitempty` does in ctr's output.
fn omit_empty(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, omit_empty(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// The event's payload as JSON with the field names containerd's event types use.
fn event_json(any: Option<&prost_types::Any>) -> std::result::Result<Value, String> {
    let Some(any) = any else {
        return Ok(Value::Null);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    fn de<M: Message + Default>(b: &[u8]) -> std::result::Result<M, String> {
        M::decode(b).map_err(|e| format!("decoding: {e}"))
    }
    let b = any.value.as_slice();
    let v = match name {
        "containerd.services.images.v1.ImageCreate" => {
            let m: img::ImageCreate = de(b)?;
            json!({"name": m.name, "labels": m.labels})
        }
        "containerd.services.images.v1.ImageUpdate" => {
            let m: img::ImageUpdate = de(b)?;
            json!({"name": m.name, "labels": m.labels})
        }
        "containerd.services.images.v1.ImageDelete" => {
            json!({"name": de::<img::ImageDelete>(b)?.name})
        }
        "containerd.events.ContentDelete" => json!({"digest": de::<ev::ContentDelete>(b)?.digest}),
        "containerd.events.SnapshotPrepare" => {
            let m: ev::SnapshotPrepare = de(b)?;
            json!({"key": m.key, "parent": m.parent})
        }
        "containerd.events.SnapshotCommit" => {
            let m: ev::SnapshotCommit = de(b)?;
            json!({"key": m.key, "name": m.name})
        }
        "containerd.events.SnapshotRemove" => json!({"key": de::<ev::SnapshotRemove>(b)?.key}),
        "containerd.events.NamespaceCreate" => {
            let m: ev::NamespaceCreate = de(b)?;
            json!({"name": m.name, "labels": m.labels})
        }
        "containerd.events.NamespaceUpdate" => {
            let m: ev::NamespaceUpdate = de(b)?;
            json!({"name": m.name, "labels": m.labels})
        }
        "containerd.events.NamespaceDelete" => json!({"name": de::<ev::NamespaceDelete>(b)?.name}),
        "containerd.events.ContainerCreate" => {
            let m: ev::ContainerCreate = de(b)?;
            json!({"id": m.id, "image": m.image,
                   "runtime": m.runtime.map(|r| json!({"name": r.name}))})
        }
        "containerd.events.ContainerUpdate" => {
            let m: ev::ContainerUpdate = de(b)?;
            json!({"id": m.id, "image": m.image, "labels": m.labels, "snapshot_key": m.snapshot_key})
        }
        "containerd.events.ContainerDelete" => json!({"id": de::<ev::ContainerDelete>(b)?.id}),
        other => return Err(format!("unknown event type {other:?}")),
    };
    Ok(omit_empty(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
        prost_types::Any {
            type_url: name.into(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn events_decode_to_ctr_json_with_empty_fields_left_out() {
        let a = any(
            "containerd.services.images.v1.ImageCreate",
            &img::ImageCreate {
                name: "x:1".into(),
                labels: Default::default(),
            },
        );
        assert_eq!(
            event_json(Some(&a)).unwrap().to_string(),
            r#"{"name":"x:1"}"#
        );
        let a = any(
            "containerd.events.SnapshotCommit",
            &ev::SnapshotCommit {
                key: "k".into(),
                name: "n".into(),
            },
        );
        assert_eq!(
            event_json(Some(&a)).unwrap().to_string(),
            r#"{"key":"k","name":"n"}"#
        );
        let a = prost_types::Any {
            type_url: "nope".into(),
            value: vec![],
        };
        assert!(event_json(Some(&a)).is_err());
    }
}
