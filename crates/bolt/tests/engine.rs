//! Behaviour of the engine on its own: API semantics, snapshot isolation, the bbolt-rs
//! regressions, concurrency with a growing file, bad input.

mod common;

use std::time::Duration;

use common::*;
use stowage_bolt::{Db, Error, Options};

fn open(path: &std::path::Path) -> Db {
    Db::open(path, nosync()).expect("open")
}

#[test]
fn put_get_delete_and_nested_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("a.db"));
    let mut tx = db.begin_write().unwrap();
    {
        let mut b = tx.create_bucket(b"top").unwrap();
        b.put(b"k1", b"v1").unwrap();
        b.put(b"k2", b"").unwrap();
        let mut n = b.create_bucket(b"nested").unwrap();
        n.put(b"x", b"y").unwrap();
        assert_eq!(n.next_sequence().unwrap(), 1);
        assert_eq!(n.next_sequence().unwrap(), 2);
    }
    assert!(matches!(
        tx.create_bucket(b"top"),
        Err(Error::BucketExists(_))
    ));
    tx.create_bucket_if_not_exists(b"top").unwrap();
    {
        let mut b = tx.bucket_mut(b"top").unwrap().unwrap();
        assert!(matches!(
            b.put(b"nested", b"v"),
            Err(Error::IncompatibleValue(..))
        ));
        assert!(matches!(
            b.delete(b"nested"),
            Err(Error::IncompatibleValue(..))
        ));
        assert!(matches!(
            b.create_bucket(b"k1"),
            Err(Error::IncompatibleValue(..))
        ));
        assert!(matches!(
            b.delete_bucket(b"k1"),
            Err(Error::IncompatibleValue(..))
        ));
        assert!(matches!(
            b.delete_bucket(b"nope"),
            Err(Error::BucketNotFound(_))
        ));
        assert!(matches!(b.put(b"", b"v"), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            b.put(&vec![1u8; stowage_bolt::MAX_KEY_SIZE + 1], b"v"),
            Err(Error::InvalidArgument(_))
        ));
        // A bucket is a key without a value: get() does not return it.
        assert_eq!(b.get(b"nested").unwrap(), None);
        assert_eq!(b.get(b"k1").unwrap(), Some(&b"v1"[..]));
        b.delete(b"absent").unwrap();
    }
    tx.commit().unwrap();

    let tx = db.begin_read().unwrap();
    let b = tx.bucket(b"top").unwrap().unwrap();
    assert_eq!(b.get(b"k2").unwrap(), Some(&b""[..]));
    let n = b.bucket(b"nested").unwrap().unwrap();
    assert_eq!(n.sequence(), 2);
    assert_eq!(n.get(b"x").unwrap(), Some(&b"y"[..]));
    let mut seen = Vec::new();
    b.for_each::<Error>(|k, v| {
        seen.push((k.to_vec(), v.map(<[u8]>::to_vec)));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (b"k1".to_vec(), Some(b"v1".to_vec())),
            (b"k2".to_vec(), Some(Vec::new())),
            (b"nested".to_vec(), None),
        ]
    );
    tx.check().unwrap();
    drop(tx);

    db.update::<_, Error>(|tx| {
        tx.bucket_mut(b"top")
            .unwrap()
            .unwrap()
            .delete_bucket(b"nested")
    })
    .unwrap();
    let tx = db.begin_read().unwrap();
    assert!(tx
        .bucket(b"top")
        .unwrap()
        .unwrap()
        .bucket(b"nested")
        .unwrap()
        .is_none());
    tx.check().unwrap();
}

#[test]
fn cursor_moves_like_go() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("c.db"));
    let keys: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| (i * 2).to_be_bytes().to_vec())
        .collect();
    db.update::<_, Error>(|tx| {
        let mut b = tx.create_bucket(b"b")?;
        for k in &keys {
            b.put(k, k)?;
        }
        b.create_bucket(&5u32.to_be_bytes())?;
        Ok(())
    })
    .unwrap();
    let tx = db.begin_read().unwrap();
    let b = tx.bucket(b"b").unwrap().unwrap();
    let mut c = b.cursor();
    assert_eq!(c.first().unwrap().unwrap().0, &keys[0][..]);
    assert_eq!(c.next().unwrap().unwrap().0, &keys[1][..]);
    assert_eq!(c.prev().unwrap().unwrap().0, &keys[0][..]);
    assert_eq!(c.prev().unwrap(), None);
    assert_eq!(c.last().unwrap().unwrap().0, &keys[1999][..]);
    assert_eq!(c.next().unwrap(), None);
    assert_eq!(c.prev().unwrap().unwrap().0, &keys[1999][..]);
    // Seek to a missing key lands on the next one; a bucket shows with no value.
    let (k, v) = c.seek(&5u32.to_be_bytes()).unwrap().unwrap();
    assert_eq!((k, v), (&5u32.to_be_bytes()[..], None));
    assert_eq!(c.next().unwrap().unwrap().0, &6u32.to_be_bytes()[..]);
    assert_eq!(
        c.seek(&3001u32.to_be_bytes()).unwrap().unwrap().0,
        &3002u32.to_be_bytes()[..]
    );
    assert_eq!(c.seek(&u32::MAX.to_be_bytes()).unwrap(), None);
    // Walk everything forwards and backwards.
    let mut n = 0;
    let mut e = c.first().unwrap();
    while e.is_some() {
        n += 1;
        e = c.next().unwrap();
    }
    assert_eq!(n, 2001);
    let mut e = c.last().unwrap();
    let mut back = 0;
    while e.is_some() {
        back += 1;
        e = c.prev().unwrap();
    }
    assert_eq!(back, 2001);
}

#[test]
fn snapshot_isolation_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("s.db"));
    db.update::<_, Error>(|tx| tx.create_bucket(b"b")?.put(b"k", b"old"))
        .unwrap();
    let reader = db.begin_read().unwrap();
    db.update::<_, Error>(|tx| tx.bucket_mut(b"b")?.unwrap().put(b"k", b"new"))
        .unwrap();
    {
        let mut tx = db.begin_write().unwrap();
        tx.bucket_mut(b"b")
            .unwrap()
            .unwrap()
            .put(b"k", b"rolled back")
            .unwrap();
        tx.create_bucket(b"gone").unwrap();
        tx.rollback();
    }
    let b = reader.bucket(b"b").unwrap().unwrap();
    assert_eq!(b.get(b"k").unwrap(), Some(&b"old"[..]));
    let now = db.begin_read().unwrap();
    assert_eq!(
        now.bucket(b"b").unwrap().unwrap().get(b"k").unwrap(),
        Some(&b"new"[..])
    );
    assert!(now.bucket(b"gone").unwrap().is_none());
    assert_eq!(now.id(), reader.id() + 1);
    now.check().unwrap();
    reader.check().unwrap();
}

#[test]
fn data_survives_reopen_and_read_only_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    {
        let db = Db::open(&path, Options::default()).unwrap();
        db.update::<_, Error>(|tx| {
            let mut b = tx.create_bucket(b"b")?;
            b.put(b"big", &vec![9u8; 100_000])?;
            b.set_sequence(77)
        })
        .unwrap();
    }
    let db = Db::open(
        &path,
        Options {
            read_only: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(matches!(db.begin_write(), Err(Error::ReadOnly)));
    let tx = db.begin_read().unwrap();
    let b = tx.bucket(b"b").unwrap().unwrap();
    assert_eq!(b.get(b"big").unwrap().unwrap(), &vec![9u8; 100_000][..]);
    assert_eq!(b.sequence(), 77);
    let st = b.stats().unwrap();
    assert_eq!(st.key_n, 1);
    assert_eq!(st.leaf_overflow_n, 100_000 / 4096);
    tx.check().unwrap();
}

#[test]
fn no_freelist_sync_files_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nf.db");
    let opts = Options {
        no_freelist_sync: true,
        no_sync: true,
        ..Options::default()
    };
    for round in 0..3u32 {
        let db = Db::open(&path, opts.clone()).unwrap();
        // Pages freed by earlier rounds are found again by the scan at open.
        assert!(round == 0 || db.stats().free_page_n > 0);
        db.update::<_, Error>(|tx| {
            let mut b = tx.create_bucket_if_not_exists(b"b")?;
            for i in 0..500u32 {
                b.put(&(round * 1000 + i).to_be_bytes(), &[1u8; 100])?;
            }
            for i in (0..500u32).step_by(2) {
                b.delete(&(round * 1000 + i).to_be_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        let tx = db.begin_read().unwrap();
        tx.check().unwrap();
        assert_eq!(
            tx.bucket(b"b").unwrap().unwrap().stats().unwrap().key_n as u32,
            250 * (round + 1)
        );
    }
}

/// bbolt-rs panicked with "Page N already freed" committing this.
#[test]
fn regression_every_other_key_of_100() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("eo.db"));
    db.update::<_, Error>(|tx| {
        let mut b = tx.create_bucket(b"b")?;
        for i in 0..100u32 {
            b.put(format!("key{i:03}").as_bytes(), &[b'v'; 100])?;
        }
        Ok(())
    })
    .unwrap();
    db.update::<_, Error>(|tx| {
        let mut b = tx.bucket_mut(b"b")?.unwrap();
        for i in (0..100u32).step_by(2) {
            b.delete(format!("key{i:03}").as_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    let tx = db.begin_read().unwrap();
    tx.check().unwrap();
    let b = tx.bucket(b"b").unwrap().unwrap();
    for i in 0..100u32 {
        assert_eq!(
            b.get(format!("key{i:03}").as_bytes()).unwrap().is_some(),
            i % 2 == 1
        );
    }
}

/// bbolt-rs also failed deleting every other bucket of 200 siblings.
#[test]
fn regression_every_other_bucket_of_200() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("eob.db"));
    db.update::<_, Error>(|tx| {
        let mut p = tx.create_bucket(b"p")?;
        for i in 0..200u32 {
            let mut c = p.create_bucket(format!("child{i:03}").as_bytes())?;
            c.put(b"k", &vec![1u8; (i as usize % 5) * 300])?;
        }
        Ok(())
    })
    .unwrap();
    db.update::<_, Error>(|tx| {
        let mut p = tx.bucket_mut(b"p")?.unwrap();
        for i in (0..200u32).step_by(2) {
            p.delete_bucket(format!("child{i:03}").as_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    let tx = db.begin_read().unwrap();
    tx.check().unwrap();
    let p = tx.bucket(b"p").unwrap().unwrap();
    for i in 0..200u32 {
        assert_eq!(
            p.bucket(format!("child{i:03}").as_bytes())
                .unwrap()
                .is_some(),
            i % 2 == 1
        );
    }
}

#[test]
fn readers_and_a_growing_writer_do_not_deadlock_or_tear() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("conc.db"));
    db.update::<_, Error>(|tx| tx.create_bucket(b"b")?.put(b"count", &0u32.to_be_bytes()))
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..3u64 {
        let db = db.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut r = Rng::new(t + 1);
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tx = db.begin_read().unwrap();
                let b = tx.bucket(b"b").unwrap().unwrap();
                let count =
                    u32::from_be_bytes(b.get(b"count").unwrap().unwrap().try_into().unwrap());
                for _ in 0..3 {
                    if count == 0 {
                        break;
                    }
                    let i = r.below(u64::from(count)) as u32 + 1;
                    let v = b
                        .get(&i.to_be_bytes())
                        .unwrap()
                        .expect("key of a committed tx");
                    assert_eq!(
                        v.len(),
                        3000 + (i as usize % 7) * 1000,
                        "torn read of key {i}"
                    );
                    assert!(v.iter().all(|&x| x == i as u8), "torn read of key {i}");
                }
                assert!(b.get(&(count + 1).to_be_bytes()).unwrap().is_none());
                if r.chance(5) {
                    // Hold the snapshot across a few commits: it must not change.
                    std::thread::sleep(Duration::from_millis(2));
                    let again = b.get(b"count").unwrap().unwrap();
                    assert_eq!(again, &count.to_be_bytes()[..]);
                    tx.check().unwrap();
                }
                reads += 1;
            }
            reads
        }));
    }
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 1..=400u32 {
                db.update::<_, Error>(|tx| {
                    let mut b = tx.bucket_mut(b"b")?.unwrap();
                    b.put(
                        &i.to_be_bytes(),
                        &vec![i as u8; 3000 + (i as usize % 7) * 1000],
                    )?;
                    b.put(b"count", &i.to_be_bytes())
                })
                .unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("writer did not finish in 120 s: deadlock");
    writer.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        assert!(h.join().unwrap() > 0);
    }
    let tx = db.begin_read().unwrap();
    tx.check().unwrap();
    assert!(
        tx.size() > 1_000_000,
        "the file grew through several remaps"
    );
}

// ---------- bad input ----------

const PS: u64 = 4096;

fn read_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// (meta page index, root page id) of the newer meta.
fn current_meta(bytes: &[u8]) -> (usize, u64) {
    let tx0 = read_u64(bytes, 16 + 48);
    let tx1 = read_u64(bytes, PS as usize + 16 + 48);
    let i = if tx0 > tx1 { 0 } else { 1 };
    (i, read_u64(bytes, i * PS as usize + 16 + 16))
}

/// A file whose bucket "b" has a branch root; returns the path and the bucket's root id.
fn branchy(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let path = dir.join("bad.db");
    let db = open(&path);
    db.update::<_, Error>(|tx| {
        let mut b = tx.create_bucket(b"b")?;
        for i in 0..2000u32 {
            b.put(&i.to_be_bytes(), &[3u8; 50])?;
        }
        Ok(())
    })
    .unwrap();
    drop(db);
    let bytes = std::fs::read(&path).unwrap();
    let (_, root) = current_meta(&bytes);
    // The root bucket's leaf holds "b" -> bucket header (root page id first).
    let p = &bytes[(root * PS) as usize..];
    let pos = u32::from_le_bytes(p[16 + 4..16 + 8].try_into().unwrap()) as usize;
    let ksize = u32::from_le_bytes(p[16 + 8..16 + 12].try_into().unwrap()) as usize;
    let broot = read_u64(p, 16 + pos + ksize);
    assert_eq!(
        u16::from_le_bytes([bytes[(broot * PS) as usize + 8], 0]) & 1,
        1,
        "branch root"
    );
    (path, broot)
}

fn set_branch_child(path: &std::path::Path, page: u64, elem: usize, child: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let off = (page * PS) as usize + 16 + elem * 16 + 8;
    bytes[off..off + 8].copy_from_slice(&child.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn get_all(db: &Db) -> Result<usize, Error> {
    let tx = db.begin_read()?;
    let b = tx.bucket(b"b")?.expect("bucket b");
    let mut n = 0;
    let mut c = b.cursor();
    let mut e = c.first()?;
    while e.is_some() {
        n += 1;
        e = c.next()?;
    }
    Ok(n)
}

#[test]
fn page_id_beyond_the_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, broot) = branchy(dir.path());
    set_branch_child(&path, broot, 1, 1 << 40);
    let db = open(&path);
    let err = get_all(&db).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("out of range"), "{err}");
    let tx = db.begin_read().unwrap();
    let b = tx.bucket(b"b").unwrap().unwrap();
    let failed = (0..2000u32)
        .filter(|i| b.get(&i.to_be_bytes()).is_err())
        .count();
    assert!(failed > 0 && failed < 2000, "{failed} gets failed");
    let err = tx.check().unwrap_err().to_string();
    assert!(err.contains("out of bounds"), "{err}");
    // Writes that need the damaged page fail cleanly too.
    let mut w = db.begin_write().unwrap();
    let mut b = w.bucket_mut(b"b").unwrap().unwrap();
    assert!((0..2000u32).any(|i| b.put(&i.to_be_bytes(), b"x").is_err()));
}

#[test]
fn cycle_in_the_page_graph_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, broot) = branchy(dir.path());
    set_branch_child(&path, broot, 0, broot);
    let db = open(&path);
    let err = get_all(&db).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let err = db.begin_read().unwrap().check().unwrap_err().to_string();
    assert!(err.contains("multiple references"), "{err}");
    let mut w = db.begin_write().unwrap();
    let mut b = w.bucket_mut(b"b").unwrap().unwrap();
    assert!(b.put(&0u32.to_be_bytes(), b"x").is_err());
}

#[test]
fn truncated_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = branchy(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(6 * PS).unwrap();
    let err = Db::open(&path, nosync()).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    f.set_len(50).unwrap();
    let err = Db::open(&path, nosync()).unwrap_err().to_string();
    assert!(err.contains("no valid meta page"), "{err}");
}

#[test]
fn one_corrupt_meta_falls_back_both_corrupt_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let db = open(&path);
    db.update::<_, Error>(|tx| tx.create_bucket(b"b")?.put(b"k", b"first"))
        .unwrap();
    db.update::<_, Error>(|tx| tx.bucket_mut(b"b")?.unwrap().put(b"k", b"second"))
        .unwrap();
    drop(db);
    let mut bytes = std::fs::read(&path).unwrap();
    let (newer, _) = current_meta(&bytes);
    // A torn meta write: the second half of the newer meta is garbage.
    bytes[newer * PS as usize + 16 + 40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let db = open(&path);
    let tx = db.begin_read().unwrap();
    assert_eq!(
        tx.bucket(b"b").unwrap().unwrap().get(b"k").unwrap(),
        Some(&b"first"[..])
    );
    tx.check().unwrap();
    drop(tx);
    drop(db);
    let older = 1 - newer;
    bytes[older * PS as usize + 16] ^= 0xff; // magic
    std::fs::write(&path, &bytes).unwrap();
    let err = Db::open(&path, nosync()).unwrap_err().to_string();
    assert!(
        err.contains("no valid meta page") && err.contains("magic") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn locked_file_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let db = open(&path);
    let start = std::time::Instant::now();
    let err = Db::open(
        &path,
        Options {
            lock_timeout: Some(Duration::from_millis(200)),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5));
    drop(db);
    // A lock held by another process (as containerd holds meta.db).
    let mut child = std::process::Command::new("flock")
        .arg("-x")
        .arg("--no-fork")
        .arg(&path)
        .arg("sleep")
        .arg("30")
        .spawn()
        .expect("util-linux flock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match Db::open(&path, nosync()) {
            Err(e) => break e,
            Ok(db) => {
                drop(db);
                assert!(
                    std::time::Instant::now() < deadline,
                    "child never took the lock"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    child.kill().unwrap();
    child.wait().unwrap();
    open(&path);
}

#[test]
fn garbage_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut r = Rng::new(3);
    std::fs::write(&path, r.bytes(64 * 1024)).unwrap();
    let err = Db::open(&path, nosync()).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Db>();
    send_sync::<stowage_bolt::ReadTx>();
    send::<stowage_bolt::WriteTx>();
}

#[test]
fn a_write_tx_on_another_thread_blocks_the_next_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("w.db"));
    let tx = db.begin_write().unwrap();
    let db2 = db.clone();
    let (s, r) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut tx = db2.begin_write().unwrap();
        s.send(()).unwrap();
        tx.create_bucket(b"second").unwrap();
        tx.commit().unwrap();
    });
    assert!(
        r.recv_timeout(Duration::from_millis(200)).is_err(),
        "second writer did not wait"
    );
    let mut tx = tx;
    tx.create_bucket(b"first").unwrap();
    tx.commit().unwrap();
    r.recv_timeout(Duration::from_secs(10)).unwrap();
    h.join().unwrap();
    let rt = db.begin_read().unwrap();
    assert!(rt.bucket(b"first").unwrap().is_some() && rt.bucket(b"second").unwrap().is_some());
}

/// Pages a reader can see are not reused while it lives, however many commits overwrite
/// the same keys; once it ends they are.
#[test]
fn an_open_reader_pins_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("pin.db"));
    let fill = |v: u8| {
        db.update::<_, Error>(|tx| {
            let mut b = tx.create_bucket_if_not_exists(b"b")?;
            for i in 0..300u32 {
                b.put(&i.to_be_bytes(), &[v; 200])?;
            }
            Ok(())
        })
        .unwrap()
    };
    fill(1);
    let reader = db.begin_read().unwrap();
    let before = dump_tx(&reader);
    for round in 2..40u8 {
        fill(round);
    }
    let st = db.stats();
    assert!(
        st.pending_page_n > 0,
        "pages freed since the reader began stay pending"
    );
    assert_eq!(st.open_tx_n, 1);
    assert_eq!(dump_tx(&reader), before, "the reader's snapshot changed");
    reader.check().unwrap();
    let grown = db.begin_read().unwrap().size();
    drop(reader);
    for round in 40..80u8 {
        fill(round);
    }
    let after = db.begin_read().unwrap();
    assert_eq!(
        after.size(),
        grown,
        "freed pages are reused once the reader is gone"
    );
    after.check().unwrap();
}
