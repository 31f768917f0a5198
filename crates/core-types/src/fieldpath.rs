//! Field paths for update requests (`labels`, `labels.k`, `annotations.k`).
//!
//! An update call names the fields it changes. For a string map such as `labels`, the path
//! `labels` replaces the whole map and `labels.<key>` sets or removes one key; the key is
//! everything after the first dot, taken literally (`labels.a.b` names the key `a.b`, and no
//! quoting is interpreted), as containerd does. An update with no paths replaces every mutable
//! field.
//!
//! A key set to the empty string is removed: containerd never stores empty label values, so
//! "set to empty" and "delete" are the same request.

use crate::error::{Error, Result};
use crate::labels::Labels;

/// Splits a path at its first dot: `labels.k.x` → `("labels", Some("k.x"))`, `labels` →
/// `("labels", None)`.
pub fn split(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((field, key)) => (field, Some(key)),
        None => (path, None),
    }
}

/// The error for a path an object does not let callers update.
pub fn cannot_update(path: &str) -> Error {
    Error::invalid_argument(format!("cannot update {path:?} field"))
}

/// Applies an update of the string map field `prefix` (e.g. `"labels"` or `"annotations"`).
///
/// `stored` is the current map and `new` the map sent by the caller. With no `paths`, or with
/// the path `prefix`, `stored` becomes `new`; `prefix.<key>` copies that one key from `new` or
/// removes it when `new` lacks it. Paths apply in order. Any other path is
/// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) `cannot update "<path>" field`, and
/// then `stored` is left unchanged. Entries with empty values are dropped.
///
/// Label size limits are not checked here (annotations have none); validate the result with
/// [`labels::validate_all`](crate::labels::validate_all) where they apply.
pub fn apply_labels(
    stored: &mut Labels,
    new: &Labels,
    paths: &[String],
    prefix: &str,
) -> Result<()> {
    if paths.is_empty() {
        *stored = without_empty(new);
        return Ok(());
    }
    let mut updated = stored.clone();
    for path in paths {
        if !update_map_path(&mut updated, new, path, prefix)? {
            return Err(cannot_update(path));
        }
    }
    *stored = updated;
    Ok(())
}

/// Applies one path to the map field `prefix` if the path names it.
///
/// Returns `Ok(false)`, changing nothing, when `path` is about another field, so objects with
/// several updatable fields can try each in turn and reject what none of them claims with
/// [`cannot_update`]. A path naming an empty key (`labels.`) is InvalidArgument.
pub fn update_map_path(
    stored: &mut Labels,
    new: &Labels,
    path: &str,
    prefix: &str,
) -> Result<bool> {
    match split(path) {
        (field, None) if field == prefix => {
            *stored = without_empty(new);
            Ok(true)
        }
        (field, Some(key)) if field == prefix => {
            if key.is_empty() {
                return Err(Error::invalid_argument(format!(
                    "field path {path:?} names an empty key; expected {prefix}.<key>"
                )));
            }
            match new.get(key).filter(|v| !v.is_empty()) {
                Some(v) => {
                    stored.insert(key.to_string(), v.clone());
                }
                None => {
                    stored.remove(key);
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn without_empty(map: &Labels) -> Labels {
    map.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_at_the_first_dot_only() {
        assert_eq!(split("labels"), ("labels", None));
        assert_eq!(split("labels.k"), ("labels", Some("k")));
        assert_eq!(
            split("labels.containerd.io/gc.root"),
            ("labels", Some("containerd.io/gc.root"))
        );
        assert_eq!(split("labels."), ("labels", Some("")));
    }

    #[test]
    fn no_paths_or_the_whole_field_replaces_the_map() {
        let new = labels(&[("b", "2"), ("empty", "")]);
        for p in [paths(&[]), paths(&["labels"])] {
            let mut stored = labels(&[("a", "1")]);
            apply_labels(&mut stored, &new, &p, "labels").unwrap();
            assert_eq!(stored, labels(&[("b", "2")]), "paths {p:?}");
        }
    }

    #[test]
    fn a_key_path_sets_or_removes_one_key() {
        let mut stored = labels(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = labels(&[
            ("a", "10"),
            ("c", ""),
            ("ignored", "x"),
            ("k.with.dots", "d"),
        ]);
        apply_labels(
            &mut stored,
            &new,
            &paths(&["labels.a", "labels.b", "labels.c", "labels.k.with.dots"]),
            "labels",
        )
        .unwrap();
        assert_eq!(stored, labels(&[("a", "10"), ("k.with.dots", "d")]));
    }

    #[test]
    fn paths_apply_in_order() {
        let new = labels(&[("a", "1")]);
        let mut stored = labels(&[("x", "9")]);
        apply_labels(&mut stored, &new, &paths(&["labels.x", "labels"]), "labels").unwrap();
        assert_eq!(stored, labels(&[("a", "1")]));
    }

    #[test]
    fn other_paths_are_rejected_and_nothing_changes() {
        let before = labels(&[("a", "1")]);
        let new = labels(&[("a", "2")]);
        for bad in ["size", "labelsx.a", "annotations.a"] {
            let mut stored = before.clone();
            let err =
                apply_labels(&mut stored, &new, &paths(&["labels.a", bad]), "labels").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert_eq!(err.message(), format!("cannot update {bad:?} field"));
            assert_eq!(stored, before);
        }
        let mut stored = before.clone();
        let err = apply_labels(&mut stored, &new, &paths(&["labels."]), "labels").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("empty key"), "{err}");
    }

    #[test]
    fn works_for_annotations_and_multi_field_dispatch() {
        let mut ann = labels(&[("org.opencontainers.image.title", "t")]);
        let new = labels(&[("org.opencontainers.image.title", "u")]);
        apply_labels(
            &mut ann,
            &new,
            &paths(&["annotations.org.opencontainers.image.title"]),
            "annotations",
        )
        .unwrap();
        assert_eq!(ann, new);

        let mut lbl = Labels::new();
        assert!(!update_map_path(&mut lbl, &new, "annotations.x", "labels").unwrap());
        assert!(lbl.is_empty());
        assert!(update_map_path(&mut lbl, &labels(&[("x", "1")]), "labels.x", "labels").unwrap());
        assert_eq!(lbl, labels(&[("x", "1")]));
    }
}
