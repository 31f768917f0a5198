//! Applying layers onto plain directories: entry types, metadata, whiteouts, compression,
//! DiffIDs.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use stowage_core_types::ErrorKind;
use stowage_diff::{apply_layer, ApplyOptions, Compression, LayerEncoding};
use stowage_digest_identity::digest_of;

fn rich_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir_at("etc/", 0o755, T0 + 10)
        .file("etc/hostname", 0o644, b"box\n")
        .file_with("etc/shadow", b"secret", |h| {
            h.set_mode(0o640);
            h.set_uid(0);
            h.set_gid(42);
        })
        .dir_at("usr/", 0o755, T0 + 20)
        .dir_at("usr/bin/", 0o755, T0 + 30)
        .file_with("usr/bin/su", b"#!su", |h| {
            h.set_mode(0o4755);
            h.set_mtime(T0 + 5);
        })
        .file_with("usr/bin/wall", b"#!wall", |h| {
            h.set_mode(0o2755);
            h.set_gid(5);
        })
        .dir_at("tmp/", 0o1777, T0 + 40)
        .file_with("home/user/notes", b"mine", |h| {
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mode(0o600);
        })
        .symlink("usr/bin/sh", "bash")
        .file("usr/bin/bash", 0o755, b"#!bash")
        .hardlink("usr/bin/rbash", "usr/bin/bash")
        .fifo("run/fifo", 0o620)
        .long_file(&format!("deep/{}/file", "d".repeat(150)), b"long name")
        .long_symlink("deep/link", &format!("{}/target", "t".repeat(140)))
        .pax(&[("path", format!("pax/{}", "p".repeat(200)).as_bytes())])
        .file("ignored-name", 0o644, b"pax named")
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello"),
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("mtime", b"1700000123.456789"),
        ])
        .file("usr/bin/ping", 0o755, b"#!ping")
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("forged/", 0o755)
        .gnu_sparse("sparse.img", 3 << 20, &[(0, b"head"), (2 << 20, b"middle")]);
    l.finish()
}

#[test]
fn applies_every_entry_type_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let layer = rich_layer();
    let opts = ApplyOptions::default();
    let res = apply(&layer, dir.path(), &opts).unwrap();
    assert_eq!(res.diff_id, digest_of(&layer));
    assert_eq!(res.size, layer.len() as u64);
    assert_eq!(res.compression, Compression::Uncompressed);
    let t = tree(dir.path());
    let root = unsafe { libc::geteuid() } == 0;

    assert_eq!(t["etc/hostname"].content, hash(b"box\n"));
    assert_eq!(t["etc/hostname"].mode, 0o644);
    assert_eq!(t["etc/hostname"].mtime, (T0 as i64, 0));
    assert_eq!(t["etc/shadow"].mode, 0o640);
    assert_eq!(t["usr/bin/su"].mode, 0o4755);
    assert_eq!(t["usr/bin/su"].mtime.0, T0 as i64 + 5);
    assert_eq!(t["usr/bin/wall"].mode, 0o2755);
    assert_eq!(t["tmp"].mode, 0o1777);
    // Directory times are restored after their children were created.
    assert_eq!(t["etc"].mtime, (T0 as i64 + 10, 0));
    assert_eq!(t["usr/bin"].mtime, (T0 as i64 + 30, 0));
    assert_eq!(t["tmp"].mtime, (T0 as i64 + 40, 0));
    // Parents created implicitly get 0755.
    assert_eq!(t["home"].mode, 0o755);
    assert_eq!(t["home/user"].kind, "dir");

    assert_eq!(t["usr/bin/sh"].kind, "symlink");
    assert_eq!(t["usr/bin/sh"].link.as_deref(), Some("bash"));
    assert_eq!(t["usr/bin/sh"].mtime.0, T0 as i64);
    assert_eq!(t["usr/bin/rbash"].ino, t["usr/bin/bash"].ino);
    assert_eq!(
        fs::symlink_metadata(dir.path().join("usr/bin/bash"))
            .unwrap()
            .nlink(),
        2
    );
    assert_eq!(t["run/fifo"].kind, "fifo");
    assert_eq!(t["run/fifo"].mode, 0o620);

    let long = format!("deep/{}/file", "d".repeat(150));
    assert_eq!(t[&long].content, hash(b"long name"));
    assert_eq!(
        t["deep/link"].link,
        Some(format!("{}/target", "t".repeat(140)))
    );
    let pax = format!("pax/{}", "p".repeat(200));
    assert_eq!(t[&pax].content, hash(b"pax named"));
    assert!(!t.contains_key("ignored-name"));

    let ping = &t["usr/bin/ping"];
    assert_eq!(ping.mtime, (1_700_000_123, 456_789_000));
    assert_eq!(
        ping.xattrs.get("user.comment").map(|v| &v[..]),
        Some(&b"hello"[..])
    );
    if root {
        assert!(
            ping.xattrs.contains_key("security.capability"),
            "{:?}",
            ping.xattrs
        );
    }
    // A layer cannot forge overlayfs' trusted markers.
    assert!(!t["forged"].xattrs.contains_key("trusted.overlay.opaque"));

    let sparse = &t["sparse.img"];
    assert_eq!(sparse.size, 3 << 20);
    let content = fs::read(dir.path().join("sparse.img")).unwrap();
    assert_eq!(&content[..4], b"head");
    assert_eq!(&content[2 << 20..(2 << 20) + 6], b"middle");
    assert!(content[4..2 << 20].iter().all(|&b| b == 0));
    assert!(content[(2 << 20) + 6..].iter().all(|&b| b == 0));
    // Holes stay holes.
    let blocks = fs::metadata(dir.path().join("sparse.img"))
        .unwrap()
        .blocks();
    assert!(
        blocks * 512 < 1 << 20,
        "sparse file uses {} bytes",
        blocks * 512
    );

    if root {
        assert_eq!(
            (t["home/user/notes"].uid, t["home/user/notes"].gid),
            (1000, 1001)
        );
        assert_eq!(t["etc/shadow"].gid, 42);
        assert_eq!(t["usr/bin/wall"].gid, 5);
        // chown after chmod would have cleared these; the order keeps them.
        assert_eq!(t["usr/bin/wall"].mode, 0o2755);
    }
}

#[test]
fn compressed_layers_give_the_same_tree_and_diff_id() {
    let layer = rich_layer();
    let plain = tempfile::tempdir().unwrap();
    let want = apply(&layer, plain.path(), &ApplyOptions::default()).unwrap();
    let want_tree = tree_comparable(plain.path());
    for (blob, compression) in [
        (gzip(&layer), Compression::Gzip),
        (zstd(&layer), Compression::Zstd),
    ] {
        for threaded in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let opts = ApplyOptions {
                threaded,
                ..ApplyOptions::default()
            }
            .with_expected_diff_id(want.diff_id.clone());
            let res = apply(&blob, dir.path(), &opts).unwrap();
            assert_eq!(res.compression, compression);
            assert_eq!(res.diff_id, want.diff_id);
            assert_eq!(res.size, want.size);
            assert_eq!(
                tree_comparable(dir.path()),
                want_tree,
                "{compression} threaded={threaded}"
            );
        }
    }
}

#[test]
fn trailing_data_after_the_end_marker_counts_in_the_diff_id() {
    let mut layer = Layer::new().file("a", 0o644, b"x").finish();
    layer.extend_from_slice(&[0u8; 4096]);
    let dir = tempfile::tempdir().unwrap();
    let res = apply(&gzip(&layer), dir.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(res.diff_id, digest_of(&layer));
    assert_eq!(res.size, layer.len() as u64);
}

#[test]
fn diff_id_mismatch_fails() {
    let layer = Layer::new().file("a", 0o644, b"x").finish();
    let wrong = digest_of(b"something else");
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions::default().with_expected_diff_id(wrong.clone());
    let err = apply(&gzip(&layer), dir.path(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    let msg = err.to_string();
    assert!(msg.contains(&wrong.to_string()), "{msg}");
    assert!(msg.contains(&digest_of(&layer).to_string()), "{msg}");
}

#[test]
fn media_types_are_checked_and_compression_sniffed() {
    let layer = Layer::new().file("a", 0o644, b"x").finish();
    let dir = tempfile::tempdir().unwrap();
    let err = apply_layer(
        &layer[..],
        LayerEncoding::MediaType("application/vnd.oci.image.layer.v1.tar+encrypted"),
        dir.path(),
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert!(!dir.path().join("a").exists());
    // A Docker "gzip" layer that is really plain tar applies, as with containerd.
    let res = apply_layer(
        &layer[..],
        LayerEncoding::MediaType("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        dir.path(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(res.compression, Compression::Uncompressed);
    let z = zstd(&layer);
    let res = apply_layer(
        &z[..],
        LayerEncoding::MediaType("application/vnd.oci.image.layer.v1.tar+zstd"),
        dir.path(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(res.compression, Compression::Zstd);
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"x");
}

#[test]
fn corrupt_streams_are_errors() {
    let layer = Layer::new().file("a", 0o644, &[7u8; 100_000]).finish();
    let g = gzip(&layer);
    let dir = tempfile::tempdir().unwrap();
    let err = apply(&g[..g.len() / 2], dir.path(), &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    // Truncated inside file data.
    let err = apply(&layer[..5000], dir.path(), &ApplyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
    // A damaged header checksum.
    let mut bad = layer.clone();
    bad[10] ^= 0x55;
    let err = apply(&bad, dir.path(), &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

fn lower() -> Vec<u8> {
    Layer::new()
        .dir("a/", 0o755)
        .file("a/keep", 0o644, b"keep")
        .file("a/gone", 0o644, b"gone")
        .dir("a/sub/", 0o755)
        .file("a/sub/deep", 0o644, b"deep")
        .dir("opq/", 0o750)
        .file("opq/old1", 0o644, b"1")
        .dir("opq/olddir/", 0o755)
        .file("opq/olddir/x", 0o644, b"x")
        .dir("late/", 0o755)
        .file("late/old", 0o644, b"old")
        .dir("late/kept/", 0o755)
        .file("late/kept/lowerchild", 0o644, b"lc")
        .finish()
}

fn upper() -> Vec<u8> {
    Layer::new()
        .whiteout("a/.wh.gone")
        .whiteout("a/.wh.sub")
        .whiteout("a/.wh.never-existed")
        .dir("opq/", 0o755)
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new", 0o644, b"new")
        // Opaque marker after some of the layer's own entries, including a directory that
        // also existed below: its lower children go, the layer's own stay.
        .file("late/new", 0o644, b"new")
        .dir("late/kept/", 0o755)
        .file("late/kept/mine", 0o644, b"mine")
        .file("late/implied/y", 0o644, b"y")
        .whiteout("late/.wh..wh..opq")
        .finish()
}

#[test]
fn whiteouts_and_opaque_directories_delete() {
    let dir = tempfile::tempdir().unwrap();
    apply(&lower(), dir.path(), &ApplyOptions::default()).unwrap();
    let res = apply(&upper(), dir.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(res.entries, 11);
    let names = names(dir.path());
    let want = [
        "a",
        "a/keep",
        "late",
        "late/implied",
        "late/implied/y",
        "late/kept",
        "late/kept/mine",
        "late/new",
        "opq",
        "opq/new",
    ];
    assert_eq!(names, want, "{names:?}");
    // The opaque directory's own metadata comes from the upper layer.
    assert_eq!(node(&dir.path().join("opq")).mode, 0o755);
}

#[test]
fn entries_replace_lower_entries_of_other_types() {
    let dir = tempfile::tempdir().unwrap();
    let base = Layer::new()
        .file("f2d", 0o644, b"file")
        .dir("d2f/", 0o755)
        .file("d2f/child", 0o644, b"c")
        .dir("d2f/sub/", 0o755)
        .symlink("l2f", "f2d")
        .file("f2l", 0o644, b"x")
        .dir("merge/", 0o700)
        .file("merge/lower", 0o644, b"lower")
        .file("f2f", 0o600, b"old content that is longer")
        .finish();
    apply(&base, dir.path(), &ApplyOptions::default()).unwrap();
    let next = Layer::new()
        .dir("f2d/", 0o711)
        .file("d2f", 0o644, b"now a file")
        .file("l2f", 0o644, b"not a link")
        .symlink("f2l", "elsewhere")
        .dir("merge/", 0o755)
        .file("merge/upper", 0o644, b"upper")
        .file("f2f", 0o644, b"new")
        .finish();
    apply(&next, dir.path(), &ApplyOptions::default()).unwrap();
    let t = tree(dir.path());
    assert_eq!(t["f2d"].kind, "dir");
    assert_eq!(t["f2d"].mode, 0o711);
    assert_eq!(t["d2f"].content, hash(b"now a file"));
    assert!(!t.contains_key("d2f/child"));
    assert_eq!(t["l2f"].kind, "file");
    assert_eq!(t["f2l"].link.as_deref(), Some("elsewhere"));
    assert_eq!(t["merge"].mode, 0o755);
    assert!(t.contains_key("merge/lower") && t.contains_key("merge/upper"));
    assert_eq!(t["f2f"].content, hash(b"new"));
    assert_eq!(t["f2f"].mode, 0o644);
}

#[test]
fn devices_and_ownership_when_privileged() {
    if !need_root("device node and ownership test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .device("dev/null", tar::EntryType::Char, 1, 3, 0o666)
        .device("dev/loop9", tar::EntryType::Block, 7, 9, 0o660)
        .file_with("owned", b"x", |h| {
            h.set_uid(4242);
            h.set_gid(4343);
        })
        .finish();
    let res = apply(&layer, dir.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(res.skipped, 0);
    let t = tree(dir.path());
    assert_eq!(t["dev/null"].kind, "char");
    assert_eq!(t["dev/null"].rdev, libc::makedev(1, 3));
    assert_eq!(t["dev/null"].mode, 0o666);
    assert_eq!(t["dev/loop9"].kind, "block");
    assert_eq!(t["dev/loop9"].rdev, libc::makedev(7, 9));
    assert_eq!((t["owned"].uid, t["owned"].gid), (4242, 4343));

    // The unprivileged policy: no devices, no chown.
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        privileged: false,
        ..ApplyOptions::default()
    };
    let res = apply(&layer, dir.path(), &opts).unwrap();
    assert_eq!(res.skipped, 2);
    let t = tree(dir.path());
    assert!(!t.contains_key("dev/null") && !t.contains_key("dev/loop9"));
    assert_eq!((t["owned"].uid, t["owned"].gid), (0, 0));
}

#[test]
fn hardlink_targets_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new().hardlink("h", "missing").finish();
    let err = apply(&layer, dir.path(), &ApplyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("\"h\""), "{err}");
}

#[test]
fn files_in_setgid_directories_get_the_owner_the_layer_says() {
    if !need_root("setgid inheritance test (chown)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .file("g/early", 0o644, b"e")
        .raw(
            {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o2775);
                h.set_uid(0);
                h.set_gid(50);
                h.set_mtime(T0);
                h
            },
            "g/",
            None,
            &[],
        )
        // The kernel gives new files in a setgid directory the directory's group; the layer
        // says group 0, so the applier must notice and chown.
        .file("g/late", 0o644, b"l")
        .dir("g/sub/", 0o755)
        .finish();
    apply(&layer, dir.path(), &ApplyOptions::default()).unwrap();
    let t = tree(dir.path());
    assert_eq!((t["g"].mode, t["g"].gid), (0o2775, 50));
    assert_eq!(t["g/early"].gid, 0);
    assert_eq!(t["g/late"].gid, 0);
    // A subdirectory would inherit setgid too; the layer says 0755.
    assert_eq!((t["g/sub"].mode, t["g/sub"].gid), (0o755, 0));
}

/// A big, barely compressible file so the decompressor thread is far ahead when the applier
/// fails: the apply must still return promptly (the producer notices the hang-up).
fn big_noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn early_failure_with_a_threaded_decompressor_returns_promptly() {
    let layer = Layer::new()
        .file("../escape", 0o644, b"x")
        .file("big", 0o644, &big_noise(8 << 20))
        .finish();
    let blob = gzip(&layer);
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let err = apply(&blob, dir.path(), &ApplyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("\"../escape\""), "{err}");
    // Inflating all 8 MiB of noise (more than the chunks in flight) takes far longer than stopping at the first entry's
    // failure in a debug build; a deadlock would hang the test.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    assert!(!dir.path().join("big").exists());
}

#[test]
fn cancel_flag_stops_the_apply() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let layer = Layer::new().file("a", 0o644, b"x").finish();
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..ApplyOptions::default()
    };
    let err = apply(&gzip(&layer), dir.path(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled);
    assert!(err.to_string().contains("\"a\""), "{err}");
    assert!(!dir.path().join("a").exists());
}

#[test]
fn header_errors_give_the_stream_offset() {
    let mut layer = Layer::new()
        .file("a", 0o644, &[1u8; 1000])
        .file("b", 0o644, b"y")
        .finish();
    // Damage the second header (after a's 512-byte header and 1024 bytes of data).
    layer[1536 + 5] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let err = apply(&layer, dir.path(), &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("offset 1536"), "{err}");
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), vec![1u8; 1000]);
}

/// Small files go to the workers in batches; when a later header is damaged, every file
/// before it is still complete (data and mode), batch sent or not.
#[test]
fn a_failure_after_many_small_files_leaves_the_earlier_ones_complete() {
    let mut l = Layer::new();
    for f in 0..100u32 {
        l.file(&format!("f{f:03}"), 0o600 + (f % 8), &[f as u8; 700]);
    }
    l.file("last", 0o644, b"z");
    let mut layer = l.finish();
    // Each file is a 512-byte header and 1024 bytes of data; damage the 101st header.
    let at = 100 * 1536;
    layer[at + 5] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let err = apply(&gzip(&layer), dir.path(), &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains(&format!("offset {at}")), "{err}");
    for f in 0..100u32 {
        let p = dir.path().join(format!("f{f:03}"));
        assert_eq!(fs::read(&p).unwrap(), vec![f as u8; 700], "{}", p.display());
        let mode = fs::metadata(&p).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600 + (f % 8), "{}", p.display());
    }
    assert!(!dir.path().join("last").exists());
}

#[test]
fn corrupted_layers_fail_cleanly_and_never_panic() {
    // Deterministic byte flips all over a layer with every kind of header (PAX, GNU long
    // names, sparse maps): each apply must return Ok or an error, never panic.
    let layer = rich_layer();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let parent = tempfile::tempdir().unwrap();
    let mut errors = 0;
    for i in 0..150 {
        let mut bad = layer.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly inside headers (the first bytes of blocks), sometimes anywhere.
            let pos = if next() % 4 == 0 {
                (next() % bad.len() as u64) as usize
            } else {
                let block = (next() % (bad.len() as u64 / 512)) as usize;
                block * 512 + (next() % 512) as usize
            };
            bad[pos] = next() as u8;
        }
        let dir = parent.path().join(i.to_string());
        fs::create_dir(&dir).unwrap();
        let opts = ApplyOptions {
            threaded: i % 2 == 0,
            ..ApplyOptions::default()
        };
        if apply(&gzip(&bad), &dir, &opts).is_err() {
            errors += 1;
        }
        fs::remove_dir_all(&dir).ok();
    }
    // Most flips land in headers and are caught (checksums); some hit file data, which
    // applies fine with different contents.
    assert!(
        errors > 50,
        "only {errors} of 150 corrupted layers were rejected"
    );
}

/// Small files are finished (data, owner, mode, times) on worker threads while the applier
/// goes on creating the next entries. Later entries that touch the same names must still win
/// in archive order: a hard link's metadata over its target's, a second entry over the first
/// of the same name, a whiteout over a file just written; directory times come last.
#[test]
fn worker_threads_keep_archive_order() {
    let mut l = Layer::new();
    for d in 0..6 {
        l.dir_at(&format!("d{d}/"), 0o750, T0 + 100 + d);
        for f in 0..150u64 {
            let name = format!("d{d}/f{f}");
            let data = vec![(f % 251) as u8; (f as usize * 37) % 3000];
            l.file_with(&name, &data, |h| {
                h.set_mode(if f % 3 == 0 {
                    0o4755
                } else {
                    0o600 + (f as u32 % 8)
                });
                h.set_mtime(T0 + f);
                h.set_uid(f % 5);
                h.set_gid(f % 7);
            });
        }
        // Replaced by a later entry of the same name, one a file, one a directory.
        l.file(&format!("d{d}/f10"), 0o644, b"second");
        l.dir_at(&format!("d{d}/f11/"), 0o700, T0 + 7);
        // A hard link right after its target: the link entry's metadata is what stays.
        l.file_with(&format!("d{d}/target"), b"shared", |h| {
            h.set_mode(0o644);
            h.set_mtime(T0 + 1);
        });
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o751);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(T0 + 2);
        l.raw(h, &format!("d{d}/link"), Some(&format!("d{d}/target")), &[]);
        l.whiteout(&format!("d{d}/.wh.f12"));
    }
    let layer = gzip(&l.finish());
    let threaded = tempfile::tempdir().unwrap();
    let inline = tempfile::tempdir().unwrap();
    apply(&layer, threaded.path(), &ApplyOptions::default()).unwrap();
    let opts = ApplyOptions {
        threaded: false,
        ..ApplyOptions::default()
    };
    apply(&layer, inline.path(), &opts).unwrap();
    let t = tree_comparable(threaded.path());
    let single = tree_comparable(inline.path());
    let differ: Vec<_> = t
        .keys()
        .chain(single.keys())
        .filter(|k| t.get(*k) != single.get(*k))
        .map(|k| (k, t.get(k), single.get(k)))
        .collect();
    assert!(differ.is_empty(), "threaded vs one thread: {differ:#?}");
    let root = unsafe { libc::geteuid() } == 0;
    for d in 0..6u64 {
        let n = |f: &str| &t[&format!("d{d}/{f}")];
        assert_eq!(n("f10").content, hash(b"second"));
        assert_eq!(n("f11").kind, "dir");
        assert!(!t.contains_key(&format!("d{d}/f12")));
        assert_eq!(n("target").ino, n("link").ino);
        assert_eq!(
            (n("target").mode, n("target").mtime),
            (0o751, (T0 as i64 + 2, 0))
        );
        assert_eq!(n("f7").content, hash(&[7u8; 259]));
        assert_eq!((n("f7").mode, n("f7").mtime), (0o607, (T0 as i64 + 7, 0)));
        // chown clears setuid; the mode comes after it.
        assert_eq!(n("f9").mode, 0o4755);
        if root {
            assert_eq!((n("f9").uid, n("f9").gid), (4, 2));
        }
        // The whiteout and the replacements changed the directory after its entry.
        assert_eq!(t[&format!("d{d}")].mtime, (T0 as i64 + 100 + d as i64, 0));
    }
}
