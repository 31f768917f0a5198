//! Conversions between the wire messages and the core types.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_core_types::mount::Mount;
use stowage_core_types::{content, snapshot, Descriptor, Digest, Error, Labels, Result};

use crate::api::containerd::types as pb;

/// A wire timestamp for `t` (times before 1970 are clamped to the epoch).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The time a wire timestamp stands for; absent or negative means the epoch.
pub fn time(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            UNIX_EPOCH
                + Duration::new(
                    u64::try_from(ts.seconds).unwrap_or(0),
                    u32::try_from(ts.nanos).unwrap_or(0),
                )
        }
        _ => UNIX_EPOCH,
    }
}

/// Labels from a wire map.
pub fn labels(m: HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

/// A wire map from labels.
pub fn label_map(l: &Labels) -> HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Parses a digest from the wire; InvalidArgument naming the field when malformed.
pub fn digest(s: &str, field: &str) -> Result<Digest> {
    s.parse::<Digest>()
        .map_err(|e: Error| e.context(format!("{field} {s:?}")))
}

/// A core descriptor from the wire.
pub fn descriptor(d: &pb::Descriptor) -> Result<Descriptor> {
    let mut out = Descriptor::new(
        d.media_type.clone(),
        digest(&d.digest, "descriptor digest")?,
        u64::try_from(d.size).map_err(|_| {
            Error::invalid_argument(format!("descriptor size {} is negative", d.size))
        })?,
    );
    out.annotations = d
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(out)
}

/// A wire descriptor.
pub fn descriptor_pb(d: &Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A core mount from the wire.
pub fn mount(m: &pb::Mount) -> Mount {
    Mount {
        kind: m.r#type.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

/// A wire mount.
pub fn mount_pb(m: &Mount) -> pb::Mount {
    pb::Mount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

/// Wire mounts.
pub fn mounts_pb(ms: &[Mount]) -> Vec<pb::Mount> {
    ms.iter().map(mount_pb).collect()
}

/// Content info on the wire.
pub fn content_info_pb(i: &content::Info) -> crate::api::containerd::services::content::v1::Info {
    crate::api::containerd::services::content::v1::Info {
        digest: i.digest.to_string(),
        size: i64::try_from(i.size).unwrap_or(i64::MAX),
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: label_map(&i.labels),
    }
}

/// Ingest status on the wire.
pub fn content_status_pb(
    s: &content::Status,
) -> crate::api::containerd::services::content::v1::Status {
    crate::api::containerd::services::content::v1::Status {
        started_at: Some(timestamp(s.started_at)),
        updated_at: Some(timestamp(s.updated_at)),
        r#ref: s.reference.clone(),
        offset: i64::try_from(s.offset).unwrap_or(i64::MAX),
        total: i64::try_from(s.total).unwrap_or(i64::MAX),
        expected: s
            .expected
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// Snapshot info on the wire.
pub fn snapshot_info_pb(
    i: &snapshot::Info,
) -> crate::api::containerd::services::snapshots::v1::Info {
    use crate::api::containerd::services::snapshots::v1::Kind;
    let kind = match i.kind {
        snapshot::Kind::View => Kind::View,
        snapshot::Kind::Active => Kind::Active,
        snapshot::Kind::Committed => Kind::Committed,
        snapshot::Kind::Unknown => Kind::Unknown,
    };
    crate::api::containerd::services::snapshots::v1::Info {
        name: i.name.clone(),
        parent: i.parent.clone(),
        kind: kind as i32,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: label_map(&i.labels),
    }
}

/// A core snapshot info from the wire (for Update).
pub fn snapshot_info(i: &crate::api::containerd::services::snapshots::v1::Info) -> snapshot::Info {
    use crate::api::containerd::services::snapshots::v1::Kind;
    let kind = match Kind::try_from(i.kind) {
        Ok(Kind::View) => snapshot::Kind::View,
        Ok(Kind::Active) => snapshot::Kind::Active,
        _ => snapshot::Kind::Committed,
    };
    snapshot::Info {
        kind,
        name: i.name.clone(),
        parent: i.parent.clone(),
        labels: labels(i.labels.clone()),
        created_at: time(i.created_at.as_ref()),
        updated_at: time(i.updated_at.as_ref()),
    }
}

/// A metadata `Any` from the wire.
pub fn any(a: &prost_types::Any) -> stowage_metadata::Any {
    stowage_metadata::Any::new(a.type_url.clone(), a.value.clone())
}

/// A wire `Any`.
pub fn any_pb(a: &stowage_metadata::Any) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

/// A wire `Any` holding the encoded message `m` of type `name` (containerd's typeurl names its
/// event types by full protobuf name).
pub fn any_of<M: prost::Message>(name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: name.to_string(),
        value: m.encode_to_vec(),
    }
}

/// The wire form of an image record.
pub fn image_pb(
    i: &stowage_core_types::image::Image,
) -> crate::api::containerd::services::images::v1::Image {
    crate::api::containerd::services::images::v1::Image {
        name: i.name.clone(),
        labels: label_map(&i.labels),
        target: Some(descriptor_pb(&i.target)),
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(time(Some(&timestamp(t))), t);
        assert_eq!(time(None), UNIX_EPOCH);
    }

    #[test]
    fn malformed_digests_name_the_field() {
        let err = digest("sha256:zz", "info digest").unwrap_err();
        assert!(err.message().contains("info digest"), "{err}");
        assert!(
            err.is(stowage_core_types::ErrorKind::InvalidArgument),
            "{err:?}"
        );
    }
}
