//! Labels: the string maps attached to images, content, snapshots, leases and namespaces.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Labels of an object, ordered by key (bolt stores them sorted, and listings stay stable).
pub type Labels = BTreeMap<String, String>;

/// containerd's bound on one label: key and value together.
pub const MAX_LABEL_SIZE: usize = 4096;

/// Checks one label the way containerd's `labels.Validate` does: non-empty key, and key plus
/// value at most [`MAX_LABEL_SIZE`] bytes.
pub fn validate(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("label key must not be empty"));
    }
    if key.len() + value.len() > MAX_LABEL_SIZE {
        // containerd 1.6's wording (1.7 added the length and cut the key to 10 characters).
        return Err(Error::invalid_argument(format!(
            "label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {key}"
        )));
    }
    Ok(())
}

/// Validates every label of a map.
pub fn validate_all(labels: &Labels) -> Result<()> {
    labels.iter().try_for_each(|(k, v)| validate(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_key_plus_value() {
        assert!(validate("k", &"v".repeat(4095)).is_ok());
        let err = validate("k", &"v".repeat(4096)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label key and value greater than maximum size (4096 bytes), key: k: invalid argument"
        );
        assert!(validate("", "x").is_err());
    }
}
