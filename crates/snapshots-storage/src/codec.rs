//! Value encodings of the metastore: Go's `encoding/binary` varints and `time.MarshalBinary`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_core_types::{Error, Result};

/// Seconds from 0001-01-01 (Go's internal epoch) to 1970-01-01.
const GO_UNIX_OFFSET: i64 = 62_135_596_800;

/// Appends `v` as an unsigned LEB128 varint (Go's `binary.PutUvarint`).
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `v` as a uvarint.
pub fn uvarint(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    put_uvarint(&mut out, v);
    out
}

/// Decodes a uvarint at the start of `b`: the value and the bytes it took; `None` when `b`
/// ends early or the value overflows 64 bits.
pub fn read_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `v` as a zigzag varint (Go's `binary.PutVarint`).
pub fn varint(v: i64) -> Vec<u8> {
    uvarint(((v << 1) ^ (v >> 63)) as u64)
}

/// Decodes a zigzag varint at the start of `b`.
pub fn read_varint(b: &[u8]) -> Option<i64> {
    let (u, _) = read_uvarint(b)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// `t` as Go's `time.Time.MarshalBinary` of a UTC time: version 1, seconds since year 1,
/// nanoseconds, and offset -1 (the marker for UTC), 15 bytes.
pub fn marshal_time(t: SystemTime) -> Vec<u8> {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            // Before 1970: whole seconds go down, nanoseconds stay positive.
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
    let mut out = Vec::with_capacity(15);
    out.push(1);
    out.extend_from_slice(&(secs + GO_UNIX_OFFSET).to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Decodes Go's `time.MarshalBinary` (versions 1 and 2; the zone offset does not change the
/// instant, so it is ignored).
pub fn unmarshal_time(b: &[u8]) -> Result<SystemTime> {
    let want = match b.first() {
        Some(1) => 15,
        Some(2) => 16,
        Some(v) => {
            return Err(Error::data_loss(format!(
                "time encoding version {v}, expected 1 or 2"
            )))
        }
        None => return Err(Error::data_loss("empty time encoding")),
    };
    if b.len() != want {
        return Err(Error::data_loss(format!(
            "time encoding is {} bytes, expected {want}",
            b.len()
        )));
    }
    let mut sec = [0u8; 8];
    sec.copy_from_slice(&b[1..9]);
    let mut nsec = [0u8; 4];
    nsec.copy_from_slice(&b[9..13]);
    let unix = i64::from_be_bytes(sec) - GO_UNIX_OFFSET;
    let nanos = u32::from_be_bytes(nsec);
    if nanos >= 1_000_000_000 {
        return Err(Error::data_loss(format!(
            "time encoding has {nanos} nanoseconds, expected less than 1e9"
        )));
    }
    let t = if unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(unix as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(|| Error::data_loss(format!("time {unix}s is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_go() {
        assert_eq!(uvarint(1), [1]);
        assert_eq!(uvarint(300), [0xac, 0x02]);
        // The real examples from containerd's metadata.db: 14 inodes, 53,248 bytes.
        assert_eq!(varint(14), [0x1c]);
        assert_eq!(varint(53_248), [0x80, 0xc0, 0x06]);
        assert_eq!(varint(-1), [0x01]);
        for v in [0i64, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX] {
            assert_eq!(read_varint(&varint(v)), Some(v));
        }
        for v in [0u64, 127, 128, u64::MAX] {
            let e = uvarint(v);
            assert_eq!(read_uvarint(&e), Some((v, e.len())));
        }
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[]), None);
    }

    #[test]
    fn time_matches_go_marshal_binary() {
        // 2023-01-02T03:04:05.000000006Z = unix 1672628645
        let t = UNIX_EPOCH + Duration::new(1_672_628_645, 6);
        let b = marshal_time(t);
        assert_eq!(b.len(), 15);
        assert_eq!(b[0], 1);
        assert_eq!(
            i64::from_be_bytes(b[1..9].try_into().unwrap()),
            1_672_628_645 + 62_135_596_800
        );
        assert_eq!(&b[9..13], &6u32.to_be_bytes());
        assert_eq!(&b[13..], &[0xff, 0xff]);
        assert_eq!(unmarshal_time(&b).unwrap(), t);

        let before = UNIX_EPOCH - Duration::new(10, 250);
        assert_eq!(unmarshal_time(&marshal_time(before)).unwrap(), before);

        assert!(unmarshal_time(&b[..14]).is_err());
        assert!(unmarshal_time(&[3; 15]).is_err());
        let mut v2 = b.clone();
        v2[0] = 2;
        v2.push(0);
        assert_eq!(unmarshal_time(&v2).unwrap(), t);
    }
}
