//! Content digests (`sha256:<hex>`) as values: parsing, validation and formatting.
//!
//! Hashing lives in `stowage-digest-identity`; this module only holds the value type so that
//! [`crate::Descriptor`] can carry a validated digest without pulling in a hash implementation.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A digest algorithm stowage can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default and the only one containerd uses for content addresses.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings (`"sha256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded hash.
    pub fn encoded_len(self) -> usize {
        self.size() * 2
    }

    /// Length of the raw hash in bytes.
    pub fn size(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// Every supported algorithm.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512];
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha384" => Ok(Algorithm::Sha384),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(Error::invalid_argument(format!(
                "unsupported digest algorithm {other:?} (supported: sha256, sha384, sha512)"
            ))),
        }
    }
}

/// A validated digest: `<algorithm>:<lowercase hex>` with the algorithm's exact length.
///
/// Construction always validates, so a `Digest` is safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Stored whole so `as_str` is free; `sep` is the index of ':'.
    value: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates `s` with the OCI rules: a known algorithm, `:`, and lowercase hex of
    /// the algorithm's length. The error names which rule `s` breaks.
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((alg, enc)) = s.split_once(':') else {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: missing ':' between algorithm and encoded hash"
            )));
        };
        if alg.is_empty() || !valid_algorithm_component(alg) {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: malformed algorithm {alg:?}"
            )));
        }
        let algorithm: Algorithm = alg.parse().map_err(|e: Error| {
            Error::invalid_argument(format!("invalid digest {s:?}: {}", e.message()))
        })?;
        if enc.len() != algorithm.encoded_len() {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: {alg} needs {} hex characters, got {}",
                algorithm.encoded_len(),
                enc.len()
            )));
        }
        if let Some(bad) = enc.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: {bad:?} is not lowercase hex"
            )));
        }
        Ok(Digest {
            value: s.to_owned(),
            algorithm,
        })
    }

    /// Builds a digest from an algorithm and its raw hash bytes.
    pub fn from_bytes(algorithm: Algorithm, hash: &[u8]) -> Result<Digest> {
        if hash.len() != algorithm.size() {
            return Err(Error::invalid_argument(format!(
                "{algorithm} hash must be {} bytes, got {}",
                algorithm.size(),
                hash.len()
            )));
        }
        let mut value = String::with_capacity(algorithm.as_str().len() + 1 + hash.len() * 2);
        value.push_str(algorithm.as_str());
        value.push(':');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in hash {
            value.push(HEX[(b >> 4) as usize] as char);
            value.push(HEX[(b & 0xf) as usize] as char);
        }
        Ok(Digest { value, algorithm })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part after the `:`.
    pub fn encoded(&self) -> &str {
        &self.value[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest string.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

fn valid_algorithm_component(alg: &str) -> bool {
    // OCI: [a-z0-9]+([+._-][a-z0-9]+)*
    let mut prev_sep = true;
    for c in alg.chars() {
        match c {
            'a'..='z' | '0'..='9' => prev_sep = false,
            '+' | '.' | '_' | '-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const GOOD: &str = "sha256:d0fe97fa8b8cefdffcef1d62b65aba51a6c87b6679628a2b50fc6a7a579f764c";

    #[test]
    fn parses_and_splits() {
        let d = Digest::parse(GOOD).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.encoded().len(), 64);
        assert_eq!(d.to_string(), GOOD);
        let bytes: Vec<u8> = (0..32).map(|i| (i * 7) as u8).collect();
        let d2 = Digest::from_bytes(Algorithm::Sha256, &bytes).unwrap();
        assert_eq!(Digest::parse(d2.as_str()).unwrap(), d2);
    }

    #[test]
    fn rejects_malformed_with_reason() {
        let cases = [
            ("", "missing ':'"),
            ("sha256", "missing ':'"),
            ("md5:abcd", "unsupported digest algorithm"),
            ("SHA256:abcd", "malformed algorithm"),
            ("sha256:abc", "needs 64 hex characters, got 3"),
            (
                "sha256:D0FE97FA8B8CEFDFFCEF1D62B65ABA51A6C87B6679628A2B50FC6A7A579F764C",
                "not lowercase hex",
            ),
            (
                "sha256:../../../../etc/passwd000000000000000000000000000000000000000000",
                "not lowercase hex",
            ),
            ("sha512:00", "needs 128 hex characters"),
        ];
        for (input, why) in cases {
            let err = Digest::parse(input).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{input}");
            assert!(err.to_string().contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: Digest = serde_json::from_str(&format!("\"{GOOD}\"")).unwrap();
        assert_eq!(ok.as_str(), GOOD);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
