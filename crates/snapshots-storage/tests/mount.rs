//! The mount helpers against the real kernel: read-only binds, cleanup after errors, busy
//! unmounts.

use stowage_core_types::ErrorKind;

#[test]
fn mount_helpers_leave_nothing_mounted() {
    use stowage_core_types::mount::Mount;
    use stowage_snapshots_storage::mount::{is_mount_point, with_temp_mount, TempMount};
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let ro = [Mount::new("bind", src.to_str().unwrap(), ["rbind", "ro"])];
    let seen = with_temp_mount(&ro, |p| {
        assert!(is_mount_point(p));
        assert!(std::fs::write(p.join("g"), b"y").is_err(), "read-only bind");
        Ok((p.to_path_buf(), std::fs::read(p.join("f")).unwrap()))
    })
    .unwrap();
    assert_eq!(seen.1, b"x");
    assert!(!seen.0.exists(), "mount point removed");

    // A failing closure still unmounts.
    let mut where_ = None;
    let e = with_temp_mount(&ro, |p| {
        where_ = Some(p.to_path_buf());
        Err::<(), _>(stowage_core_types::Error::aborted("fail"))
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert!(!where_.unwrap().exists());

    // A failing second mount undoes the first, and the mount point goes.
    let bad = [
        Mount::new("bind", src.to_str().unwrap(), ["rbind"]),
        Mount::new(
            "overlay",
            "overlay",
            ["lowerdir=/nonexistent/a:/nonexistent/b"],
        ),
    ];
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert!(TempMount::new_in(d.path(), &bad).is_err());
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(before, after);
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["src"], "no mount point left behind");

    // Dropping the guard unmounts too.
    let tm = TempMount::new_in(d.path(), &ro).unwrap();
    let p = tm.path().to_path_buf();
    assert!(is_mount_point(&p));
    drop(tm);
    assert!(!p.exists());
}

#[test]
fn busy_unmount_falls_back_to_a_lazy_detach() {
    use std::io::Read;
    use stowage_core_types::mount::Mount;
    use stowage_snapshots_storage::mount::{is_mount_point, mount, unmount};
    if !stowage_snapshots_storage::testsuite::require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let target = d.path().join("target");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(src.join("f"), b"still readable").unwrap();
    mount(
        &Mount::new("bind", src.to_str().unwrap(), ["rbind"]),
        &target,
    )
    .unwrap();
    // An open file keeps the mount busy: plain umount fails with EBUSY every time.
    let mut open = std::fs::File::open(target.join("f")).unwrap();
    let started = std::time::Instant::now();
    unmount(&target).unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "retried first"
    );
    assert!(!is_mount_point(&target), "detached from the tree");
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "still readable",
        "the open file keeps working after the detach"
    );
}
