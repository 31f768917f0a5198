//! Garbage collection with containerd 1.6's semantics: mark from the roots (live leases and
//! what they hold, images, containers, unexpired ingests, `containerd.io/gc.root`) along the
//! edges (label refs, snapshot parents, ingest expected digests), remove every unmarked blob,
//! snapshot, lease and ingest record, then reclaim the backend objects no namespace records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use stowage_bolt::{Bucket, ReadTx, WriteTx};
use stowage_core_types::snapshot::{Info as SnapInfo, Snapshotter};
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

/// A record named by a root, a lease or another record's fields, resolved to its number once
/// the namespace's records are all known. Keys borrow from the read transaction.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// A record already numbered.
    Record(u32),
    /// `content/blob/<digest>`.
    Content(&'a [u8]),
    /// `snapshots/<snapshotter>/<key>`.
    Snapshot(&'a [u8], &'a [u8]),
    /// `content/ingests/<ref>`.
    Ingest(&'a [u8]),
}

/// An edge out of a record.
#[derive(Debug, Clone, Copy)]
struct Edge<'a> {
    target: Target<'a>,
    /// A snapshot's parent: followed from flat nodes too, and the parent inherits flatness.
    /// Every other edge (label refs, an ingest's expected digest) is followed only from
    /// normal nodes and marks its target normal.
    parent: bool,
}

/// One collectable record of a namespace.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    kind: ResourceKind,
    /// The snapshotter, for snapshots.
    snapshotter: &'a [u8],
    key: &'a [u8],
}

/// A namespace's collectable records as a graph, built by walking each bucket once in key
/// order (no per-record search from the top, which made the pass slow and cache-hostile at
/// 100k records). Records are numbered in containerd's scan order (leases, snapshots per
/// snapshotter, ingests, blobs), so removal order is number order.
#[derive(Default)]
struct Graph<'a> {
    records: Vec<Record<'a>>,
    /// `edge_start[i]..edge_start[i + 1]` are record `i`'s edges (one extra entry at the end
    /// once the scan is done).
    edge_start: Vec<usize>,
    edges: Vec<Edge<'a>>,
    /// Roots and whether they are flat (held by a `gc.flat` lease).
    roots: Vec<(Target<'a>, bool)>,
    content: KeyMap<&'a [u8]>,
    snapshots: KeyMap<(&'a [u8], &'a [u8])>,
    ingests: KeyMap<&'a [u8]>,
}

/// Record numbers by key.
type KeyMap<K> = HashMap<K, u32, BuildHasherDefault<KeyHasher>>;

/// A multiply-rotate hash (as rustc's FxHash, with a finaliser) for record keys. The maps
/// hold keys of the local database only, so SipHash's flooding resistance buys nothing, and
/// it was a quarter of the mark's time at 100k records.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply only carries upwards, so the low bits (the table index) would depend
        // on the low bytes of each word alone: keys differing only near their end, as
        // digests of consecutive numbers do, would collide. Murmur3's finaliser mixes the
        // high bits back down.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl<'a> Graph<'a> {
    fn add(&mut self, kind: ResourceKind, snapshotter: &'a [u8], key: &'a [u8]) -> Result<u32> {
        let id = u32::try_from(self.records.len())
            .map_err(|_| Error::resource_exhausted("more than 4 billion records in a namespace"))?;
        self.records.push(Record {
            kind,
            snapshotter,
            key,
        });
        self.edge_start.push(self.edges.len());
        match kind {
            ResourceKind::Content => {
                self.content.insert(key, id);
            }
            ResourceKind::Snapshot => {
                self.snapshots.insert((snapshotter, key), id);
            }
            ResourceKind::Ingest => {
                self.ingests.insert(key, id);
            }
            ResourceKind::Lease => {}
        }
        Ok(id)
    }

    /// An edge out of the record added last.
    fn edge(&mut self, target: Target<'a>, parent: bool) {
        self.edges.push(Edge { target, parent });
    }

    /// The record `t` names, if it exists (a dangling reference holds nothing).
    fn resolve(&self, t: Target<'a>) -> Option<u32> {
        match t {
            Target::Record(id) => Some(id),
            Target::Content(k) => self.content.get(k).copied(),
            Target::Snapshot(ss, k) => self.snapshots.get(&(ss, k)).copied(),
            Target::Ingest(k) => self.ingests.get(k).copied(),
        }
    }

    /// Marks everything reachable from the roots (depth first, as containerd's tricolor) and
    /// returns the numbers of the records left unmarked, in order.
    fn unreachable(&mut self) -> Result<Vec<u32>> {
        // A record is visited at most once as a flat node and once as a normal one; both
        // count as reachable.
        const NORMAL: u8 = 1;
        const FLAT: u8 = 2;
        let n = self.records.len();
        self.edge_start.push(self.edges.len());
        let dst: Vec<Option<u32>> = self.edges.iter().map(|e| self.resolve(e.target)).collect();
        let mut bits = vec![0u8; n];
        let mut grays: Vec<(u32, bool)> = self
            .roots
            .iter()
            .filter_map(|&(t, flat)| self.resolve(t).map(|id| (id, flat)))
            .collect();
        while let Some((id, flat)) = grays.pop() {
            let i = id as usize;
            let bit = if flat { FLAT } else { NORMAL };
            let Some(b) = bits.get_mut(i) else {
                return Err(Error::unknown(format!("gc: record {id} out of range")));
            };
            if *b & bit != 0 {
                continue;
            }
            *b |= bit;
            let (from, to) = (self.edge_start[i], self.edge_start[i + 1]);
            for (e, d) in self.edges[from..to].iter().zip(&dst[from..to]) {
                let Some(d) = *d else { continue };
                let next = if e.parent {
                    (d, flat)
                } else if !flat {
                    (d, false)
                } else {
                    continue;
                };
                let nbit = if next.1 { FLAT } else { NORMAL };
                if bits[d as usize] & nbit == 0 {
                    grays.push(next);
                }
            }
        }
        Ok((0..n as u32).filter(|&i| bits[i as usize] == 0).collect())
    }
}

/// Calls `f` with each nested bucket of `b` in key order, opened at the cursor position.
fn for_each_bucket<'a>(
    b: Option<Bucket<'a>>,
    mut f: impl FnMut(&'a [u8], Bucket<'a>) -> Result<()>,
) -> Result<()> {
    let Some(b) = b else {
        return Ok(());
    };
    let mut c = b.cursor();
    let mut e = c.first().b()?;
    while let Some((k, v)) = e {
        if v.is_none() {
            if let Some(child) = c.bucket().b()? {
                f(k, child)?;
            }
        }
        e = c.next().b()?;
    }
    Ok(())
}

/// Calls `f` with every key of `b` (values and buckets) in key order.
fn for_each_key<'a>(b: Option<Bucket<'a>>, mut f: impl FnMut(&'a [u8])) -> Result<()> {
    let Some(b) = b else {
        return Ok(());
    };
    let mut c = b.cursor();
    let mut e = c.first().b()?;
    while let Some((k, _)) = e {
        f(k);
        e = c.next().b()?;
    }
    Ok(())
}

/// Sends the label refs of an object's `labels` bucket to `out`.
fn label_refs<'a>(labels: Option<Bucket<'a>>, out: &mut impl FnMut(Target<'a>)) -> Result<()> {
    let Some(lb) = labels else {
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
            // A nested bucket under a label key names nothing.
            out(Target::Content(v.unwrap_or_default()));
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
        out(Target::Snapshot(ss, v.unwrap_or_default()));
        e = c.next().b()?;
    }
    Ok(())
}

/// Whether an object's `labels` bucket makes it a root.
fn is_root(labels: Option<Bucket<'_>>) -> Result<bool> {
    Ok(match labels {
        Some(lb) => lb.get(LABEL_GC_ROOT.as_bytes()).b()?.is_some(),
        None => false,
    })
}

/// Builds the graph of namespace bucket `nb`: its records, their edges and its roots.
fn scan_namespace<'a>(nb: Bucket<'a>, now: SystemTime) -> Result<Graph<'a>> {
    let mut g = Graph::default();
    for_each_bucket(nb.bucket(LEASES).b()?, |id, lb| {
        let lease = g.add(ResourceKind::Lease, b"", id)?;
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
        g.roots.push((Target::Record(lease), false));
        for_each_key(lb.bucket(CONTENT).b()?, |k| {
            g.roots.push((Target::Content(k), flat));
        })?;
        for_each_bucket(lb.bucket(SNAPSHOTS).b()?, |ss, sb| {
            for_each_key(Some(sb), |k| g.roots.push((Target::Snapshot(ss, k), flat)))
        })?;
        for_each_key(lb.bucket(INGESTS).b()?, |k| {
            g.roots.push((Target::Ingest(k), false));
        })
    })?;
    for_each_bucket(nb.bucket(SNAPSHOTS).b()?, |ss, sb| {
        for_each_bucket(Some(sb), |k, kb| {
            let id = g.add(ResourceKind::Snapshot, ss, k)?;
            let labels = kb.bucket(LABELS).b()?;
            if is_root(labels)? {
                g.roots.push((Target::Record(id), false));
            }
            if let Some(p) = kb.get(PARENT).b()?.filter(|p| !p.is_empty()) {
                g.edge(Target::Snapshot(ss, p), true);
            }
            label_refs(labels, &mut |t| g.edge(t, false))
        })
    })?;
    let cb = nb.bucket(CONTENT).b()?;
    if let Some(cb) = cb {
        for_each_bucket(cb.bucket(INGESTS).b()?, |r, ib| {
            let id = g.add(ResourceKind::Ingest, b"", r)?;
            if read_time(ib, EXPIRE_AT)?.is_some_and(|t| t > now) {
                g.roots.push((Target::Record(id), false));
            }
            if let Some(e) = ib.get(EXPECTED).b()?.filter(|e| !e.is_empty()) {
                g.edge(Target::Content(e), false);
            }
            Ok(())
        })?;
        for_each_bucket(cb.bucket(BLOB).b()?, |d, bb| {
            let id = g.add(ResourceKind::Content, b"", d)?;
            let labels = bb.bucket(LABELS).b()?;
            if is_root(labels)? {
                g.roots.push((Target::Record(id), false));
            }
            label_refs(labels, &mut |t| g.edge(t, false))
        })?;
    }
    for_each_bucket(nb.bucket(IMAGES).b()?, |_, ib| {
        if let Some(t) = ib.bucket(TARGET).b()? {
            let d = t.get(DIGEST).b()?.unwrap_or_default();
            g.roots.push((Target::Content(d), false));
        }
        label_refs(ib.bucket(LABELS).b()?, &mut |t| g.roots.push((t, false)))
    })?;
    for_each_bucket(nb.bucket(CONTAINERS).b()?, |_, cb| {
        let ss = cb.get(SNAPSHOTTER).b()?.unwrap_or_default();
        if !ss.is_empty() {
            let key = cb.get(SNAPSHOT_KEY).b()?.unwrap_or_default();
            g.roots.push((Target::Snapshot(ss, key), false));
        }
        label_refs(cb.bucket(LABELS).b()?, &mut |t| g.roots.push((t, false)))
    })?;
    Ok(g)
}

/// Records to remove that share one parent bucket, in key order.
struct Doomed {
    /// The parent bucket's path from the top level.
    parent: Vec<Vec<u8>>,
    names: Vec<Vec<u8>>,
}

/// Marks every namespace and returns what to remove: the nodes in containerd's scan order,
/// and the same records grouped by parent bucket.
fn mark(tx: &ReadTx, now: SystemTime) -> Result<(Vec<Node>, Vec<Doomed>)> {
    let mut removed = Vec::new();
    let mut doomed: Vec<Doomed> = Vec::new();
    let Some(v1) = tx.bucket(SCHEMA).b()? else {
        return Ok((removed, doomed));
    };
    for_each_bucket(Some(v1), |nsk, nb| {
        let mut g = scan_namespace(nb, now)?;
        let ns = lossy(nsk);
        let mut last: Option<(ResourceKind, &[u8])> = None;
        for id in g.unreachable()? {
            let r = g.records[id as usize];
            if last != Some((r.kind, r.snapshotter)) {
                let parent: &[&[u8]] = match r.kind {
                    ResourceKind::Lease => &[SCHEMA, nsk, LEASES],
                    ResourceKind::Snapshot => &[SCHEMA, nsk, SNAPSHOTS, r.snapshotter],
                    ResourceKind::Ingest => &[SCHEMA, nsk, CONTENT, INGESTS],
                    ResourceKind::Content => &[SCHEMA, nsk, CONTENT, BLOB],
                };
                doomed.push(Doomed {
                    parent: parent.iter().map(|p| p.to_vec()).collect(),
                    names: Vec::new(),
                });
                last = Some((r.kind, r.snapshotter));
            }
            if let Some(d) = doomed.last_mut() {
                d.names.push(r.key.to_vec());
            }
            let key = match r.kind {
                ResourceKind::Snapshot => format!("{}/{}", lossy(r.snapshotter), lossy(r.key)),
                _ => lossy(r.key),
            };
            removed.push(Node {
                kind: r.kind,
                namespace: ns.clone(),
                key,
            });
        }
        Ok(())
    })?;
    Ok((removed, doomed))
}

/// Deletes the doomed records, opening each parent bucket once and deleting in key order.
fn remove_all(tx: &mut WriteTx, doomed: &[Doomed]) -> Result<()> {
    for d in doomed {
        let path: Vec<&[u8]> = d.parent.iter().map(Vec::as_slice).collect();
        if let Some(mut b) = open_path(tx, &path)? {
            for name in &d.names {
                b.delete_bucket(name).b()?;
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
            // Writers are blocked from here to the sweep's commit, so what the read
            // transaction finds unreachable is exactly what the write transaction removes.
            let (removed, doomed) = {
                let tx = self.read()?;
                mark(&tx, SystemTime::now())?
            };
            stats.mark_duration = t0.elapsed();
            if !doomed.is_empty() {
                self.update_locked(|tx| remove_all(tx, &doomed))?;
            }
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
        // A backend whose sweep stopped on an error stays dirty, with every backend not yet
        // swept, so the next collection tries again: otherwise its orphans (start-up recovery
        // relies on this sweep) would stay until some later removal marked it dirty again.
        if content {
            if let Err(e) = self.collect_content(&mut stats) {
                self.remark_dirty(true, snapshotters);
                return Err(e);
            }
        }
        let mut left = snapshotters;
        while let Some(ss) = left.pop_first() {
            if let Err(e) = self.collect_snapshotter(&ss, &mut stats) {
                left.insert(ss);
                self.remark_dirty(false, left);
                return Err(e);
            }
        }
        stats.duration = t0.elapsed();
        Ok(stats)
    }

    /// Marks backends dirty again after a collection could not sweep them.
    fn remark_dirty(&self, content: bool, snapshotters: std::collections::BTreeSet<String>) {
        let mut dirty = self
            .inner
            .dirty_backends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        dirty.content |= content;
        dirty.snapshotters.extend(snapshotters);
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
        let mut doomed = Vec::new();
        let mut aborted = Vec::new();
        {
            // Record keys are borrowed from the read transaction, not copied.
            let tx = self.read()?;
            let mut content_seen: HashSet<&[u8]> = HashSet::new();
            let mut ingest_seen: HashSet<&[u8]> = HashSet::new();
            for_each_bucket(tx.bucket(SCHEMA).b()?, |_, nb| {
                let Some(cb) = nb.bucket(CONTENT).b()? else {
                    return Ok(());
                };
                for_each_bucket(cb.bucket(BLOB).b()?, |d, _| {
                    content_seen.insert(d);
                    Ok(())
                })?;
                for_each_bucket(cb.bucket(INGESTS).b()?, |_, ib| {
                    if let Some(e) = ib.get(EXPECTED).b()?.filter(|e| !e.is_empty()) {
                        content_seen.insert(e);
                    }
                    if let Some(r) = ib.get(REF).b()?.filter(|r| !r.is_empty()) {
                        ingest_seen.insert(r);
                    }
                    Ok(())
                })
            })?;
            backend.walk(
                &mut |i| {
                    if !content_seen.contains(i.digest.as_str().as_bytes()) {
                        doomed.push(i.digest);
                    }
                    Ok(())
                },
                &[],
            )?;
            for st in backend.list_statuses(&[])? {
                if !ingest_seen.contains(st.reference.as_bytes()) {
                    aborted.push(st.reference);
                }
            }
        }
        for d in doomed {
            match backend.delete(&d) {
                Err(e) if !e.is(ErrorKind::NotFound) => return Err(e),
                _ => stats.content_deleted.push(d),
            }
        }
        for r in aborted {
            match backend.abort(&r) {
                Err(e) if !e.is(ErrorKind::NotFound) => return Err(e),
                _ => stats.ingests_aborted.push(r),
            }
        }
        Ok(())
    }

    /// Removes backend snapshots no namespace records, children before parents, then runs
    /// the snapshotter's cleanup. Snapshots a crash left between the backend's commit and
    /// meta.db's go the same way, at the first collection (every backend starts dirty).
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
        let mut parents: HashMap<String, String> = HashMap::new();
        backend.walk(
            &mut |i: SnapInfo| {
                parents.insert(i.name, i.parent);
                Ok(())
            },
            &[],
        )?;
        let removed = remove_unreferenced(backend.as_ref(), &parents, &seen)?;
        backend.cleanup()?;
        stats.snapshots_removed.insert(name.to_string(), removed);
        Ok(())
    }
}

/// Removes the snapshots of `parents` (backend key → parent key) that neither `seen` names
/// nor a seen snapshot descends from, each once all its children are gone: one attempt per
/// snapshot, no retry passes. Returns the removed keys.
fn remove_unreferenced(
    backend: &dyn Snapshotter,
    parents: &HashMap<String, String>,
    seen: &HashSet<String>,
) -> Result<Vec<String>> {
    let parent_of = |k: &str| parents.get(k).map(String::as_str).filter(|p| !p.is_empty());
    // Children each snapshot still has. A parent the walk did not list gets no count and
    // ends the chain; members of a cycle in a corrupt backend never reach zero.
    let mut children: HashMap<&str, usize> = parents.keys().map(|k| (k.as_str(), 0)).collect();
    for k in parents.keys() {
        if let Some(n) = parent_of(k).and_then(|p| children.get_mut(p)) {
            *n += 1;
        }
    }
    // The leaves, sorted so the order does not depend on hashing; a stack, not recursion,
    // since chains can be hundreds deep.
    let mut ready: Vec<&str> = children
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    ready.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    while let Some(k) = ready.pop() {
        // What stays keeps its parent, so a kept snapshot's layers are never attempted, nor
        // the parent of one whose removal was refused (the backend would refuse it too).
        if seen.contains(k) {
            continue;
        }
        match backend.remove(k) {
            Ok(()) => removed.push(k.to_string()),
            // Gone already: its parent may go all the same.
            Err(e) if e.is(ErrorKind::NotFound) => {}
            // A child created since the walk holds it: the next sweep sees.
            Err(e) if e.is(ErrorKind::FailedPrecondition) => continue,
            Err(e) => return Err(e.context(format!("removing unreferenced snapshot {k}"))),
        }
        if let Some(p) = parent_of(k) {
            if let Some(n) = children.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    ready.push(p);
                }
            }
        }
    }
    Ok(removed)
}
