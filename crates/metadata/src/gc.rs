//! Garbage collection with containerd 1.6's semantics: mark from the roots (live leases and
//! what they hold, images, containers, unexpired ingests, `containerd.io/gc.root`) along the
//! edges (label refs, snapshot parents, ingest expected digests), remove every unmarked blob,
//! snapshot, lease and ingest record, then reclaim the backend objects no namespace records.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use stowage_bolt::{Bucket, ReadTx, WriteTx};
use stowage_core_types::snapshot::Info as SnapInfo;
use stowage_core_types::{Digest, Error, ErrorKind, Result};

use crate::db::Db;
use crate::leases::{parse_rfc3339, LABEL_GC_EXPIRE, LABEL_GC_FLAT};
use crate::schema::*;

/// The label that makes a blob or snapshot a root.
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
/// Prefix of labels referencing content (followed by nothing, `.…` or `/…`).
pub const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels referencing a snapshot: `…snapshot.<snapshotter>[/…]`.
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// Kinds of collectable resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A blob record (`content/blob/<digest>`).
    Content,
    /// A snapshot record; the key is `<snapshotter>/<key>`.
    Snapshot,
    /// A lease.
    Lease,
    /// An ingest record (`content/ingests/<ref>`).
    Ingest,
}

/// One collectable resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// What it is.
    pub kind: ResourceKind,
    /// Its namespace.
    pub namespace: String,
    /// Digest, `<snapshotter>/<key>`, lease id or ingest ref.
    pub key: String,
}

/// A node while marking: flat nodes (held by a `gc.flat` lease) follow fewer edges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Mark {
    node: Node,
    flat: bool,
}

fn node(kind: ResourceKind, ns: &str, key: impl Into<String>) -> Node {
    Node {
        kind,
        namespace: ns.to_string(),
        key: key.into(),
    }
}

/// What one collection did.
#[derive(Debug, Clone, Default)]
pub struct GcStats {
    /// Records removed from meta.db, in removal order.
    pub removed: Vec<Node>,
    /// Blobs deleted from the content backend.
    pub content_deleted: Vec<Digest>,
    /// Backend ingests aborted (backend refs).
    pub ingests_aborted: Vec<String>,
    /// Backend snapshots removed, by snapshotter (backend keys).
    pub snapshots_removed: BTreeMap<String, Vec<String>>,
    /// Time spent marking.
    pub mark_duration: Duration,
    /// Time spent with writers blocked (mark and record sweep).
    pub meta_duration: Duration,
    /// Total time.
    pub duration: Duration,
}

/// Sends the label refs of an object's `labels` bucket to `out`.
fn label_refs(ns: &str, obj: Bucket<'_>, out: &mut Vec<Mark>, flat: bool) -> Result<()> {
    let Some(lb) = obj.bucket(LABELS).b()? else {
        return Ok(());
    };
    let cref = LABEL_GC_REF_CONTENT.as_bytes();
    let mut c = lb.cursor();
    let mut e = c.seek(cref).b()?;
    while let Some((k, v)) = e {
        if !k.starts_with(cref) {
            break;
        }
        // Only the prefix itself or the prefix followed by `.` or `/` counts.
        let counts = k.len() == cref.len() || matches!(k[cref.len()], b'.' | b'/');
        if counts {
            out.push(Mark {
                node: node(ResourceKind::Content, ns, lossy(v.unwrap_or_default())),
                flat,
            });
        }
        e = c.next().b()?;
    }
    let sref = LABEL_GC_REF_SNAPSHOT.as_bytes();
    let mut e = c.seek(sref).b()?;
    while let Some((k, v)) = e {
        if !k.starts_with(sref) {
            break;
        }
        let rest = &k[sref.len()..];
        let ss = match rest.iter().position(|&b| b == b'/') {
            Some(i) => &rest[..i],
            None => rest,
        };
        out.push(Mark {
            node: node(
                ResourceKind::Snapshot,
                ns,
                format!("{}/{}", lossy(ss), lossy(v.unwrap_or_default())),
            ),
            flat,
        });
        e = c.next().b()?;
    }
    Ok(())
}

fn is_root(obj: Bucket<'_>) -> Result<bool> {
    Ok(match obj.bucket(LABELS).b()? {
        Some(lb) => lb.get(LABEL_GC_ROOT.as_bytes()).b()?.is_some(),
        None => false,
    })
}

fn for_each_bucket<'a>(
    b: Option<Bucket<'a>>,
    mut f: impl FnMut(&[u8], Bucket<'a>) -> Result<()>,
) -> Result<()> {
    let Some(b) = b else {
        return Ok(());
    };
    for name in bucket_names(b)? {
        if let Some(child) = b.bucket(&name).b()? {
            f(&name, child)?;
        }
    }
    Ok(())
}

fn scan_roots(tx: &ReadTx, now: SystemTime) -> Result<Vec<Mark>> {
    let mut roots = Vec::new();
    let Some(v1) = tx.bucket(SCHEMA).b()? else {
        return Ok(roots);
    };
    for nsk in bucket_names(v1)? {
        let Some(nb) = v1.bucket(&nsk).b()? else {
            continue;
        };
        let ns = lossy(&nsk);
        let ns = ns.as_str();
        for_each_bucket(nb.bucket(LEASES).b()?, |id, lb| {
            let mut flat = false;
            if let Some(labels) = lb.bucket(LABELS).b()? {
                if let Some(exp) = labels.get(LABEL_GC_EXPIRE.as_bytes()).b()? {
                    // An unparsable expiry is ignored: the lease stays a root.
                    if let Some(t) = parse_rfc3339(&lossy(exp)) {
                        if now > t {
                            return Ok(());
                        }
                    }
                }
                flat = labels.get(LABEL_GC_FLAT.as_bytes()).b()?.is_some();
            }
            roots.push(Mark {
                node: node(ResourceKind::Lease, ns, lossy(id)),
                flat: false,
            });
            if let Some(cb) = lb.bucket(CONTENT).b()? {
                for k in keys(cb)? {
                    roots.push(Mark {
                        node: node(ResourceKind::Content, ns, lossy(&k)),
                        flat,
                    });
                }
            }
            for_each_bucket(lb.bucket(SNAPSHOTS).b()?, |ss, sb| {
                for k in keys(sb)? {
                    roots.push(Mark {
                        node: node(
                            ResourceKind::Snapshot,
                            ns,
                            format!("{}/{}", lossy(ss), lossy(&k)),
                        ),
                        flat,
                    });
                }
                Ok(())
            })?;
            if let Some(ib) = lb.bucket(INGESTS).b()? {
                for k in keys(ib)? {
                    roots.push(Mark {
                        node: node(ResourceKind::Ingest, ns, lossy(&k)),
                        flat: false,
                    });
                }
            }
            Ok(())
        })?;
        for_each_bucket(nb.bucket(IMAGES).b()?, |_, ib| {
            if let Some(t) = ib.bucket(TARGET).b()? {
                let d = lossy(t.get(DIGEST).b()?.unwrap_or_default());
                roots.push(Mark {
                    node: node(ResourceKind::Content, ns, d),
                    flat: false,
                });
            }
            label_refs(ns, ib, &mut roots, false)
        })?;
        if let Some(cb) = nb.bucket(CONTENT).b()? {
            for_each_bucket(cb.bucket(INGESTS).b()?, |r, ib| {
                if let Some(t) = read_time(ib, EXPIRE_AT)? {
                    if t > now {
                        roots.push(Mark {
                            node: node(ResourceKind::Ingest, ns, lossy(r)),
                            flat: false,
                        });
                    }
                }
                Ok(())
            })?;
            for_each_bucket(cb.bucket(BLOB).b()?, |d, bb| {
                if is_root(bb)? {
                    roots.push(Mark {
                        node: node(ResourceKind::Content, ns, lossy(d)),
                        flat: false,
                    });
                }
                Ok(())
            })?;
        }
        for_each_bucket(nb.bucket(CONTAINERS).b()?, |_, cb| {
            let ss = lossy(cb.get(SNAPSHOTTER).b()?.unwrap_or_default());
            if !ss.is_empty() {
                let key = lossy(cb.get(SNAPSHOT_KEY).b()?.unwrap_or_default());
                roots.push(Mark {
                    node: node(ResourceKind::Snapshot, ns, format!("{ss}/{key}")),
                    flat: false,
                });
            }
            label_refs(ns, cb, &mut roots, false)
        })?;
        for_each_bucket(nb.bucket(SNAPSHOTS).b()?, |ss, sb| {
            for_each_bucket(Some(sb), |k, kb| {
                if is_root(kb)? {
                    roots.push(Mark {
                        node: node(
                            ResourceKind::Snapshot,
                            ns,
                            format!("{}/{}", lossy(ss), lossy(k)),
                        ),
                        flat: false,
                    });
                }
                Ok(())
            })
        })?;
    }
    Ok(roots)
}

/// Parent buckets (`content/blob`, `content/ingests`, `snapshots/<ss>` of a namespace),
/// opened once per collection rather than from the root for every node.
struct Parents<'a> {
    root: Bucket<'a>,
    cache: HashMap<(ResourceKind, String, String), Option<Bucket<'a>>>,
}

impl<'a> Parents<'a> {
    fn get(&mut self, kind: ResourceKind, ns: &str, ss: &str) -> Result<Option<Bucket<'a>>> {
        let key = (kind, ns.to_string(), ss.to_string());
        if let Some(b) = self.cache.get(&key) {
            return Ok(*b);
        }
        let nsb = ns.as_bytes();
        let b = match kind {
            ResourceKind::Content => get_path(self.root, &[SCHEMA, nsb, CONTENT, BLOB])?,
            ResourceKind::Ingest => get_path(self.root, &[SCHEMA, nsb, CONTENT, INGESTS])?,
            ResourceKind::Snapshot => {
                get_path(self.root, &[SCHEMA, nsb, SNAPSHOTS, ss.as_bytes()])?
            }
            ResourceKind::Lease => get_path(self.root, &[SCHEMA, nsb, LEASES])?,
        };
        self.cache.insert(key, b);
        Ok(b)
    }
}

fn references(parents: &mut Parents<'_>, m: &Mark, out: &mut Vec<Mark>) -> Result<()> {
    let ns = m.node.namespace.as_str();
    match m.node.kind {
        ResourceKind::Content => {
            if m.flat {
                return Ok(());
            }
            if let Some(p) = parents.get(ResourceKind::Content, ns, "")? {
                if let Some(b) = p.bucket(m.node.key.as_bytes()).b()? {
                    label_refs(ns, b, out, false)?;
                }
            }
        }
        ResourceKind::Snapshot => {
            let Some((ss, key)) = m.node.key.split_once('/') else {
                return Err(Error::data_loss(format!(
                    "invalid snapshot gc key {}",
                    m.node.key
                )));
            };
            let Some(p) = parents.get(ResourceKind::Snapshot, ns, ss)? else {
                return Ok(());
            };
            if let Some(b) = p.bucket(key.as_bytes()).b()? {
                if let Some(p) = b.get(PARENT).b()?.filter(|p| !p.is_empty()) {
                    out.push(Mark {
                        node: node(ResourceKind::Snapshot, ns, format!("{ss}/{}", lossy(p))),
                        flat: m.flat,
                    });
                }
                if !m.flat {
                    label_refs(ns, b, out, false)?;
                }
            }
        }
        ResourceKind::Ingest => {
            if let Some(p) = parents.get(ResourceKind::Ingest, ns, "")? {
                if let Some(b) = p.bucket(m.node.key.as_bytes()).b()? {
                    if let Some(e) = b.get(EXPECTED).b()?.filter(|e| !e.is_empty()) {
                        out.push(Mark {
                            node: node(ResourceKind::Content, ns, lossy(e)),
                            flat: false,
                        });
                    }
                }
            }
        }
        ResourceKind::Lease => {}
    }
    Ok(())
}

/// Marks everything reachable from the roots (depth first, as containerd's tricolor).
fn mark(tx: &ReadTx, now: SystemTime) -> Result<HashSet<Node>> {
    // A node is visited at most once as a flat node and once as a normal one; both count as
    // reachable.
    const NORMAL: u8 = 1;
    const FLAT: u8 = 2;
    let bit = |m: &Mark| if m.flat { FLAT } else { NORMAL };
    let mut grays = scan_roots(tx, now)?;
    let mut seen: HashMap<Node, u8> = HashMap::with_capacity(grays.len());
    let mut refs = Vec::new();
    let mut parents = Parents {
        root: tx.root(),
        cache: HashMap::new(),
    };
    while let Some(m) = grays.pop() {
        let b = bit(&m);
        match seen.get_mut(&m.node) {
            Some(bits) if *bits & b != 0 => continue,
            Some(bits) => *bits |= b,
            None => {
                seen.insert(m.node.clone(), b);
            }
        }
        refs.clear();
        references(&mut parents, &m, &mut refs)?;
        for r in refs.drain(..) {
            if seen.get(&r.node).is_none_or(|bits| bits & bit(&r) == 0) {
                grays.push(r);
            }
        }
    }
    Ok(seen.into_keys().collect())
}

/// Every collectable record, in containerd's scan order.
fn scan_all(tx: &WriteTx) -> Result<Vec<Node>> {
    let mut all = Vec::new();
    let Some(v1) = tx.bucket(SCHEMA).b()? else {
        return Ok(all);
    };
    for nsk in bucket_names(v1)? {
        let Some(nb) = v1.bucket(&nsk).b()? else {
            continue;
        };
        let ns = lossy(&nsk);
        for_each_bucket(nb.bucket(LEASES).b()?, |id, _| {
            all.push(node(ResourceKind::Lease, &ns, lossy(id)));
            Ok(())
        })?;
        for_each_bucket(nb.bucket(SNAPSHOTS).b()?, |ss, sb| {
            for k in bucket_names(sb)? {
                all.push(node(
                    ResourceKind::Snapshot,
                    &ns,
                    format!("{}/{}", lossy(ss), lossy(&k)),
                ));
            }
            Ok(())
        })?;
        if let Some(cb) = nb.bucket(CONTENT).b()? {
            for r in bucket_names_opt(cb.bucket(INGESTS).b()?)? {
                all.push(node(ResourceKind::Ingest, &ns, lossy(&r)));
            }
            for d in bucket_names_opt(cb.bucket(BLOB).b()?)? {
                all.push(node(ResourceKind::Content, &ns, lossy(&d)));
            }
        }
    }
    Ok(all)
}

fn bucket_names_opt(b: Option<Bucket<'_>>) -> Result<Vec<Vec<u8>>> {
    match b {
        Some(b) => bucket_names(b),
        None => Ok(Vec::new()),
    }
}

/// The parent bucket path and the child name of a node's record.
fn location(n: &Node) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
    let ns = n.namespace.as_bytes().to_vec();
    let owned = |p: &[&[u8]]| p.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
    Ok(match n.kind {
        ResourceKind::Content => (
            owned(&[SCHEMA, &ns, CONTENT, BLOB]),
            n.key.as_bytes().to_vec(),
        ),
        ResourceKind::Ingest => (
            owned(&[SCHEMA, &ns, CONTENT, INGESTS]),
            n.key.as_bytes().to_vec(),
        ),
        ResourceKind::Lease => (owned(&[SCHEMA, &ns, LEASES]), n.key.as_bytes().to_vec()),
        ResourceKind::Snapshot => {
            let Some((ss, key)) = n.key.split_once('/') else {
                return Err(Error::data_loss(format!(
                    "invalid snapshot gc key {}",
                    n.key
                )));
            };
            (
                owned(&[SCHEMA, &ns, SNAPSHOTS, ss.as_bytes()]),
                key.as_bytes().to_vec(),
            )
        }
    })
}

/// Deletes the records of `nodes`, opening each parent bucket once.
fn remove_all(tx: &mut WriteTx, nodes: &[Node]) -> Result<()> {
    let mut by_parent: BTreeMap<Vec<Vec<u8>>, Vec<Vec<u8>>> = BTreeMap::new();
    for n in nodes {
        let (parent, name) = location(n)?;
        by_parent.entry(parent).or_default().push(name);
    }
    for (parent, names) in by_parent {
        let path: Vec<&[u8]> = parent.iter().map(Vec::as_slice).collect();
        if let Some(mut b) = open_path(tx, &path)? {
            for name in names {
                b.delete_bucket(&name).b()?;
            }
        }
    }
    Ok(())
}

impl Db {
    /// Runs one garbage collection now and waits for it, backend cleanup included.
    pub fn collect(&self) -> Result<GcStats> {
        let t0 = Instant::now();
        let mut stats = GcStats::default();
        {
            let _w = self.inner.wlock.write().unwrap_or_else(|p| p.into_inner());
            let marked = {
                let tx = self.read()?;
                mark(&tx, SystemTime::now())?
            };
            stats.mark_duration = t0.elapsed();
            let removed = self.update_locked(|tx| {
                let removed: Vec<Node> = scan_all(tx)?
                    .into_iter()
                    .filter(|n| !marked.contains(n))
                    .collect();
                remove_all(tx, &removed)?;
                Ok(removed)
            })?;
            let mut dirty = self
                .inner
                .dirty_backends
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for n in &removed {
                match n.kind {
                    ResourceKind::Content | ResourceKind::Ingest => dirty.content = true,
                    ResourceKind::Snapshot => {
                        if let Some((ss, _)) = n.key.split_once('/') {
                            dirty.snapshotters.insert(ss.to_string());
                        }
                    }
                    ResourceKind::Lease => {}
                }
            }
            stats.removed = removed;
            self.inner.dirty.store(0, Ordering::Relaxed);
            stats.meta_duration = t0.elapsed();
        }
        let (content, snapshotters) = {
            let mut dirty = self
                .inner
                .dirty_backends
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut dirty.content),
                std::mem::take(&mut dirty.snapshotters),
            )
        };
        if content {
            self.collect_content(&mut stats)?;
        }
        for ss in snapshotters {
            self.collect_snapshotter(&ss, &mut stats)?;
        }
        stats.duration = t0.elapsed();
        Ok(stats)
    }

    /// Deletes backend blobs and ingests that no namespace records.
    fn collect_content(&self, stats: &mut GcStats) -> Result<()> {
        let Some(backend) = self.inner.content.clone() else {
            return Ok(());
        };
        let _l = self
            .inner
            .content_lock
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut content_seen = HashSet::new();
        let mut ingest_seen = HashSet::new();
        {
            let tx = self.read()?;
            if let Some(v1) = tx.bucket(SCHEMA).b()? {
                for ns in bucket_names(v1)? {
                    let Some(cb) = get_path(v1, &[&ns, CONTENT])? else {
                        continue;
                    };
                    content_seen.extend(bucket_names_opt(cb.bucket(BLOB).b()?)?);
                    for_each_bucket(cb.bucket(INGESTS).b()?, |_, ib| {
                        if let Some(e) = ib.get(EXPECTED).b()?.filter(|e| !e.is_empty()) {
                            content_seen.insert(e.to_vec());
                        }
                        if let Some(r) = ib.get(REF).b()?.filter(|r| !r.is_empty()) {
                            ingest_seen.insert(lossy(r));
                        }
                        Ok(())
                    })?;
                }
            }
        }
        let mut doomed = Vec::new();
        backend.walk(
            &mut |i| {
                if !content_seen.contains(i.digest.as_str().as_bytes()) {
                    doomed.push(i.digest);
                }
                Ok(())
            },
            &[],
        )?;
        for d in doomed {
            match backend.delete(&d) {
                Err(e) if !e.is(ErrorKind::NotFound) => return Err(e),
                _ => stats.content_deleted.push(d),
            }
        }
        for st in backend.list_statuses(&[])? {
            if !ingest_seen.contains(&st.reference) {
                match backend.abort(&st.reference) {
                    Err(e) if !e.is(ErrorKind::NotFound) => return Err(e),
                    _ => stats.ingests_aborted.push(st.reference),
                }
            }
        }
        Ok(())
    }

    /// Removes backend snapshots no namespace records, children before parents, then runs
    /// the snapshotter's cleanup.
    fn collect_snapshotter(&self, name: &str, stats: &mut GcStats) -> Result<()> {
        let Some(backend) = self.inner.snapshotters.get(name).cloned() else {
            return Ok(());
        };
        let lock = self.inner.snapshot_locks.get(name);
        let _l = lock.map(|l| l.write().unwrap_or_else(|p| p.into_inner()));
        let mut seen = HashSet::new();
        {
            let tx = self.read()?;
            if let Some(v1) = tx.bucket(SCHEMA).b()? {
                for ns in bucket_names(v1)? {
                    for_each_bucket(get_path(v1, &[&ns, SNAPSHOTS, name.as_bytes()])?, |_, b| {
                        if let Some(k) = b.get(NAME).b()?.filter(|k| !k.is_empty()) {
                            seen.insert(lossy(k));
                        }
                        Ok(())
                    })?;
                }
            }
        }
        let mut infos: BTreeMap<String, SnapInfo> = BTreeMap::new();
        backend.walk(
            &mut |i| {
                infos.insert(i.name.clone(), i);
                Ok(())
            },
            &[],
        )?;
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (k, i) in &infos {
            if i.parent.is_empty() || !infos.contains_key(&i.parent) {
                roots.push(k.clone());
            }
            if !i.parent.is_empty() {
                children
                    .entry(i.parent.clone())
                    .or_default()
                    .push(k.clone());
            }
        }
        // Post-order without recursion: children are pruned before their parent.
        let mut removed = Vec::new();
        let mut stack: Vec<(String, bool)> = roots.into_iter().rev().map(|r| (r, false)).collect();
        let mut visited = BTreeSet::new();
        while let Some((k, expanded)) = stack.pop() {
            if expanded {
                if !seen.contains(&k) {
                    match backend.remove(&k) {
                        Ok(()) => removed.push(k),
                        // A kept child still needs it.
                        Err(e) if e.is(ErrorKind::FailedPrecondition) => {}
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            if !visited.insert(k.clone()) {
                continue;
            }
            stack.push((k.clone(), true));
            for c in children.get(&k).into_iter().flatten().rev() {
                stack.push((c.clone(), false));
            }
        }
        backend.cleanup()?;
        stats.snapshots_removed.insert(name.to_string(), removed);
        Ok(())
    }
}
