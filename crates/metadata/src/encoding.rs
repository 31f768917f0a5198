//! The value encodings containerd 1.6 writes into meta.db: Go `time.Time.MarshalBinary`
//! timestamps, Go `binary.PutVarint`/`PutUvarint` integers (both shared with the snapshotter
//! metastores, see `stowage_snapshots_storage::codec`) and protobuf `google.protobuf.Any`.

use stowage_core_types::{Error, Result};

// The Go encodings are shared with the snapshotter metastores, under the names this crate
// has always used.
pub use stowage_snapshots_storage::codec::{
    marshal_time as encode_time, read_uvarint as decode_uvarint, read_varint_len as decode_varint,
    unmarshal_time as decode_time, uvarint as encode_uvarint, varint as encode_varint,
};

/// Reads a signed size the way containerd does: a bad encoding reads as 0.
pub fn read_size(b: &[u8]) -> i64 {
    decode_varint(b).map(|(v, _)| v).unwrap_or(0)
}

/// A protobuf `google.protobuf.Any`: a type URL and the encoded message.
///
/// containerd stores container specs, runtime options and extensions this way, with bare type
/// URLs such as `types.containerd.io/opencontainers/runtime-spec/1/Spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Any {
    /// The message type (field 1).
    pub type_url: String,
    /// The encoded message (field 2).
    pub value: Vec<u8>,
}

/// The type URL containerd uses for an OCI runtime spec stored as JSON.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of runc shim options (`io.containerd.runc.v2` runtime options).
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

impl Any {
    /// An `Any` of `type_url` holding `value`.
    pub fn new(type_url: impl Into<String>, value: impl Into<Vec<u8>>) -> Any {
        Any {
            type_url: type_url.into(),
            value: value.into(),
        }
    }

    /// Protobuf encoding; like Go's proto3 marshaller, empty fields are omitted.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.type_url.len() + self.value.len() + 8);
        if !self.type_url.is_empty() {
            out.push(0x0a);
            out.extend(encode_uvarint(self.type_url.len() as u64));
            out.extend_from_slice(self.type_url.as_bytes());
        }
        if !self.value.is_empty() {
            out.push(0x12);
            out.extend(encode_uvarint(self.value.len() as u64));
            out.extend_from_slice(&self.value);
        }
        out
    }

    /// Decodes a protobuf `Any`, skipping unknown fields; the last occurrence of a field wins.
    pub fn decode(b: &[u8]) -> Result<Any> {
        let bad = |what: &str| Error::data_loss(format!("malformed protobuf Any: {what}"));
        let mut any = Any::default();
        let mut i = 0;
        while i < b.len() {
            let (key, n) = decode_uvarint(&b[i..]).ok_or_else(|| bad("truncated field key"))?;
            i += n;
            let field = key >> 3;
            match key & 7 {
                0 => {
                    let (_, n) = decode_uvarint(&b[i..]).ok_or_else(|| bad("truncated varint"))?;
                    i += n;
                }
                1 => i = i.checked_add(8).ok_or_else(|| bad("overflow"))?,
                5 => i = i.checked_add(4).ok_or_else(|| bad("overflow"))?,
                2 => {
                    let (len, n) =
                        decode_uvarint(&b[i..]).ok_or_else(|| bad("truncated length"))?;
                    i += n;
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|l| i.checked_add(l))
                        .filter(|&e| e <= b.len())
                        .ok_or_else(|| bad("field runs past the end"))?;
                    let data = &b[i..end];
                    match field {
                        1 => {
                            any.type_url = String::from_utf8(data.to_vec())
                                .map_err(|_| bad("type_url is not UTF-8"))?
                        }
                        2 => any.value = data.to_vec(),
                        _ => {}
                    }
                    i = end;
                }
                w => return Err(bad(&format!("unsupported wire type {w}"))),
            }
        }
        if i > b.len() {
            return Err(bad("fixed-width field runs past the end"));
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_containerd_reads_them() {
        assert_eq!(read_size(&encode_varint(53_248)), 53_248);
        assert_eq!(read_size(&encode_varint(-5)), -5);
        // A bad encoding reads as 0 rather than failing.
        assert_eq!(read_size(&[0xff]), 0);
        assert_eq!(read_size(&[]), 0);
    }

    #[test]
    fn any_round_trips_and_matches_protobuf() {
        let a = Any::new("a.b", b"xy".to_vec());
        assert_eq!(a.encode(), [0x0a, 3, b'a', b'.', b'b', 0x12, 2, b'x', b'y']);
        assert_eq!(Any::decode(&a.encode()).unwrap(), a);
        assert_eq!(Any::default().encode(), Vec::<u8>::new());
        // unknown field 3 (varint) is skipped
        assert_eq!(
            Any::decode(&[0x18, 0x05, 0x0a, 1, b'z']).unwrap().type_url,
            "z"
        );
        assert!(Any::decode(&[0x0a, 9, b'z']).is_err());
    }
}
