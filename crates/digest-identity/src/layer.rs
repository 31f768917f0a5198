//! DiffIDs of layer blobs that may be gzip- or zstd-compressed.
//!
//! The compression is detected from the stream's magic bytes, the way containerd's
//! `compression.DetectCompression` does, so callers need not trust a media type.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use stowage_core_types::digest::{Algorithm, Digest};
use stowage_core_types::error::{Error, Result};

use crate::digester::Digester;

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (a plain tar).
    Uncompressed,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard, possibly several frames.
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl From<Compression> for stowage_core_types::mediatype::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Uncompressed => Self::None,
            Compression::Gzip => Self::Gzip,
            Compression::Zstd => Self::Zstd,
        }
    }
}

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
// Skippable zstd frames use magic numbers 0x184D2A50..=0x184D2A5F (little endian).
const ZSTD_SKIPPABLE_MASK: u32 = 0xffff_fff0;
const ZSTD_SKIPPABLE_START: u32 = 0x184d_2a50;

/// Detects the compression from the first bytes of a stream (at least 4 are needed to recognise
/// zstd; fewer bytes are judged on what is there).
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        return Compression::Gzip;
    }
    if head.starts_with(&ZSTD_MAGIC) {
        return Compression::Zstd;
    }
    if let Some(first) = head.get(..4) {
        let magic = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
        if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START {
            return Compression::Zstd;
        }
    }
    Compression::Uncompressed
}

/// Peeks at `r`'s first bytes and returns a reader of its decompressed contents together with
/// the detected compression. Decompression streams; nothing is buffered beyond a block.
pub fn decompressed_reader<'a, R: Read + Send + 'a>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + Send + 'a>)> {
    // Readers may hand out fewer bytes than the magic needs in one call, so collect the head
    // explicitly and put it back in front of the rest.
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("reading layer header")),
        }
    }
    let compression = detect_compression(&head[..n]);
    let whole = io::Cursor::new(head).take(n as u64).chain(r);
    let br = BufReader::with_capacity(128 * 1024, whole);
    Ok((compression, decoder(compression, br)?))
}

/// As [`decompressed_reader`], for a reader that buffers already: the decompressor reads
/// straight from `r`'s buffer, with no buffer of its own in between (no copy).
pub fn decompressed_bufread<'a, R: BufRead + Send + 'a>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let head = loop {
        match r.fill_buf() {
            Ok(head) => break head,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("reading layer header")),
        }
    };
    if !head.is_empty() && head.len() < 4 {
        // Too few bytes showing to tell zstd for sure: collect them the general way.
        return decompressed_reader(r);
    }
    let compression = detect_compression(&head[..head.len().min(4)]);
    Ok((compression, decoder(compression, r)?))
}

fn decoder<'a, R: BufRead + Send + 'a>(
    compression: Compression,
    br: R,
) -> Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::Uncompressed => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| Error::io("starting zstd decoder", e))?,
        ),
    })
}

/// Every digest a layer blob needs, computed in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// How the blob was compressed.
    pub compression: Compression,
    /// Digest of the blob as stored (compressed bytes).
    pub digest: Digest,
    /// Size of the blob as stored.
    pub size: u64,
    /// Digest of the uncompressed tar: the layer's DiffID.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Hashes what passes through, so the compressed digest comes for free while decompressing.
struct TeeHash<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> Read for TeeHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

/// Computes the stored digest, DiffID and both sizes of the layer stream `r` in one pass.
///
/// Data after the end of the compressed stream (padding some tools append) counts towards the
/// stored digest, as it is part of the blob, but not towards the DiffID.
pub fn layer_digests(r: impl Read + Send) -> Result<LayerDigests> {
    let mut tee = TeeHash {
        inner: r,
        digester: Digester::new(Algorithm::Sha256),
    };
    let (compression, diff_id, uncompressed_size) = {
        let (compression, mut dec) = decompressed_reader(&mut tee)?;
        let (diff_id, n) = hash_all(&mut dec)
            .map_err(|e| e.context(format!("decompressing {compression} layer")))?;
        // Whatever the decoder left unread (buffered or not yet read) still belongs to the blob.
        io::copy(&mut dec, &mut io::sink()).map_err(|e| Error::io("draining layer", e))?;
        drop(dec);
        (compression, diff_id, n)
    };
    io::copy(&mut tee, &mut io::sink()).map_err(|e| Error::io("draining layer", e))?;
    let size = tee.digester.len();
    Ok(LayerDigests {
        compression,
        digest: tee.digester.finish(),
        size,
        diff_id,
        uncompressed_size,
    })
}

fn hash_all(r: &mut dyn Read) -> Result<(Digest, u64)> {
    crate::digester::digest_reader(r)
}

/// The DiffID (SHA-256 of the uncompressed contents) of the layer stream `r`, which may be
/// gzip-compressed, zstd-compressed or plain.
pub fn diff_id(r: impl Read + Send) -> Result<Digest> {
    let (compression, mut dec) = decompressed_reader(r)?;
    let (d, _) =
        hash_all(&mut dec).map_err(|e| e.context(format!("decompressing {compression} layer")))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest_of;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        // Compressible but not trivial.
        (0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761u32) >> 24) as u8 & 0x3f)
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn converts_to_the_media_type_compression() {
        use stowage_core_types::mediatype::Compression as Mt;
        assert_eq!(Mt::from(Compression::Uncompressed), Mt::None);
        assert_eq!(Mt::from(Compression::Gzip), Mt::Gzip);
        assert_eq!(Mt::from(Compression::Zstd), Mt::Zstd);
        // Same words in messages either way.
        for c in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            assert_eq!(c.to_string(), Mt::from(c).to_string());
        }
    }

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect_compression(&gzip(b"x")), Compression::Gzip);
        assert_eq!(
            detect_compression(&zstd::encode_all(&b"x"[..], 1).unwrap()),
            Compression::Zstd
        );
        assert_eq!(
            detect_compression(&[0x5a, 0x2a, 0x4d, 0x18, 0, 0]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"ustar"), Compression::Uncompressed);
        assert_eq!(detect_compression(&[0x1f]), Compression::Uncompressed);
        assert_eq!(detect_compression(&[]), Compression::Uncompressed);
    }

    #[test]
    fn diff_id_is_digest_of_uncompressed() {
        let data = sample();
        let want = digest_of(&data);
        assert_eq!(diff_id(&data[..]).unwrap(), want);
        assert_eq!(diff_id(&gzip(&data)[..]).unwrap(), want);
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(diff_id(&z[..]).unwrap(), want);
    }

    #[test]
    fn multi_member_gzip_and_multi_frame_zstd() {
        let data = sample();
        let (a, b) = data.split_at(100_000);
        let mut g = gzip(a);
        g.extend(gzip(b));
        let mut z = zstd::encode_all(a, 1).unwrap();
        z.extend(zstd::encode_all(b, 1).unwrap());
        for blob in [g, z] {
            let ld = layer_digests(&blob[..]).unwrap();
            assert_eq!(ld.diff_id, digest_of(&data));
            assert_eq!(ld.uncompressed_size, data.len() as u64);
            assert_eq!(ld.digest, digest_of(&blob));
            assert_eq!(ld.size, blob.len() as u64);
        }
    }

    #[test]
    fn layer_digests_of_plain_stream() {
        let data = sample();
        let ld = layer_digests(&data[..]).unwrap();
        assert_eq!(ld.compression, Compression::Uncompressed);
        assert_eq!(ld.digest, ld.diff_id);
        assert_eq!(ld.size, ld.uncompressed_size);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let g = gzip(&sample());
        let err = diff_id(&g[..g.len() / 2]).unwrap_err();
        assert!(err.to_string().contains("gzip"), "{err}");
        let z = zstd::encode_all(&sample()[..], 1).unwrap();
        let err = diff_id(&z[..z.len() / 2]).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    #[test]
    fn bufread_decompresses_every_kind_even_from_a_trickling_buffer() {
        let data = sample();
        let blobs = [
            (data.clone(), Compression::Uncompressed),
            (gzip(&data), Compression::Gzip),
            (zstd::encode_all(&data[..], 1).unwrap(), Compression::Zstd),
        ];
        for (blob, kind) in blobs {
            // A whole buffer, and one that shows a single byte at a time (fewer than the
            // magic needs), must decode the same.
            for cap in [blob.len(), 1] {
                let br = io::BufReader::with_capacity(cap, &blob[..]);
                let (c, mut r) = decompressed_bufread(br).unwrap();
                assert_eq!(c, kind, "capacity {cap}");
                let mut out = Vec::new();
                r.read_to_end(&mut out).unwrap();
                assert!(out == data, "{kind} with capacity {cap} decoded wrongly");
            }
        }
        let (c, mut r) = decompressed_bufread(&b""[..]).unwrap();
        assert_eq!(c, Compression::Uncompressed);
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn one_byte_reads_still_detect() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let data = sample();
        let g = gzip(&data);
        assert_eq!(diff_id(Trickle(&g)).unwrap(), digest_of(&data));
    }
}
