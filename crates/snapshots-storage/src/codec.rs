//! Go's value encodings as containerd writes them into its bbolt files (the snapshotter
//! metastores here, `meta.db` in `stowage-metadata`): `encoding/binary` varints and
//! `time.Time.MarshalBinary`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_core_types::{Error, Result};

/// Seconds from 0001-01-01T00:00:00Z (Go's internal epoch) to the Unix epoch.
const GO_UNIX_OFFSET: i64 = 62_135_596_800;

/// Appends `v` as an unsigned LEB128 varint (Go's `binary.PutUvarint`): 7 bits a byte,
/// least significant group first.
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

/// Decodes a uvarint at the start of `b` (Go's `binary.Uvarint`): the value and the bytes it
/// took; `None` when `b` ends early or the value overflows 64 bits.
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

/// Decodes a zigzag varint at the start of `b` (Go's `binary.Varint`): the value and the
/// bytes it took, `None` on a bad encoding.
pub fn read_varint_len(b: &[u8]) -> Option<(i64, usize)> {
    let (u, n) = read_uvarint(b)?;
    Some((((u >> 1) as i64) ^ -((u & 1) as i64), n))
}

/// Decodes a zigzag varint at the start of `b`: the value alone.
pub fn read_varint(b: &[u8]) -> Option<i64> {
    read_varint_len(b).map(|(v, _)| v)
}

/// `t` as Go's `time.Time.MarshalBinary` of a UTC time: version 1, seconds since year 1,
/// nanoseconds, and offset -1 (the marker for UTC), 15 bytes.
pub fn marshal_time(t: SystemTime) -> [u8; 15] {
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
    let mut out = [0u8; 15];
    out[0] = 1;
    out[1..9].copy_from_slice(&secs.saturating_add(GO_UNIX_OFFSET).to_be_bytes());
    out[9..13].copy_from_slice(&nanos.to_be_bytes());
    out[13..15].copy_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Decodes Go's `time.MarshalBinary` (version 1, 15 bytes, or version 2, 16 bytes). The zone
/// offset only says how Go would print the instant, so it is read and dropped.
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
            "time encoding version {} is {} bytes, expected {want}",
            b[0],
            b.len()
        )));
    }
    let mut sec = [0u8; 8];
    sec.copy_from_slice(&b[1..9]);
    let mut nsec = [0u8; 4];
    nsec.copy_from_slice(&b[9..13]);
    let go_secs = i64::from_be_bytes(sec);
    let nanos = u32::from_be_bytes(nsec);
    if nanos >= 1_000_000_000 {
        return Err(Error::data_loss(format!(
            "time encoding has {nanos} nanoseconds, expected less than 1e9"
        )));
    }
    let out_of_range = || Error::data_loss(format!("time {go_secs}s after year 1 is out of range"));
    let unix = go_secs
        .checked_sub(GO_UNIX_OFFSET)
        .ok_or_else(out_of_range)?;
    let t = if unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(unix as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_go() {
        assert_eq!(uvarint(1), [1]);
        assert_eq!(uvarint(7), [0x07]);
        assert_eq!(uvarint(300), [0xac, 0x02]);
        // The real examples from containerd's metadata.db: 14 inodes, 53,248 bytes.
        assert_eq!(varint(14), [0x1c]);
        assert_eq!(varint(53_248), [0x80, 0xc0, 0x06]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(3), [0x06]);
        assert_eq!(varint(418), [0xc4, 0x06]);
        assert_eq!(varint(1_049_649), [0xe2, 0x90, 0x80, 0x01]);
        assert_eq!(varint(-5), [0x09]);
        for v in [0i64, 1, -1, 63, 64, -64, -65, 1 << 40, i64::MIN, i64::MAX] {
            let e = varint(v);
            assert_eq!(read_varint_len(&e), Some((v, e.len())));
            assert_eq!(read_varint(&e), Some(v));
        }
        for v in [0u64, 127, 128, u64::MAX] {
            let e = uvarint(v);
            assert_eq!(read_uvarint(&e), Some((v, e.len())));
        }
        // Trailing bytes are not part of the value.
        assert_eq!(read_uvarint(&[0xac, 0x02, 0xff]), Some((300, 2)));
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[]), None);
        assert_eq!(read_varint(&[0x80]), None);
        // More than 64 bits: a tenth byte above 1, or an eleventh byte.
        assert_eq!(read_uvarint(&[0xff; 11]), None);
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }

    #[test]
    fn time_matches_go_marshal_binary() {
        // 2023-01-02T03:04:05.000000006Z = unix 1672628645
        let t = UNIX_EPOCH + Duration::new(1_672_628_645, 6);
        let b = marshal_time(t);
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
    }

    #[test]
    fn time_matches_real_containerd_bytes() {
        // From a real meta.db: 2026-11-23 12:39:19.330263831 UTC.
        let raw = [
            0x01, 0x00, 0x00, 0x00, 0x0e, 0xe2, 0x96, 0x2a, 0xf7, 0x13, 0xaf, 0x6d, 0x17, 0xff,
            0xff,
        ];
        let t = unmarshal_time(&raw).unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_437_559);
        assert_eq!(d.subsec_nanos(), 330_263_831);
        assert_eq!(marshal_time(t), raw);
    }

    #[test]
    fn time_version_2_and_bad_inputs() {
        let t = UNIX_EPOCH + Duration::from_secs(5);
        let mut v2 = marshal_time(t).to_vec();
        v2[0] = 2;
        v2.push(30);
        assert_eq!(unmarshal_time(&v2).unwrap(), t);

        let data_loss = |b: &[u8]| unmarshal_time(b).map_err(|e| e.kind());
        let kind = Err(stowage_core_types::ErrorKind::DataLoss);
        assert_eq!(data_loss(&v2[..15]), kind, "version 2 needs 16 bytes");
        assert_eq!(data_loss(&marshal_time(t)[..14]), kind, "short");
        assert_eq!(data_loss(&[]), kind, "empty");
        assert_eq!(data_loss(&[3; 15]), kind, "unknown version");
        let mut nanos = marshal_time(t);
        nanos[9..13].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert_eq!(data_loss(&nanos), kind, "nanoseconds of a whole second");
        // Seconds so far from year 1 that the Unix offset overflows: an error, not a panic.
        let mut far = marshal_time(t);
        far[1..9].copy_from_slice(&i64::MIN.to_be_bytes());
        assert_eq!(data_loss(&far), kind, "seconds out of range");
    }
}
