//! Leases: `v1/<ns>/leases/<id>/{createdat, labels/, content/, snapshots/<ss>/, ingests/}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_bolt::WriteTx;
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::{Digest, Error, Labels, Result};

use crate::db::Db;
use crate::encoding::encode_time;
use crate::namespaces::check;
use crate::schema::*;

/// The lease label holding its expiry (RFC 3339).
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";
/// The lease label that makes what it holds flat for the collector.
pub const LABEL_GC_FLAT: &str = "containerd.io/gc.flat";

/// A lease: a GC root holding content, snapshots and ingests for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its labels (`containerd.io/gc.expire`, `containerd.io/gc.flat`, ...).
    pub labels: Labels,
}

/// A resource a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    /// A digest for content, a key for snapshots, a ref for ingests.
    pub id: String,
    /// `content`, `ingests` or `snapshots/<snapshotter>`.
    pub kind: String,
}

impl Resource {
    /// A content resource.
    pub fn content(d: &Digest) -> Resource {
        Resource {
            id: d.to_string(),
            kind: "content".into(),
        }
    }
    /// A snapshot resource of `snapshotter`.
    pub fn snapshot(snapshotter: &str, key: &str) -> Resource {
        Resource {
            id: key.into(),
            kind: format!("snapshots/{snapshotter}"),
        }
    }
    /// An ingest resource.
    pub fn ingest(reference: &str) -> Resource {
        Resource {
            id: reference.into(),
            kind: "ingests".into(),
        }
    }

    /// The bucket path under the lease, and the key.
    fn location(&self) -> Result<(Vec<String>, String)> {
        let parts: Vec<&str> = self.kind.split('/').collect();
        match parts[0] {
            "content" | "ingests" => {
                if parts.len() != 1 {
                    return Err(Error::invalid_argument(format!(
                        "invalid resource type {}",
                        self.kind
                    )));
                }
                let id = if parts[0] == "content" {
                    Digest::parse(&self.id)
                        .map_err(|e| {
                            Error::invalid_argument(format!(
                                "invalid content resource id {}: {}",
                                self.id,
                                e.message()
                            ))
                        })?
                        .to_string()
                } else {
                    self.id.clone()
                };
                Ok((vec![parts[0].to_string()], id))
            }
            "snapshots" => {
                if parts.len() != 2 {
                    return Err(Error::invalid_argument(format!(
                        "invalid snapshot resource type {}",
                        self.kind
                    )));
                }
                Ok((
                    parts.iter().map(|s| s.to_string()).collect(),
                    self.id.clone(),
                ))
            }
            _ => Err(Error::not_implemented(format!(
                "resource type {} not supported yet",
                self.kind
            ))),
        }
    }
}

impl Lease {
    fn field(&self, path: &[&str]) -> Option<String> {
        match path {
            ["id"] => (!self.id.is_empty()).then(|| self.id.clone()),
            ["labels", rest @ ..] if !self.labels.is_empty() => map_field(rest, &self.labels),
            _ => None,
        }
    }
}

/// The leases of one namespace.
#[derive(Debug, Clone)]
pub struct Leases {
    db: Db,
    ns: String,
}

impl Db {
    /// The lease manager of namespace `ns`.
    pub fn leases(&self, ns: &str) -> Result<Leases> {
        check(ns)?;
        Ok(Leases {
            db: self.clone(),
            ns: ns.to_string(),
        })
    }
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("lease {id:?}"))
}

impl Leases {
    /// Creates lease `id` with `labels`; `AlreadyExists` if taken.
    pub fn create(&self, id: &str, labels: &Labels) -> Result<Lease> {
        if id.is_empty() {
            return Err(Error::invalid_argument("lease id must be provided"));
        }
        validate_labels("lease.Labels", labels)?;
        let now = SystemTime::now();
        self.db.update(|tx| {
            let mut lb = create_path(tx, &[SCHEMA, self.ns.as_bytes(), LEASES])?;
            if lb.bucket(id.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("lease {id:?}")));
            }
            let mut b = lb.create_bucket(id.as_bytes()).b()?;
            b.put(CREATED_AT, &encode_time(now)).b()?;
            write_labels(&mut b, labels)
        })?;
        Ok(Lease {
            id: id.to_string(),
            created_at: now,
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Creates lease `id` that expires after `ttl`, as `ctr leases create` does (label
    /// `containerd.io/gc.expire`, RFC 3339 to the second). Once expired it is no longer a root
    /// and the next collection removes it with what only it held.
    pub fn create_expiring(&self, id: &str, labels: &Labels, ttl: Duration) -> Result<Lease> {
        let at = SystemTime::now() + ttl;
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut labels = labels.clone();
        labels.insert(
            LABEL_GC_EXPIRE.to_string(),
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs)),
        );
        self.create(id, &labels)
    }

    /// Deletes lease `id` and waits for the garbage collection it causes.
    pub fn delete_sync(&self, id: &str) -> Result<crate::GcStats> {
        self.delete(id)?;
        self.db.collect_sync()
    }

    /// Deletes lease `id`; what it held becomes collectable.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.db.update(|tx| {
            let Some(mut lb) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), LEASES])? else {
                return Err(not_found(id));
            };
            if lb.bucket(id.as_bytes()).b()?.is_none() {
                return Err(not_found(id));
            }
            lb.delete_bucket(id.as_bytes()).b()?;
            self.db.mark_dirty();
            Ok(())
        })
    }

    /// Leases matching any of `filters` (`id`, `labels.<k>`), in id order.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Lease>> {
        let filter = Filter::parse_all(filters)?;
        let tx = self.db.read()?;
        let Some(lb) = get_path(tx.root(), &[SCHEMA, self.ns.as_bytes(), LEASES])? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in bucket_names(lb)? {
            let Some(b) = lb.bucket(&id).b()? else {
                continue;
            };
            let l = Lease {
                id: lossy(&id),
                created_at: read_time(b, CREATED_AT)?.unwrap_or(UNIX_EPOCH),
                labels: read_labels(b)?,
            };
            if filter.matches(&|p: &[&str]| l.field(p)) {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// Adds a resource to lease `id`.
    pub fn add_resource(&self, id: &str, r: &Resource) -> Result<()> {
        let (path, key) = r.location()?;
        self.db.update(|tx| {
            let Some(mut b) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), LEASES, id.as_bytes()])?
            else {
                return Err(not_found(id));
            };
            for p in &path {
                b = create_child(b, p.as_bytes())?;
            }
            b.put(key.as_bytes(), b"").b()
        })
    }

    /// Removes a resource from lease `id` (absent resources are fine).
    pub fn delete_resource(&self, id: &str, r: &Resource) -> Result<()> {
        let (path, key) = r.location()?;
        self.db.update(|tx| {
            let Some(mut b) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), LEASES, id.as_bytes()])?
            else {
                return Err(not_found(id));
            };
            for p in &path {
                match child(b, p.as_bytes())? {
                    Some(c) => b = c,
                    None => return Ok(()),
                }
            }
            b.delete(key.as_bytes()).b()?;
            self.db.mark_dirty();
            Ok(())
        })
    }

    /// The resources of lease `id`: content, then ingests, then snapshots.
    pub fn list_resources(&self, id: &str) -> Result<Vec<Resource>> {
        let tx = self.db.read()?;
        let b = get_path(
            tx.root(),
            &[SCHEMA, self.ns.as_bytes(), LEASES, id.as_bytes()],
        )?
        .ok_or_else(|| not_found(id))?;
        let mut out = Vec::new();
        for kind in [CONTENT, INGESTS] {
            if let Some(cb) = b.bucket(kind).b()? {
                for k in keys(cb)? {
                    out.push(Resource {
                        id: lossy(&k),
                        kind: lossy(kind),
                    });
                }
            }
        }
        if let Some(sb) = b.bucket(SNAPSHOTS).b()? {
            for ss in bucket_names(sb)? {
                if let Some(ssb) = sb.bucket(&ss).b()? {
                    for k in keys(ssb)? {
                        out.push(Resource {
                            id: lossy(&k),
                            kind: format!("snapshots/{}", lossy(&ss)),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Records `key` under `<path>` of lease `lease` in namespace `ns` inside `tx` ("work done
/// under a lease"). `NotFound` when the lease does not exist.
pub(crate) fn add_to_lease(
    tx: &mut WriteTx,
    ns: &str,
    lease: &str,
    path: &[&[u8]],
    key: &[u8],
) -> Result<()> {
    let Some(mut b) = open_path(tx, &[SCHEMA, ns.as_bytes(), LEASES, lease.as_bytes()])? else {
        return Err(Error::not_found(format!("lease {lease:?} does not exist")));
    };
    for p in path {
        b = create_child(b, p)?;
    }
    b.put(key, b"").b()
}

/// Removes `key` under `<path>` of lease `lease`, if there.
pub(crate) fn remove_from_lease(
    tx: &mut WriteTx,
    ns: &str,
    lease: &str,
    path: &[&[u8]],
    key: &[u8],
) -> Result<()> {
    let mut full: Vec<&[u8]> = vec![SCHEMA, ns.as_bytes(), LEASES, lease.as_bytes()];
    full.extend_from_slice(path);
    match open_path(tx, &full)? {
        Some(mut b) => b.delete(key).b(),
        None => Ok(()),
    }
}

/// Formats `t` as RFC 3339 in UTC with nanoseconds trimmed (Go's `time.RFC3339Nano` of a UTC
/// time), for `containerd.io/gc.expire`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if d.subsec_nanos() > 0 {
        let frac = format!("{:09}", d.subsec_nanos());
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses RFC 3339 (`2006-01-02T15:04:05[.frac](Z|±hh:mm)`), as Go's `time.Parse(time.RFC3339)`
/// accepts it. `None` when malformed.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 9)];
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(nanos.into()))
    }
}

// Howard Hinnant's civil calendar conversions.
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
    fn rfc3339_round_trip_and_offsets() {
        let t = UNIX_EPOCH + Duration::new(1_795_437_559, 330_263_831);
        let s = format_rfc3339(t);
        assert_eq!(s, "2026-11-23T12:39:19.330263831Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(
            parse_rfc3339("2026-11-23T14:39:19.330263831+02:00"),
            Some(t)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T12:39:19",
            "x026-11-23T12:39:19Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
