//! The namespaced snapshotter: records under `v1/<ns>/snapshots/<snapshotter>/<key>/` over a
//! backend [`Snapshotter`] whose keys are `<ns>/<seq>/<key>`.
//!
//! Parents are recorded by their namespaced key; each parent lists its children, so removing
//! a snapshot with children fails. Labels live in meta.db; only the inherited ones
//! (`containerd.io/snapshot/…` and `containerd.io/snapshot.ref`) reach the backend. Removal
//! only drops the record: the backend snapshot goes at the next garbage collection.

use std::sync::Arc;
use std::time::SystemTime;

use stowage_bolt::{Bucket, WriteTx};
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::{Info, Kind, Snapshotter, Usage};
use stowage_core_types::{fieldpath, Error, ErrorKind, Labels, Result};

use crate::db::Db;
use crate::leases::{add_to_lease, remove_from_lease};
use crate::namespaces::check;
use crate::schema::*;

/// The label naming the committed snapshot an unpack is about to produce.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// Labels with this prefix are passed on to the backend snapshotter.
pub const INHERITED_LABELS_PREFIX: &str = "containerd.io/snapshot/";

/// The labels a backend gets to see.
pub fn inherited_labels(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| *k == LABEL_SNAPSHOT_REF || k.starts_with(INHERITED_LABELS_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One snapshotter seen from one namespace, optionally working under a lease.
#[derive(Clone)]
pub struct NamespacedSnapshotter {
    db: Db,
    ns: String,
    name: String,
    lease: Option<String>,
    backend: Arc<dyn Snapshotter>,
}

impl std::fmt::Debug for NamespacedSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespacedSnapshotter")
            .field("namespace", &self.ns)
            .field("snapshotter", &self.name)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Db {
    /// Snapshotter `name` seen from namespace `ns`; with `lease`, snapshots it creates are
    /// added to that lease. `NotFound` when no snapshotter of that name was configured.
    pub fn snapshotter(
        &self,
        name: &str,
        ns: &str,
        lease: Option<&str>,
    ) -> Result<NamespacedSnapshotter> {
        check(ns)?;
        let backend =
            self.inner.snapshotters.get(name).cloned().ok_or_else(|| {
                Error::not_found(format!("snapshotter {name:?} is not configured"))
            })?;
        Ok(NamespacedSnapshotter {
            db: self.clone(),
            ns: ns.to_string(),
            name: name.to_string(),
            lease: lease.map(str::to_string),
            backend,
        })
    }

    /// Names of the configured snapshotters.
    pub fn snapshotter_names(&self) -> Vec<String> {
        self.inner.snapshotters.keys().cloned().collect()
    }
}

/// What meta.db records about one snapshot.
struct Record {
    bkey: String,
    parent: String,
    labels: Labels,
    created_at: SystemTime,
    updated_at: SystemTime,
}

fn read_record(b: Bucket<'_>) -> Result<Record> {
    let (created_at, updated_at) = read_timestamps(b)?;
    Ok(Record {
        bkey: lossy(b.get(NAME).b()?.unwrap_or_default()),
        parent: lossy(b.get(PARENT).b()?.unwrap_or_default()),
        labels: read_labels(b)?,
        created_at,
        updated_at,
    })
}

fn adapt(info: &Info, path: &[&str]) -> Option<String> {
    match path {
        ["kind"] => match info.kind {
            Kind::Unknown => None,
            k => Some(k.as_str().to_string()),
        },
        ["name"] => Some(info.name.clone()),
        ["parent"] => Some(info.parent.clone()),
        ["labels", rest @ ..] if !info.labels.is_empty() => map_field(rest, &info.labels),
        _ => None,
    }
}

impl NamespacedSnapshotter {
    fn path<'a>(&'a self, key: &'a str) -> [&'a [u8]; 5] {
        [
            SCHEMA,
            self.ns.as_bytes(),
            SNAPSHOTS,
            self.name.as_bytes(),
            key.as_bytes(),
        ]
    }

    fn lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        match self.db.inner.snapshot_locks.get(&self.name) {
            Some(l) => l.read().unwrap_or_else(|p| p.into_inner()),
            // Configured snapshotters always have a lock; fall back to the content one.
            None => self
                .db
                .inner
                .content_lock
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn record(&self, key: &str) -> Result<Record> {
        let tx = self.db.read()?;
        let b = get_path(tx.root(), &self.path(key))?.ok_or_else(|| missing(key))?;
        read_record(b)
    }

    fn add_lease(&self, tx: &mut WriteTx, key: &str) -> Result<()> {
        match &self.lease {
            Some(l) => add_to_lease(
                tx,
                &self.ns,
                l,
                &[SNAPSHOTS, self.name.as_bytes()],
                key.as_bytes(),
            ),
            None => Ok(()),
        }
    }

    fn remove_lease(&self, tx: &mut WriteTx, key: &str) -> Result<()> {
        match &self.lease {
            Some(l) => remove_from_lease(
                tx,
                &self.ns,
                l,
                &[SNAPSHOTS, self.name.as_bytes()],
                key.as_bytes(),
            ),
            None => Ok(()),
        }
    }

    fn create(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        readonly: bool,
    ) -> Result<Vec<Mount>> {
        let _g = self.lock();
        validate_labels("snapshot.Labels", &labels)?;
        if key.is_empty() {
            return Err(Error::invalid_argument("snapshot key must not be empty"));
        }
        let target = labels.get(LABEL_SNAPSHOT_REF).cloned().unwrap_or_default();
        let (mut bkey, mut bparent) = self.db.update(|tx| {
            let mut sb = create_path(
                tx,
                &[SCHEMA, self.ns.as_bytes(), SNAPSHOTS, self.name.as_bytes()],
            )?;
            if !target.is_empty() && sb.bucket(target.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("target snapshot {target:?}")));
            }
            if sb.bucket(key.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("snapshot {key:?}")));
            }
            let mut bparent = String::new();
            if !parent.is_empty() {
                let pb = sb.bucket(parent.as_bytes()).b()?.ok_or_else(|| {
                    Error::not_found(format!("parent snapshot {parent} does not exist"))
                })?;
                bparent = lossy(pb.get(NAME).b()?.unwrap_or_default());
            }
            let seq = sb.next_sequence().b()?;
            Ok((format!("{}/{}/{}", self.ns, seq, key), bparent))
        })?;
        let blabels = inherited_labels(&labels);
        let res = if readonly {
            self.backend.view(&bkey, &bparent, blabels)
        } else {
            self.backend.prepare(&bkey, &bparent, blabels)
        };
        let mut key = key.to_string();
        let mut labels = labels;
        let mut created = String::new();
        let mut rerr: Option<Error> = None;
        let now = SystemTime::now();
        let (mut created_at, mut updated_at) = (now, now);
        let mounts = match res {
            Ok(m) => {
                created = bkey.clone();
                m
            }
            Err(e) if e.is(ErrorKind::AlreadyExists) && !target.is_empty() => {
                // Someone committed the target in the backend already (e.g. another namespace
                // unpacked the same layer): adopt it under the target name.
                let mut found: Option<Info> = None;
                self.backend.walk(
                    &mut |i: Info| {
                        if found.is_none()
                            && i.kind == Kind::Committed
                            && i.labels.get(LABEL_SNAPSHOT_REF) == Some(&target)
                            && i.parent == bparent
                        {
                            found = Some(i);
                        }
                        Ok(())
                    },
                    &[],
                )?;
                let t = found.ok_or_else(|| {
                    Error::not_found(format!("target snapshot {target:?} in backend"))
                })?;
                key = target.clone();
                bkey = t.name.clone();
                bparent = t.parent.clone();
                created_at = t.created_at;
                updated_at = t.updated_at;
                for (k, v) in t.labels {
                    labels.entry(k).or_insert(v);
                }
                rerr = Some(Error::already_exists(format!(
                    "target snapshot {target:?} from snapshotter"
                )));
                Vec::new()
            }
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                return Err(Error::unknown(format!(
                    "unexpected error from snapshotter: {e}"
                )))
            }
            Err(e) => return Err(e),
        };
        let txres = self.db.update(|tx| {
            self.add_lease(tx, &key)?;
            let mut sb = open_path(
                tx,
                &[SCHEMA, self.ns.as_bytes(), SNAPSHOTS, self.name.as_bytes()],
            )?
            .ok_or_else(|| Error::not_found(format!("can not find snapshotter {:?}", self.name)))?;
            if sb.bucket(key.as_bytes()).b()?.is_some() {
                if rerr.is_none() {
                    rerr = Some(Error::already_exists(format!("snapshot {key:?}")));
                }
                return Ok(());
            }
            if !parent.is_empty() {
                let pb = sb.bucket(parent.as_bytes()).b()?.ok_or_else(|| {
                    Error::not_found(format!("parent snapshot {parent} does not exist"))
                })?;
                if lossy(pb.get(NAME).b()?.unwrap_or_default()) != bparent {
                    return Err(Error::invalid_argument(format!(
                        "mismatched parent {parent} from target {target}"
                    )));
                }
                let pb = child(sb, parent.as_bytes())?
                    .ok_or_else(|| Error::unknown("parent bucket vanished"))?;
                let mut cb = create_child(pb, CHILDREN)?;
                cb.put(key.as_bytes(), b"").b()?;
                sb = open_path(
                    tx,
                    &[SCHEMA, self.ns.as_bytes(), SNAPSHOTS, self.name.as_bytes()],
                )?
                .ok_or_else(|| Error::unknown("snapshotter bucket vanished"))?;
            }
            let mut b = sb.create_bucket(key.as_bytes()).b()?;
            if !parent.is_empty() {
                b.put(PARENT, parent.as_bytes()).b()?;
            }
            write_timestamps(&mut b, created_at, updated_at)?;
            write_labels(&mut b, &labels)?;
            b.put(NAME, bkey.as_bytes()).b()
        });
        if let Err(e) = txres {
            rerr = Some(e);
        }
        if let Some(e) = rerr {
            if !created.is_empty() {
                // Best effort: the collector removes it otherwise.
                let _ = self.backend.remove(&created);
            }
            return Err(e);
        }
        Ok(mounts)
    }
}

/// The labels a client sees: the backend's (such as overlayfs's upper directory label) with
/// the namespace's own on top, as containerd merges them.
fn overlay_labels(mut backend: Labels, local: Labels) -> Labels {
    backend.extend(local);
    backend
}

fn missing(key: &str) -> Error {
    Error::not_found(format!("snapshot {key} does not exist"))
}

impl Snapshotter for NamespacedSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let r = self.record(key)?;
        let bi = self.backend.stat(&r.bkey)?;
        Ok(Info {
            kind: bi.kind,
            name: key.to_string(),
            parent: r.parent,
            labels: overlay_labels(bi.labels, r.labels),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let _g = self.lock();
        if info.name.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot name must be set for update",
            ));
        }
        let key = info.name.clone();
        self.db.update(|tx| {
            let Some(mut b) = open_path(tx, &self.path(&key))? else {
                return Err(missing(&key));
            };
            let mut r = read_record(b.view())?;
            if fieldpaths.is_empty() {
                fieldpath::apply_labels(&mut r.labels, &info.labels, &[], "labels")?;
            }
            for path in fieldpaths {
                if !fieldpath::update_map_path(&mut r.labels, &info.labels, path, "labels")? {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on snapshot {key:?}"
                    )));
                }
            }
            validate_labels("snapshot.Labels", &r.labels)?;
            r.updated_at = SystemTime::now();
            write_timestamps(&mut b, r.created_at, r.updated_at)?;
            write_labels(&mut b, &r.labels)?;
            let inner = Info {
                kind: info.kind,
                name: r.bkey.clone(),
                parent: String::new(),
                labels: inherited_labels(&r.labels),
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            let bi = self.backend.update(inner, fieldpaths)?;
            Ok(Info {
                kind: bi.kind,
                name: key.clone(),
                parent: r.parent,
                labels: overlay_labels(bi.labels, r.labels),
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let r = self.record(key)?;
        self.backend.usage(&r.bkey)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = self.record(key)?;
        self.backend.mounts(&r.bkey)
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, false)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, true)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let _g = self.lock();
        validate_labels("snapshot.Labels", &labels)?;
        if name.is_empty() {
            return Err(Error::invalid_argument("snapshot name must not be empty"));
        }
        let ss: &[u8] = self.name.as_bytes();
        let ns: &[u8] = self.ns.as_bytes();
        self.db.update(|tx| {
            let Some(mut sb) = open_path(tx, &[SCHEMA, ns, SNAPSHOTS, ss])? else {
                return Err(Error::not_found(format!(
                    "can not find snapshotter {:?}",
                    self.name
                )));
            };
            if sb.bucket(name.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("snapshot {name:?}")));
            }
            let old = match sb.bucket(key.as_bytes()).b()? {
                Some(b) => read_record(b)?,
                None => return Err(missing(key)),
            };
            let seq = sb.next_sequence().b()?;
            let name_key = format!("{}/{}/{}", self.ns, seq, name);
            if !old.parent.is_empty() {
                let pb = child(sb, old.parent.as_bytes())?.ok_or_else(|| {
                    Error::not_found(format!("parent snapshot {} does not exist", old.parent))
                })?;
                let mut cb = create_child(pb, CHILDREN)?;
                cb.delete(key.as_bytes()).b()?;
                cb.put(name.as_bytes(), b"").b()?;
                sb = open_path(tx, &[SCHEMA, ns, SNAPSHOTS, ss])?
                    .ok_or_else(|| Error::unknown("snapshotter bucket vanished"))?;
            }
            {
                let mut b = sb.create_bucket(name.as_bytes()).b()?;
                b.put(NAME, name_key.as_bytes()).b()?;
                if !old.parent.is_empty() {
                    b.put(PARENT, old.parent.as_bytes()).b()?;
                }
                let now = SystemTime::now();
                write_timestamps(&mut b, now, now)?;
                write_labels(&mut b, &labels)?;
            }
            sb.delete_bucket(key.as_bytes()).b()?;
            self.add_lease(tx, name)?;
            self.remove_lease(tx, key)?;
            self.backend
                .commit(&name_key, &old.bkey, inherited_labels(&labels))
        })
    }

    fn remove(&self, key: &str) -> Result<()> {
        let _g = self.lock();
        let ss: &[u8] = self.name.as_bytes();
        let ns: &[u8] = self.ns.as_bytes();
        self.db.update(|tx| {
            let Some(sb) = get_path(tx.root(), &[SCHEMA, ns, SNAPSHOTS, ss])? else {
                return Err(missing(key));
            };
            let Some(b) = sb.bucket(key.as_bytes()).b()? else {
                return Err(missing(key));
            };
            if !is_empty(b.bucket(CHILDREN).b()?)? {
                return Err(Error::failed_precondition(format!(
                    "cannot remove snapshot {key:?} with child"
                )));
            }
            let parent = lossy(b.get(PARENT).b()?.unwrap_or_default());
            if !parent.is_empty() {
                let Some(pb) = open_path(tx, &[SCHEMA, ns, SNAPSHOTS, ss, parent.as_bytes()])?
                else {
                    return Err(Error::not_found(format!(
                        "parent snapshot {parent} does not exist"
                    )));
                };
                if let Some(mut cb) = child(pb, CHILDREN)? {
                    cb.delete(key.as_bytes()).b()?;
                }
            }
            let mut sb = open_path(tx, &[SCHEMA, ns, SNAPSHOTS, ss])?
                .ok_or_else(|| Error::unknown("snapshotter bucket vanished"))?;
            sb.delete_bucket(key.as_bytes()).b()?;
            self.remove_lease(tx, key)?;
            self.db.mark_snapshotter_dirty(&self.name);
            Ok(())
        })
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
        let filter = Filter::parse_all(filters)?;
        let mut recs = Vec::new();
        {
            let tx = self.db.read()?;
            if let Some(sb) = get_path(
                tx.root(),
                &[SCHEMA, self.ns.as_bytes(), SNAPSHOTS, self.name.as_bytes()],
            )? {
                for k in bucket_names(sb)? {
                    if let Some(b) = sb.bucket(&k).b()? {
                        recs.push((lossy(&k), read_record(b)?));
                    }
                }
            }
        }
        for (key, r) in recs {
            let backend = match self.backend.stat(&r.bkey) {
                Ok(bi) => bi,
                // Removed from the backend behind our back: skip, as a walk racing a removal.
                Err(e) if e.is(ErrorKind::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let info = Info {
                kind: backend.kind,
                name: key,
                parent: r.parent,
                labels: overlay_labels(backend.labels, r.labels),
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            if filter.matches(&|p: &[&str]| adapt(&info, p)) {
                f(info)?;
            }
        }
        Ok(())
    }

    /// Passes on to the backend: records removed from meta.db are reclaimed by the collector,
    /// and what the backend itself left behind by its own cleanup.
    fn cleanup(&self) -> Result<()> {
        let _g = self.lock();
        self.backend.cleanup()
    }
}
