//! Reading a stream while checking it against an expected digest and size.

use std::io::{self, Read};

use stowage_core_types::digest::Digest;
use stowage_core_types::error::Error;

use crate::digester::Digester;

/// Wraps a reader and checks, as the bytes go by, that they hash to `expected` and (when given)
/// number exactly `size`.
///
/// The check happens where it can first fail: more bytes than `size` fail on the read that
/// overshoots (those bytes are not handed out), and a short stream or a digest mismatch fails
/// on the read that reaches EOF, instead of returning 0. The error is a stowage
/// [`Error`] of kind `DataLoss` carried inside the `io::Error` (convert with `Error::from` to
/// recover it) and names expected and actual values. Once failed, every later read fails the
/// same way, so a caller that ignores one error cannot read on as if all were well.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    expected: Digest,
    size: Option<u64>,
    digester: Digester,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Reading,
    Verified,
    Failed(String),
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies `inner` against `expected` and, when `size` is `Some`, its exact length.
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> Self {
        let digester = Digester::new(expected.algorithm());
        VerifyingReader {
            inner,
            expected,
            size,
            digester,
            state: State::Reading,
        }
    }

    /// True once the whole stream was read and matched.
    pub fn verified(&self) -> bool {
        matches!(self.state, State::Verified)
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.digester.len()
    }

    /// Gives back the wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fail(&mut self, msg: String) -> io::Error {
        self.state = State::Failed(msg.clone());
        io::Error::other(Error::data_loss(msg))
    }

    fn at_eof(&mut self) -> io::Result<usize> {
        let got = self.digester.len();
        if let Some(size) = self.size {
            if got != size {
                let msg = format!(
                    "content {}: stream ended after {got} bytes, expected {size}",
                    self.expected
                );
                return Err(self.fail(msg));
            }
        }
        let actual = self.digester.digest();
        if actual != self.expected {
            let msg = format!(
                "digest mismatch: expected {}, actual {actual} ({got} bytes)",
                self.expected
            );
            return Err(self.fail(msg));
        }
        self.state = State::Verified;
        Ok(0)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Verified => return Ok(0),
            State::Failed(msg) => return Err(io::Error::other(Error::data_loss(msg.clone()))),
            State::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return self.at_eof();
        }
        if let Some(size) = self.size {
            let total = self.digester.len() + n as u64;
            if total > size {
                let msg = format!(
                    "content {}: stream is longer than the expected {size} bytes (read at least {total})",
                    self.expected
                );
                return Err(self.fail(msg));
            }
        }
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest_of;
    use stowage_core_types::ErrorKind;

    fn read_all(r: &mut impl Read) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(Error::from)?;
        Ok(out)
    }

    #[test]
    fn passes_matching_content() {
        let data = b"hello, layer".to_vec();
        let mut v = VerifyingReader::new(&data[..], digest_of(&data), Some(data.len() as u64));
        assert_eq!(read_all(&mut v).unwrap(), data);
        assert!(v.verified());
        let mut v = VerifyingReader::new(&data[..], digest_of(&data), None);
        assert_eq!(read_all(&mut v).unwrap(), data);
        assert!(v.verified());
    }

    #[test]
    fn digest_mismatch_names_both() {
        let expected = digest_of(b"something else");
        let mut v = VerifyingReader::new(&b"hello"[..], expected.clone(), None);
        let err = read_all(&mut v).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss);
        let msg = err.to_string();
        assert!(msg.contains(expected.as_str()), "{msg}");
        assert!(msg.contains(digest_of(b"hello").as_str()), "{msg}");
        assert!(!v.verified());
        // Sticky: reading again does not turn the failure into a clean EOF.
        let mut b = [0u8; 4];
        assert!(v.read(&mut b).is_err());
    }

    #[test]
    fn short_and_long_streams_fail() {
        let data = b"0123456789";
        let d = digest_of(data);
        let mut short = VerifyingReader::new(&data[..5], d.clone(), Some(10));
        let err = read_all(&mut short).unwrap_err();
        assert!(
            err.to_string().contains("after 5 bytes, expected 10"),
            "{err}"
        );
        let mut long = VerifyingReader::new(&data[..], d.clone(), Some(4));
        let mut buf = [0u8; 3];
        // Reads within the limit succeed, the overshooting one fails.
        assert_eq!(long.read(&mut buf).unwrap(), 3);
        let err = Error::from(long.read(&mut buf).unwrap_err());
        assert!(
            err.to_string().contains("longer than the expected 4"),
            "{err}"
        );
        assert_eq!(long.bytes_read(), 3);
    }
}
