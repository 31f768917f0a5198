//! Namespaces: the buckets directly under `v1`, with optional labels.

use stowage_core_types::fieldpath;
use stowage_core_types::{namespace, Error, Labels, Result};

use crate::db::Db;
use crate::schema::*;

impl Db {
    /// Creates namespace `name` with `labels`. `AlreadyExists` if it exists. An explicitly
    /// created namespace always has a `labels` bucket, even an empty one, as in containerd.
    pub fn create_namespace(&self, name: &str, labels: &Labels) -> Result<()> {
        namespace::validate(name)?;
        validate_labels("namespace.Labels", labels)?;
        self.update(|tx| {
            let mut v1 = tx.create_bucket_if_not_exists(SCHEMA).b()?;
            if v1.bucket(name.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("namespace {name:?}")));
            }
            let mut nb = v1.create_bucket(name.as_bytes()).b()?;
            let mut lb = nb.create_bucket(LABELS).b()?;
            for (k, v) in labels {
                lb.put(k.as_bytes(), v.as_bytes()).b()?;
            }
            Ok(())
        })
    }

    /// Lists namespaces in name order.
    pub fn list_namespaces(&self) -> Result<Vec<String>> {
        let tx = self.read()?;
        match tx.bucket(SCHEMA).b()? {
            None => Ok(Vec::new()),
            Some(v1) => Ok(bucket_names(v1)?.iter().map(|n| lossy(n)).collect()),
        }
    }

    /// The labels of namespace `name`; `NotFound` if it does not exist.
    pub fn namespace_labels(&self, name: &str) -> Result<Labels> {
        let tx = self.read()?;
        match get_path(tx.root(), &[SCHEMA, name.as_bytes()])? {
            None => Err(Error::not_found(format!("namespace {name:?}"))),
            Some(nb) => read_labels(nb),
        }
    }

    /// Sets one label of namespace `name` (creating the namespace, as containerd does); an
    /// empty value removes the label.
    pub fn set_namespace_label(&self, name: &str, key: &str, value: &str) -> Result<()> {
        namespace::validate(name)?;
        stowage_core_types::labels::validate(key, value)
            .map_err(|e| e.context("namespace.Labels"))?;
        self.update(|tx| {
            let mut lb = create_path(tx, &[SCHEMA, name.as_bytes(), LABELS])?;
            if value.is_empty() {
                lb.delete(key.as_bytes()).b()
            } else {
                lb.put(key.as_bytes(), value.as_bytes()).b()
            }
        })
    }

    /// Updates the labels of existing namespace `name` by field paths (`labels`,
    /// `labels.<key>`; none replaces all) and returns the result.
    pub fn update_namespace(
        &self,
        name: &str,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Labels> {
        namespace::validate(name)?;
        self.update(|tx| {
            let Some(nb) = open_path(tx, &[SCHEMA, name.as_bytes()])? else {
                return Err(Error::not_found(format!("namespace {name:?}")));
            };
            let mut stored = read_labels(nb.view())?;
            fieldpath::apply_labels(&mut stored, labels, paths, "labels")?;
            validate_labels("namespace.Labels", &stored)?;
            let mut lb = create_child(nb, LABELS)?;
            for k in keys(lb.view())? {
                lb.delete(&k).b()?;
            }
            for (k, v) in &stored {
                lb.put(k.as_bytes(), v.as_bytes()).b()?;
            }
            Ok(stored)
        })
    }

    /// Deletes namespace `name`. `FailedPrecondition` while it holds images, blobs, containers,
    /// snapshots or leases; `NotFound` if absent.
    pub fn delete_namespace(&self, name: &str) -> Result<()> {
        self.update(|tx| {
            let Some(nb) = get_path(tx.root(), &[SCHEMA, name.as_bytes()])? else {
                return Err(Error::not_found(format!("namespace {name:?}")));
            };
            let mut held = Vec::new();
            if !is_empty(nb.bucket(IMAGES).b()?)? {
                held.push("images".to_string());
            }
            if !is_empty(get_path(nb, &[CONTENT, BLOB])?)? {
                held.push("blobs".to_string());
            }
            if !is_empty(nb.bucket(CONTAINERS).b()?)? {
                held.push("containers".to_string());
            }
            if let Some(sb) = nb.bucket(SNAPSHOTS).b()? {
                for ss in bucket_names(sb)? {
                    if !is_empty(sb.bucket(&ss).b()?)? {
                        held.push(format!("snapshots on {:?} snapshotter", lossy(&ss)));
                    }
                }
            }
            if !is_empty(nb.bucket(LEASES).b()?)? {
                held.push("leases".to_string());
            }
            if !held.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "namespace {name:?} must be empty, but it still has {}",
                    held.join(", ")
                )));
            }
            let mut v1 = tx
                .bucket_mut(SCHEMA)
                .b()?
                .ok_or_else(|| Error::not_found(format!("namespace {name:?}")))?;
            v1.delete_bucket(name.as_bytes()).b()
        })
    }
}

/// Validates a namespace for a per-namespace store.
pub(crate) fn check(ns: &str) -> Result<()> {
    namespace::validate(ns).map_err(|e| e.context("namespace"))
}
