//! Comparing an overlayfs upper directory written with `redirect_dir` (a directory of the lower
//! layer renamed) or `metacopy` (a lower file's metadata changed without copying its data):
//! the upper directory alone cannot describe those, so compare falls back to walking the
//! mounted trees, as containerd always does; the layer must still round-trip.
//!
//! Needs root (overlay mounts); without it the tests fail unless `STOWAGE_SKIP_EXTERNAL=1`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use stowage_content::LocalStore;
use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer};
use stowage_core_types::mount::Mount;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{ErrorKind, Labels};
use stowage_diff::testsuite::util::{fill, tree_of, write_file};
use stowage_diff::{write_overlay_diff, LocalDiffer, UNCOMPRESSED_LABEL};
use stowage_snapshots_overlay::OverlaySnapshotter;

fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: needs root for overlay mounts");
        return false;
    }
    panic!("needs root for overlay mounts (set STOWAGE_SKIP_EXTERNAL=1 to skip)");
}

struct Setup {
    _dir: tempfile::TempDir,
    sn: OverlaySnapshotter,
    differ: LocalDiffer,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let sn = OverlaySnapshotter::new(dir.path().join("overlayfs")).expect("overlay snapshotter");
    let content = Arc::new(LocalStore::with_memory_labels(dir.path().join("content")).unwrap());
    // The base layer: a directory tree to rename and a file to chmod.
    let m = sn.prepare("base-active", "", Labels::new()).unwrap();
    fill(&m, |root| {
        fs::create_dir_all(root.join("dir/sub")).unwrap();
        write_file(&root.join("dir/a"), b"a", 0o644);
        write_file(&root.join("dir/sub/b"), &vec![7u8; 100_000], 0o644);
        write_file(&root.join("big"), &vec![9u8; 200_000], 0o644);
    });
    sn.commit("base", "base-active", Labels::new()).unwrap();
    Setup {
        _dir: dir,
        sn,
        differ: LocalDiffer::new(content),
    }
}

/// `mounts` (one overlay mount) with `extra` options added.
fn with_options(mounts: &[Mount], extra: &[&str]) -> Vec<Mount> {
    let mut m = mounts.to_vec();
    m[0].options.extend(extra.iter().map(|s| s.to_string()));
    m
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and alive for the call; `buf` is writable for
    // its length.
    let got =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (got >= 0).then(|| {
        buf.truncate(got as usize);
        buf
    })
}

/// Compares `work` against `base`, checks the overlay fast path alone refuses the upper
/// directory, and that the layer applied onto `base` gives the tree `work` shows when mounted
/// with `read_opts`.
fn compare_and_round_trip(s: &Setup, work: &[Mount], read_opts: &[&str]) {
    let upper_dir = work[0].option_value("upperdir").unwrap().to_string();
    let lower = s.sn.view("base-view", "base", Labels::new()).unwrap();

    // The fast path cannot describe this upper directory on its own.
    let err = write_overlay_diff(
        Path::new(&upper_dir),
        Path::new(&upper_dir),
        std::io::sink(),
    )
    .expect_err("the upper directory alone is refused");
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");

    let desc = s
        .differ
        .compare(&lower, work, &CompareOptions::default())
        .expect("compare falls back to the mounted trees");
    let target = s.sn.prepare("check", "base", Labels::new()).unwrap();
    let applied = s
        .differ
        .apply(&desc, &target, &ApplyConfig::default())
        .expect("apply the compared layer");
    let info = s.differ.content().info(&desc.digest).unwrap();
    assert_eq!(
        info.labels.get(UNCOMPRESSED_LABEL),
        Some(&applied.digest.to_string())
    );
    let want = tree_of(&with_options(work, read_opts));
    assert_eq!(
        tree_of(&target),
        want,
        "apply(compare(base, work)) is not work"
    );
}

#[test]
fn renamed_lower_directory_round_trips() {
    if !need_root() {
        return;
    }
    let s = setup();
    let work = s.sn.prepare("work", "base", Labels::new()).unwrap();
    fill(&with_options(&work, &["redirect_dir=on"]), |root| {
        fs::rename(root.join("dir"), root.join("moved")).expect("rename a lower directory");
        write_file(&root.join("moved/added"), b"added", 0o644);
    });
    let upper_dir = work[0].option_value("upperdir").unwrap().to_string();
    let redirect = xattr(
        &Path::new(&upper_dir).join("moved"),
        "trusted.overlay.redirect",
    );
    assert!(
        redirect.is_some(),
        "overlayfs did not mark the renamed directory with trusted.overlay.redirect"
    );
    compare_and_round_trip(&s, &work, &["redirect_dir=on"]);
    let tree = tree_of(&s.sn.mounts("check").unwrap());
    assert!(tree.contains_key("moved/sub/b") && tree.contains_key("moved/added"));
    assert!(!tree.contains_key("dir"), "{tree:#?}");
}

#[test]
fn metadata_only_copy_up_round_trips() {
    if !need_root() {
        return;
    }
    let s = setup();
    let work = s.sn.prepare("work", "base", Labels::new()).unwrap();
    let opts = ["redirect_dir=on", "metacopy=on"];
    fill(&with_options(&work, &opts), |root| {
        fs::set_permissions(
            root.join("big"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod a lower file");
    });
    let upper_dir = work[0].option_value("upperdir").unwrap().to_string();
    let big = Path::new(&upper_dir).join("big");
    assert!(
        xattr(&big, "trusted.overlay.metacopy").is_some(),
        "overlayfs did not copy up metadata only (no trusted.overlay.metacopy)"
    );
    assert_eq!(fs::metadata(&big).unwrap().len(), 200_000);
    compare_and_round_trip(&s, &work, &opts);
    let tree = tree_of(&s.sn.mounts("check").unwrap());
    assert!(tree["big"].contains("mode=600"), "{}", tree["big"]);
}
