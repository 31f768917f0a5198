//! Behaviour of the local store that is about its on-disk form: layout, modes, the text of the
//! ingest files, corrupt ingests, refs that look like paths, junk in `blobs/`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stowage_content::{LocalStore, MemoryLabelStore};
use stowage_core_types::content::{
    IngestManager, Ingester, Manager, Provider, Writer, WriterOptions,
};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_digest_identity::{digest_of, digest_of_with, Algorithm};

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::with_memory_labels(dir.path().join("content")).unwrap();
    (dir, s)
}

fn desc(d: &Digest, size: usize) -> Descriptor {
    Descriptor::new("application/octet-stream", d.clone(), size as u64)
}

fn ingest(s: &LocalStore, r: &str, data: &[u8], expect: Option<&Descriptor>) -> Box<dyn Writer> {
    let mut opts = WriterOptions::with_ref(r);
    if let Some(d) = expect {
        opts = opts.expect(d.clone());
    }
    let mut w = s.writer(opts).unwrap();
    w.write_all(data).unwrap();
    w
}

fn hex_of_ref(r: &str) -> String {
    digest_of(r.as_bytes()).encoded().to_owned()
}

fn is_go_marshal_text(s: &str) -> bool {
    // 2006-01-02T15:04:05[.fraction without trailing zeros]Z
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' {
        return false;
    }
    if !digits(8..10) || b[10] != b'T' || !digits(11..13) || !digits(14..16) || !digits(17..19) {
        return false;
    }
    match &s[19..] {
        "Z" => true,
        rest => {
            let Some(frac) = rest.strip_prefix('.').and_then(|r| r.strip_suffix('Z')) else {
                return false;
            };
            (1..=9).contains(&frac.len())
                && frac.bytes().all(|c| c.is_ascii_digit())
                && !frac.ends_with('0')
        }
    }
}

#[test]
fn layout_matches_containerd() {
    let (_t, s) = store();
    let data = b"hello containerd layout";
    let d = digest_of(data);
    let r = "layout-ref";
    let w = ingest(&s, r, data, Some(&desc(&d, data.len())));
    let dir = s.root().join("ingest").join(hex_of_ref(r));
    assert_eq!(s.ingest_path(r), dir);
    assert!(dir.is_dir());
    assert_eq!(fs::read_to_string(dir.join("ref")).unwrap(), r);
    assert_eq!(
        fs::read_to_string(dir.join("total")).unwrap(),
        data.len().to_string()
    );
    let started = fs::read_to_string(dir.join("startedat")).unwrap();
    assert!(is_go_marshal_text(&started), "{started:?}");
    let updated = fs::read_to_string(dir.join("updatedat")).unwrap();
    assert!(is_go_marshal_text(&updated), "{updated:?}");
    assert_eq!(fs::read(dir.join("data")).unwrap(), data);
    drop(w);

    let mut w = s
        .writer(WriterOptions::with_ref(r).expect(desc(&d, data.len())))
        .unwrap();
    w.commit(None, None, Labels::new()).unwrap();
    let blob = s.root().join("blobs/sha256").join(d.encoded());
    assert_eq!(s.blob_path(&d), blob);
    let meta = fs::metadata(&blob).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        meta.permissions().mode() & 0o222,
        0,
        "committed blobs are read-only"
    );
    assert_eq!(fs::read(&blob).unwrap(), data);
    assert!(!dir.exists(), "ingest removed after commit");
    // No stray files (temp files, locks) anywhere.
    let mut all = Vec::new();
    list_files(s.root(), &mut all);
    assert_eq!(all, vec![blob]);
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            list_files(&p, out);
        } else {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn without_label_store_updates_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = LocalStore::open(t.path()).unwrap();
    let mut w = ingest(&s, "r", b"abc", None);
    let mut l = Labels::new();
    l.insert("k".into(), "v".into());
    w.commit(None, None, l.clone()).unwrap();
    let mut info = s.info(&digest_of(b"abc")).unwrap();
    assert!(info.labels.is_empty(), "no label store, no labels");
    info.labels = l;
    let e = s.update(info, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
}

#[test]
fn labels_survive_in_a_shared_label_store() {
    let t = tempfile::tempdir().unwrap();
    let ls = std::sync::Arc::new(MemoryLabelStore::new());
    let a = LocalStore::with_label_store(t.path(), ls.clone()).unwrap();
    let mut l = Labels::new();
    l.insert("k".into(), "v".into());
    ingest(&a, "r", b"abc", None)
        .commit(None, None, l.clone())
        .unwrap();
    let b = LocalStore::with_label_store(t.path(), ls).unwrap();
    assert_eq!(b.info(&digest_of(b"abc")).unwrap().labels, l);
}

#[test]
fn other_algorithms_are_stored_under_their_own_directory() {
    let (_t, s) = store();
    let data = b"sha512 content";
    let d = digest_of_with(Algorithm::Sha512, data);
    let mut w = ingest(&s, "r512", data, Some(&desc(&d, data.len())));
    assert_eq!(w.digest(), d, "writer hashes with the expected algorithm");
    w.commit(None, None, Labels::new()).unwrap();
    assert!(s.root().join("blobs/sha512").join(d.encoded()).is_file());
    assert_eq!(s.info(&d).unwrap().size, data.len() as u64);
    // And a sha256 writer committed with a sha384 expectation is verified by re-hashing.
    let d384 = digest_of_with(Algorithm::Sha384, b"other");
    let mut w = ingest(&s, "r384", b"other", None);
    w.commit(None, Some(&d384), Labels::new()).unwrap();
    assert!(s.info(&d384).is_ok());
    let mut w = ingest(&s, "r384b", b"other!", None);
    let e = w.commit(None, Some(&d384), Labels::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
}

fn corrupt_case(mutate: impl FnOnce(&Path), want: &str) {
    let (_t, s) = store();
    drop(ingest(
        &s,
        "victim",
        b"some bytes",
        Some(&desc(&digest_of(b"x"), 100)),
    ));
    mutate(&s.ingest_path("victim"));
    for e in [
        s.status("victim").unwrap_err(),
        s.writer(WriterOptions::with_ref("victim"))
            .map(|_| ())
            .unwrap_err(),
        s.list_statuses(&[] as &[String]).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(want), "{msg} should mention {want}");
        assert!(msg.contains("abort"), "{msg} should say how to recover");
    }
    // Abort clears it and the ref works again.
    s.abort("victim").unwrap();
    let mut w = ingest(&s, "victim", b"fresh", None);
    w.commit(None, None, Labels::new()).unwrap();
    assert!(s.walk(&mut |_| Ok(()), &[] as &[String]).is_ok());
}

#[test]
fn corrupt_ingests_give_clear_errors() {
    corrupt_case(
        |d| fs::remove_file(d.join("ref")).unwrap(),
        "ref file is missing",
    );
    corrupt_case(
        |d| fs::write(d.join("ref"), "someone-else").unwrap(),
        "someone-else",
    );
    corrupt_case(
        |d| fs::write(d.join("startedat"), "yesterday").unwrap(),
        "startedat",
    );
    corrupt_case(
        |d| fs::remove_file(d.join("updatedat")).unwrap(),
        "updatedat file is missing",
    );
    corrupt_case(|d| fs::write(d.join("total"), "-5").unwrap(), "total");
    corrupt_case(
        |d| fs::write(d.join("ref"), [0xff, 0xfe]).unwrap(),
        "not UTF-8",
    );
}

#[test]
fn ingest_without_data_starts_over() {
    let (_t, s) = store();
    drop(ingest(&s, "r", b"partial", None));
    fs::remove_file(s.ingest_path("r").join("data")).unwrap();
    assert_eq!(s.status("r").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(s.list_statuses(&[] as &[String]).unwrap().is_empty());
    let w = s.writer(WriterOptions::with_ref("r")).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
}

#[test]
fn resume_hashes_what_is_on_disk() {
    let (_t, s) = store();
    drop(ingest(&s, "r", b"AAAA", None));
    // Someone (containerd, a crash) left different bytes than we wrote: the digest follows
    // the file, so a commit can never name the blob after bytes it does not hold.
    fs::write(s.ingest_path("r").join("data"), b"BBBBBB").unwrap();
    let mut w = s.writer(WriterOptions::with_ref("r")).unwrap();
    assert_eq!(w.status().unwrap().offset, 6);
    assert_eq!(w.digest(), digest_of(b"BBBBBB"));
    w.commit(None, None, Labels::new()).unwrap();
    assert_eq!(
        fs::read(s.blob_path(&digest_of(b"BBBBBB"))).unwrap(),
        b"BBBBBB"
    );
}

#[test]
fn data_changed_behind_the_writer_is_not_committed() {
    let (_t, s) = store();
    let mut w = ingest(&s, "r", b"0123456789", None);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(s.ingest_path("r").join("data"))
        .unwrap();
    f.write_all(b"intruder").unwrap();
    let e = w.commit(None, None, Labels::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}");
    assert!(e.to_string().contains("18 bytes but 10"), "{e}");
    assert!(s.info(&digest_of(b"0123456789")).is_err());
    assert!(s.info(&digest_of(b"0123456789intruder")).is_err());
}

#[test]
fn writes_beyond_the_expected_size_are_refused() {
    let (_t, s) = store();
    let d = digest_of(b"12345");
    let mut w = s
        .writer(WriterOptions::with_ref("r").expect(desc(&d, 5)))
        .unwrap();
    w.write_all(b"123").unwrap();
    let e = stowage_core_types::Error::from(w.write_all(b"456").unwrap_err());
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("expected size 5"), "{e}");
    assert_eq!(
        w.status().unwrap().offset,
        3,
        "nothing of the refused write landed"
    );
    w.write_all(b"45").unwrap();
    w.commit(None, None, Labels::new()).unwrap();
}

#[test]
fn resume_with_a_different_total_is_refused() {
    let (_t, s) = store();
    drop(ingest(&s, "r", b"12", Some(&desc(&digest_of(b"1234"), 4))));
    let e = s
        .writer(WriterOptions::with_ref("r").expect(desc(&digest_of(b"123456"), 6)))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(
        e.to_string().contains("total size 4, writer expects 6"),
        "{e}"
    );
}

#[test]
fn path_like_refs_stay_inside_ingest() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("a/b/content");
    let s = LocalStore::with_memory_labels(&root).unwrap();
    for r in [
        "../../../escape",
        "/tmp/abs",
        "x/../../../../y",
        "..",
        "ingest/../blobs",
    ] {
        drop(ingest(&s, r, r.as_bytes(), None));
    }
    let mut files = Vec::new();
    list_files(t.path(), &mut files);
    let ingest_root = s.root().join("ingest");
    for f in &files {
        let rel = f
            .strip_prefix(&ingest_root)
            .unwrap_or_else(|_| panic!("{} escaped", f.display()));
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|c| c.is_ascii_hexdigit()));
    }
    assert_eq!(
        files.len(),
        5 * 4,
        "ref, startedat, updatedat, data for each"
    );
}

#[test]
fn walk_ignores_junk() {
    let (_t, s) = store();
    let mut w = ingest(&s, "r", b"real", None);
    w.commit(None, None, Labels::new()).unwrap();
    let blobs = s.root().join("blobs");
    fs::write(blobs.join("sha256/not-a-digest"), b"x").unwrap();
    fs::write(
        blobs.join("sha256").join(format!("{}.tmp", "a".repeat(64))),
        b"x",
    )
    .unwrap();
    fs::create_dir(blobs.join("sha256").join("b".repeat(64))).unwrap();
    fs::create_dir_all(blobs.join("md5")).unwrap();
    fs::write(blobs.join("md5/abc"), b"x").unwrap();
    fs::write(blobs.join("stray-file"), b"x").unwrap();
    let mut seen = Vec::new();
    s.walk(
        &mut |i| {
            seen.push(i.digest);
            Ok(())
        },
        &[] as &[String],
    )
    .unwrap();
    assert_eq!(seen, vec![digest_of(b"real")]);
}

#[test]
fn two_handles_on_one_directory_share_ref_locks() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("x")).unwrap();
    let a = LocalStore::open(t.path().join("content")).unwrap();
    let b = LocalStore::open(t.path().join("x/../content")).unwrap();
    let _w = a.writer(WriterOptions::with_ref("shared")).unwrap();
    let e = b
        .writer(WriterOptions::with_ref("shared"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[test]
fn reading_does_not_move_updated_at() {
    let (_t, s) = store();
    let mut w = ingest(&s, "r", b"read me", None);
    w.commit(None, None, Labels::new()).unwrap();
    let d = digest_of(b"read me");
    let before = s.info(&d).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let ra = s.reader_at(&desc(&d, 7)).unwrap();
    let mut buf = [0u8; 7];
    assert_eq!(ra.read_at(&mut buf, 0).unwrap(), 7);
    let after = s.info(&d).unwrap();
    assert_eq!(before.updated_at, after.updated_at);
    assert_eq!(before.created_at, after.created_at);
}

#[test]
fn closing_a_writer_records_updatedat() {
    let (_t, s) = store();
    let mut w = s.writer(WriterOptions::with_ref("r")).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    w.write_all(b"late").unwrap();
    let last = w.status().unwrap().updated_at;
    drop(w);
    let text = fs::read_to_string(s.ingest_path("r").join("updatedat")).unwrap();
    let started = fs::read_to_string(s.ingest_path("r").join("startedat")).unwrap();
    assert_ne!(text, started, "updatedat moved on close");
    // The store reports it back, to the nanosecond.
    let st = s.status("r").unwrap();
    assert!(st.updated_at >= last, "{:?} < {last:?}", st.updated_at);
    assert!(st.updated_at <= SystemTime::now());
}

#[test]
fn a_removed_ingest_directory_is_recreated() {
    let (_t, s) = store();
    fs::remove_dir_all(s.root().join("ingest")).unwrap();
    let mut w = ingest(&s, "r", b"after rm -rf ingest", None);
    w.commit(None, None, Labels::new()).unwrap();
    assert!(s.info(&digest_of(b"after rm -rf ingest")).is_ok());
    assert!(s.list_statuses(&[] as &[String]).unwrap().is_empty());
}
