//! Incremental hashing into a [`Digest`].

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha384, Sha512};
use stowage_core_types::digest::{Algorithm, Digest};
use stowage_core_types::error::{Error, Result};

/// Streaming hasher for one of the supported algorithms.
///
/// Feed it with [`Digester::update`] or through `io::Write`; [`Digester::digest`] reads the
/// current value without ending the stream (a content writer reports its digest mid-write),
/// [`Digester::finish`] consumes it.
#[derive(Clone)]
pub struct Digester {
    hasher: Hasher,
    len: u64,
}

// A closed enum rather than a boxed trait object: it is Clone, Send and Sync for free and the
// match is cheaper than dynamic dispatch on every small write.
#[derive(Clone)]
enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digester")
            .field("algorithm", &self.algorithm())
            .field("len", &self.len)
            .finish()
    }
}

impl Digester {
    /// A digester for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        let hasher = match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        };
        Digester { hasher, len: 0 }
    }

    /// A SHA-256 digester, the canonical algorithm.
    pub fn sha256() -> Self {
        Digester::new(Algorithm::Sha256)
    }

    /// The algorithm this digester computes.
    pub fn algorithm(&self) -> Algorithm {
        match self.hasher {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha384(_) => Algorithm::Sha384,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data`.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
        self.len += data.len() as u64;
    }

    /// The digest of everything hashed so far; the digester keeps going.
    pub fn digest(&self) -> Digest {
        self.clone().finish()
    }

    /// The digest of everything hashed, consuming the digester.
    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        match self.hasher {
            Hasher::Sha256(h) => make_digest(algorithm, &h.finalize()),
            Hasher::Sha384(h) => make_digest(algorithm, &h.finalize()),
            Hasher::Sha512(h) => make_digest(algorithm, &h.finalize()),
        }
    }

    /// Forgets everything hashed so far.
    pub fn reset(&mut self) {
        *self = Digester::new(self.algorithm());
    }
}

fn make_digest(algorithm: Algorithm, out: &[u8]) -> Digest {
    // The hasher is chosen from `algorithm`, so the output length always fits; a mismatch
    // would be a bug in this module, not bad input.
    Digest::from_bytes(algorithm, out).expect("hash output length matches its algorithm")
}

impl io::Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 digest of `data`.
pub fn digest_of(data: &[u8]) -> Digest {
    digest_of_with(Algorithm::Sha256, data)
}

/// Digest of `data` with `algorithm`.
pub fn digest_of_with(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut d = Digester::new(algorithm);
    d.update(data);
    d.finish()
}

/// SHA-256 digest and length of everything `r` yields, read in streaming fashion.
pub fn digest_reader(r: impl Read) -> Result<(Digest, u64)> {
    digest_reader_with(Algorithm::Sha256, r)
}

/// Digest with `algorithm` and length of everything `r` yields.
pub fn digest_reader_with(algorithm: Algorithm, mut r: impl Read) -> Result<(Digest, u64)> {
    let mut d = Digester::new(algorithm);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("hashing stream")),
        };
        d.update(&buf[..n]);
    }
    let len = d.len();
    Ok((d.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn known_vectors() {
        // FIPS 180-2 "abc" vectors.
        assert_eq!(
            digest_of(b"abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_of_with(Algorithm::Sha384, b"abc").encoded(),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
        assert_eq!(
            digest_of_with(Algorithm::Sha512, b"abc").encoded(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(
            digest_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn streaming_equals_one_shot_and_digest_is_non_destructive() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for alg in Algorithm::ALL {
            let mut d = Digester::new(alg);
            for chunk in data.chunks(7777) {
                d.write_all(chunk).unwrap();
                // Reading the digest mid-stream must not disturb the state.
                let _ = d.digest();
            }
            assert_eq!(d.len(), data.len() as u64);
            let mid = d.digest();
            assert_eq!(mid, d.clone().finish());
            assert_eq!(d.finish(), digest_of_with(alg, &data));
        }
        let (dg, n) = digest_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(dg, digest_of(&data));
    }

    #[test]
    fn reset_forgets() {
        let mut d = Digester::sha256();
        d.update(b"junk");
        d.reset();
        assert!(d.is_empty());
        d.update(b"abc");
        assert_eq!(d.finish(), digest_of(b"abc"));
    }

    #[test]
    fn reader_errors_are_reported() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = digest_reader(Broken).unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
