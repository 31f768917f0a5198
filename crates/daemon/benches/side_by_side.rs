//! stowaged next to containerd 1.6, both running at once on private roots and sockets, driven
//! by the same `ctr` commands: cold registry pulls of a small, a Debian-sized and a big image
//! into overlayfs and native, `ctr images ls` over many images, `ctr content ls` over many
//! blobs, snapshot prepare/commit/remove, and `ctr content ingest` of a large stream. Prints
//! the medians, the ratio stowaged/containerd against its goal, and each daemon's peak RSS.
//!
//! Run with `cargo xtask bench daemon` or `cargo bench -p stowage-daemon --bench side_by_side`
//! as root, with containerd, ctr, docker-registry and skopeo installed.
//!
//! - `STOWAGE_BENCH_QUICK=1`: small images and counts, one repeat (a couple of minutes).
//! - `STOWAGE_BENCH_REPEATS`: timed runs per pull, list and ingest measure (default 3; 1 when
//!   quick). The two daemons alternate which goes first. Snapshot operations are interleaved
//!   one by one instead (op k on one daemon, then on the other), and the snapshot RPC rows in
//!   turns of n/10 calls, so both see the same drift of the machine's speed.
//! - `STOWAGE_BENCH_ONLY`: comma-separated sections to run (`pull`, `lists`, `snapshots`,
//!   `ingest`); default all.
//! - `STOWAGE_BENCH_LOG`: stowaged's log level (default `info`, as containerd's; `debug` names
//!   every RPC in its log, which is kept when `STOWAGE_BENCH_KEEP_LOGS` names a directory).
//! - `STOWAGE_BENCH_DIR`: where the daemons' roots go (default /var/tmp).
//!
//! The lists section also times single `Version`, `Content.Info` and `Content.Read` calls
//! over gRPC (per-call medians), which `ctr images ls` chains several of per image, so a slow
//! list can be told apart as framework overhead or handler work.
//!
//! Generated images are cached under `target/bench-images`. Before every timed pull the image,
//! its content and its snapshots are removed from the daemon (`ctr images rm --sync`, then
//! checked gone) and the page cache is dropped, whichever daemon runs.

#[path = "side_by_side/images.rs"]
mod images;
#[path = "side_by_side/populate.rs"]
mod populate;
#[path = "side_by_side/procs.rs"]
mod procs;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use images::{ImageSpec, LayerSpec, Layout};
use procs::{Daemon, Workdir};
use stowage_tests::registry::Registry;

/// What one run measures, from the environment.
#[derive(Debug)]
struct Settings {
    quick: bool,
    repeats: usize,
    images: usize,
    blobs: usize,
    blob_size: usize,
    snapshots: usize,
    ingest: u64,
    sections: Vec<String>,
    log_level: String,
    dir: PathBuf,
    cache: PathBuf,
    keep_logs: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let quick = var("STOWAGE_BENCH_QUICK").as_deref() == Some("1");
        let repeats = var("STOWAGE_BENCH_REPEATS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 })
            .max(1);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        Settings {
            quick,
            repeats,
            images: if quick { 1_000 } else { 10_000 },
            blobs: if quick { 1_000 } else { 10_000 },
            blob_size: 1024,
            snapshots: if quick { 20 } else { 200 },
            ingest: if quick { 64 << 20 } else { 1 << 30 },
            sections: var("STOWAGE_BENCH_ONLY")
                .unwrap_or_else(|| "pull,lists,snapshots,ingest".into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
            log_level: var("STOWAGE_BENCH_LOG").unwrap_or_else(|| "info".into()),
            dir: var("STOWAGE_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/var/tmp".into()),
            cache: target.join("bench-images"),
            keep_logs: var("STOWAGE_BENCH_KEEP_LOGS").map(PathBuf::from),
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    /// The three pull images: small, Debian-sized (one layer of ~100 MB in ~9k files) and big
    /// (~1 GB in 13 layers, one of them 50k small files; the large layers sit on top so the
    /// native snapshotter's per-layer copies stay within reach of a 30-minute run).
    fn pull_images(&self) -> Vec<ImageSpec> {
        let l = |files, min, max| LayerSpec { files, min, max };
        let small = ImageSpec {
            name: "small".into(),
            layers: vec![l(100, 1_000, 20_000), l(100, 1_000, 20_000)],
        };
        if self.quick {
            return vec![
                small,
                ImageSpec {
                    name: "debian-quick".into(),
                    layers: vec![l(2_000, 0, 24_000)],
                },
                ImageSpec {
                    name: "big-quick".into(),
                    layers: [
                        vec![l(50, 10_000, 190_000); 4],
                        vec![l(5_000, 64, 4_000)],
                        vec![l(200, 10_000, 390_000)],
                    ]
                    .concat(),
                },
            ];
        }
        vec![
            small,
            ImageSpec {
                name: "debian".into(),
                layers: vec![l(9_000, 0, 24_000)],
            },
            ImageSpec {
                name: "big".into(),
                layers: [
                    vec![l(300, 20_000, 180_000); 10],
                    vec![l(50_000, 64, 4_000)],
                    vec![l(1_500, 10_000, 390_000); 2],
                ]
                .concat(),
            },
        ]
    }
}

/// One measure: the medians of each daemon and the ratio's goal (none for a measure shown
/// only to explain another).
#[derive(Debug)]
struct Row {
    measure: String,
    containerd: Duration,
    stowaged: Duration,
    goal: Option<f64>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.stowaged.as_secs_f64() / self.containerd.as_secs_f64().max(1e-9)
    }
}

/// Peak RSS (KiB) of each daemon over one section.
#[derive(Debug)]
struct Rss {
    section: &'static str,
    containerd: u64,
    stowaged: u64,
    /// (anonymous, file-backed) KiB resident at the section's end.
    split: [(u64, u64); 2],
}

/// The unpack time ctr prints at the end of a pull (`done: 46.9ms`, a Go duration).
///
/// A cold `ctr images pull` of a small image is mostly time no daemon can shorten: ctr's
/// start (its binary is out of the page cache too) and the fetch phase, which ctr rounds up
/// to its 100 ms progress tick (it waits for the next tick to draw the final progress before
/// it unpacks). The unpack after it is the part that depends on the daemon.
fn unpack_time(out: &str) -> Option<Duration> {
    let text = out
        .rsplit("done: ")
        .next()
        .filter(|_| out.contains("done: "))?;
    let token = text.split_whitespace().next()?;
    let split = token
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(token.len());
    let (num, unit) = token.split_at(split);
    let num: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => num,
        "ms" => num / 1e3,
        "µs" | "us" => num / 1e6,
        "ns" => num / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// The two daemons (containerd first), the registry and the scratch directory. Fields drop in
/// order: daemons and registry stop before the directory's mounts are detached and it goes.
#[derive(Debug)]
struct Bench {
    daemons: Vec<Daemon>,
    registry: Option<Registry>,
    settings: Settings,
    rows: Vec<Row>,
    rss: Vec<Rss>,
    notes: Vec<String>,
    cold: bool,
    work: Workdir,
}

impl Bench {
    /// Daemon indexes in the order repeat `r` runs them: alternating who goes first.
    fn order(r: usize) -> [usize; 2] {
        if r % 2 == 0 {
            [0, 1]
        } else {
            [1, 0]
        }
    }

    fn drop_caches(&mut self) {
        if !procs::drop_caches() && self.cold {
            self.cold = false;
            self.notes
                .push("page cache NOT dropped (needs root): runs alternate instead".into());
        }
    }

    fn section_start(&self) {
        for d in &self.daemons {
            d.reset_peak_rss();
        }
    }

    fn section_end(&mut self, section: &'static str) -> Result<()> {
        self.rss.push(Rss {
            section,
            containerd: self.daemons[0].peak_rss_kib()?,
            stowaged: self.daemons[1].peak_rss_kib()?,
            split: [
                self.daemons[0].rss_split_kib()?,
                self.daemons[1].rss_split_kib()?,
            ],
        });
        Ok(())
    }

    fn push_row(&mut self, measure: String, times: [Vec<Duration>; 2], goal: Option<f64>) {
        let [c, s] = times;
        let row = Row {
            measure,
            containerd: median(c),
            stowaged: median(s),
            goal,
        };
        eprintln!(
            "  {:<36} containerd {:>10}  stowaged {:>10}  ratio {:.2}",
            row.measure,
            fmt_dur(row.containerd),
            fmt_dur(row.stowaged),
            row.ratio()
        );
        self.rows.push(row);
    }

    /// Removes every image with `--sync` (so garbage collection has run when it returns), then
    /// checks that no content and no snapshot is left in either snapshotter.
    fn make_cold(&self, d: &Daemon) -> Result<()> {
        let images: Vec<String> = d
            .ctr(&["images", "ls", "-q"])?
            .lines()
            .map(str::to_owned)
            .collect();
        if !images.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(images.iter().map(String::as_str));
            d.ctr(&args)?;
        }
        let content = d.ctr(&["content", "ls", "-q"])?;
        if !content.trim().is_empty() {
            bail!(
                "{}: content left after `images rm --sync`:\n{content}",
                d.kind.name()
            );
        }
        for sn in ["overlayfs", "native"] {
            let snaps = d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?;
            if snaps.lines().skip(1).any(|l| !l.trim().is_empty()) {
                bail!(
                    "{}: {sn} snapshots left after `images rm --sync`:\n{snaps}",
                    d.kind.name()
                );
            }
        }
        Ok(())
    }

    fn pulls(&mut self, layouts: &[(Layout, String)]) -> Result<()> {
        eprintln!("== cold pulls ({} repeats)", self.settings.repeats);
        self.section_start();
        for (layout, reference) in layouts {
            for sn in ["overlayfs", "native"] {
                let mut times = [Vec::new(), Vec::new()];
                let mut unpacks = [Vec::new(), Vec::new()];
                for r in 0..self.settings.repeats {
                    for i in Bench::order(r) {
                        self.make_cold(&self.daemons[i])?;
                        self.drop_caches();
                        let d = &self.daemons[i];
                        let (t, out) = d.ctr_timed_output(&[
                            "images",
                            "pull",
                            "--plain-http",
                            "--snapshotter",
                            sn,
                            reference,
                        ])?;
                        unpacks[i].push(unpack_time(&out).with_context(|| {
                            format!("no `done: <duration>` line in ctr's pull output:\n{out}")
                        })?);
                        // The pull unpacked every layer: one committed snapshot each.
                        let snaps = d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?;
                        let n = snaps
                            .lines()
                            .skip(1)
                            .filter(|l| !l.trim().is_empty())
                            .count();
                        let layers = layout.blobs.len() - 2;
                        if n != layers {
                            bail!(
                                "{}: {n} {sn} snapshots after pulling {reference}, expected {layers}",
                                d.kind.name()
                            );
                        }
                        times[i].push(t);
                    }
                }
                let name = format!(
                    "pull {} ({} MB gz) {sn}",
                    layout.name,
                    layout.compressed / 1_000_000
                );
                self.push_row(name.clone(), times, Some(0.8));
                // The part of the pull a daemon can change (see `unpack_time`), no goal of its own.
                self.push_row(format!("  of which unpack ({sn})"), unpacks, None);
            }
        }
        self.section_end("pull")
    }

    fn lists(&mut self, small: &(Layout, String)) -> Result<()> {
        let (ni, nb) = (self.settings.images, self.settings.blobs);
        eprintln!("== lists ({ni} images, {nb} blobs)");
        self.section_start();
        for d in &self.daemons {
            // The images all point at the small image's manifest, so `ctr images ls` reads
            // real content for each one's size and platforms.
            d.ctr(&[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "overlayfs",
                &small.1,
            ])?;
            let before = d.ctr(&["images", "ls", "-q"])?.lines().count();
            let t = Instant::now();
            populate::images(&d.address, ni, &small.0.manifest)
                .with_context(|| format!("creating {ni} images in {}", d.kind.name()))?;
            let ti = t.elapsed();
            let t = Instant::now();
            populate::blobs(&d.address, nb, self.settings.blob_size)
                .with_context(|| format!("writing {nb} blobs to {}", d.kind.name()))?;
            let tb = t.elapsed();
            self.notes.push(format!(
                "populate via gRPC, {}: {ni} Images.Create in {}, {nb} Content.Write in {}",
                d.kind.name(),
                fmt_dur(ti),
                fmt_dur(tb)
            ));
            let listed = d.ctr(&["images", "ls", "-q"])?.lines().count();
            let blobs = d.ctr(&["content", "ls", "-q"])?.lines().count();
            if listed != before + ni || blobs < nb {
                bail!(
                    "{}: {listed} images and {blobs} blobs listed after creating {ni} and {nb}",
                    d.kind.name()
                );
            }
        }
        let mut rpc: [Vec<Duration>; 6] = Default::default();
        for r in 0..3 {
            for i in Bench::order(r) {
                let d = &self.daemons[i];
                let t = populate::rpc_latency(&d.address, &small.0.manifest.1, 300)?;
                for (k, t) in t.into_iter().enumerate() {
                    rpc[k * 2 + i].push(t);
                }
            }
        }
        let [vc, vs, ic, is, rc, rs] = rpc;
        self.push_row("rpc Version, per call".into(), [vc, vs], Some(1.0));
        self.push_row("rpc Content.Info, per call".into(), [ic, is], Some(1.0));
        self.push_row(
            "rpc Content.Read (manifest), per call".into(),
            [rc, rs],
            Some(1.0),
        );
        for (what, args, n) in [
            ("images ls", ["images", "ls"], ni),
            ("content ls", ["content", "ls"], nb),
        ] {
            // One untimed run each warms both alike; lists are timed on a warm cache.
            for d in &self.daemons {
                d.ctr_timed(&args, None)?;
            }
            let mut times = [Vec::new(), Vec::new()];
            for r in 0..self.settings.repeats.max(3) {
                for i in Bench::order(r) {
                    times[i].push(self.daemons[i].ctr_timed(&args, None)?);
                }
            }
            self.push_row(format!("{what} ({n})"), times, Some(1.0));
        }
        self.section_end("lists")
    }

    /// Times `ctr snapshots prepare`, `commit` and `rm` of `n` snapshots per snapshotter, then
    /// the same operations as single RPCs.
    ///
    /// Each op runs on both daemons back to back (op k on one, then op k on the other, who goes
    /// first alternating with k): a ctr-timed op is ~13 ms of ctr's start around ~1 ms of
    /// daemon work, so timing one daemon's whole series before the other's let the machine's
    /// slow drift in speed decide the ratio.
    fn snapshots(&mut self) -> Result<()> {
        let n = self.settings.snapshots;
        eprintln!("== snapshots ({n} prepare/commit/rm each, interleaved)");
        self.section_start();
        for sn in ["overlayfs", "native"] {
            let op = |phase: usize, k: usize| -> Vec<String> {
                let (active, committed) =
                    (format!("bench-active-{k}"), format!("bench-committed-{k}"));
                let mut args: Vec<String> =
                    ["snapshots", "--snapshotter", sn].map(String::from).into();
                match phase {
                    0 => args.extend(["prepare".into(), active]),
                    1 => args.extend(["commit".into(), committed, active]),
                    _ => args.extend(["rm".into(), committed]),
                }
                args
            };
            // [prepare, commit, rm], each [containerd, stowaged]; all prepares before any
            // commit, as a series of one daemon would run them.
            let mut times: [[Vec<Duration>; 2]; 3] = Default::default();
            for (phase, t) in times.iter_mut().enumerate() {
                for k in 0..n {
                    let args = op(phase, k);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    for i in Bench::order(k) {
                        t[i].push(self.daemons[i].ctr_timed(&args, None)?);
                    }
                }
            }
            for d in &self.daemons {
                Bench::none_left(d, sn, "bench-")?;
            }
            for (what, t) in ["prepare", "commit", "rm"].into_iter().zip(&times) {
                let [[c1, c2], [s1, s2]] = [0, 1].map(|i| Bench::by_position(&t[i], i));
                self.notes.push(format!(
                    "snapshot {what} {sn} by position in each pair (first/second): \
                     containerd {}/{}, stowaged {}/{}",
                    fmt_dur(c1),
                    fmt_dur(c2),
                    fmt_dur(s1),
                    fmt_dur(s2)
                ));
            }
            let [prepare, commit, remove] = times;
            self.push_row(format!("snapshot prepare {sn}"), prepare, Some(1.0));
            self.push_row(format!("snapshot commit {sn}"), commit, Some(1.0));
            self.push_row(format!("snapshot rm {sn}"), remove, Some(1.0));
            // The same operations as single RPCs, without ctr's process start, which is most
            // of each row above; shown to explain them, no goal of their own. The daemons take
            // turns in chunks there too (see `snapshot_rpc_latency`).
            let addresses = [
                self.daemons[0].address.as_path(),
                self.daemons[1].address.as_path(),
            ];
            let [c, st] = populate::snapshot_rpc_latency(addresses, sn, n)?;
            for d in &self.daemons {
                Bench::none_left(d, sn, "rpc-")?;
            }
            for (k, (c, st)) in c.into_iter().zip(st).enumerate() {
                let op = ["Prepare", "Commit", "Remove"][k];
                self.push_row(
                    format!("  rpc Snapshots.{op} {sn}, per call"),
                    [c, st],
                    None,
                );
            }
        }
        self.section_end("snapshots")
    }

    /// Medians of daemon `i`'s interleaved times (one per k, ordered by `Bench::order(k)`)
    /// split by its place in each pair: first (right after its own previous op) and second
    /// (right after the other daemon's). A wide gap on one side only means one daemon's
    /// after-work (a deferred collection, say) lands on the other's timings.
    fn by_position(times: &[Duration], i: usize) -> [Duration; 2] {
        let mut split = [Vec::new(), Vec::new()];
        for (k, t) in times.iter().enumerate() {
            let place = usize::from(Bench::order(k)[0] != i);
            split[place].push(*t);
        }
        split.map(median)
    }

    /// Fails when `d` still lists a `sn` snapshot naming `prefix`: the bench removes every
    /// snapshot it makes.
    fn none_left(d: &Daemon, sn: &str, prefix: &str) -> Result<()> {
        let left = d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?;
        if left.lines().skip(1).any(|l| l.contains(prefix)) {
            bail!("{}: {sn} snapshots left after rm:\n{left}", d.kind.name());
        }
        Ok(())
    }

    /// Deletes `digest` and makes sure its backing file is gone too: a store may (as
    /// containerd's shared content policy allows) answer a write of a blob it still holds on
    /// disk without reading the data, which would time nothing. `ctr images rm --sync` of a
    /// throwaway tag is the one ctr command that waits for a garbage collection.
    fn remove_blob(&self, d: &Daemon, digest: &str, small: &str) -> Result<()> {
        if d.ctr(&["content", "ls", "-q"])?.contains(digest) {
            d.ctr(&["content", "rm", digest])?;
        }
        d.ctr(&["images", "tag", "--force", small, "bench/gc-trigger:latest"])?;
        d.ctr(&["images", "rm", "--sync", "bench/gc-trigger:latest"])?;
        if d.ctr(&["content", "ls", "-q"])?.contains(digest) {
            bail!("{}: {digest} still listed after content rm", d.kind.name());
        }
        if d.has_blob_file(digest) {
            bail!(
                "{}: the file of {digest} is still on disk after content rm and a collection",
                d.kind.name()
            );
        }
        Ok(())
    }

    fn ingest(&mut self, small: &(Layout, String)) -> Result<()> {
        let size = self.settings.ingest;
        eprintln!("== content ingest ({} MiB)", size >> 20);
        let (path, digest) = images::ingest_data(&self.settings.cache, size)?;
        for d in &self.daemons {
            d.ctr(&[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "overlayfs",
                &small.1,
            ])?;
            self.remove_blob(d, &digest, &small.1)?;
        }
        self.section_start();
        let mut times = [Vec::new(), Vec::new()];
        let size_arg = size.to_string();
        for r in 0..self.settings.repeats {
            for i in Bench::order(r) {
                self.drop_caches();
                // Read the source once so both daemons are fed from the page cache.
                std::io::copy(&mut fs::File::open(&path)?, &mut std::io::sink())?;
                let d = &self.daemons[i];
                let reference = format!("bench-ingest-{r}");
                let t = d.ctr_timed(
                    &[
                        "content",
                        "ingest",
                        "--expected-size",
                        &size_arg,
                        "--expected-digest",
                        &digest,
                        &reference,
                    ],
                    Some(fs::File::open(&path)?),
                )?;
                times[i].push(t);
                if !d.has_blob_file(&digest) {
                    bail!("{}: no file for {digest} after ingest", d.kind.name());
                }
                self.remove_blob(d, &digest, &small.1)?;
            }
        }
        self.push_row(
            format!("content ingest {} MiB", size >> 20),
            times,
            Some(1.0),
        );
        self.section_end("ingest")
    }

    fn print(&self) {
        println!();
        println!(
            "stowaged vs containerd 1.6 via ctr, medians ({} repeats{})",
            self.settings.repeats,
            if self.settings.quick { ", QUICK" } else { "" }
        );
        println!(
            "{:<36} {:>12} {:>12} {:>7} {:>6} {:>5}",
            "measure", "containerd", "stowaged", "ratio", "goal", "met?"
        );
        for r in &self.rows {
            println!(
                "{:<36} {:>12} {:>12} {:>7.2} {:>6} {:>5}",
                r.measure,
                fmt_dur(r.containerd),
                fmt_dur(r.stowaged),
                r.ratio(),
                r.goal.map_or("-".into(), |g| format!("<={g:.1}")),
                match r.goal {
                    None => "-",
                    Some(g) if r.ratio() <= g => "yes",
                    Some(_) => "NO",
                }
            );
        }
        println!("peak RSS (VmHWM, reset at each section start):");
        for s in &self.rss {
            println!(
                "  {:<10} containerd {:>8.1} MiB  stowaged {:>8.1} MiB",
                s.section,
                s.containerd as f64 / 1024.0,
                s.stowaged as f64 / 1024.0
            );
            let [(ca, cf), (sa, sf)] = s.split;
            println!(
                "  {:<10} now anon/file: containerd {:.1}/{:.1} MiB  stowaged {:.1}/{:.1} MiB",
                "",
                ca as f64 / 1024.0,
                cf as f64 / 1024.0,
                sa as f64 / 1024.0,
                sf as f64 / 1024.0
            );
        }
        let (c, s) = (
            self.rss.iter().map(|r| r.containerd).max().unwrap_or(0),
            self.rss.iter().map(|r| r.stowaged).max().unwrap_or(0),
        );
        println!(
            "  {:<10} containerd {:>8.1} MiB  stowaged {:>8.1} MiB  goal stowaged < containerd: {}",
            "overall",
            c as f64 / 1024.0,
            s as f64 / 1024.0,
            if s < c { "yes" } else { "NO" }
        );
        for n in &self.notes {
            println!("note: {n}");
        }
    }

    fn keep_logs(&self) {
        let Some(dir) = &self.settings.keep_logs else {
            return;
        };
        let _ = fs::create_dir_all(dir);
        for d in &self.daemons {
            let to = dir.join(format!("{}.log", d.kind.name()));
            if let Err(e) = fs::copy(&d.log, &to) {
                eprintln!("keeping {}: {e}", to.display());
            }
        }
    }
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 0.01 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{:.0}us", s * 1e6)
    }
}

fn run() -> Result<()> {
    procs::require(&["containerd", "ctr", "docker-registry", "skopeo"])?;
    let settings = Settings::from_env();
    let started = Instant::now();
    let specs = settings.pull_images();
    let layouts: Vec<Layout> = specs
        .iter()
        .map(|s| images::layout(&settings.cache, s))
        .collect::<Result<_>>()?;
    eprintln!("images ready after {}", fmt_dur(started.elapsed()));

    let work = Workdir::new(&settings.dir)?;
    let w = work.path().to_owned();
    let mut dirs = ["containerd", "stowaged", "registry"].map(|n| w.join(n));
    for d in &mut dirs {
        fs::create_dir_all(&*d)?;
    }
    let mut bench = Bench {
        daemons: Vec::new(),
        registry: None,
        settings,
        rows: Vec::new(),
        rss: Vec::new(),
        notes: Vec::new(),
        cold: true,
        work,
    };
    bench.daemons.push(Daemon::containerd(&dirs[0])?);
    bench.daemons.push(Daemon::stowaged(
        Path::new(env!("CARGO_BIN_EXE_stowaged")),
        &dirs[1],
        &bench.settings.log_level,
    )?);
    let registry = Registry::start_in(&dirs[2])?;
    let pushed: Vec<(Layout, String)> = layouts
        .into_iter()
        .map(|l| {
            let r = registry.push(&l.dir, &format!("bench/{}", l.name))?;
            Ok((l, r))
        })
        .collect::<Result<_>>()?;
    bench.registry = Some(registry);
    eprintln!(
        "daemons up, images pushed after {}; scratch in {}",
        fmt_dur(started.elapsed()),
        bench.work.path().display()
    );

    let result = (|| {
        if bench.settings.runs("pull") {
            bench.pulls(&pushed)?;
        }
        if bench.settings.runs("lists") {
            bench.lists(&pushed[0])?;
        }
        if bench.settings.runs("snapshots") {
            bench.snapshots()?;
        }
        if bench.settings.runs("ingest") {
            bench.ingest(&pushed[0])?;
        }
        anyhow::Ok(())
    })();
    bench.keep_logs();
    bench.print();
    println!("total {}", fmt_dur(started.elapsed()));
    result
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("side_by_side: {e:#}");
            ExitCode::FAILURE
        }
    }
}
