//! Ingest throughput of the local store against the machine's own references, measured in the
//! same run on the same disk:
//!
//! - ingest: write 1 GiB through a writer (SHA-256 as it goes), fsync, verify, rename;
//! - SHA-256 over the same bytes in memory;
//! - a plain sequential write of 1 GiB to the same directory, then fsync.
//!
//! Prints MB/s for each (median of a few repeats) and the ratio of ingest to the slower
//! reference; the goal is at least 0.8. Run with `cargo bench -p stowage-content --bench ingest`.
//! `STOWAGE_BENCH_MIB` changes the blob size, `STOWAGE_BENCH_REPEATS` the repeats.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use stowage_content::LocalStore;
use stowage_core_types::content::{Ingester, WriterOptions};
use stowage_core_types::{Descriptor, Labels};
use stowage_digest_identity::Digester;

const CHUNK: usize = 1 << 20;
const PATTERN_MIB: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/` of this build: the bench binary lives in `target/<profile>/deps/`.
fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    let exe = std::env::current_exe().expect("bench executable path");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn pattern() -> Vec<u8> {
    // Incompressible and not all-zero, so no layer of the stack can take shortcuts.
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut out = vec![0u8; PATTERN_MIB << 20];
    for c in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    out
}

/// Calls `f` with each 1 MiB chunk of the `total`-byte stream (the pattern, repeated).
fn for_each_chunk(pat: &[u8], total: usize, mut f: impl FnMut(&[u8])) {
    let mut done = 0;
    while done < total {
        let off = done % pat.len();
        let n = CHUNK.min(total - done).min(pat.len() - off);
        f(&pat[off..off + n]);
        done += n;
    }
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries with no arguments in test mode; `cargo bench`
    // passes `--bench`. Only measure for real under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest benchmark: run with `cargo bench -p stowage-content --bench ingest`");
        return;
    }
    let total = env_usize("STOWAGE_BENCH_MIB", 1024) << 20;
    let repeats = env_usize("STOWAGE_BENCH_REPEATS", 3).max(1);
    let base = target_dir().join("bench-tmp");
    fs::create_dir_all(&base).expect("create bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("bench temp dir");
    let pat = pattern();

    // The digest the ingest must produce, computed once up front.
    let mut d = Digester::sha256();
    for_each_chunk(&pat, total, |c| d.update(c));
    let digest = d.finish();
    let desc = Descriptor::new("application/octet-stream", digest.clone(), total as u64);

    let (mut sha, mut disk, mut ingest) = (Vec::new(), Vec::new(), Vec::new());
    let mut commit_share = Vec::new();
    for rep in 0..repeats {
        // SHA-256 in memory.
        let t = Instant::now();
        let mut d = Digester::sha256();
        for_each_chunk(&pat, total, |c| d.update(c));
        let got = d.finish();
        sha.push(mbps(total, t.elapsed()));
        assert_eq!(got, digest);

        // Plain sequential write + fsync on the same disk.
        let path = tmp.path().join(format!("plain-{rep}"));
        let t = Instant::now();
        let mut f = File::create(&path).expect("create plain file");
        for_each_chunk(&pat, total, |c| f.write_all(c).expect("plain write"));
        f.sync_all().expect("fsync plain file");
        drop(f);
        disk.push(mbps(total, t.elapsed()));
        fs::remove_file(&path).expect("remove plain file");

        // Ingest into a fresh store.
        let store = LocalStore::open(tmp.path().join(format!("store-{rep}"))).expect("store");
        let t = Instant::now();
        let mut w = store
            .writer(WriterOptions::with_ref("bench").expect(desc.clone()))
            .expect("writer");
        for_each_chunk(&pat, total, |c| w.write_all(c).expect("ingest write"));
        let written = t.elapsed();
        w.commit(Some(total as u64), Some(&digest), Labels::new())
            .expect("commit");
        ingest.push(mbps(total, t.elapsed()));
        commit_share.push((t.elapsed() - written).as_secs_f64() / t.elapsed().as_secs_f64());
        drop(w);
        fs::remove_dir_all(store.root()).expect("remove store");
    }

    // Small blobs (manifests, configs): per-blob cost is the fsyncs, not the bytes.
    let store = LocalStore::open(tmp.path().join("small")).expect("store");
    let small_n = env_usize("STOWAGE_BENCH_SMALL", 200);
    let t = Instant::now();
    for i in 0..small_n {
        let mut blob = pat[i * 4096..(i + 1) * 4096].to_vec();
        blob[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut w = store
            .writer(WriterOptions::with_ref(format!("small-{i}")))
            .expect("writer");
        w.write_all(&blob).expect("small write");
        w.commit(Some(4096), None, Labels::new())
            .expect("small commit");
    }
    let per_blob = t.elapsed() / small_n.max(1) as u32;

    let (sha, disk, ingest) = (median(sha), median(disk), median(ingest));
    let slower = sha.min(disk);
    println!(
        "content ingest of {} MiB on {} (median of {repeats})",
        total >> 20,
        tmp.path().display()
    );
    println!("  sha256 in memory          {sha:>8.0} MB/s");
    println!("  sequential write + fsync  {disk:>8.0} MB/s");
    println!(
        "  ingest (write+sha+commit) {ingest:>8.0} MB/s ({:.0}% of it in commit: fsync, rename)",
        median(commit_share) * 100.0
    );
    println!(
        "  ratio to the slower reference: {:.2} (goal >= 0.80)",
        ingest / slower
    );
    println!(
        "  small blobs (4 KiB, open+write+commit): {:.2} ms each ({small_n} blobs)",
        per_blob.as_secs_f64() * 1e3
    );
}
