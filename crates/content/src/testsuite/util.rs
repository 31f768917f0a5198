//! Helpers shared by the conformance cases.

use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use stowage_core_types::content::{read_blob, Info, Store, Writer, WriterOptions};
use stowage_core_types::descriptor::Descriptor;
use stowage_core_types::digest::Digest;
use stowage_core_types::error::{Error, ErrorKind, Result};
use stowage_core_types::labels::Labels;
use stowage_digest_identity::{digest_of, Digester};

/// File timestamps come from the kernel's coarse clock, which can lag the precise clock
/// the test reads by a tick; allow that much.
const CLOCK_SLACK: Duration = Duration::from_millis(20);

/// Deterministic pseudo-random bytes (splitmix64), distinct per seed.
pub(crate) fn content(size: usize, seed: u64) -> (Vec<u8>, Digest) {
    let mut out = Vec::with_capacity(size);
    let mut g = Gen::new(seed);
    while out.len() < size {
        let v = g.next_u64().to_le_bytes();
        let n = (size - out.len()).min(8);
        out.extend_from_slice(&v[..n]);
    }
    let d = digest_of(&out);
    (out, d)
}

pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Self {
        Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A reader producing `len` pseudo-random bytes without holding them.
pub(crate) struct GenReader {
    gen: Gen,
    left: u64,
}

impl GenReader {
    pub(crate) fn new(seed: u64, len: u64) -> Self {
        GenReader {
            gen: Gen::new(seed),
            left: len,
        }
    }
}

impl Read for GenReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Whole 8-byte words only (except at the end), so chunking never changes the stream.
        let n = (buf.len() as u64).min(self.left) as usize;
        let n = if n >= 8 { n - n % 8 } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            let v = self.gen.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub(crate) fn desc(digest: &Digest, size: usize) -> Descriptor {
    Descriptor::new("application/octet-stream", digest.clone(), size as u64)
}

pub(crate) fn open(store: &dyn Store, reference: &str) -> Box<dyn Writer> {
    store
        .writer(WriterOptions::with_ref(reference))
        .unwrap_or_else(|e| panic!("open writer {reference:?}: {e}"))
}

pub(crate) fn open_expect(store: &dyn Store, reference: &str, d: &Descriptor) -> Box<dyn Writer> {
    store
        .writer(WriterOptions::with_ref(reference).expect(d.clone()))
        .unwrap_or_else(|e| panic!("open writer {reference:?} expecting {}: {e}", d.digest))
}

pub(crate) fn write(w: &mut dyn Writer, data: &[u8]) {
    w.write_all(data)
        .map_err(Error::from)
        .unwrap_or_else(|e| panic!("write {} bytes: {e}", data.len()));
}

/// Writes in small chunks, as containerd's suite does with a 32-byte copy buffer.
pub(crate) fn write_chunked(w: &mut dyn Writer, data: &[u8], chunk: usize) {
    for c in data.chunks(chunk) {
        write(w, c);
    }
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn expect_kind<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected a {kind} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: wrong error kind: {e}");
            e
        }
    }
}

pub(crate) fn within(t: SystemTime, lo: SystemTime, hi: SystemTime, what: &str) {
    assert!(
        t + CLOCK_SLACK >= lo && t <= hi + CLOCK_SLACK,
        "{what}: {t:?} not within [{lo:?}, {hi:?}]"
    );
}

/// Checks `info` of `d` like containerd's `checkInfo`: size, labels and time windows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_info(
    store: &dyn Store,
    d: &Digest,
    size: usize,
    labels: &Labels,
    created: (SystemTime, SystemTime),
    updated: (SystemTime, SystemTime),
) -> Info {
    let info = store.info(d).unwrap_or_else(|e| panic!("info {d}: {e}"));
    assert_eq!(&info.digest, d);
    assert_eq!(info.size, size as u64, "size of {d}");
    assert_eq!(&info.labels, labels, "labels of {d}");
    within(info.created_at, created.0, created.1, "created_at");
    within(info.updated_at, updated.0, updated.1, "updated_at");
    info
}

/// Reads a blob back and checks it is exactly `data`.
pub(crate) fn check_content(store: &dyn Store, d: &Digest, data: &[u8]) {
    let got = read_blob(store, &desc(d, data.len())).unwrap_or_else(|e| panic!("read {d}: {e}"));
    assert_eq!(got.len(), data.len(), "length of {d}");
    assert!(got == data, "content of {d} differs");
}

/// Digest of a stream, for checking big blobs without holding them.
pub(crate) fn digest_stream(mut r: impl Read) -> (Digest, u64) {
    let mut d = Digester::sha256();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(Error::from).expect("read stream");
        if n == 0 {
            break;
        }
        d.update(&buf[..n]);
    }
    let n = d.len();
    (d.finish(), n)
}

pub(crate) fn refs_of(list: &[stowage_core_types::content::Status]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.reference.clone()).collect();
    v.sort();
    v
}
