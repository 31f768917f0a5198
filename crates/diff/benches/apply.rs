//! Layer apply throughput, side by side with GNU tar and with plain decompression.
//!
//! Generates (deterministically) a ~200 MB layer of large files and a layer of ~50k small
//! files, gzip-compressed, under `target/diff-bench/`, then times on the same filesystem:
//! - `decompress`: flate2 (zlib-rs) inflating the layer to nowhere, the floor of any apply;
//! - `stowage plain` / `stowage overlay`: `apply_layer` onto an empty directory in delete and
//!   overlay-whiteout mode;
//! - `gnu tar -xzf`: GNU tar extracting the same file (as root it also restores owners/modes).
//!
//! Medians of `REPEATS` runs; output directories are removed and the filesystem synced between
//! runs, outside the timed part. Run with `cargo bench -p stowage-diff --bench apply`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stowage_diff::{apply_layer, ApplyOptions, LayerEncoding, WhiteoutMode};

const REPEATS: usize = 3;

/// xorshift64*: deterministic and fast enough to generate hundreds of MB.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Fills `out` with data that compresses roughly like binaries do (about 3:1 with gzip):
/// tokens from a fixed random vocabulary, chosen with a skew.
struct DataGen {
    rng: Rng,
    vocab: Vec<Vec<u8>>,
}

impl DataGen {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let vocab = (0..4096)
            .map(|_| {
                let len = 2 + (rng.next() % 11) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            })
            .collect();
        DataGen { rng, vocab }
    }

    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        out.clear();
        while out.len() < len {
            let r = self.rng.next();
            // Skewed choice: low indices are much more frequent.
            let idx = (((r & 0xfff) * ((r >> 12) & 0xfff)) >> 12) as usize;
            if r >> 60 == 0 {
                // Some incompressible noise.
                out.extend_from_slice(&r.to_le_bytes());
            } else {
                out.extend_from_slice(&self.vocab[idx]);
            }
        }
        out.truncate(len);
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

struct Generated {
    path: PathBuf,
    compressed: u64,
    uncompressed: u64,
    files: u64,
}

fn write_layer(
    path: &Path,
    build: impl FnOnce(&mut tar::Builder<&mut dyn Write>) -> u64,
) -> Generated {
    let file = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut counter = CountingWriter {
        inner: flate2::write::GzEncoder::new(file, flate2::Compression::default()),
        n: 0,
    };
    let files = {
        let mut b = tar::Builder::new(&mut counter as &mut dyn Write);
        let files = build(&mut b);
        b.finish().unwrap();
        files
    };
    let uncompressed = counter.n;
    counter.inner.finish().unwrap().flush().unwrap();
    Generated {
        path: path.to_path_buf(),
        compressed: fs::metadata(path).unwrap().len(),
        uncompressed,
        files,
    }
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn large_layer(dir: &Path) -> Generated {
    write_layer(&dir.join("large.tar.gz"), |b| {
        let mut gen = DataGen::new(1);
        let mut buf = Vec::new();
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            "data/",
            io::empty(),
        )
        .unwrap();
        let sizes = [
            64 << 20,
            48 << 20,
            32 << 20,
            24 << 20,
            16 << 20,
            8 << 20,
            8 << 20,
        ];
        for (i, size) in sizes.iter().enumerate() {
            gen.fill(&mut buf, *size);
            let mut h = header(tar::EntryType::Regular, 0o755, *size as u64);
            b.append_data(&mut h, format!("data/blob{i}.bin"), &buf[..])
                .unwrap();
        }
        sizes.len() as u64
    })
}

fn small_layer(dir: &Path) -> Generated {
    write_layer(&dir.join("small.tar.gz"), |b| {
        let mut gen = DataGen::new(2);
        let mut rng = Rng(99);
        let mut buf = Vec::new();
        let mut files = 0;
        for d in 0..500 {
            let dname = format!("usr/share/pkg{:03}/", d);
            b.append_data(
                &mut header(tar::EntryType::Directory, 0o755, 0),
                &dname,
                io::empty(),
            )
            .unwrap();
            for f in 0..100 {
                let size = (rng.next() % 2048) as usize;
                gen.fill(&mut buf, size);
                let mut h = header(tar::EntryType::Regular, 0o644, size as u64);
                b.append_data(&mut h, format!("{dname}file{f:03}.txt"), &buf[..])
                    .unwrap();
                files += 1;
            }
        }
        files
    })
}

fn sync() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times `run` REPEATS times, each into a fresh empty `out` directory.
fn time(out: &Path, mut run: impl FnMut(&Path)) -> Duration {
    let mut times = Vec::new();
    for _ in 0..REPEATS {
        if out.exists() {
            fs::remove_dir_all(out).unwrap();
        }
        fs::create_dir_all(out).unwrap();
        sync();
        let t = Instant::now();
        run(out);
        times.push(t.elapsed());
    }
    fs::remove_dir_all(out).unwrap();
    sync();
    median(times)
}

fn decompress(layer: &Path) {
    let f = File::open(layer).unwrap();
    let mut d = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(128 << 10, f));
    let mut buf = vec![0u8; 1 << 20];
    while d.read(&mut buf).unwrap() > 0 {}
}

fn bench_layer(name: &str, g: &Generated, work: &Path) {
    let mb = g.uncompressed as f64 / 1e6;
    println!(
        "\n== {name}: {} files, {:.1} MB uncompressed, {:.1} MB gzip ==",
        g.files,
        mb,
        g.compressed as f64 / 1e6
    );
    let out = work.join("out");
    let t_dec = time(&out, |_| decompress(&g.path));
    let t_plain = time(&out, |o| {
        let f = File::open(&g.path).unwrap();
        apply_layer(f, LayerEncoding::Detect, o, &ApplyOptions::default()).unwrap();
    });
    let t_ovl = time(&out, |o| {
        let f = File::open(&g.path).unwrap();
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay { user_xattr: false },
            ..ApplyOptions::default()
        };
        apply_layer(f, LayerEncoding::Detect, o, &opts).unwrap();
    });
    let t_inline = time(&out, |o| {
        let f = File::open(&g.path).unwrap();
        let opts = ApplyOptions {
            threaded: false,
            ..ApplyOptions::default()
        };
        apply_layer(f, LayerEncoding::Detect, o, &opts).unwrap();
    });
    let t_tar = time(&out, |o| {
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&g.path)
            .arg("-C")
            .arg(o)
            .status()
            .expect("running GNU tar");
        assert!(st.success(), "tar failed");
    });
    let row = |label: &str, t: Duration| {
        let s = t.as_secs_f64();
        println!(
            "{label:<26} {:>8.3} s {:>9.1} MB/s {:>10.0} files/s   x{:.2} of decompress",
            s,
            mb / s,
            g.files as f64 / s,
            s / t_dec.as_secs_f64()
        );
    };
    row("decompress (flate2)", t_dec);
    row("stowage plain (threaded)", t_plain);
    row("stowage overlay (threaded)", t_ovl);
    row("stowage plain (1 thread)", t_inline);
    row("gnu tar -xzf", t_tar);
    println!(
        "stowage plain / gnu tar: {:.2}   stowage overlay / gnu tar: {:.2}   (<1 = faster than tar)",
        t_plain.as_secs_f64() / t_tar.as_secs_f64(),
        t_ovl.as_secs_f64() / t_tar.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful: run
    // only when asked to benchmark, so test runs stay fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("apply benchmark: run with `cargo bench -p stowage-diff --bench apply`");
        return;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let work = target.join("diff-bench");
    if work.exists() {
        fs::remove_dir_all(&work).unwrap();
    }
    fs::create_dir_all(&work).unwrap();
    let t = Instant::now();
    let large = large_layer(&work);
    let small = small_layer(&work);
    println!(
        "generated layers in {:.1} s under {}",
        t.elapsed().as_secs_f64(),
        work.display()
    );
    // STOWAGE_DIFF_BENCH=large|small runs one of the two.
    let only = std::env::var("STOWAGE_DIFF_BENCH").unwrap_or_default();
    if only.is_empty() || only == "large" {
        bench_layer("large files", &large, &work);
    }
    if only.is_empty() || only == "small" {
        bench_layer("small files", &small, &work);
    }
    fs::remove_dir_all(&work).unwrap();
}
