//! Metadata figures (read-only ones best of three runs) and their growth from 1k to 100k objects: image list, content walk, a GC
//! pass, and image create/delete throughput (fsync'd, one transaction each, as containerd).
//!
//! `cargo bench -p stowage-metadata --bench metadata` runs the full sizes; `cargo test
//! --benches` runs a quick pass at small sizes so the code keeps working.

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

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

/// Best of three runs, for read-only measurements.
fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let (mut d, mut out) = time(&mut f);
    for _ in 0..2 {
        let (d2, o2) = time(&mut f);
        if d2 < d {
            d = d2;
            out = o2;
        }
    }
    (d, out)
}

fn report(what: &str, rows: &[(u64, Duration)]) {
    println!("\n{what}");
    for (i, (n, d)) in rows.iter().enumerate() {
        let per = d.as_secs_f64() / *n as f64 * 1e6;
        let growth = if i > 0 {
            let (n0, d0) = rows[i - 1];
            let ratio = d.as_secs_f64() / d0.as_secs_f64();
            let nlogn = (*n as f64 * (*n as f64).ln()) / (n0 as f64 * (n0 as f64).ln());
            format!(
                "   x{ratio:.1} for x{} objects (n log n bound x{nlogn:.1})",
                n / n0
            )
        } else {
            String::new()
        };
        println!(
            "  {n:>7} objects: {:>9.2} ms  ({per:.2} µs/object){growth}",
            d.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if full {
        &[1_000, 10_000, 100_000]
    } else {
        &[200, 2_000]
    };
    let mut list = Vec::new();
    let mut walk = Vec::new();
    let mut gc = Vec::new();
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let backend = std::sync::Arc::new(
            stowage_content::LocalStore::open(dir.path().join("content")).unwrap(),
        );
        let db = Db::open(
            dir.path(),
            Options {
                content: Some(backend),
                ..Default::default()
            },
        )
        .unwrap();
        populate(&db, n);
        let images = db.images("bench").unwrap();
        let (d, got) = best(|| images.list(&[]).unwrap().len());
        assert_eq!(got as u64, n);
        list.push((got as u64, d));
        let cs = db.content_store("bench", None).unwrap();
        let (d, count) = best(|| {
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
        });
        assert_eq!(count, n);
        walk.push((n, d));
        let (d, stats) = time(|| db.collect().unwrap());
        // Manifests (j%4==0) and their children (j%4==1) survive.
        let removed = stats.removed.len() as u64;
        assert!(removed > 0 && removed < n, "{removed} of {n}");
        println!(
            "  gc at {n}: mark {:.1} ms, mark+sweep+commit {:.1} ms, total {:.1} ms",
            stats.mark_duration.as_secs_f64() * 1e3,
            stats.meta_duration.as_secs_f64() * 1e3,
            d.as_secs_f64() * 1e3
        );
        gc.push((n, d));
    }
    report("image list (all images of a namespace)", &list);
    report("content walk (namespaced, records only)", &walk);
    report("GC pass (mark + sweep of records)", &gc);

    // Throughput of the API itself: one fsync'd transaction per operation.
    let ops = if full { 1_000 } else { 50 };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let images = db.images("bench").unwrap();
    let (d, _) = time(|| {
        for i in 0..ops {
            images
                .create(Image::new(
                    format!("img-{i}"),
                    Descriptor::new("application/vnd.oci.image.manifest.v1+json", digest(i), 10),
                ))
                .unwrap();
        }
    });
    println!(
        "\nimage create: {ops} in {:.1} ms = {:.0}/s",
        d.as_secs_f64() * 1e3,
        ops as f64 / d.as_secs_f64()
    );
    let (d, _) = time(|| {
        for i in 0..ops {
            images.delete(&format!("img-{i}")).unwrap();
        }
    });
    println!(
        "image delete: {ops} in {:.1} ms = {:.0}/s",
        d.as_secs_f64() * 1e3,
        ops as f64 / d.as_secs_f64()
    );
}
