//! `Cursor::bucket` (opening the nested bucket under a cursor without a second search) and
//! deleting many buckets of every shape in one transaction.

use stowage_bolt::{Bucket, Db, Error, Options};

/// Every entry of `b`, nested buckets included (as `name/` then their contents).
fn dump(b: Bucket<'_>, prefix: &str, out: &mut Vec<String>) {
    let mut c = b.cursor();
    let mut e = c.first().unwrap();
    while let Some((k, v)) = e {
        let k = String::from_utf8_lossy(k);
        match v {
            Some(v) => out.push(format!("{prefix}{k}={}", v.len())),
            None => {
                let nested = c
                    .bucket()
                    .unwrap()
                    .expect("a bucket entry opens as a bucket");
                out.push(format!("{prefix}{k}/ seq {}", nested.sequence()));
                dump(nested, &format!("{prefix}{k}/"), out);
            }
        }
        e = c.next().unwrap();
    }
}

/// The same, through `Bucket::bucket` (a search per nested bucket).
fn dump_by_name(b: Bucket<'_>, prefix: &str, out: &mut Vec<String>) {
    b.for_each::<Error>(|k, v| {
        let ks = String::from_utf8_lossy(k);
        match v {
            Some(v) => out.push(format!("{prefix}{ks}={}", v.len())),
            None => {
                let nested = b.bucket(k)?.expect("bucket");
                out.push(format!("{prefix}{ks}/ seq {}", nested.sequence()));
                dump_by_name(nested, &format!("{prefix}{ks}/"), out);
            }
        }
        Ok(())
    })
    .unwrap();
}

/// A top bucket holding inline buckets, page-rooted buckets (too big to inline), nested
/// buckets and plain values, enough of them to span several leaf pages.
fn populate(db: &Db) {
    db.update::<_, Error>(|tx| {
        let mut top = tx.create_bucket(b"top")?;
        for i in 0..300u32 {
            let name = format!("b{i:04}");
            match i % 4 {
                0 => top.put(name.as_bytes(), &[i as u8; 20])?,
                1 => {
                    let mut b = top.create_bucket(name.as_bytes())?;
                    b.put(b"k", b"small")?;
                    b.set_sequence(u64::from(i))?;
                }
                2 => {
                    let mut b = top.create_bucket(name.as_bytes())?;
                    for j in 0..40u32 {
                        b.put(&j.to_be_bytes(), &[7u8; 200])?;
                    }
                }
                _ => {
                    let mut b = top.create_bucket(name.as_bytes())?;
                    let mut n = b.create_bucket(b"labels")?;
                    n.put(b"containerd.io/gc.root", b"x")?;
                    let mut deep = n.create_bucket(b"deeper")?;
                    deep.put(b"d", &[1u8; 3000])?;
                }
            }
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn cursor_bucket_matches_bucket_by_name_in_read_tx() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::default()).unwrap();
    populate(&db);
    let tx = db.begin_read().unwrap();
    let top = tx.bucket(b"top").unwrap().unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    dump(top, "", &mut a);
    dump_by_name(top, "", &mut b);
    assert_eq!(a, b);
    // 225 buckets (75 with two nested levels below) and 75 values, plus nested contents.
    assert_eq!(a.iter().filter(|l| l.contains("/ seq")).count(), 225 + 150);
    assert!(a.contains(&"b0001/ seq 1".to_string()));
    assert!(a.contains(&"b0003/labels/deeper/d=3000".to_string()));
}

#[test]
fn cursor_bucket_is_none_off_entries_and_on_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::default()).unwrap();
    populate(&db);
    let tx = db.begin_read().unwrap();
    let top = tx.bucket(b"top").unwrap().unwrap();
    let mut c = top.cursor();
    assert!(c.bucket().unwrap().is_none(), "never positioned");
    assert_eq!(c.seek(b"b0000").unwrap().unwrap().0, b"b0000");
    assert!(c.bucket().unwrap().is_none(), "a value");
    assert_eq!(c.seek(b"b0002").unwrap().unwrap().0, b"b0002");
    let big = c.bucket().unwrap().expect("page-rooted bucket");
    assert_eq!(big.get(&5u32.to_be_bytes()).unwrap(), Some(&[7u8; 200][..]));
    assert_eq!(c.last().unwrap().unwrap().0, b"b0299");
    assert!(c.bucket().unwrap().is_some());
    assert!(c.next().unwrap().is_none());
    assert!(c.bucket().unwrap().is_none(), "past the end");
    c.first().unwrap();
    assert!(c.prev().unwrap().is_none());
    assert!(c.bucket().unwrap().is_none(), "before the start");
}

#[test]
fn cursor_bucket_sees_the_write_transactions_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::default()).unwrap();
    populate(&db);
    db.update::<_, Error>(|tx| {
        let mut top = tx.bucket_mut(b"top")?.unwrap();
        // Changed (opened for writing), created and deleted in this transaction.
        top.bucket_mut(b"b0001")?.unwrap().put(b"added", b"yes")?;
        top.bucket_mut(b"b0002")?
            .unwrap()
            .delete(&0u32.to_be_bytes())?;
        top.create_bucket(b"b0001x")?.put(b"fresh", b"1")?;
        top.delete_bucket(b"b0005")?;
        let view = top.view();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        dump(view, "", &mut a);
        dump_by_name(view, "", &mut b);
        assert_eq!(a, b);
        assert!(a.contains(&"b0001/added=3".to_string()));
        assert!(a.contains(&"b0001x/fresh=1".to_string()));
        assert!(!a.iter().any(|l| l.starts_with("b0005")));
        assert!(!a.contains(&"b0002/\0\0\0\0=200".to_string()));
        let mut c = view.cursor();
        c.seek(b"b0001").unwrap();
        let changed = c.bucket()?.unwrap();
        assert_eq!(changed.get(b"added")?, Some(&b"yes"[..]));
        Ok(())
    })
    .unwrap();
}

/// Deleting most buckets of a big bucket in one transaction (inline, page-rooted and
/// nested ones, one opened earlier in the same transaction) frees every page exactly once:
/// the check finds no leaked and no doubly used page, before and after the pages are reused.
#[test]
fn deleting_many_buckets_in_one_transaction_frees_their_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::default()).unwrap();
    populate(&db);
    db.update::<_, Error>(|tx| {
        let mut top = tx.bucket_mut(b"top")?.unwrap();
        top.bucket_mut(b"b0006")?
            .unwrap()
            .put(b"opened", b"first")?;
        for i in 0..300u32 {
            let name = format!("b{i:04}");
            let r = top.delete_bucket(name.as_bytes());
            if i % 4 == 0 {
                assert!(
                    matches!(r, Err(Error::IncompatibleValue(..))),
                    "{name}: {r:?}"
                );
            } else {
                r?;
            }
        }
        assert!(matches!(
            top.delete_bucket(b"b0001"),
            Err(Error::BucketNotFound(_))
        ));
        Ok(())
    })
    .unwrap();
    let tx = db.begin_read().unwrap();
    tx.check().unwrap();
    let top = tx.bucket(b"top").unwrap().unwrap();
    let mut left = Vec::new();
    dump(top, "", &mut left);
    assert_eq!(left.len(), 75, "only the values are left: {left:?}");
    drop(tx);
    db.update::<_, Error>(|tx| tx.delete_bucket(b"top"))
        .unwrap();
    populate(&db);
    db.begin_read().unwrap().check().unwrap();
}
