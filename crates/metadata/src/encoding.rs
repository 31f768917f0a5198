//! The value encodings containerd 1.6 writes into meta.db: Go `time.Time.MarshalBinary`
//! timestamps, Go `binary.PutVarint`/`PutUvarint` integers and protobuf `google.protobuf.Any`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_core_types::{Error, Result};

/// Seconds from 0001-01-01T00:00:00Z (Go's internal epoch) to the Unix epoch.
const GO_EPOCH_TO_UNIX: i64 = 62_135_596_800;

/// Encodes `t` as Go's `time.Time.MarshalBinary` does for a UTC time: 15 bytes, version 1,
/// offset -1 (UTC).
pub fn encode_time(t: SystemTime) -> [u8; 15] {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            // Before 1970: floor to whole seconds with a positive nanosecond part.
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut n = d.subsec_nanos();
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s, n)
        }
    };
    let go_secs = secs.saturating_add(GO_EPOCH_TO_UNIX);
    let mut out = [0u8; 15];
    out[0] = 1;
    out[1..9].copy_from_slice(&go_secs.to_be_bytes());
    out[9..13].copy_from_slice(&nanos.to_be_bytes());
    out[13..15].copy_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Decodes Go's `time.Time.MarshalBinary` (version 1, 15 bytes, or version 2, 16 bytes). The
/// zone offset only says how Go would print the instant, so it is read and dropped.
pub fn decode_time(b: &[u8]) -> Result<SystemTime> {
    let want = match b.first() {
        Some(1) => 15,
        Some(2) => 16,
        Some(v) => {
            return Err(Error::data_loss(format!(
                "timestamp has unsupported version {v}, expected 1 or 2"
            )))
        }
        None => return Err(Error::data_loss("timestamp is empty, expected 15 bytes")),
    };
    if b.len() != want {
        return Err(Error::data_loss(format!(
            "timestamp version {} is {} bytes, expected {want}",
            b[0],
            b.len()
        )));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[1..9]);
    let go_secs = i64::from_be_bytes(s);
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[9..13]);
    let nanos = u32::from_be_bytes(n);
    if nanos >= 1_000_000_000 {
        return Err(Error::data_loss(format!(
            "timestamp nanoseconds {nanos} out of range"
        )));
    }
    let unix = go_secs
        .checked_sub(GO_EPOCH_TO_UNIX)
        .ok_or_else(|| Error::data_loss("timestamp out of range"))?;
    let t = if unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(unix as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(nanos as u64)))
    };
    t.ok_or_else(|| Error::data_loss(format!("timestamp {go_secs}s out of range")))
}

/// Go's `binary.PutUvarint`: LEB128, 7 bits a byte, least significant group first.
pub fn encode_uvarint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Go's `binary.Uvarint`: the value and the bytes it used, or `None` when truncated or longer
/// than 64 bits.
pub fn decode_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        if i == 10 || (i == 9 && byte > 1) {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Go's `binary.PutVarint`: zigzag, then [`encode_uvarint`].
pub fn encode_varint(v: i64) -> Vec<u8> {
    encode_uvarint(((v << 1) ^ (v >> 63)) as u64)
}

/// Go's `binary.Varint`, or `None` on a bad encoding.
pub fn decode_varint(b: &[u8]) -> Option<(i64, usize)> {
    let (u, n) = decode_uvarint(b)?;
    Some((((u >> 1) as i64) ^ -((u & 1) as i64), n))
}

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
    fn time_matches_real_containerd_bytes() {
        // From a real meta.db: 2026-11-23 12:39:19.330263831 UTC.
        let raw = [
            0x01, 0x00, 0x00, 0x00, 0x0e, 0xe2, 0x96, 0x2a, 0xf7, 0x13, 0xaf, 0x6d, 0x17, 0xff,
            0xff,
        ];
        let t = decode_time(&raw).unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_437_559);
        assert_eq!(d.subsec_nanos(), 330_263_831);
        assert_eq!(encode_time(t), raw);
    }

    #[test]
    fn time_version_2_and_bad_inputs() {
        let mut v2 = encode_time(UNIX_EPOCH + Duration::from_secs(5)).to_vec();
        v2[0] = 2;
        v2.push(30);
        assert_eq!(
            decode_time(&v2).unwrap(),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        assert!(decode_time(&v2[..15]).is_err());
        assert!(decode_time(&[]).is_err());
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert!(decode_time(&v3).is_err());
        let before = UNIX_EPOCH - Duration::new(10, 250);
        assert_eq!(decode_time(&encode_time(before)).unwrap(), before);
    }

    #[test]
    fn varints_match_go() {
        assert_eq!(encode_varint(3), [0x06]);
        assert_eq!(encode_varint(418), [0xc4, 0x06]);
        assert_eq!(encode_varint(1_049_649), [0xe2, 0x90, 0x80, 0x01]);
        assert_eq!(encode_varint(-5), [0x09]);
        assert_eq!(encode_uvarint(7), [0x07]);
        for v in [0i64, 1, -1, 63, 64, -65, i64::MAX, i64::MIN] {
            let e = encode_varint(v);
            assert_eq!(decode_varint(&e), Some((v, e.len())));
        }
        assert_eq!(decode_varint(&[0x80]), None);
        assert_eq!(read_size(&[0xff]), 0);
        assert_eq!(decode_uvarint(&[0xff; 11]), None);
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
