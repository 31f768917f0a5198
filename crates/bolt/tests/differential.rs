//! Differential tests against Go bbolt (Debian golang-go + golang-github-coreos-bbolt-dev):
//! the same scripts applied by each engine must give files the other reads identically,
//! and Go's tx.Check() must pass on everything stowage-bolt writes.

mod common;

use common::*;
use stowage_bolt::Db;

fn rust_apply_file(dir: &std::path::Path, name: &str, ops: &[Op]) -> std::path::PathBuf {
    let path = dir.join(name);
    let db = Db::open(&path, nosync()).expect("open");
    apply_rust(&db, ops).expect("apply with stowage-bolt");
    drop(db);
    path
}

/// Applies `ops` with both engines and compares all four dumps.
fn both_ways(ops: &[Op], tag: &str) {
    let Some(go) = gobolt() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = rust_apply_file(dir.path(), &format!("{tag}-rust.db"), ops);
    let go_of_ours = go_dump(&go, &ours);
    let ours_of_ours = dump_rust(&ours);
    assert_eq!(
        ours_of_ours, go_of_ours,
        "{tag}: Go reads our file differently"
    );

    let theirs = dir.path().join(format!("{tag}-go.db"));
    go_apply(&go, &theirs, ops);
    let go_of_theirs = go_dump(&go, &theirs);
    let ours_of_theirs = dump_rust(&theirs);
    assert_eq!(
        ours_of_theirs, go_of_theirs,
        "{tag}: we read Go's file differently"
    );
    assert_eq!(
        ours_of_ours, go_of_theirs,
        "{tag}: the engines disagree on the result"
    );
    assert!(!ours_of_ours.is_empty() || ops.is_empty());
}

#[test]
fn random_scripts_match_go() {
    for seed in 1..=8u64 {
        let ops = random_script(seed, 25, 40);
        both_ways(&ops, &format!("seed{seed}"));
    }
}

#[test]
fn every_other_key_of_100_in_one_tx() {
    let p = vec![b"b".to_vec()];
    let mut ops = vec![Op::Begin, Op::Create(p.clone())];
    for i in 0..100 {
        ops.push(Op::Put(
            p.clone(),
            format!("key{i:03}").into_bytes(),
            vec![b'v'; 10],
        ));
    }
    ops.push(Op::Commit);
    ops.push(Op::Begin);
    for i in (0..100).step_by(2) {
        ops.push(Op::Del(p.clone(), format!("key{i:03}").into_bytes()));
    }
    ops.push(Op::Commit);
    both_ways(&ops, "every-other-key");
}

#[test]
fn every_other_bucket_of_200_siblings() {
    let mut ops = vec![Op::Begin];
    for i in 0..200 {
        let p = vec![b"parent".to_vec(), format!("child{i:03}").into_bytes()];
        if i == 0 {
            ops.push(Op::Create(vec![b"parent".to_vec()]));
        }
        ops.push(Op::Create(p.clone()));
        ops.push(Op::Put(p, b"k".to_vec(), vec![b'x'; (i % 7) * 100]));
    }
    ops.push(Op::Commit);
    ops.push(Op::Begin);
    for i in (0..200).step_by(2) {
        ops.push(Op::DelBucket(vec![
            b"parent".to_vec(),
            format!("child{i:03}").into_bytes(),
        ]));
    }
    ops.push(Op::Commit);
    both_ways(&ops, "every-other-bucket");
}

#[test]
fn hundred_thousand_keys_then_thin_out() {
    let p = vec![b"big".to_vec()];
    let mut ops = vec![Op::Begin, Op::Create(p.clone())];
    for i in 0..100_000u32 {
        ops.push(Op::Put(
            p.clone(),
            i.to_be_bytes().to_vec(),
            (i % 251).to_le_bytes().to_vec(),
        ));
    }
    ops.push(Op::Commit);
    ops.push(Op::Begin);
    for i in (0..100_000u32).step_by(2) {
        ops.push(Op::Del(p.clone(), i.to_be_bytes().to_vec()));
    }
    ops.push(Op::Put(p.clone(), b"overflow".to_vec(), vec![7u8; 50_000]));
    ops.push(Op::Commit);
    both_ways(&ops, "100k");
}

#[test]
fn engines_take_turns_on_one_file() {
    let Some(go) = gobolt() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("turns.db");
    let model = dir.path().join("model.db");
    for round in 0..6u64 {
        let ops = random_script(100 + round, 6, 30);
        // Scripts are generated independently per round, so prefix every bucket with the
        // round to keep them valid on a file that already holds earlier rounds.
        let ops: Vec<Op> = ops.into_iter().map(|op| prefix_op(op, round)).collect();
        if round % 2 == 0 {
            let db = Db::open(&path, nosync()).expect("open");
            apply_rust(&db, &ops).expect("apply");
        } else {
            go_apply(&go, &path, &ops);
        }
        let m = Db::open(&model, nosync()).expect("open model");
        apply_rust(&m, &ops).expect("apply model");
        drop(m);
        let go_view = go_dump(&go, &path);
        assert_eq!(dump_rust(&path), go_view, "round {round}");
        assert_eq!(
            dump_rust(&model),
            go_view,
            "round {round}: differs from model"
        );
    }
}

fn prefix_op(op: Op, round: u64) -> Op {
    let fix = |mut p: Vec<Vec<u8>>| {
        p[0].extend_from_slice(format!("-r{round}").as_bytes());
        p
    };
    match op {
        Op::Create(p) => Op::Create(fix(p)),
        Op::CreateX(p) => Op::CreateX(fix(p)),
        Op::DelBucket(p) => Op::DelBucket(fix(p)),
        Op::Put(p, k, v) => Op::Put(fix(p), k, v),
        Op::Del(p, k) => Op::Del(fix(p), k),
        Op::SetSeq(p, n) => Op::SetSeq(fix(p), n),
        Op::NextSeq(p) => Op::NextSeq(fix(p)),
        other => other,
    }
}

/// Changing a bucket (and its nested buckets) and deleting it in the same transaction:
/// Go 1.3.6 can leak pages on this pattern itself, so only our file is checked by Go.
#[test]
fn modify_then_delete_buckets() {
    let Some(go) = gobolt() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Rng::new(7);
    let mut ops = vec![Op::Begin];
    for b in 0..20u8 {
        let p = vec![vec![b'p', b]];
        ops.push(Op::Create(p.clone()));
        for c in 0..3u8 {
            let mut q = p.clone();
            q.push(vec![b'c', c]);
            ops.push(Op::Create(q.clone()));
            for k in 0..(40 * c as u32) {
                ops.push(Op::Put(q.clone(), k.to_be_bytes().to_vec(), r.bytes(60)));
            }
        }
        ops.push(Op::Put(p, b"k".to_vec(), r.bytes(30)));
    }
    ops.push(Op::Commit);
    ops.push(Op::Begin);
    for b in (0..20u8).step_by(2) {
        let p = vec![vec![b'p', b]];
        ops.push(Op::Put(p.clone(), b"k2".to_vec(), r.bytes(10)));
        ops.push(Op::Put(
            vec![vec![b'p', b], vec![b'c', 2]],
            b"new".to_vec(),
            r.bytes(5000),
        ));
        ops.push(Op::NextSeq(vec![vec![b'p', b], vec![b'c', 1]]));
        ops.push(Op::DelBucket(p));
    }
    ops.push(Op::Commit);
    let ours = rust_apply_file(dir.path(), "mtd.db", &ops);
    let go_view = go_dump(&go, &ours);
    assert_eq!(dump_rust(&ours), go_view);
    assert_eq!(
        go_view.matches("\nB ").count() + 1,
        10 * 4,
        "10 parents with 3 children left"
    );
}

/// Files without a synced freelist (`meta.freelist` = all ones), written by either engine
/// and continued by the other.
#[test]
fn no_freelist_sync_files_both_ways() {
    let Some(go) = gobolt() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let first = random_script(300, 10, 40);
    let second: Vec<Op> = random_script(301, 10, 40)
        .into_iter()
        .map(|op| prefix_op(op, 1))
        .collect();
    let opts = stowage_bolt::Options {
        no_sync: true,
        no_freelist_sync: true,
        ..stowage_bolt::Options::default()
    };

    let ours = dir.path().join("ours.db");
    let db = Db::open(&ours, opts.clone()).expect("open");
    apply_rust(&db, &first).expect("apply");
    drop(db);
    let meta_freelist = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        let m = |i: usize| {
            let o = i * 4096 + 16;
            let txid = u64::from_le_bytes(b[o + 48..o + 56].try_into().unwrap());
            (
                txid,
                u64::from_le_bytes(b[o + 32..o + 40].try_into().unwrap()),
            )
        };
        let (a, c) = (m(0), m(1));
        if a.0 > c.0 {
            a.1
        } else {
            c.1
        }
    };
    assert_eq!(meta_freelist(&ours), u64::MAX, "no freelist written");
    assert_eq!(dump_rust(&ours), go_dump(&go, &ours));
    go_apply_with(&go, &ours, &second, false);
    assert_eq!(dump_rust(&ours), go_dump(&go, &ours));

    let theirs = dir.path().join("theirs.db");
    go_apply_with(&go, &theirs, &first, true);
    assert_eq!(meta_freelist(&theirs), u64::MAX, "Go wrote no freelist");
    let db = Db::open(&theirs, nosync()).expect("open Go's file");
    apply_rust(&db, &second).expect("apply on Go's file");
    drop(db);
    assert_ne!(
        meta_freelist(&theirs),
        u64::MAX,
        "we write a freelist by default"
    );
    let view = go_dump(&go, &theirs);
    assert_eq!(dump_rust(&theirs), view);
    assert_eq!(dump_rust(&ours), view, "same scripts, same content");
}

/// Files with other page sizes (16 KiB as on arm64 hosts with 16 KiB pages, and 1 KiB)
/// are read by Go identically.
#[test]
fn other_page_sizes_match_go() {
    let Some(go) = gobolt() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for ps in [1024usize, 16384] {
        let path = dir.path().join(format!("ps{ps}.db"));
        let opts = stowage_bolt::Options {
            no_sync: true,
            page_size: ps,
            ..stowage_bolt::Options::default()
        };
        let db = Db::open(&path, opts).expect("open");
        assert_eq!(db.page_size(), ps);
        apply_rust(&db, &random_script(400 + ps as u64, 12, 40)).expect("apply");
        drop(db);
        assert_eq!(dump_rust(&path), go_dump(&go, &path), "page size {ps}");
        let reopened = Db::open(&path, nosync()).expect("reopen");
        assert_eq!(reopened.page_size(), ps, "page size comes from the file");
    }
}
