//! Tar header encoding in the shape Go's `archive/tar` gives containerd's layers with
//! `FormatPAX`: a ustar block (magic `ustar\0`, version `00`, empty user and group names, no
//! prefix field), preceded by a PAX extended header (`x`, records sorted by key) only when a
//! value does not fit the ustar block or xattrs are present.

use std::collections::BTreeMap;
use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;

/// Tar type flags.
pub(crate) mod kind {
    pub const REGULAR: u8 = b'0';
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
}

/// One entry's header fields, as they go into the layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub devmajor: u64,
    pub devminor: u64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Whether `x` fits an octal field of `len` bytes (digits plus a NUL).
fn fits_octal(len: usize, x: u64) -> bool {
    let bits = (len as u32 - 1) * 3;
    bits >= 64 || x < (1u64 << bits)
}

fn put_octal(field: &mut [u8], x: u64) {
    let digits = field.len() - 1;
    let s = format!("{x:0digits$o}");
    let s = s.as_bytes();
    // Callers check fits_octal first; an oversized value keeps its low digits rather than
    // overflowing the field.
    let s = &s[s.len().saturating_sub(digits)..];
    field[..s.len()].copy_from_slice(s);
    field[s.len()] = 0;
}

fn put_str(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
}

/// Go's `toASCII`: the best-effort header field for a name that goes in a PAX record.
fn ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|b| *b < 0x80).collect()
}

fn needs_pax_string(s: &[u8], field: usize) -> bool {
    s.len() > field || s.iter().any(|b| *b >= 0x80)
}

/// One PAX record: `<len> <key>=<value>\n`, the length counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() > base.to_string().len() {
        len += 1;
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn finish_block(b: &mut [u8; BLOCK]) {
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|c| u64::from(*c)).sum();
    put_octal(&mut b[148..155], sum);
    b[155] = b' ';
}

/// The name of the PAX header entry for `name`, as Go forms it (`dir/PaxHeaders.0/base`).
fn pax_entry_name(name: &[u8]) -> Vec<u8> {
    let trimmed = match name.iter().rposition(|b| *b != b'/') {
        Some(i) if name.len() > i + 1 => &name[..=i],
        _ => name,
    };
    let split = trimmed
        .iter()
        .rposition(|b| *b == b'/')
        .map_or(0, |i| i + 1);
    let (dir, base) = if trimmed.len() == name.len() {
        (&name[..split], &name[split..])
    } else {
        // `a/b/` splits as dir `a/b/`, base empty.
        (name, &name[name.len()..])
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0");
    if !base.is_empty() {
        out.push(b'/');
        out.extend_from_slice(base);
    }
    let mut out = ascii(&out);
    out.truncate(100);
    while out.last() == Some(&b'/') {
        out.pop();
    }
    out
}

/// Encodes `h` (PAX header entry first when needed) and writes it to `out`. Returns the number
/// of bytes written.
pub(crate) fn write_header(out: &mut dyn Write, h: &Header) -> io::Result<u64> {
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut b = [0u8; BLOCK];

    if needs_pax_string(&h.name, 100) {
        pax.insert(b"path".to_vec(), h.name.clone());
    }
    put_str(&mut b[0..100], &ascii(&h.name));
    if needs_pax_string(&h.link, 100) {
        pax.insert(b"linkpath".to_vec(), h.link.clone());
    }
    put_str(&mut b[157..257], &ascii(&h.link));
    put_octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    for (field, key, v) in [
        (108..116, &b"uid"[..], h.uid),
        (116..124, &b"gid"[..], h.gid),
        (124..136, &b"size"[..], h.size),
    ] {
        if fits_octal(field.len(), v) {
            put_octal(&mut b[field], v);
        } else {
            pax.insert(key.to_vec(), v.to_string().into_bytes());
            put_octal(&mut b[field], 0);
        }
    }
    match u64::try_from(h.mtime) {
        Ok(t) if fits_octal(12, t) => put_octal(&mut b[136..148], t),
        _ => {
            pax.insert(b"mtime".to_vec(), h.mtime.to_string().into_bytes());
            put_octal(&mut b[136..148], 0);
        }
    }
    b[156] = h.typeflag;
    for (field, v, what) in [
        (329..337, h.devmajor, "device major"),
        (337..345, h.devminor, "device minor"),
    ] {
        if !fits_octal(8, v) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what} number {v} does not fit a tar header (at most 2097151)"),
            ));
        }
        put_octal(&mut b[field], v);
    }
    for (name, value) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax.insert(key, value.clone());
    }
    finish_block(&mut b);

    let mut written = 0u64;
    if !pax.is_empty() {
        let mut data = Vec::new();
        for (k, v) in &pax {
            data.extend_from_slice(&pax_record(k, v));
        }
        let mut x = [0u8; BLOCK];
        put_str(&mut x[0..100], &pax_entry_name(&h.name));
        put_octal(&mut x[100..108], 0);
        put_octal(&mut x[108..116], 0);
        put_octal(&mut x[116..124], 0);
        if !fits_octal(12, data.len() as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "extended header records exceed 8 GiB",
            ));
        }
        put_octal(&mut x[124..136], data.len() as u64);
        put_octal(&mut x[136..148], 0);
        x[156] = kind::PAX;
        finish_block(&mut x);
        out.write_all(&x)?;
        out.write_all(&data)?;
        let pad = padding(data.len() as u64);
        out.write_all(&ZEROS[..pad])?;
        written += (BLOCK + data.len() + pad) as u64;
    }
    out.write_all(&b)?;
    Ok(written + BLOCK as u64)
}

pub(crate) static ZEROS: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

/// Bytes of zero padding after `len` bytes of data.
pub(crate) fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // 90 bytes of value make 99 in all; one more crosses to three digits, which adds one.
        let r = pax_record(b"path", &[b'x'; 90]);
        assert_eq!(r.len(), 99);
        assert!(r.starts_with(b"99 path="));
        let r = pax_record(b"path", &[b'x'; 91]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path="));
    }

    #[test]
    fn sizes_past_8_gib_go_to_a_pax_record() {
        let h = Header {
            name: b"huge".to_vec(),
            typeflag: kind::REGULAR,
            mode: 0o644,
            size: 1 << 34,
            ..Header::default()
        };
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        // The PAX header, its one block of records, then the ustar block with size 0.
        assert_eq!(out.len(), 3 * BLOCK);
        assert_eq!(out[156], kind::PAX);
        let records = &out[BLOCK..2 * BLOCK];
        assert!(records.starts_with(b"20 size=17179869184\n"), "{records:?}");
        assert_eq!(&out[2 * BLOCK + 124..2 * BLOCK + 136], b"00000000000\0");
        let mut ar = tar::Archive::new(&out[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), 1 << 34);
    }

    #[test]
    fn pax_entry_names_follow_go() {
        assert_eq!(pax_entry_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_entry_name(b"c"), b"PaxHeaders.0/c");
        assert_eq!(pax_entry_name(b"a/b/"), b"a/b/PaxHeaders.0");
    }

    #[test]
    fn plain_header_is_one_ustar_block_readable_by_tar() {
        let h = Header {
            name: b"dir/file".to_vec(),
            typeflag: kind::REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 3,
            mtime: 1_700_000_000,
            ..Header::default()
        };
        let mut out = Vec::new();
        assert_eq!(write_header(&mut out, &h).unwrap(), 512);
        out.extend_from_slice(b"abc");
        out.extend_from_slice(&ZEROS[..padding(3)]);
        out.extend_from_slice(&ZEROS);
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[100..108], b"0004755\0");
        let mut ar = tar::Archive::new(&out[..]);
        let mut entries = ar.entries().unwrap();
        let e = entries.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), b"dir/file");
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        assert_eq!(e.header().uid().unwrap(), 1000);
        assert_eq!(e.header().gid().unwrap(), 100);
        assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
        assert!(entries.next().is_none());
    }

    #[test]
    fn long_values_go_to_pax_records() {
        let long = vec![b'n'; 150];
        let h = Header {
            name: long.clone(),
            link: [b"t/".as_slice(), &long].concat(),
            typeflag: kind::SYMLINK,
            mode: 0o777,
            uid: 1 << 40,
            mtime: -5,
            xattrs: vec![(b"user.k".to_vec(), b"v\0bin".to_vec())],
            ..Header::default()
        };
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        out.extend_from_slice(&ZEROS);
        let mut ar = tar::Archive::new(&out[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), &long[..]);
        assert_eq!(e.link_name_bytes().unwrap().as_ref(), &h.link[..]);
        let pax: Vec<(Vec<u8>, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key_bytes().to_vec(), x.value_bytes().to_vec())
            })
            .collect();
        let keys: Vec<&[u8]> = pax.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            keys,
            vec![
                &b"SCHILY.xattr.user.k"[..],
                b"linkpath",
                b"mtime",
                b"path",
                b"uid"
            ]
        );
        assert_eq!(pax[0].1, b"v\0bin");
        assert_eq!(pax[2].1, b"-5");
        assert_eq!(pax[4].1, (1u64 << 40).to_string().as_bytes());
        assert!(entries.next().is_none());
    }
}
