//! Metadata figures and their growth from 1k to 100k objects: image list, content walk, a GC
//! pass, and image create/delete (fsync'd, one transaction each, as containerd) in a
//! database already holding that many objects.
//!
//! The machine is shared, so every figure is the median of several runs, given both as wall
//! time and as this thread's CPU time (which outside load disturbs far less; it leaves out
//! fsync waits). Each GC run starts from a fresh copy of the same populated file.
//!
//! `cargo bench -p stowage-metadata --bench metadata` runs the full sizes; `cargo test
//! --benches` runs a quick pass at small sizes so the code keeps working.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use stowage_core_types::content::Manager;
use stowage_core_types::{Descriptor, Digest};
use stowage_metadata::{encode_time, encode_varint, Db, Image, Options};

fn digest(i: u64) -> Digest {
    Digest::parse(&format!("sha256:{:064x}", i + 1)).unwrap()
}

/// Writes `n` blob records and `n / 2` images straight into meta.db in containerd's format,
/// in batches: half the blobs are manifests reached from an image and referencing one child
/// each, the rest are unreferenced (collectable).
fn populate(db: &Db, n: u64) {
    let now = encode_time(SystemTime::now());
    let bolt = db.bolt();
    let batch = 5_000;
    let mut i = 0;
    while i < n {
        let mut tx = bolt.begin_write().unwrap();
        {
            let v1 = tx.create_bucket_if_not_exists(b"v1").unwrap();
            let _ = v1;
        }
        let end = (i + batch).min(n);
        {
            let v1 = tx.bucket_mut(b"v1").unwrap().unwrap();
            let mut ns = create(v1, b"bench");
            {
                let content = ns.create_bucket_if_not_exists(b"content").unwrap();
                let mut blobs = create(content, b"blob");
                for j in i..end {
                    let d = digest(j).to_string();
                    let mut b = blobs.create_bucket(d.as_bytes()).unwrap();
                    b.put(b"createdat", &now).unwrap();
                    b.put(b"updatedat", &now).unwrap();
                    b.put(b"size", &encode_varint(1000)).unwrap();
                    if j % 4 == 0 && j + 1 < n {
                        let mut l = b.create_bucket(b"labels").unwrap();
                        l.put(
                            b"containerd.io/gc.ref.content.l.0",
                            digest(j + 1).to_string().as_bytes(),
                        )
                        .unwrap();
                    }
                }
            }
            let mut images = create(ns, b"images");
            // One image per blob record: image j targets blob j when j is a manifest and a
            // digest with no record otherwise (a dangling target the collector must tolerate).
            for j in i..end {
                let name = format!("registry.example/bench/img-{j:08}:latest");
                let mut b = images.create_bucket(name.as_bytes()).unwrap();
                b.put(b"createdat", &now).unwrap();
                b.put(b"updatedat", &now).unwrap();
                let mut t = b.create_bucket(b"target").unwrap();
                let target = if j % 4 == 0 { digest(j) } else { digest(n + j) };
                t.put(b"digest", target.to_string().as_bytes()).unwrap();
                t.put(b"mediatype", b"application/vnd.oci.image.manifest.v1+json")
                    .unwrap();
                t.put(b"size", &encode_varint(1000)).unwrap();
            }
        }
        tx.commit().unwrap();
        i = end;
    }
}

fn create<'t>(mut parent: stowage_bolt::BucketMut<'t>, name: &[u8]) -> stowage_bolt::BucketMut<'t> {
    parent.create_bucket_if_not_exists(name).unwrap();
    parent.into_bucket_mut(name).unwrap().unwrap()
}

/// `struct timespec` on 64-bit Linux.
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// Linux's `CLOCK_THREAD_CPUTIME_ID`.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

/// CPU time of the calling thread so far. (The scheduler's /proc accounting lags by up to a
/// tick, too coarse for the 1k figures.)
fn thread_cpu() -> Duration {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and the clock
    // id is a constant the kernel knows; the C library is linked by std already.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Times {
    wall: Duration,
    cpu: Duration,
}

fn time<T>(f: impl FnOnce() -> T) -> (Times, T) {
    let (t, c) = (Instant::now(), thread_cpu());
    let out = f();
    let times = Times {
        wall: t.elapsed(),
        cpu: thread_cpu().saturating_sub(c),
    };
    (times, out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Medians (wall and CPU, taken separately) of `runs` runs of `f`; also the last output.
fn median_of<T>(runs: usize, mut f: impl FnMut() -> (Times, T)) -> (Times, T) {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let (t, o) = f();
        walls.push(t.wall);
        cpus.push(t.cpu);
        out = Some(o);
    }
    let out = out.expect("at least one run");
    let times = Times {
        wall: median(walls),
        cpu: median(cpus),
    };
    (times, out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints a row per size and the growth from the previous size against a bound: `n log n`
/// for whole passes (`per_op == false`), `log n` for one operation.
fn report(what: &str, rows: &[(u64, Times)], per_op: bool) {
    println!("\n{what}");
    for (i, (n, t)) in rows.iter().enumerate() {
        let growth = if i > 0 {
            let (n0, t0) = rows[i - 1];
            let (nf, n0f) = (*n as f64, n0 as f64);
            let bound = if per_op {
                nf.ln() / n0f.ln()
            } else {
                nf * nf.ln() / (n0f * n0f.ln())
            };
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            format!(
                "   growth x{:.1} wall, x{:.1} cpu (bound {} x{bound:.1})",
                r(t.wall, t0.wall),
                r(t.cpu, t0.cpu),
                if per_op { "log n" } else { "n log n" }
            )
        } else {
            String::new()
        };
        if per_op {
            println!(
                "  {n:>7} objects: {:>8.1} µs/op wall, {:>8.1} µs/op cpu{growth}",
                t.wall.as_secs_f64() * 1e6,
                t.cpu.as_secs_f64() * 1e6
            );
        } else {
            println!(
                "  {n:>7} objects: {:>9.2} ms wall, {:>9.2} ms cpu ({:.2} µs/object wall){growth}",
                ms(t.wall),
                ms(t.cpu),
                t.wall.as_secs_f64() / *n as f64 * 1e6
            );
        }
    }
}

/// Opens a fresh copy of the populated database in `template` below a new directory.
fn open_copy(template: &Path, content: bool) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let to = stowage_metadata::db_path(dir.path());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(stowage_metadata::db_path(template), &to).unwrap();
    let content = content.then(|| {
        std::sync::Arc::new(stowage_content::LocalStore::open(dir.path().join("content")).unwrap())
            as std::sync::Arc<dyn stowage_core_types::content::Store>
    });
    let db = Db::open(
        dir.path(),
        Options {
            content,
            ..Default::default()
        },
    )
    .unwrap();
    (dir, db)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sizes, runs, ops): (&[u64], usize, u64) = if full {
        (&[1_000, 10_000, 100_000], 5, 200)
    } else {
        (&[200, 2_000], 2, 10)
    };
    let (mut list, mut walk, mut gc, mut create, mut delete) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &n in sizes {
        let template = tempfile::tempdir().unwrap();
        {
            let db = Db::open(template.path(), Options::default()).unwrap();
            populate(&db, n);
        }
        let (_dir, db) = open_copy(template.path(), true);
        let images = db.images("bench").unwrap();
        let (t, got) = median_of(runs, || time(|| images.list(&[]).unwrap().len()));
        assert_eq!(got as u64, n);
        list.push((n, t));
        let cs = db.content_store("bench", None).unwrap();
        let (t, count) = median_of(runs, || {
            time(|| {
                let mut c = 0u64;
                cs.walk(
                    &mut |_| {
                        c += 1;
                        Ok(())
                    },
                    &[],
                )
                .unwrap();
                c
            })
        });
        assert_eq!(count, n);
        walk.push((n, t));

        let mut marks = Vec::new();
        let mut metas = Vec::new();
        let (t, _) = median_of(runs, || {
            let (_dir, db) = open_copy(template.path(), true);
            let (t, stats) = time(|| db.collect().unwrap());
            // Manifests (j%4==0) and their children (j%4==1) survive.
            let removed = stats.removed.len() as u64;
            assert!(removed > 0 && removed < n, "{removed} of {n}");
            marks.push(stats.mark_duration);
            metas.push(stats.meta_duration);
            (t, ())
        });
        println!(
            "  gc at {n}: median mark {:.1} ms, mark+sweep+commit {:.1} ms, total {:.1} ms wall ({:.1} ms cpu)",
            ms(median(marks)),
            ms(median(metas)),
            ms(t.wall),
            ms(t.cpu)
        );
        gc.push((n, t));

        // One fsync'd transaction per operation, into a database already holding `n`.
        let per = |t: Times| Times {
            wall: t.wall / ops as u32,
            cpu: t.cpu / ops as u32,
        };
        let mut creates = Vec::new();
        let mut deletes = Vec::new();
        for _ in 0..runs {
            let (_dir, db) = open_copy(template.path(), false);
            let images = db.images("bench").unwrap();
            let (c, _) = time(|| {
                for i in 0..ops {
                    images
                        .create(Image::new(
                            format!("new-{i}"),
                            Descriptor::new(
                                "application/vnd.oci.image.manifest.v1+json",
                                digest(i),
                                10,
                            ),
                        ))
                        .unwrap();
                }
            });
            let (d, _) = time(|| {
                for i in 0..ops {
                    images.delete(&format!("new-{i}")).unwrap();
                }
            });
            creates.push(c);
            deletes.push(d);
        }
        let med = |v: &[Times]| Times {
            wall: median(v.iter().map(|t| t.wall).collect()),
            cpu: median(v.iter().map(|t| t.cpu).collect()),
        };
        create.push((n, per(med(&creates))));
        delete.push((n, per(med(&deletes))));
    }
    report("image list (all images of a namespace)", &list, false);
    report("content walk (namespaced, records only)", &walk, false);
    report(
        "GC pass (mark + sweep of records, fsync'd commit)",
        &gc,
        false,
    );
    report(
        &format!("image create ({ops} fsync'd transactions into a database of n images)"),
        &create,
        true,
    );
    report(
        &format!("image delete ({ops} fsync'd transactions from a database of n images)"),
        &delete,
        true,
    );
}
