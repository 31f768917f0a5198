//! The metastore against containerd's schema: raw keys and values as containerd 1.6 writes them.

use stowage_bolt::ReadTx;
use stowage_core_types::snapshot::{Kind, Usage};
use stowage_core_types::{ErrorKind, Labels};
use stowage_snapshots_storage::codec::{read_varint, unmarshal_time};
use stowage_snapshots_storage::metastore::{self, MetaStore};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn raw(tx: &ReadTx, path: &[&[u8]], key: &[u8]) -> Option<Vec<u8>> {
    let mut b = tx.bucket(path[0]).unwrap()?;
    for p in &path[1..] {
        b = b.bucket(p).unwrap()?;
    }
    b.get(key).unwrap().map(<[u8]>::to_vec)
}

#[test]
fn records_use_containerds_layout() {
    let d = tempfile::tempdir().unwrap();
    let ms = MetaStore::open(d.path().join("metadata.db")).unwrap();
    let base = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "a", "", labels(&[("x", "1")])))
        .unwrap();
    assert_eq!(base.id, "1");
    assert!(base.parent_ids.is_empty());
    let id = ms
        .update(|tx| {
            metastore::commit_active(
                tx,
                "a",
                "c1",
                Usage {
                    inodes: 14,
                    size: 53_248,
                },
                labels(&[("y", "2")]),
            )
        })
        .unwrap();
    assert_eq!(id, "1", "commit keeps the id");
    let child = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::View, "v", "c1", Labels::new()))
        .unwrap();
    assert_eq!((child.id.as_str(), child.kind), ("2", Kind::View));
    assert_eq!(child.parent_ids, ["1"]);
    let active = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "b", "c1", Labels::new()))
        .unwrap();
    ms.update(|tx| metastore::commit_active(tx, "b", "c2", Usage::default(), Labels::new()))
        .unwrap();
    let top = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "t", "c2", Labels::new()))
        .unwrap();
    assert_eq!(top.parent_ids, [active.id.clone(), "1".to_string()]);
    assert_eq!(ms.view(|tx| metastore::get_snapshot(tx, "t")).unwrap(), top);

    ms.view(|tx| {
        let s: &[&[u8]] = &[b"v1", b"snapshots", b"c1"];
        assert_eq!(raw(tx, s, b"id"), Some(vec![1]));
        assert_eq!(raw(tx, s, b"kind"), Some(vec![3]));
        assert_eq!(raw(tx, s, b"parent"), None);
        assert_eq!(raw(tx, s, b"inodes"), Some(vec![0x1c]));
        assert_eq!(raw(tx, s, b"size"), Some(vec![0x80, 0xc0, 0x06]));
        let created = raw(tx, s, b"createdat").unwrap();
        assert_eq!(created.len(), 15);
        unmarshal_time(&created).unwrap();
        assert_eq!(
            raw(tx, &[b"v1", b"snapshots", b"c1", b"labels"], b"y"),
            Some(b"2".to_vec())
        );
        assert_eq!(
            raw(tx, &[b"v1", b"snapshots", b"c1", b"labels"], b"x"),
            None
        );
        assert_eq!(
            raw(tx, &[b"v1", b"snapshots", b"v"], b"parent"),
            Some(b"c1".to_vec())
        );
        assert_eq!(
            raw(tx, &[b"v1", b"snapshots", b"v"], b"kind"),
            Some(vec![1])
        );
        assert_eq!(raw(tx, &[b"v1", b"snapshots", b"v"], b"size"), None);
        // parents: uvarint(parent) 0x00 uvarint(child) → child key; committed children renamed.
        assert_eq!(
            raw(tx, &[b"v1", b"parents"], &[1, 0, 2]),
            Some(b"v".to_vec())
        );
        assert_eq!(
            raw(tx, &[b"v1", b"parents"], &[1, 0, 3]),
            Some(b"c2".to_vec())
        );
        assert_eq!(
            raw(tx, &[b"v1", b"parents"], &[3, 0, 4]),
            Some(b"t".to_vec())
        );
        assert_eq!(
            tx.bucket(b"v1")
                .unwrap()
                .unwrap()
                .bucket(b"snapshots")
                .unwrap()
                .unwrap()
                .sequence(),
            4
        );
        assert_eq!(read_varint(&raw(tx, s, b"size").unwrap()), Some(53_248));
        Ok(())
    })
    .unwrap();

    let (id, info, usage) = ms.view(|tx| metastore::get_info(tx, "c1")).unwrap();
    assert_eq!(
        (id.as_str(), info.kind, usage.inodes),
        ("1", Kind::Committed, 14)
    );
    let ids = ms.view(metastore::id_map).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids["3"], "c2");

    // Removal: refused while children exist, then children first.
    let err = ms.update(|tx| metastore::remove(tx, "c1")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        ms.update(|tx| metastore::remove(tx, "t")).unwrap(),
        ("4".into(), Kind::Active)
    );
    ms.update(|tx| metastore::remove(tx, "c2")).unwrap();
    ms.update(|tx| metastore::remove(tx, "v")).unwrap();
    ms.view(|tx| {
        assert_eq!(raw(tx, &[b"v1", b"parents"], &[1, 0, 2]), None);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        ms.update(|tx| metastore::remove(tx, "c1")).unwrap(),
        ("1".into(), Kind::Committed)
    );
    assert_eq!(
        ms.update(|tx| metastore::remove(tx, "c1"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // Ids are never reused.
    let again = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "a", "", Labels::new()))
        .unwrap();
    assert_eq!(again.id, "5");
}

#[test]
fn failed_updates_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let ms = MetaStore::open(d.path().join("metadata.db")).unwrap();
    ms.update(|tx| metastore::create_snapshot(tx, Kind::Active, "a", "", Labels::new()))
        .unwrap();
    // Not committed: refused as a parent.
    let e = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "b", "a", Labels::new()))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Committed, "c", "", Labels::new()))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "a", "", Labels::new()))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    // A closure error after a successful step rolls the step back.
    let e = ms
        .update(|tx| {
            metastore::create_snapshot(tx, Kind::Active, "rolled-back", "", Labels::new())?;
            Err::<(), _>(stowage_core_types::Error::aborted("stop"))
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert_eq!(
        ms.view(|tx| metastore::get_info(tx, "rolled-back"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let next = ms
        .update(|tx| metastore::create_snapshot(tx, Kind::Active, "next", "", Labels::new()))
        .unwrap();
    assert_eq!(next.id, "2", "the rolled back sequence was not consumed");
    // get_snapshot refuses committed ones.
    ms.update(|tx| metastore::commit_active(tx, "a", "ac", Usage::default(), Labels::new()))
        .unwrap();
    assert_eq!(
        ms.view(|tx| metastore::get_snapshot(tx, "ac"))
            .unwrap_err()
            .kind(),
        ErrorKind::FailedPrecondition
    );
    let infos = ms
        .view(|tx| metastore::walk_info(tx, &["kind==committed"]))
        .unwrap();
    assert_eq!(
        infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["ac"]
    );
}
