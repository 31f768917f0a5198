//! Layer compare throughput, side by side with GNU tar archiving the same upper directory.
//!
//! Builds (deterministically) under `target/diff-compare-bench/` a lower directory and an
//! overlayfs snapshot on it for three cases, then times, warm cache, medians of `REPEATS`:
//! - `large`: ~200 MB of new large files (MB/s);
//! - `small`: ~50k new small files (files/s);
//! - `sparse`: a lower tree of ~50k small files of which 1% change (the overlay path reads only
//!   the upper directory, the tree walk compares everything).
//!
//! Each case measures `write_overlay_diff` and `write_diff` (uncompressed, to nowhere),
//! `compare` into a content store with gzip, GNU `tar -cf -` of the upper directory to
//! nowhere, and `tar -czf -` (GNU tar piping through gzip). Needs root (overlay mounts).
//! Run with `cargo bench -p stowage-diff --bench compare`; `STOWAGE_BENCH_SCALE=0.1` shrinks
//! every case.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stowage_content::LocalStore;
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_diff::{compare, write_diff, write_overlay_diff, CompareOptions};
use stowage_snapshots_storage::mount::TempMount;

const REPEATS: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Data that gzip shrinks about 3:1, like binaries: words from a small random vocabulary,
/// picked with a skew, with some noise.
fn data(rng: &mut Rng, vocab: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next();
        if r >> 60 == 0 {
            out.extend_from_slice(&r.to_le_bytes());
        } else {
            let idx = (((r & 0xfff) * ((r >> 12) & 0xfff)) >> 12) as usize;
            out.extend_from_slice(&vocab[idx]);
        }
    }
    out.truncate(len);
    out
}

fn vocab(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..4096)
        .map(|_| {
            let len = 2 + (rng.next() % 11) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect()
}

fn scale() -> f64 {
    std::env::var("STOWAGE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn small_files(root: &Path, count: usize, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let v = vocab(&mut rng);
    let mut bytes = 0;
    for i in 0..count {
        let dir = root.join(format!("d{:03}", i % 500));
        fs::create_dir_all(&dir).unwrap();
        let len = (rng.next() % 4096) as usize;
        fs::write(dir.join(format!("f{i:06}")), data(&mut rng, &v, len)).unwrap();
        bytes += len as u64;
    }
    bytes
}

fn large_files(root: &Path, total: u64, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let v = vocab(&mut rng);
    let each = 20 << 20;
    let n = (total / each).max(1);
    let dir = root.join("big");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("blob{i}")),
            data(&mut rng, &v, each as usize),
        )
        .unwrap();
    }
    n * each
}

struct Case {
    name: &'static str,
    dir: PathBuf,
    /// What the layer carries: bytes and entries in the upper directory.
    bytes: u64,
    files: u64,
}

impl Case {
    fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    fn overlay(&self) -> Mount {
        Mount::new(
            "overlay",
            "overlay",
            [
                "index=off".to_string(),
                format!("lowerdir={}", self.lower().display()),
                format!("upperdir={}", self.upper().display()),
                format!("workdir={}", self.dir.join("work").display()),
            ],
        )
    }
    fn lower_mount(&self) -> Mount {
        Mount::new("bind", self.lower().display().to_string(), ["rbind", "ro"])
    }
}

fn build(base: &Path, name: &'static str) -> Case {
    let dir = base.join(name);
    let s = scale();
    let _ = fs::remove_dir_all(&dir);
    for d in ["lower", "upper", "work"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let case = Case {
        name,
        dir,
        bytes: 0,
        files: 0,
    };
    let merged = TempMount::new(&[case.overlay()]).expect("overlay mount (needs root)");
    let (bytes, files) = match name {
        "large" => {
            let b = large_files(merged.path(), (200.0 * s) as u64 * (1 << 20), 1);
            (b, (b / (20 << 20)))
        }
        "small" => {
            let n = (50_000.0 * s) as usize;
            (small_files(merged.path(), n, 2), n as u64)
        }
        "sparse" => {
            merged.unmount().unwrap();
            let n = (50_000.0 * s) as usize;
            small_files(&case.lower(), n, 3);
            let merged = TempMount::new(&[case.overlay()]).unwrap();
            let mut bytes = 0;
            let mut changed = 0;
            for i in (0..n).step_by(100) {
                let p = merged
                    .path()
                    .join(format!("d{:03}", i % 500))
                    .join(format!("f{i:06}"));
                let body = format!("changed {i}\n").repeat(64);
                bytes += body.len() as u64;
                fs::write(p, body).unwrap();
                changed += 1;
            }
            merged.unmount().unwrap();
            return Case {
                bytes,
                files: changed,
                ..case
            };
        }
        _ => unreachable!("unknown case {name}"),
    };
    merged.unmount().unwrap();
    Case {
        bytes,
        files,
        ..case
    }
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..REPEATS).map(|_| f()).collect();
    v.sort();
    v[REPEATS / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn gnu_tar(dir: &Path, gzip: bool) -> Duration {
    timed(|| {
        let mut child = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg(if gzip { "-czf" } else { "-cf" })
            .arg("-")
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .expect("running GNU tar");
        // Read the pipe: GNU tar skips reading file data when writing to /dev/null itself.
        io::copy(child.stdout.as_mut().unwrap(), &mut io::sink()).unwrap();
        assert!(child.wait().unwrap().success());
    })
}

fn report(case: &Case, what: &str, d: Duration) {
    let secs = d.as_secs_f64();
    println!(
        "{:<7} {:<28} {:>9.1} ms {:>9.1} MB/s {:>11.0} files/s",
        case.name,
        what,
        secs * 1e3,
        case.bytes as f64 / secs / 1e6,
        case.files as f64 / secs
    );
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the compare benchmark needs root (overlay mounts)");
        std::process::exit(1);
    }
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/diff-compare-bench");
    fs::create_dir_all(&base).unwrap();
    let store_dir = base.join("content");
    println!(
        "{:<7} {:<28} {:>12} {:>14} {:>19}",
        "case", "what", "time", "throughput", "entries"
    );
    for name in ["large", "small", "sparse"] {
        let case = build(&base, name);
        let overlay_upper = || {
            timed(|| {
                write_overlay_diff(&case.lower(), &case.upper(), io::sink()).unwrap();
            })
        };
        report(&case, "overlay upper, tar", median(overlay_upper));
        let merged = TempMount::new(&[case.overlay()]).unwrap();
        let walk = || {
            timed(|| {
                write_diff(&case.lower(), merged.path(), io::sink()).unwrap();
            })
        };
        report(&case, "tree walk, tar", median(walk));
        merged.unmount().unwrap();

        let store = LocalStore::open(&store_dir).unwrap();
        let run_compare = |media_type: &str| {
            let _ = fs::remove_dir_all(&store_dir);
            let store = LocalStore::open(&store_dir).unwrap();
            timed(|| {
                compare(
                    &[case.lower_mount()],
                    &[case.overlay()],
                    &store,
                    &CompareOptions {
                        media_type: media_type.into(),
                        ..CompareOptions::default()
                    },
                )
                .unwrap();
            })
        };
        drop(store);
        report(
            &case,
            "compare, gzip into store",
            median(|| run_compare(mediatype::OCI_LAYER_GZIP)),
        );
        report(
            &case,
            "compare, zstd into store",
            median(|| run_compare(mediatype::OCI_LAYER_ZSTD)),
        );
        report(
            &case,
            "compare, tar into store",
            median(|| run_compare(mediatype::OCI_LAYER)),
        );
        report(
            &case,
            "gnu tar -cf - upper",
            median(|| gnu_tar(&case.upper(), false)),
        );
        report(
            &case,
            "gnu tar -czf - upper",
            median(|| gnu_tar(&case.upper(), true)),
        );
        let _ = fs::remove_dir_all(&case.dir);
    }
    let _ = fs::remove_dir_all(&store_dir);
}
