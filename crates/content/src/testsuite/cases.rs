//! The conformance cases. Each takes a fresh, empty store.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use stowage_core_types::content::{
    read_blob, write_blob, Info, SectionReader, Store, WriterOptions,
};
use stowage_core_types::digest::Digest;
use stowage_core_types::error::{Error, ErrorKind};
use stowage_core_types::labels::Labels;
use stowage_digest_identity::digest_of;

use super::util::*;

fn now() -> SystemTime {
    SystemTime::now()
}

/// Writers with and without an expected descriptor, written in small chunks, committed with
/// labels; digest and info (size, labels, commit-time window) must follow.
pub fn writer_commit_and_info(store: &dyn Store) {
    let lbls = labels(&[("name", "value"), ("containerd.io/gc.root", "now")]);
    let (c1, d1) = content(256, 1);
    let (c2, d2) = content(256, 2);
    let (c3, d3) = content(4096 + 17, 3);
    // All open at once: distinct refs do not interfere.
    let mut w1 = open(store, "c1");
    let mut w2 = open_expect(store, "c2", &desc(&d2, c2.len()));
    let mut w3 = open_expect(store, "c3", &desc(&d3, c3.len()));
    for (w, c, d) in [
        (&mut w1, &c1, &d1),
        (&mut w2, &c2, &d2),
        (&mut w3, &c3, &d3),
    ] {
        write_chunked(w.as_mut(), c, 32);
        let t0 = now();
        w.commit(None, None, lbls.clone())
            .unwrap_or_else(|e| panic!("commit {d}: {e}"));
        let t1 = now();
        assert_eq!(&w.digest(), d, "writer digest after commit");
        check_info(store, d, c.len(), &lbls, (t0, t1), (t0, t1));
        check_content(store, d, c);
    }
}

/// Status of a writer as data arrives (containerd's UpdateStatus), and the store's view of the
/// same ingest.
pub fn status_tracks_progress(store: &dyn Store) {
    let (c1, d1) = content(256, 10);
    let pre_start = now();
    let mut w = open_expect(store, "c1", &desc(&d1, 256));
    let post_start = now();
    let st = w.status().expect("status");
    assert_eq!(st.reference, "c1");
    assert_eq!(st.offset, 0);
    assert_eq!(st.total, 256);
    assert_eq!(w.digest(), digest_of(b""));
    within(st.started_at, pre_start, post_start, "started_at");
    within(
        st.updated_at,
        pre_start,
        post_start,
        "updated_at of a new ingest",
    );

    for (range, upto) in [(0..64, 64usize), (64..192, 192), (192..256, 256)] {
        let pre = now();
        write(w.as_mut(), &c1[range]);
        let post = now();
        let st = w.status().expect("status");
        assert_eq!(st.offset, upto as u64);
        assert_eq!(st.total, 256);
        assert_eq!(w.digest(), digest_of(&c1[..upto]));
        within(st.started_at, pre_start, post_start, "started_at stays");
        within(st.updated_at, pre, post, "updated_at after write");
        // The store sees the same ingest.
        let seen = store.status("c1").expect("store status");
        assert_eq!(seen.reference, "c1");
        assert_eq!(seen.offset, upto as u64);
        assert_eq!(seen.total, 256);
        within(seen.started_at, pre_start, post_start, "store's started_at");
    }
    let lbls = labels(&[("k", "v")]);
    let t0 = now();
    w.commit(None, None, lbls.clone()).expect("commit");
    let t1 = now();
    check_info(store, &d1, 256, &lbls, (t0, t1), (t0, t1));
    expect_kind(
        store.status("c1"),
        ErrorKind::NotFound,
        "status after commit",
    );
}

/// Committing content that already exists fails with AlreadyExists, with or without an
/// expected digest, and removes the ingest.
pub fn commit_existing_content(store: &dyn Store) {
    let (c1, d1) = content(256, 20);
    write_blob(store, "c1", &mut &c1[..], &desc(&d1, 256), Labels::new()).expect("write_blob");
    for (i, expected) in [Some(&d1), None].into_iter().enumerate() {
        let r = format!("c1-commitexists-{i}");
        let mut w = open(store, &r);
        write(w.as_mut(), &c1);
        let e = expect_kind(
            w.commit(Some(256), expected, Labels::new()),
            ErrorKind::AlreadyExists,
            "commit of existing content",
        );
        assert!(e.to_string().contains(d1.as_str()), "names the digest: {e}");
        drop(w);
        expect_kind(
            store.status(&r),
            ErrorKind::NotFound,
            "ingest after AlreadyExists",
        );
    }
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
    check_content(store, &d1, &c1);
}

/// Opening a writer that expects content already present fails with AlreadyExists, and
/// `write_blob` treats that as done.
pub fn open_with_existing_expected(store: &dyn Store) {
    let (c1, d1) = content(300, 30);
    write_blob(store, "first", &mut &c1[..], &desc(&d1, 300), Labels::new()).expect("write_blob");
    let e = expect_kind(
        store
            .writer(WriterOptions::with_ref("second").expect(desc(&d1, 300)))
            .map(|_| ()),
        ErrorKind::AlreadyExists,
        "open expecting existing content",
    );
    assert!(e.to_string().contains(d1.as_str()), "{e}");
    write_blob(store, "third", &mut &c1[..], &desc(&d1, 300), Labels::new())
        .expect("write_blob of existing content is a no-op");
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
}

/// A closed writer is resumed by the next open of its ref (containerd's ResumeWriter).
pub fn resume_after_close(store: &dyn Store) {
    let (cb, d) = content(256, 40);
    let (first, second) = cb.split_at(128);
    let pre_start = now();
    let mut w1 = open_expect(store, "cb", &desc(&d, 256));
    let post_start = now();
    let pre_update = now();
    write(w1.as_mut(), first);
    let post_update = now();
    let st1 = w1.status().expect("status");
    assert_eq!((st1.offset, st1.total), (128, 256));
    assert_eq!(w1.digest(), digest_of(first));
    drop(w1);

    let mut w2 = open_expect(store, "cb", &desc(&d, 256));
    let st2 = w2.status().expect("status");
    assert_eq!(st2.reference, "cb");
    assert_eq!((st2.offset, st2.total), (128, 256));
    assert_eq!(
        w2.digest(),
        digest_of(first),
        "digest of the resumed prefix"
    );
    within(
        st2.started_at,
        pre_start,
        post_start,
        "started_at survives resume",
    );
    within(
        st2.updated_at,
        pre_update,
        post_update,
        "updated_at survives resume",
    );

    let pre = now();
    write(w2.as_mut(), second);
    let post = now();
    let st = w2.status().expect("status");
    assert_eq!(st.offset, 256);
    within(st.updated_at, pre, post, "updated_at after resumed write");
    assert_eq!(w2.digest(), d);
    let t0 = now();
    w2.commit(None, None, Labels::new()).expect("commit");
    let t1 = now();
    check_info(store, &d, 256, &Labels::new(), (t0, t1), (t0, t1));
    check_content(store, &d, &cb);
}

/// Resume at several sizes and cut points, finishing by truncating and rewriting, by writing
/// the rest, or through `write_blob` (which skips what the ingest holds).
pub fn resume_variants(store: &dyn Store) {
    let sizes = [500usize, 5000, 50000];
    let cuts = [0.0, 0.1, 0.5, 0.9, 1.0];
    let mut seed = 100;
    for (mode, how) in ["truncate", "rest", "write_blob"].iter().enumerate() {
        for (i, size) in sizes.iter().enumerate() {
            for (j, cut) in cuts.iter().enumerate() {
                seed += 1;
                let (b, d) = content(*size, seed);
                let limit = (*size as f64 * cut) as usize;
                let r = format!("ref-{mode}-{i}-{j}");
                let dsc = desc(&d, *size);
                let mut w = open_expect(store, &r, &dsc);
                write(w.as_mut(), &b[..limit]);
                drop(w);
                let t0 = now();
                match *how {
                    "truncate" => {
                        let mut w = open_expect(store, &r, &dsc);
                        assert_eq!(w.status().expect("status").offset, limit as u64, "{r}");
                        w.truncate(0).expect("truncate");
                        assert_eq!(w.status().expect("status").offset, 0);
                        write_chunked(w.as_mut(), &b, 1024);
                        w.commit(Some(*size as u64), Some(&d), Labels::new())
                            .expect("commit");
                    }
                    "rest" => {
                        let mut w = open_expect(store, &r, &dsc);
                        assert_eq!(w.status().expect("status").offset, limit as u64, "{r}");
                        write_chunked(w.as_mut(), &b[limit..], 1024);
                        w.commit(Some(*size as u64), Some(&d), Labels::new())
                            .expect("commit");
                    }
                    _ => {
                        assert_eq!(store.status(&r).expect("status").offset, limit as u64);
                        write_blob(store, &r, &mut &b[..], &dsc, Labels::new())
                            .expect("write_blob resumes");
                    }
                }
                let t1 = now();
                check_info(store, &d, *size, &Labels::new(), (t0, t1), (t0, t1));
                check_content(store, &d, &b);
                expect_kind(store.status(&r), ErrorKind::NotFound, "ingest after commit");
            }
        }
    }
}

/// Reading a blob smaller than the read size yields the blob and a clean end.
pub fn small_blob_read_past_end(store: &dyn Store) {
    let blob = b"foobar";
    let d = digest_of(blob);
    let mut w = open_expect(store, "small", &desc(&d, blob.len()));
    write(w.as_mut(), blob);
    w.commit(Some(6), Some(&d), Labels::new()).expect("commit");
    let ra = store.reader_at(&desc(&d, 6)).expect("reader_at");
    assert_eq!(ra.size(), 6);
    let mut buf = [0u8; 7];
    let n = ra.read_at(&mut buf, 0).expect("read_at 0");
    assert_eq!(&buf[..n], &blob[..n]);
    assert_eq!(ra.read_at(&mut buf, 6).expect("read at end"), 0);
    assert_eq!(ra.read_at(&mut buf, 1000).expect("read past end"), 0);
    let n = ra.read_at(&mut buf, 4).expect("read near end");
    assert_eq!(&buf[..n], b"ar");
    let mut all = Vec::new();
    io::Read::read_to_end(&mut SectionReader::new(&*ra, 0), &mut all).expect("section read");
    assert_eq!(all, blob);
}

/// Positional reads at arbitrary offsets, from several readers and threads at once.
pub fn positional_reads(store: &dyn Store) {
    let (b, d) = content(200_003, 50);
    write_blob(store, "pr", &mut &b[..], &desc(&d, b.len()), Labels::new()).expect("write");
    let dsc = desc(&d, b.len());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let b = &b;
            let dsc = &dsc;
            s.spawn(move || {
                let ra = store.reader_at(dsc).expect("reader_at");
                let mut g = Gen::new(t + 7);
                for _ in 0..200 {
                    let off = (g.next_u64() % (b.len() as u64 + 10)) as usize;
                    let len = (g.next_u64() % 70_000) as usize;
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    // read_at may return short counts; collect until the end.
                    loop {
                        let n = ra
                            .read_at(&mut buf[got..], (off + got) as u64)
                            .expect("read_at");
                        if n == 0 {
                            break;
                        }
                        got += n;
                        if got == len {
                            break;
                        }
                    }
                    let end = (off + len).min(b.len()).max(off.min(b.len()));
                    assert_eq!(got, end - off.min(b.len()), "length at {off}+{len}");
                    assert!(
                        buf[..got] == b[off.min(b.len())..end],
                        "bytes at {off}+{len}"
                    );
                }
            });
        }
    });
}

/// Labels at commit, replaced wholesale, updated by field path, and the errors around them.
pub fn labels_update(store: &dyn Store) {
    let (c1, d1) = content(256, 60);
    let mut w = open_expect(store, "c1-checklabels", &desc(&d1, 256));
    write(w.as_mut(), &c1);
    let mut lbls = labels(&[
        ("k1", "v1"),
        ("k2", "v2"),
        ("containerd.io/gc.root", "2026"),
    ]);
    let c0 = now();
    w.commit(None, None, lbls.clone()).expect("commit");
    let c1t = now();
    check_info(store, &d1, 256, &lbls, (c0, c1t), (c0, c1t));

    // No field paths: replace all.
    lbls.insert("k1".into(), "newvalue".into());
    lbls.remove("k2");
    lbls.insert("k3".into(), "v3".into());
    let info = Info {
        digest: d1.clone(),
        size: 256,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        labels: lbls.clone(),
    };
    let u0 = now();
    let out = store.update(info.clone(), &[]).expect("update all");
    let u1 = now();
    assert_eq!(out.labels, lbls, "update returns the stored labels");
    check_info(store, &d1, 256, &lbls, (c0, c1t), (u0, u1));

    // By field path: k3 removed (absent from the request), k1 set; others untouched.
    let req = Info {
        labels: labels(&[("k1", "v1"), ("containerd.io/gc.root", "ignored")]),
        ..info.clone()
    };
    let u0 = now();
    store
        .update(req, &["labels.k3".into(), "labels.k1".into()])
        .expect("update by path");
    let u1 = now();
    let want = labels(&[("k1", "v1"), ("containerd.io/gc.root", "2026")]);
    check_info(store, &d1, 256, &want, (c0, c1t), (u0, u1));

    // "labels" replaces all; an empty value removes.
    let req = Info {
        labels: labels(&[("only", "this"), ("gone", "")]),
        ..info.clone()
    };
    let out = store
        .update(req, &["labels".into()])
        .expect("update labels");
    assert_eq!(out.labels, labels(&[("only", "this")]));
    assert_eq!(
        store.info(&d1).expect("info").labels,
        labels(&[("only", "this")])
    );

    // Errors: unknown field, oversized label, unknown blob. None changes what is stored.
    let e = expect_kind(
        store.update(info.clone(), &["size".into()]),
        ErrorKind::InvalidArgument,
        "update of size",
    );
    assert!(e.to_string().contains("size"), "{e}");
    let big = Info {
        labels: labels(&[("big", &"x".repeat(5000))]),
        ..info.clone()
    };
    expect_kind(
        store.update(big, &["labels.big".into()]),
        ErrorKind::InvalidArgument,
        "oversized label",
    );
    assert_eq!(
        store.info(&d1).expect("info").labels,
        labels(&[("only", "this")])
    );
    let missing = Info {
        digest: digest_of(b"not there"),
        ..info
    };
    expect_kind(
        store.update(missing, &[]),
        ErrorKind::NotFound,
        "update of missing blob",
    );
}

/// containerd's CommitErrorState: after every failed commit the ref can be reopened, and a
/// ref stays locked while a writer holds it.
pub fn commit_error_state(store: &dyn Store) {
    let (c1, d1) = content(256, 70);
    let (_, d2) = content(256, 71);
    write_blob(store, "c1", &mut &c1[..], &desc(&d1, 256), Labels::new()).expect("write_blob");
    let r = "c1-commiterror-state";
    let unavailable = |what: &str| {
        expect_kind(
            store.writer(WriterOptions::with_ref(r)).map(|_| ()),
            ErrorKind::Unavailable,
            what,
        );
    };

    let mut w = open(store, r);
    write(w.as_mut(), &c1);
    unavailable("ref in use");
    expect_kind(
        w.commit(Some(256), Some(&d1), Labels::new()),
        ErrorKind::AlreadyExists,
        "commit of existing with digest",
    );
    drop(w);

    let mut w = open(store, r);
    unavailable("ref in use (2)");
    write(w.as_mut(), &c1);
    expect_kind(
        w.commit(Some(256), None, Labels::new()),
        ErrorKind::AlreadyExists,
        "commit of existing without digest",
    );
    drop(w);

    let mut w = open(store, r);
    unavailable("ref in use (3)");
    let mut more = c1.clone();
    more.extend_from_slice(b"more");
    write(w.as_mut(), &more);
    expect_kind(
        w.commit(Some(260), Some(&d2), Labels::new()),
        ErrorKind::FailedPrecondition,
        "commit with wrong digest",
    );
    drop(w);

    let mut w = open(store, r);
    unavailable("ref in use (4)");
    assert_eq!(
        w.status().expect("status").offset,
        260,
        "ingest kept after failed commit"
    );
    expect_kind(
        w.commit(Some(256), None, Labels::new()),
        ErrorKind::FailedPrecondition,
        "commit with wrong size",
    );
    drop(w);

    let mut w = open(store, r);
    unavailable("ref in use (5)");
    w.commit(Some(260), None, Labels::new())
        .expect("commit of resumed ingest");
    drop(w);
    check_content(store, &digest_of(&more), &more);

    let mut w = open(store, r);
    assert_eq!(
        w.status().expect("status").offset,
        0,
        "fresh ingest after commit"
    );
    write(w.as_mut(), &c1);
    unavailable("ref in use (6)");
    expect_kind(
        w.commit(Some(256), Some(&d1), Labels::new()),
        ErrorKind::AlreadyExists,
        "commit of existing again",
    );
    drop(w);

    let w = open(store, r);
    unavailable("ref in use (7)");
    drop(w);
    drop(open(store, r));
}

/// Size and digest are checked against the commit arguments and the descriptor given at
/// open; errors name expected and actual; nothing is stored under a wrong digest and the
/// ingest stays resumable.
pub fn commit_verifies_size_and_digest(store: &dyn Store) {
    let (c, d) = content(1000, 80);
    let (_, other) = content(1000, 81);
    let mut w = open(store, "verify");
    write(w.as_mut(), &c);

    let e = expect_kind(
        w.commit(Some(999), None, Labels::new()),
        ErrorKind::FailedPrecondition,
        "wrong size",
    );
    let msg = e.to_string();
    assert!(
        msg.contains("999") && msg.contains("1000"),
        "names both sizes: {msg}"
    );
    drop(w);

    let mut w = open(store, "verify");
    let e = expect_kind(
        w.commit(Some(1000), Some(&other), Labels::new()),
        ErrorKind::FailedPrecondition,
        "wrong digest",
    );
    let msg = e.to_string();
    assert!(
        msg.contains(other.as_str()) && msg.contains(d.as_str()),
        "names both digests: {msg}"
    );
    drop(w);
    expect_kind(
        store.info(&other),
        ErrorKind::NotFound,
        "nothing under the wrong digest",
    );
    expect_kind(store.info(&d), ErrorKind::NotFound, "nothing committed");
    assert_eq!(store.status("verify").expect("status").offset, 1000);

    // The descriptor given at open is an expectation too.
    let mut w = open_expect(store, "verify2", &desc(&other, 1000));
    write(w.as_mut(), &c);
    let e = expect_kind(
        w.commit(None, None, Labels::new()),
        ErrorKind::FailedPrecondition,
        "content not matching the opened descriptor",
    );
    assert!(e.to_string().contains(other.as_str()), "{e}");
    drop(w);
    expect_kind(
        store.info(&other),
        ErrorKind::NotFound,
        "nothing under the wrong digest",
    );

    // The retained ingest commits once the expectation is right.
    let mut w = open(store, "verify");
    w.commit(Some(1000), Some(&d), Labels::new())
        .expect("commit with the right digest");
    check_content(store, &d, &c);
}

/// One writer per ref: Unavailable while held, free again after drop or commit.
pub fn ref_locking(store: &dyn Store) {
    let w = open(store, "locked");
    let e = expect_kind(
        store.writer(WriterOptions::with_ref("locked")).map(|_| ()),
        ErrorKind::Unavailable,
        "second writer",
    );
    assert!(e.to_string().contains("locked"), "names the ref: {e}");
    drop(open(store, "other"));
    drop(w);
    let mut w = open(store, "locked");
    write(w.as_mut(), b"x");
    w.commit(None, None, Labels::new()).expect("commit");
    // Committed writers release the ref before they are dropped.
    let w2 = open(store, "locked");
    drop(w2);
    drop(w);
}

/// Walk lists every blob with its info, filtered like containerd: by digest, label value,
/// label presence, regex, negation, quoted keys, and several filters OR'd.
pub fn walk_filters(store: &dyn Store) {
    let mut walked = 0;
    store
        .walk(
            &mut |_| {
                walked += 1;
                Ok(())
            },
            &[] as &[String],
        )
        .expect("walk of empty store");
    assert_eq!(walked, 0);

    let blobs = [
        (
            content(100, 90),
            labels(&[("kind", "config"), ("a.b", "dots")]),
        ),
        (
            content(200, 91),
            labels(&[("kind", "layer"), ("size", "big")]),
        ),
        (content(300, 92), Labels::new()),
    ];
    for (i, ((b, d), l)) in blobs.iter().enumerate() {
        write_blob(
            store,
            &format!("w{i}"),
            &mut &b[..],
            &desc(d, b.len()),
            l.clone(),
        )
        .expect("write_blob");
    }
    let digests: Vec<&Digest> = blobs.iter().map(|((_, d), _)| d).collect();
    let walk = |filters: &[&str]| -> Vec<Info> {
        let mut out = Vec::new();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        store
            .walk(
                &mut |i| {
                    out.push(i);
                    Ok(())
                },
                &filters,
            )
            .unwrap_or_else(|e| panic!("walk {filters:?}: {e}"));
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out
    };
    let digests_of = |v: &[Info]| -> Vec<Digest> { v.iter().map(|i| i.digest.clone()).collect() };
    let mut want_all: Vec<Digest> = digests.iter().map(|d| (*d).clone()).collect();
    want_all.sort();

    let all = walk(&[]);
    assert_eq!(digests_of(&all), want_all);
    for ((b, d), l) in &blobs {
        let i = all.iter().find(|i| &i.digest == d).expect("walked");
        assert_eq!(i.size, b.len() as u64);
        assert_eq!(&i.labels, l);
    }
    let only = |v: &[Info]| -> Vec<Digest> { digests_of(v) };
    assert_eq!(
        only(&walk(&[&format!("digest=={}", digests[1])])),
        vec![digests[1].clone()]
    );
    assert_eq!(
        only(&walk(&["labels.kind==config"])),
        vec![digests[0].clone()]
    );
    assert_eq!(
        only(&walk(&["labels.\"a.b\"==dots"])),
        vec![digests[0].clone()]
    );
    assert_eq!(only(&walk(&["labels.size"])), vec![digests[1].clone()]);
    let mut both = vec![digests[0].clone(), digests[1].clone()];
    both.sort();
    assert_eq!(only(&walk(&["labels.kind~=^(config|layer)$"])), both);
    assert_eq!(
        only(&walk(&["labels.kind==config", "labels.kind==layer"])),
        both
    );
    assert_eq!(
        only(&walk(&["labels.kind==layer,labels.size==big"])),
        vec![digests[1].clone()]
    );
    assert!(walk(&["labels.kind==layer,labels.size==small"]).is_empty());
    let mut not_config = vec![digests[1].clone(), digests[2].clone()];
    not_config.sort();
    assert_eq!(only(&walk(&["labels.kind!=config"])), not_config);

    // A callback error stops the walk and comes back unchanged.
    let mut calls = 0;
    let e = store
        .walk(
            &mut |_| {
                calls += 1;
                Err(Error::aborted("stop here"))
            },
            &[] as &[String],
        )
        .expect_err("callback error");
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert!(e.to_string().contains("stop here"), "{e}");
    assert_eq!(calls, 1);

    expect_kind(
        store.walk(&mut |_| Ok(()), &["labels.kind==".to_string()]),
        ErrorKind::InvalidArgument,
        "malformed filter",
    );
}

/// Delete removes a blob and its labels; deleting again is NotFound.
pub fn delete_blob(store: &dyn Store) {
    let (b, d) = content(512, 100);
    write_blob(
        store,
        "del",
        &mut &b[..],
        &desc(&d, 512),
        labels(&[("k", "v")]),
    )
    .expect("write");
    store.delete(&d).expect("delete");
    expect_kind(store.info(&d), ErrorKind::NotFound, "info after delete");
    expect_kind(
        store.reader_at(&desc(&d, 512)).map(|_| ()),
        ErrorKind::NotFound,
        "read after delete",
    );
    let mut seen = 0;
    store
        .walk(
            &mut |_| {
                seen += 1;
                Ok(())
            },
            &[] as &[String],
        )
        .expect("walk");
    assert_eq!(seen, 0);
    let e = expect_kind(store.delete(&d), ErrorKind::NotFound, "second delete");
    assert!(e.to_string().contains(d.as_str()), "{e}");
    // Ingesting it again gives a fresh blob without the old labels.
    write_blob(store, "del", &mut &b[..], &desc(&d, 512), Labels::new()).expect("rewrite");
    assert!(store.info(&d).expect("info").labels.is_empty());
    check_content(store, &d, &b);
}

/// Abort discards an ingest; a writer whose ingest was aborted cannot commit it.
pub fn abort_ingest(store: &dyn Store) {
    let (b, d) = content(4000, 110);
    let mut w = open(store, "to-abort");
    write(w.as_mut(), &b[..1000]);
    drop(w);
    assert_eq!(store.status("to-abort").expect("status").offset, 1000);
    store.abort("to-abort").expect("abort");
    expect_kind(
        store.status("to-abort"),
        ErrorKind::NotFound,
        "status after abort",
    );
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
    expect_kind(
        store.abort("to-abort"),
        ErrorKind::NotFound,
        "abort of nothing",
    );
    expect_kind(
        store.abort("never-was"),
        ErrorKind::NotFound,
        "abort of unknown ref",
    );

    let before = now();
    let w = open(store, "to-abort");
    let st = w.status().expect("status");
    assert_eq!(st.offset, 0, "reopen after abort starts over");
    within(st.started_at, before, now(), "new started_at");
    drop(w);

    // Aborting under an open writer: its commit must not store anything.
    let mut w = open(store, "aborted-live");
    write(w.as_mut(), &b);
    store.abort("aborted-live").expect("abort live ingest");
    assert!(
        w.commit(Some(4000), Some(&d), Labels::new()).is_err(),
        "commit after abort"
    );
    drop(w);
    expect_kind(
        store.info(&d),
        ErrorKind::NotFound,
        "no blob from an aborted ingest",
    );
}

/// list_statuses returns every ingest, filtered on `ref`.
pub fn list_statuses_filter(store: &dyn Store) {
    let mut held = Vec::new();
    for (r, n) in [("a-1", 10usize), ("a-2", 20), ("b-1", 30)] {
        let mut w = open(store, r);
        write(w.as_mut(), &vec![7u8; n]);
        // One stays open: listings see active and idle ingests alike.
        if r == "a-2" {
            held.push(w);
        }
    }
    let all = store.list_statuses(&[] as &[String]).expect("list");
    assert_eq!(refs_of(&all), vec!["a-1", "a-2", "b-1"]);
    for s in &all {
        let want = match s.reference.as_str() {
            "a-1" => 10,
            "a-2" => 20,
            _ => 30,
        };
        assert_eq!(s.offset, want, "offset of {}", s.reference);
    }
    let f = |fs: &[&str]| {
        let fs: Vec<String> = fs.iter().map(|s| s.to_string()).collect();
        refs_of(&store.list_statuses(&fs).expect("list"))
    };
    assert_eq!(f(&["ref==a-1"]), vec!["a-1"]);
    assert_eq!(f(&["ref~=^a-"]), vec!["a-1", "a-2"]);
    assert_eq!(f(&["ref==a-1", "ref==b-1"]), vec!["a-1", "b-1"]);
    assert_eq!(f(&["ref!=a-1"]), vec!["a-2", "b-1"]);
    assert!(f(&["ref==nope"]).is_empty());
    expect_kind(
        store.list_statuses(&["ref==".to_string()]),
        ErrorKind::InvalidArgument,
        "malformed filter",
    );
    drop(held);
}

/// Many writers on distinct refs at once.
pub fn concurrent_writers(store: &dyn Store) {
    let blobs: Vec<(Vec<u8>, Digest)> = (0..8)
        .map(|i| content(100_000 + i * 777, 120 + i as u64))
        .collect();
    std::thread::scope(|s| {
        for (i, (b, d)) in blobs.iter().enumerate() {
            s.spawn(move || {
                let mut w = open_expect(store, &format!("conc-{i}"), &desc(d, b.len()));
                write_chunked(w.as_mut(), b, 4096);
                w.commit(
                    Some(b.len() as u64),
                    Some(d),
                    labels(&[("i", &i.to_string())]),
                )
                .expect("commit");
            });
        }
    });
    for (i, (b, d)) in blobs.iter().enumerate() {
        check_content(store, d, b);
        assert_eq!(
            store.info(d).expect("info").labels,
            labels(&[("i", &i.to_string())])
        );
    }
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
}

/// Threads racing for one ref: while it is held, every other open is Unavailable.
pub fn concurrent_same_ref(store: &dyn Store) {
    let held = open(store, "contended");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                expect_kind(
                    store
                        .writer(WriterOptions::with_ref("contended"))
                        .map(|_| ()),
                    ErrorKind::Unavailable,
                    "open of a held ref",
                );
            });
        }
    });
    drop(held);
    // Released: racing threads each either get it or see Unavailable, and the writes of the
    // winners are never interleaved in a way that corrupts the ingest.
    let got = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let got = &got;
            s.spawn(
                move || match store.writer(WriterOptions::with_ref("contended")) {
                    Ok(mut w) => {
                        got.fetch_add(1, Ordering::SeqCst);
                        w.truncate(0).expect("truncate");
                        write(w.as_mut(), &[t; 1000]);
                        let d = w.digest();
                        assert_eq!(d, digest_of(&[t; 1000]), "only this writer's bytes");
                    }
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
                },
            );
        }
    });
    assert!(
        got.load(Ordering::SeqCst) >= 1,
        "someone got the released ref"
    );
    let st = store.status("contended").expect("status");
    assert_eq!(st.offset, 1000);
}

/// The same content committed from several refs at once: each commit succeeds or reports
/// AlreadyExists, one blob results, no ingest is left behind.
pub fn concurrent_commit_same_content(store: &dyn Store) {
    let (b, d) = content(300_000, 130);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..6 {
            let (b, d, results) = (&b, &d, &results);
            s.spawn(move || {
                let mut w = open(store, &format!("same-{i}"));
                write_chunked(w.as_mut(), b, 64 * 1024);
                let r = w.commit(Some(b.len() as u64), Some(d), Labels::new());
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(r.map_err(|e| e.kind()));
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(results.iter().any(|r| r.is_ok()), "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(ErrorKind::AlreadyExists))),
        "{results:?}"
    );
    check_content(store, &d, &b);
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
}

/// A blob of tens of MiB streamed in and out without ever being held in memory whole.
pub fn large_blob_streamed(store: &dyn Store) {
    const SIZE: u64 = 32 << 20;
    let (d, n) = digest_stream(GenReader::new(140, SIZE));
    assert_eq!(n, SIZE);
    let dsc = stowage_core_types::Descriptor::new("application/octet-stream", d.clone(), SIZE);
    let t0 = now();
    write_blob(
        store,
        "large",
        &mut GenReader::new(140, SIZE),
        &dsc,
        Labels::new(),
    )
    .expect("write large blob");
    let t1 = now();
    check_info(store, &d, SIZE as usize, &Labels::new(), (t0, t1), (t0, t1));
    let ra = store.reader_at(&dsc).expect("reader_at");
    assert_eq!(ra.size(), SIZE);
    let (got, len) = digest_stream(SectionReader::new(&*ra, 0));
    assert_eq!(len, SIZE);
    assert_eq!(got, d);
    // A read in the middle matches the generator there.
    let mut expect = vec![0u8; 4096];
    let mut g = GenReader::new(140, SIZE);
    let skip = 20u64 << 20;
    io::copy(&mut io::Read::take(&mut g, skip), &mut io::sink()).expect("skip");
    io::Read::read_exact(&mut g, &mut expect).expect("gen");
    let mut buf = vec![0u8; 4096];
    let mut got_n = 0;
    while got_n < buf.len() {
        let n = ra
            .read_at(&mut buf[got_n..], skip + got_n as u64)
            .expect("read_at");
        assert!(n > 0);
        got_n += n;
    }
    assert!(buf == expect);
}

/// References are opaque names: path-like, absolute, with dots, newlines or any Unicode, they
/// round-trip exactly and never collide or escape.
pub fn hostile_refs(store: &dyn Store) {
    let refs = [
        "../../../../etc/passwd",
        "/absolute/path",
        "a/../../b",
        "..",
        ".",
        "with space and\nnewline",
        "ünïcödé/参照",
        &"long".repeat(300),
        "layer-sha256:d0fe97fa8b8cefdffcef1d62b65aba51a6c87b6679628a2b50fc6a7a579f764c",
    ];
    for (i, r) in refs.iter().enumerate() {
        let mut w = open(store, r);
        write(w.as_mut(), format!("data {i}").as_bytes());
        assert_eq!(w.status().expect("status").reference, *r);
    }
    let listed = store.list_statuses(&[] as &[String]).expect("list");
    let mut want: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(refs_of(&listed), want);
    for (i, r) in refs.iter().enumerate() {
        let st = store.status(r).expect("status");
        assert_eq!(st.reference, *r);
        assert_eq!(st.offset, format!("data {i}").len() as u64);
    }
    let mut w = open(store, refs[0]);
    w.commit(None, None, Labels::new())
        .expect("commit under a path-like ref");
    check_content(store, &digest_of(b"data 0"), b"data 0");
    for r in &refs[1..] {
        store.abort(r).expect("abort");
    }
    assert!(store
        .list_statuses(&[] as &[String])
        .expect("list")
        .is_empty());
}

/// Truncate to zero restarts the digest; truncating beyond what was written is refused.
pub fn truncate_and_rewrite(store: &dyn Store) {
    let mut w = open(store, "trunc");
    write(w.as_mut(), b"first attempt, wrong bytes");
    w.truncate(0).expect("truncate");
    assert_eq!(w.digest(), digest_of(b""));
    assert_eq!(w.status().expect("status").offset, 0);
    expect_kind(
        w.truncate(10),
        ErrorKind::InvalidArgument,
        "truncate past the end",
    );
    write(w.as_mut(), b"second");
    assert_eq!(store.status("trunc").expect("status").offset, 6);
    w.commit(Some(6), Some(&digest_of(b"second")), Labels::new())
        .expect("commit");
    check_content(store, &digest_of(b"second"), b"second");
}

/// A committed writer refuses further writes and commits.
pub fn closed_writer(store: &dyn Store) {
    let mut w = open(store, "closed");
    write(w.as_mut(), b"once");
    w.commit(None, None, Labels::new()).expect("commit");
    let e = w.write_all(b"again").expect_err("write after commit");
    assert_eq!(Error::from(e).kind(), ErrorKind::FailedPrecondition);
    expect_kind(
        w.commit(None, None, Labels::new()),
        ErrorKind::FailedPrecondition,
        "second commit",
    );
    check_content(store, &digest_of(b"once"), b"once");
}

/// The empty reference is not a name.
pub fn empty_ref_rejected(store: &dyn Store) {
    expect_kind(
        store.writer(WriterOptions::with_ref("")).map(|_| ()),
        ErrorKind::InvalidArgument,
        "empty ref",
    );
}

/// The zero-length blob is content like any other.
pub fn empty_blob(store: &dyn Store) {
    let d = digest_of(b"");
    let mut w = open(store, "empty");
    w.commit(Some(0), Some(&d), Labels::new())
        .expect("commit empty");
    assert_eq!(store.info(&d).expect("info").size, 0);
    assert!(read_blob(store, &desc(&d, 0)).expect("read").is_empty());
}

/// Everything about absent objects is NotFound and names the object.
pub fn missing_things(store: &dyn Store) {
    let d = digest_of(b"absent");
    let e = expect_kind(store.info(&d), ErrorKind::NotFound, "info");
    assert!(e.to_string().contains(d.as_str()), "{e}");
    expect_kind(
        store.reader_at(&desc(&d, 6)).map(|_| ()),
        ErrorKind::NotFound,
        "reader_at",
    );
    expect_kind(store.delete(&d), ErrorKind::NotFound, "delete");
    expect_kind(store.status("absent"), ErrorKind::NotFound, "status");
}

/// Invalid labels fail the commit before anything is stored; the ingest remains.
pub fn commit_rejects_bad_labels(store: &dyn Store) {
    let mut w = open(store, "badlabels");
    write(w.as_mut(), b"payload");
    let e = expect_kind(
        w.commit(None, None, labels(&[("k", &"v".repeat(4096))])),
        ErrorKind::InvalidArgument,
        "oversized label at commit",
    );
    assert!(
        e.to_string()
            .contains("greater than maximum size (4096 bytes)"),
        "{e}"
    );
    drop(w);
    expect_kind(
        store.info(&digest_of(b"payload")),
        ErrorKind::NotFound,
        "not committed",
    );
    assert_eq!(store.status("badlabels").expect("status").offset, 7);
}

/// A writer opened with only an expected size (no digest) reports it as the status total,
/// refuses to commit a different size and commits the right one.
pub fn expected_size_without_digest(store: &dyn Store) {
    let (c, d) = content(2000, 90);
    let open_sized = |reference: &str| {
        store
            .writer(WriterOptions::with_ref(reference).expect_size(2000))
            .expect("open with expected size")
    };
    let mut w = open_sized("sized");
    write(w.as_mut(), &c[..500]);
    let st = w.status().expect("status");
    assert_eq!((st.offset, st.total, st.expected), (500, 2000, None));
    let e = expect_kind(
        w.commit(None, None, Labels::new()),
        ErrorKind::FailedPrecondition,
        "short of the expected size",
    );
    assert!(
        e.to_string().contains("2000"),
        "names the expected size: {e}"
    );
    drop(w);

    // Resumed with the same expectation, completed and committed without naming a digest.
    let mut w = open_sized("sized");
    assert_eq!(w.status().expect("status").offset, 500);
    write(w.as_mut(), &c[500..]);
    w.commit(None, None, Labels::new())
        .expect("commit at the expected size");
    check_content(store, &d, &c);
}
