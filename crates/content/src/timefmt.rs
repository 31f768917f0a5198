//! Timestamps in the text form containerd's local store writes to `startedat` and `updatedat`:
//! Go's `time.Time.MarshalText`, i.e. RFC 3339 with up to nine fractional digits, trailing zeros
//! dropped (`2026-11-23T12:39:19.33026383Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_core_types::error::{Error, Result};

/// Formats `t` in UTC the way Go's `MarshalText` does.
pub(crate) fn format(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            // Before 1970: floor towards negative infinity so the nanoseconds stay positive.
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
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 timestamp as Go's `UnmarshalText` accepts it (fraction optional, `Z` or a
/// `±hh:mm` offset). The error names the text.
pub(crate) fn parse(text: &str) -> Result<SystemTime> {
    parse_inner(text.as_bytes()).ok_or_else(|| {
        Error::data_loss(format!(
            "{:?} is not an RFC 3339 timestamp",
            truncate_for_message(text)
        ))
    })
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(64).collect()
}

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
}

fn parse_inner(b: &[u8]) -> Option<SystemTime> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let year = num(&b[0..4])?;
    let month = num(&b[5..7])?;
    let day = num(&b[8..10])?;
    let hour = num(&b[11..13])?;
    let min = num(&b[14..16])?;
    let sec = num(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i64 = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&rest[1..1 + digits])? * 10i64.pow(9 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset_secs = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = num(&[*h1, *h2])?;
            let m = num(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let unix = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let t = if unix >= 0 {
        UNIX_EPOCH + Duration::new(unix as u64, nanos as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()) + Duration::from_nanos(nanos as u64)
    };
    Some(t)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_marshal_text() {
        // 2026-11-23 12:39:19.330263831 UTC, the example in the project's format notes.
        let t = UNIX_EPOCH + Duration::new(1_795_437_559, 330_263_831);
        assert_eq!(format(t), "2026-11-23T12:39:19.330263831Z");
        let t = UNIX_EPOCH + Duration::new(1_795_437_559, 330_000_000);
        assert_eq!(format(t), "2026-11-23T12:39:19.33Z");
        let t = UNIX_EPOCH + Duration::new(1_795_437_559, 0);
        assert_eq!(format(t), "2026-11-23T12:39:19Z");
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn round_trips_and_accepts_offsets() {
        for secs in [0u64, 1, 86_399, 951_782_400, 1_795_437_559, 4_102_444_800] {
            for nanos in [0u32, 1, 500_000_000, 999_999_999] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                assert_eq!(parse(&format(t)).unwrap(), t, "{secs}.{nanos}");
            }
        }
        let utc = parse("2026-11-23T12:39:19.5Z").unwrap();
        assert_eq!(parse("2026-11-23T13:39:19.5+01:00").unwrap(), utc);
        assert_eq!(parse("2026-11-23T07:09:19.5-05:30").unwrap(), utc);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2026-11-23 12:39:19Z",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T12:39:19",
            "2026-11-23T12:39:19.Z",
            "2026-11-23T12:39:19.1234567891Z",
            "2026-11-23T12:39:19+0100",
            "2026-11-23T24:00:00Z",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("not an RFC 3339"), "{bad}: {err}");
        }
    }
}
