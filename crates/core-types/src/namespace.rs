//! Namespace names: containerd's identifier rules.

use crate::error::{Error, Result};

/// The longest namespace (and identifier) containerd accepts.
pub const MAX_LENGTH: usize = 76;

/// The namespace used when a client names none (`ctr` sends `default`).
pub const DEFAULT: &str = "default";

/// Validates an identifier: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most [`MAX_LENGTH`] chars.
///
/// containerd uses the same rule for namespaces, container ids and lease ids.
pub fn validate(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("identifier must not be empty"));
    }
    if name.len() > MAX_LENGTH {
        return Err(Error::invalid_argument(format!(
            "identifier {name:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    let mut prev_sep = true;
    for c in name.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => prev_sep = false,
            '.' | '_' | '-' if !prev_sep => prev_sep = true,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "identifier {name:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
                )))
            }
        }
    }
    if prev_sep {
        return Err(Error::invalid_argument(format!(
            "identifier {name:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["default", "k8s.io", "a", "A-b_c.d", &"x".repeat(76)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(77),
            "../x",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
