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
    let size = key.len() + value.len();
    if size > MAX_LABEL_SIZE {
        let shown: String = key.chars().take(10).collect();
        return Err(Error::invalid_argument(format!(
            "label key and value length ({size} bytes) greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {shown}"
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
        assert!(err.to_string().contains("4097 bytes"), "{err}");
        assert!(validate("", "x").is_err());
    }
}
