//! Containers: `v1/<ns>/containers/<id>/` with spec, runtime and extensions as protobuf `Any`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use stowage_bolt::{Bucket, BucketMut};
use stowage_core_types::filters::{map_field, Filter};
use stowage_core_types::{fieldpath, namespace, Error, Labels, Result};

use crate::db::Db;
use crate::encoding::Any;
use crate::namespaces::check;
use crate::schema::*;

/// The runtime a container runs with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Runtime {
    /// Runtime name, e.g. `io.containerd.runc.v2`.
    pub name: String,
    /// Runtime options, e.g. `containerd.runc.v1.Options`.
    pub options: Option<Any>,
}

/// A container record (metadata only; no process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its id, an identifier like a namespace name.
    pub id: String,
    /// Its labels.
    pub labels: Labels,
    /// The image it was created from (a name; may be empty).
    pub image: String,
    /// Its runtime.
    pub runtime: Runtime,
    /// The OCI spec, as an `Any` of [`crate::SPEC_TYPE_URL`]. Required.
    pub spec: Option<Any>,
    /// The snapshotter of its root filesystem.
    pub snapshotter: String,
    /// The snapshot key of its root filesystem.
    pub snapshot_key: String,
    /// Set by the store.
    pub created_at: SystemTime,
    /// Set by the store.
    pub updated_at: SystemTime,
    /// Client extensions by name.
    pub extensions: BTreeMap<String, Any>,
}

impl Container {
    /// A container `id` with runtime `runtime` and `spec`, everything else empty.
    pub fn new(id: impl Into<String>, runtime: impl Into<String>, spec: Any) -> Container {
        Container {
            id: id.into(),
            labels: Labels::new(),
            image: String::new(),
            runtime: Runtime {
                name: runtime.into(),
                options: None,
            },
            spec: Some(spec),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            extensions: BTreeMap::new(),
        }
    }

    fn field(&self, path: &[&str]) -> Option<String> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match path {
            ["id"] => nonempty(&self.id),
            ["runtime", "name"] => nonempty(&self.runtime.name),
            ["image"] => nonempty(&self.image),
            ["labels", rest @ ..] if !self.labels.is_empty() => map_field(rest, &self.labels),
            _ => None,
        }
    }
}

/// The containers of one namespace.
#[derive(Debug, Clone)]
pub struct Containers {
    db: Db,
    ns: String,
}

impl Db {
    /// The container store of namespace `ns`.
    pub fn containers(&self, ns: &str) -> Result<Containers> {
        check(ns)?;
        Ok(Containers {
            db: self.clone(),
            ns: ns.to_string(),
        })
    }
}

fn validate(c: &Container) -> Result<()> {
    namespace::validate(&c.id).map_err(|e| e.context("container.ID"))?;
    if c.extensions.keys().any(|k| k.is_empty()) {
        return Err(Error::invalid_argument(
            "container.Extension keys must not be zero-length",
        ));
    }
    validate_labels("containers.Labels", &c.labels)?;
    if c.runtime.name.is_empty() {
        return Err(Error::invalid_argument(
            "container.Runtime.Name must be set",
        ));
    }
    if c.spec.is_none() {
        return Err(Error::invalid_argument("container.Spec must be set"));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::invalid_argument(
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ));
    }
    Ok(())
}

pub(crate) fn read_container(id: &str, b: Bucket<'_>) -> Result<Container> {
    let (created_at, updated_at) = read_timestamps(b)?;
    let ctx = |what: &str| format!("container {id:?} {what}");
    let spec = match b.get(SPEC).b()? {
        Some(v) => Some(Any::decode(v).map_err(|e| e.context(ctx("spec")))?),
        None => None,
    };
    let mut runtime = Runtime::default();
    if let Some(rb) = b.bucket(RUNTIME).b()? {
        runtime.name = lossy(rb.get(NAME).b()?.unwrap_or_default());
        if let Some(o) = rb.get(OPTIONS).b()? {
            runtime.options = Some(Any::decode(o).map_err(|e| e.context(ctx("runtime options")))?);
        }
    }
    let mut extensions = BTreeMap::new();
    if let Some(eb) = b.bucket(EXTENSIONS).b()? {
        let mut raw = Vec::new();
        eb.for_each(|k, v| {
            if let Some(v) = v {
                raw.push((lossy(k), v.to_vec()));
            }
            Ok::<(), stowage_bolt::Error>(())
        })
        .b()?;
        for (k, v) in raw {
            let any = Any::decode(&v).map_err(|e| e.context(ctx(&format!("extension {k:?}"))))?;
            extensions.insert(k, any);
        }
    }
    let text = |k: &[u8]| -> Result<String> { Ok(lossy(b.get(k).b()?.unwrap_or_default())) };
    Ok(Container {
        id: id.to_string(),
        labels: read_labels(b)?,
        image: text(IMAGE)?,
        runtime,
        spec,
        snapshotter: text(SNAPSHOTTER)?,
        snapshot_key: text(SNAPSHOT_KEY)?,
        created_at,
        updated_at,
        extensions,
    })
}

fn write_container(b: &mut BucketMut<'_>, c: &Container) -> Result<()> {
    write_timestamps(b, c.created_at, c.updated_at)?;
    if let Some(spec) = &c.spec {
        b.put(SPEC, &spec.encode()).b()?;
    }
    b.put(IMAGE, c.image.as_bytes()).b()?;
    b.put(SNAPSHOTTER, c.snapshotter.as_bytes()).b()?;
    b.put(SNAPSHOT_KEY, c.snapshot_key.as_bytes()).b()?;
    if b.bucket(RUNTIME).b()?.is_some() {
        b.delete_bucket(RUNTIME).b()?;
    }
    {
        let mut rb = b.create_bucket(RUNTIME).b()?;
        rb.put(NAME, c.runtime.name.as_bytes()).b()?;
        if let Some(o) = &c.runtime.options {
            rb.put(OPTIONS, &o.encode()).b()?;
        }
    }
    if !c.extensions.is_empty() {
        let mut eb = b.create_bucket_if_not_exists(EXTENSIONS).b()?;
        for (k, v) in &c.extensions {
            eb.put(k.as_bytes(), &v.encode()).b()?;
        }
    }
    write_labels(b, &c.labels)
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("container {id:?}"))
}

impl Containers {
    /// The container `id`; `NotFound` when absent.
    pub fn get(&self, id: &str) -> Result<Container> {
        let tx = self.db.read()?;
        let b = get_path(
            tx.root(),
            &[SCHEMA, self.ns.as_bytes(), CONTAINERS, id.as_bytes()],
        )?
        .ok_or_else(|| Error::not_found(format!("container {id:?} in namespace {:?}", self.ns)))?;
        read_container(id, b)
    }

    /// Containers matching any of `filters` (fields `id`, `runtime.name`, `image`,
    /// `labels.<k>`), in id order.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Container>> {
        let filter = Filter::parse_all(filters)?;
        let tx = self.db.read()?;
        let Some(cb) = get_path(tx.root(), &[SCHEMA, self.ns.as_bytes(), CONTAINERS])? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in bucket_names(cb)? {
            let Some(b) = cb.bucket(&id).b()? else {
                continue;
            };
            let c = read_container(&lossy(&id), b)?;
            if filter.matches(&|p: &[&str]| c.field(p)) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Creates a container; `AlreadyExists` if the id is taken.
    pub fn create(&self, mut c: Container) -> Result<Container> {
        validate(&c).map_err(|e| e.context("create container failed validation"))?;
        self.db.update(|tx| {
            let mut cb = create_path(tx, &[SCHEMA, self.ns.as_bytes(), CONTAINERS])?;
            if cb.bucket(c.id.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("container {:?}", c.id)));
            }
            let mut b = cb.create_bucket(c.id.as_bytes()).b()?;
            c.created_at = SystemTime::now();
            c.updated_at = c.created_at;
            write_container(&mut b, &c)
        })?;
        Ok(c)
    }

    /// Updates the fields named by `paths` (`labels`, `labels.<k>`, `spec`, `extensions`,
    /// `extensions.<k>`, `image`, `snapshotkey`). With no paths, all of those are replaced and
    /// the snapshotter and runtime name must be unchanged (they are immutable).
    pub fn update(&self, c: Container, paths: &[String]) -> Result<Container> {
        if c.id.is_empty() {
            return Err(Error::invalid_argument("must specify a container id"));
        }
        self.db.update(|tx| {
            let Some(mut b) = open_path(
                tx,
                &[SCHEMA, self.ns.as_bytes(), CONTAINERS, c.id.as_bytes()],
            )?
            else {
                return Err(not_found(&c.id));
            };
            let mut updated = read_container(&c.id, b.view())?;
            let created = updated.created_at;
            let default_paths: Vec<String>;
            let paths = if paths.is_empty() {
                if updated.snapshotter != c.snapshotter {
                    return Err(Error::invalid_argument(
                        "container.Snapshotter field is immutable",
                    ));
                }
                if updated.runtime.name != c.runtime.name {
                    return Err(Error::invalid_argument(
                        "container.Runtime.Name field is immutable",
                    ));
                }
                default_paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                &default_paths[..]
            } else {
                paths
            };
            for path in paths {
                if fieldpath::update_map_path(&mut updated.labels, &c.labels, path, "labels")? {
                    continue;
                }
                if let Some(key) = path.strip_prefix("extensions.") {
                    match c.extensions.get(key) {
                        Some(v) => {
                            updated.extensions.insert(key.to_string(), v.clone());
                        }
                        None => {
                            updated.extensions.remove(key);
                        }
                    }
                    continue;
                }
                match path.as_str() {
                    "spec" => updated.spec = c.spec.clone(),
                    "extensions" => updated.extensions = c.extensions.clone(),
                    "image" => updated.image = c.image.clone(),
                    "snapshotkey" => updated.snapshot_key = c.snapshot_key.clone(),
                    _ => {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {path:?} field on {:?}",
                            c.id
                        )))
                    }
                }
            }
            validate(&updated).map_err(|e| e.context("update failed validation"))?;
            updated.created_at = created;
            updated.updated_at = SystemTime::now();
            // Extensions are written by merging into the bucket, so a removal needs the bucket
            // rebuilt.
            if b.bucket(EXTENSIONS).b()?.is_some() {
                b.delete_bucket(EXTENSIONS).b()?;
            }
            write_container(&mut b, &updated)?;
            Ok(updated)
        })
    }

    /// Deletes container `id`; `NotFound` when absent.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.db.update(|tx| {
            let Some(mut cb) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), CONTAINERS])? else {
                return Err(not_found(id));
            };
            if cb.bucket(id.as_bytes()).b()?.is_none() {
                return Err(not_found(id));
            }
            cb.delete_bucket(id.as_bytes()).b()?;
            self.db.mark_dirty();
            Ok(())
        })
    }
}
