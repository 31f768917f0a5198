//! Reading tar entries (ustar, GNU and PAX) from the layer stream.
//!
//! Header blocks are decoded with the `tar` crate's [`tar::Header`]; the extended headers that
//! change the next entry (PAX `x`, GNU `L`/`K` long names, GNU sparse maps) are resolved here
//! so that the applier sees one complete [`Entry`] at a time, the way Go's `archive/tar`
//! presents entries to containerd.

use stowage_core_types::error::{Error, Result};

use crate::stream::LayerStream;
use crate::sys::Time;

const BLOCK: usize = 512;
/// Largest PAX or GNU long-name payload accepted (Go's `archive/tar` uses the same bound).
const MAX_SPECIAL: u64 = 1 << 20;
/// Most sparse map entries accepted for one file.
const MAX_SPARSE: usize = 1 << 16;

/// What an entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Directory,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One complete tar entry, extended headers applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Raw name as archived (may be absolute, contain `..`, end in `/`).
    pub(crate) name: Vec<u8>,
    /// Link target of symlinks and hard links.
    pub(crate) link: Vec<u8>,
    pub(crate) kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: Time,
    pub(crate) atime: Option<Time>,
    /// Bytes of data that follow the header in the archive.
    pub(crate) size: u64,
    /// Size of the file once written (differs from `size` for sparse files).
    pub(crate) real_size: u64,
    /// Data segments `(offset, length)` of a sparse file, in order; `None` for dense files.
    pub(crate) sparse: Option<Vec<(u64, u64)>>,
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.*` PAX records, in archive order.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The name for messages.
    pub(crate) fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_argument(msg)
}

/// PAX records gathered from `x` headers for the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Time>,
    atime: Option<Time>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: PaxSparse,
}

/// The `GNU.sparse.*` records of GNU tar's PAX sparse formats 0.0, 0.1 and 1.0.
#[derive(Default)]
struct PaxSparse {
    any: bool,
    major: Option<u64>,
    minor: Option<u64>,
    name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x).
    real_size: Option<u64>,
    /// `GNU.sparse.map` (0.1): `offset,length,offset,length...`.
    map: Option<Vec<u8>>,
    /// Repeated `GNU.sparse.offset` / `GNU.sparse.numbytes` records (0.0), in order.
    offsets: Vec<u64>,
    lengths: Vec<u64>,
}

/// Parses a PAX decimal time `secs[.frac]` (may be negative).
fn parse_pax_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 means 1.5 seconds before the epoch.
        if nsec == 0 {
            Some(Time {
                sec: -secs,
                nsec: 0,
            })
        } else {
            Some(Time {
                sec: -secs - 1,
                nsec: 1_000_000_000 - nsec,
            })
        }
    } else {
        Some(Time { sec: secs, nsec })
    }
}

fn parse_pax_u64(key: &str, v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            bad(format!(
                "PAX record {key} has invalid value {:?}",
                String::from_utf8_lossy(v)
            ))
        })
}

impl Pax {
    fn absorb(&mut self, data: &[u8]) -> Result<()> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|e| bad(format!("malformed PAX header: {e}")))?;
            let key = ext.key().map_err(|_| bad("PAX record key is not UTF-8"))?;
            let value = ext.value_bytes();
            match key {
                "path" => self.path = Some(value.to_vec()),
                "linkpath" => self.linkpath = Some(value.to_vec()),
                "size" => self.size = Some(parse_pax_u64(key, value)?),
                "uid" => self.uid = Some(parse_pax_u64(key, value)?),
                "gid" => self.gid = Some(parse_pax_u64(key, value)?),
                "mtime" => {
                    self.mtime = Some(parse_pax_time(value).ok_or_else(|| {
                        bad(format!(
                            "PAX mtime {:?} is not a time",
                            String::from_utf8_lossy(value)
                        ))
                    })?)
                }
                "atime" => self.atime = parse_pax_time(value),
                k if k.starts_with("GNU.sparse.") => {
                    let sp = &mut self.sparse;
                    sp.any = true;
                    match k {
                        "GNU.sparse.major" => sp.major = Some(parse_pax_u64(k, value)?),
                        "GNU.sparse.minor" => sp.minor = Some(parse_pax_u64(k, value)?),
                        "GNU.sparse.name" => sp.name = Some(value.to_vec()),
                        "GNU.sparse.realsize" | "GNU.sparse.size" => {
                            sp.real_size = Some(parse_pax_u64(k, value)?)
                        }
                        "GNU.sparse.map" => sp.map = Some(value.to_vec()),
                        "GNU.sparse.offset" => sp.offsets.push(parse_pax_u64(k, value)?),
                        "GNU.sparse.numbytes" => sp.lengths.push(parse_pax_u64(k, value)?),
                        _ => {}
                    }
                }
                _ => {
                    if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                        // A later record for the same attribute wins, as in a map.
                        self.xattrs.retain(|(k, _)| k.as_slice() != attr.as_bytes());
                        self.xattrs.push((attr.as_bytes().to_vec(), value.to_vec()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `size` rounded up to whole blocks; saturates for absurd sizes (the stream ends long
/// before, which is reported as truncation).
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// Reads `size` bytes of an extended header's payload (and its padding).
fn read_special(stream: &mut LayerStream<'_>, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > MAX_SPECIAL {
        return Err(bad(format!(
            "{what} of {size} bytes exceeds the limit of {MAX_SPECIAL}"
        )));
    }
    let mut data = vec![0u8; size as usize];
    if stream.read_full(&mut data)? != data.len() {
        return Err(Error::out_of_range(format!("layer ends inside a {what}")));
    }
    stream.skip(padded(size) - size)?;
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(end) = v.iter().position(|&b| b == 0) {
        v.truncate(end);
    }
    v
}

fn checksum_ok(block: &[u8; BLOCK], header: &tar::Header) -> bool {
    let Ok(stored) = header.cksum() else {
        return false;
    };
    // Historic writers summed signed bytes; accept either, as GNU tar and Go do.
    let mut unsigned: u32 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::from(stored) == signed
}

/// Reads tar entries from a layer stream.
pub(crate) struct EntryReader {
    /// Bytes of the current entry's data not consumed yet (plus padding to skip).
    pending: u64,
    ended: bool,
}

impl EntryReader {
    pub(crate) fn new() -> Self {
        EntryReader {
            pending: 0,
            ended: false,
        }
    }

    /// Marks `n` bytes of the current entry's data as consumed by the caller.
    pub(crate) fn consumed(&mut self, n: u64) {
        self.pending = self.pending.saturating_sub(n);
    }

    /// The next entry, or `None` at the end of the archive. Whatever the caller left of the
    /// previous entry's data is skipped first.
    pub(crate) fn next(&mut self, stream: &mut LayerStream<'_>) -> Result<Option<Entry>> {
        if self.ended {
            return Ok(None);
        }
        stream.skip(self.pending)?;
        self.pending = 0;
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            let at = stream.position();
            let n = stream.read_full(&mut block)?;
            if n == 0 {
                // A stream that stops at a block boundary without the end marker is accepted,
                // as Go's reader does.
                self.ended = true;
                return Ok(None);
            }
            if n < BLOCK {
                return Err(Error::out_of_range(format!(
                    "layer ends inside the tar header at offset {at}"
                )));
            }
            if block.iter().all(|&b| b == 0) {
                let n = stream.read_full(&mut block)?;
                if n == 0 || (n == BLOCK && block.iter().all(|&b| b == 0)) {
                    self.ended = true;
                    return Ok(None);
                }
                return Err(bad(format!(
                    "invalid tar header at offset {}: data after a zero block",
                    at + BLOCK as u64
                )));
            }
            let header = tar::Header::from_byte_slice(&block);
            if !checksum_ok(&block, header) {
                return Err(bad(format!(
                    "invalid tar header at offset {at}: checksum mismatch"
                )));
            }
            let size = header
                .entry_size()
                .map_err(|e| bad(format!("invalid tar header at offset {at}: size: {e}")))?;
            let typeflag = block[156];
            match typeflag {
                b'x' => {
                    let data = read_special(stream, size, "PAX header")?;
                    pax.absorb(&data)?;
                    continue;
                }
                b'g' => {
                    // Global headers are not applied to later entries (Go's reader, and so
                    // containerd, ignore them).
                    read_special(stream, size, "PAX global header")?;
                    continue;
                }
                b'L' => {
                    long_name = Some(trim_nul(read_special(stream, size, "GNU long name")?));
                    continue;
                }
                b'K' => {
                    long_link = Some(trim_nul(read_special(stream, size, "GNU long link")?));
                    continue;
                }
                _ => {}
            }
            let name = pax
                .sparse
                .name
                .take()
                .or(pax.path.take())
                .or(long_name.take())
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax.linkpath.take().or(long_link.take()).unwrap_or_else(|| {
                header
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default()
            });
            let name_str = String::from_utf8_lossy(&name).into_owned();
            let field_err = |what: &str, e: std::io::Error| {
                bad(format!("tar entry {name_str:?}: invalid {what}: {e}"))
            };
            let kind = match typeflag {
                // Pre-POSIX archives marked directories only by the trailing slash.
                0 if name.ends_with(b"/") => Kind::Directory,
                b'0' | 0 | b'7' | b'S' => Kind::Regular,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Directory,
                b'6' => Kind::Fifo,
                other => {
                    return Err(Error::not_implemented(format!(
                        "tar entry {name_str:?}: unsupported entry type {:?}",
                        other as char
                    )))
                }
            };
            let mut size = match pax.size {
                Some(s) => s,
                None => size,
            };
            let mode = header.mode().map_err(|e| field_err("mode", e))? & 0o7777;
            let uid = match pax.uid {
                Some(u) => u,
                None => header.uid().map_err(|e| field_err("uid", e))?,
            };
            let gid = match pax.gid {
                Some(g) => g,
                None => header.gid().map_err(|e| field_err("gid", e))?,
            };
            let mtime = match pax.mtime {
                Some(t) => t,
                None => Time {
                    sec: header.mtime().map_err(|e| field_err("mtime", e))? as i64,
                    nsec: 0,
                },
            };
            let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
                (
                    header
                        .device_major()
                        .map_err(|e| field_err("device major", e))?
                        .unwrap_or(0),
                    header
                        .device_minor()
                        .map_err(|e| field_err("device minor", e))?
                        .unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            let atime = pax.atime;
            let (sparse, real_size) = if typeflag == b'S' {
                let (map, real) = read_gnu_sparse(stream, header, size, &name_str)?;
                (Some(map), real)
            } else if pax.sparse.any && kind == Kind::Regular {
                let (map, real, map_bytes) = read_pax_sparse(stream, &pax.sparse, size, &name_str)?;
                size -= map_bytes;
                (Some(map), real)
            } else {
                (None, size)
            };
            // Only regular files carry data that the applier consumes; anything else's payload
            // (hard links and directories with a size, as some writers emit) is skipped.
            self.pending = padded(size);
            return Ok(Some(Entry {
                name,
                link,
                kind,
                mode,
                uid,
                gid,
                mtime,
                atime,
                size,
                real_size,
                sparse,
                dev_major,
                dev_minor,
                xattrs: std::mem::take(&mut pax.xattrs),
            }));
        }
    }
}

/// Data segments `(offset, length)` of a sparse file.
type SparseMap = Vec<(u64, u64)>;

/// Reads the old GNU sparse map of a `S` entry: the four slots in the header, then as many
/// 512-byte extension blocks as flagged. Returns the data segments and the real file size.
fn read_gnu_sparse(
    stream: &mut LayerStream<'_>,
    header: &tar::Header,
    stored: u64,
    name: &str,
) -> Result<(SparseMap, u64)> {
    let err = |what: String| {
        bad(format!(
            "tar entry {name:?}: invalid GNU sparse map: {what}"
        ))
    };
    let gnu = header
        .as_gnu()
        .ok_or_else(|| err("sparse entry without a GNU header".into()))?;
    let real = gnu.real_size().map_err(|e| err(e.to_string()))?;
    let mut map = Vec::new();
    let mut push = |s: &tar::GnuSparseHeader| -> Result<()> {
        if s.is_empty() {
            return Ok(());
        }
        let off = s.offset().map_err(|e| err(e.to_string()))?;
        let len = s.length().map_err(|e| err(e.to_string()))?;
        map.push((off, len));
        if map.len() > MAX_SPARSE {
            return Err(err("too many segments".into()));
        }
        Ok(())
    };
    for s in gnu.sparse.iter() {
        push(s)?;
    }
    let mut extended = gnu.is_extended();
    while extended {
        let mut block = [0u8; BLOCK];
        if stream.read_full(&mut block)? != BLOCK {
            return Err(Error::out_of_range(format!(
                "tar entry {name:?}: layer ends inside a sparse map"
            )));
        }
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.as_mut_bytes().copy_from_slice(&block);
        for s in ext.sparse().iter() {
            push(s)?;
        }
        extended = ext.is_extended();
    }
    check_sparse_map(&map, real, stored).map_err(err)?;
    Ok((map, real))
}

/// Reads the sparse map of a PAX sparse entry. Format 1.0 keeps the map at the start of the
/// entry's data (decimal numbers, one per line, padded to a block); 0.1 has it in
/// `GNU.sparse.map`; 0.0 in repeated offset/numbytes records. Returns the segments, the real
/// size and how many bytes of the entry's data the map took.
fn read_pax_sparse(
    stream: &mut LayerStream<'_>,
    sp: &PaxSparse,
    stored: u64,
    name: &str,
) -> Result<(SparseMap, u64, u64)> {
    let err = |what: String| {
        bad(format!(
            "tar entry {name:?}: invalid PAX sparse map: {what}"
        ))
    };
    let real = sp
        .real_size
        .ok_or_else(|| err("no GNU.sparse.realsize or GNU.sparse.size".into()))?;
    let numbers = |text: &[u8], sep: u8| -> Result<Vec<u64>> {
        text.split(|&b| b == sep)
            .map(|n| {
                std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| err(format!("bad number {:?}", String::from_utf8_lossy(n))))
            })
            .collect()
    };
    let pairs = |nums: Vec<u64>| -> Result<Vec<(u64, u64)>> {
        if nums.len() % 2 != 0 || nums.len() / 2 > MAX_SPARSE {
            return Err(err("odd or excessive number of map values".into()));
        }
        Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
    };
    let (map, map_bytes) = match (sp.major, sp.minor) {
        (Some(1), Some(0)) => {
            // Whole blocks, until the count line and all its pairs are complete lines.
            let mut text = Vec::new();
            let mut consumed = 0u64;
            loop {
                if consumed + BLOCK as u64 > stored || consumed > MAX_SPECIAL {
                    return Err(err("map runs past the entry's data".into()));
                }
                let mut block = [0u8; BLOCK];
                if stream.read_full(&mut block)? != BLOCK {
                    return Err(Error::out_of_range(format!(
                        "tar entry {name:?}: layer ends inside a sparse map"
                    )));
                }
                consumed += BLOCK as u64;
                text.extend_from_slice(&block);
                let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                // The last piece has no newline yet.
                let complete = &lines[..lines.len() - 1];
                let Some(first) = complete.first() else {
                    continue;
                };
                let count = numbers(first, b'\n')?[0];
                if count > MAX_SPARSE as u64 {
                    return Err(err("too many segments".into()));
                }
                let want = 1 + 2 * count as usize;
                if complete.len() >= want {
                    let nums = complete[1..want]
                        .iter()
                        .map(|n| numbers(n, b'\n').map(|v| v[0]))
                        .collect::<Result<Vec<u64>>>()?;
                    break (pairs(nums)?, consumed);
                }
            }
        }
        _ => {
            if let Some(m) = &sp.map {
                let nums = if m.is_empty() {
                    Vec::new()
                } else {
                    numbers(m, b',')?
                };
                (pairs(nums)?, 0)
            } else {
                if sp.offsets.len() != sp.lengths.len() {
                    return Err(err("offset and numbytes records do not pair up".into()));
                }
                (
                    sp.offsets
                        .iter()
                        .copied()
                        .zip(sp.lengths.iter().copied())
                        .collect(),
                    0,
                )
            }
        }
    };
    check_sparse_map(&map, real, stored - map_bytes).map_err(err)?;
    Ok((map, real, map_bytes))
}

/// Segments must be in order, not overlap, lie within the file and add up to the stored data.
fn check_sparse_map(map: &[(u64, u64)], real: u64, stored: u64) -> std::result::Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in map {
        if off < end {
            return Err("segments out of order or overlapping".into());
        }
        end = off
            .checked_add(len)
            .filter(|&e| e <= real)
            .ok_or_else(|| "segment past the end of the file".to_string())?;
        total = total.saturating_add(len);
    }
    if total != stored {
        return Err(format!(
            "segments hold {total} bytes but the entry stores {stored}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"1700000000.25"),
            Some(Time {
                sec: 1_700_000_000,
                nsec: 250_000_000
            })
        );
        assert_eq!(parse_pax_time(b"42"), Some(Time { sec: 42, nsec: 0 }));
        assert_eq!(
            parse_pax_time(b"-1.5"),
            Some(Time {
                sec: -2,
                nsec: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.2e3"), None);
    }
}
