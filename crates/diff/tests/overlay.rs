//! Applying onto overlayfs upper directories: the markers written, and a real overlay mount of
//! the results compared with applying the same layers onto a plain directory.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;
use stowage_diff::{ApplyOptions, WhiteoutMode};

fn layer1() -> Vec<u8> {
    Layer::new()
        .dir("a/", 0o755)
        .file("a/f1", 0o644, b"one")
        .file("a/f2", 0o644, b"two")
        .dir("a/b/", 0o755)
        .file("a/b/deep", 0o644, b"deep")
        .dir("opq/", 0o750)
        .file("opq/old1", 0o644, b"old")
        .dir("opq/olddir/", 0o755)
        .file("opq/olddir/x", 0o644, b"x")
        // A directory with non-default metadata that layer 2 writes into without listing it.
        .pax(&[("SCHILY.xattr.user.note", b"lower")])
        .raw(
            {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o750);
                h.set_uid(7);
                h.set_gid(8);
                h.set_mtime(T0);
                h
            },
            "keep/",
            None,
            &[],
        )
        .file("keep/k", 0o644, b"k")
        .dir("keep/sub/", 0o700)
        .symlink("link", "a/f1")
        .finish()
}

fn layer2() -> Vec<u8> {
    Layer::new()
        .whiteout("a/.wh.f1")
        .whiteout("a/.wh.b")
        .file("a/f2", 0o600, b"two v2")
        .dir("opq/", 0o755)
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new", 0o644, b"new")
        .file("keep/added", 0o644, b"added")
        .file("keep/sub/deeper/x", 0o644, b"x")
        .file("newdir/file", 0o644, b"nd")
        .whiteout(".wh.link")
        .finish()
}

fn overlay_opts(user_xattr: bool) -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Overlay { user_xattr },
        ..ApplyOptions::default()
    }
}

/// Overlay options with the lower layers (newest first), as the overlay snapshotter applies.
fn overlay_opts_on(user_xattr: bool, parents: &[&Path]) -> ApplyOptions {
    ApplyOptions {
        parents: parents.iter().map(|p| p.to_path_buf()).collect(),
        ..overlay_opts(user_xattr)
    }
}

fn getxattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn overlay_mode_writes_overlay_markers_without_mounting() {
    if !need_root("overlay whiteout test (trusted.* xattrs and mknod)") {
        return;
    }
    let upper = tempfile::tempdir().unwrap();
    apply(&layer2(), upper.path(), &overlay_opts(false)).unwrap();
    let t = tree(upper.path());
    for wh in ["a/f1", "a/b", "link"] {
        assert_eq!(t[wh].kind, "char", "{wh}");
        assert_eq!(t[wh].rdev, 0, "{wh}");
    }
    assert!(t.keys().all(|k| !k.contains(".wh.")), "{:?}", t.keys());
    assert_eq!(
        getxattr(&upper.path().join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        getxattr(&upper.path().join("a"), "trusted.overlay.opaque"),
        None
    );
    assert_eq!(t["opq/new"].content, hash(b"new"));

    let upper = tempfile::tempdir().unwrap();
    apply(&layer2(), upper.path(), &overlay_opts(true)).unwrap();
    assert_eq!(
        getxattr(&upper.path().join("opq"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        getxattr(&upper.path().join("opq"), "trusted.overlay.opaque"),
        None
    );
}

/// Unmounts (lazily, so a failing test never leaves a busy mount behind) on drop.
struct Mount(PathBuf);

impl Mount {
    fn overlay(target: &Path, options: &str) -> std::io::Result<Mount> {
        let src = CString::new("overlay").unwrap();
        let tgt = CString::new(target.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(options).unwrap();
        // SAFETY: valid C strings; `data` is a NUL-terminated option string as overlayfs expects.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                src.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mount(target.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let tgt = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The trees compared between a mount and a plain apply: directory times differ legitimately
/// (overlay shows the upper directory's), and overlayfs adds no visible xattrs.
fn view(root: &Path) -> std::collections::BTreeMap<String, Node> {
    let mut t = tree_comparable(root);
    for n in t.values_mut() {
        if n.kind == "dir" {
            n.mtime = (0, 0);
        }
    }
    t
}

fn mounted_matches_plain(user_xattr: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["u1", "u2", "merged", "plain", "work", "rw"]
        .iter()
        .map(|d| {
            let p = tmp.path().join(d);
            fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    let (u1, u2, merged, plain, work, rw) =
        (&dirs[0], &dirs[1], &dirs[2], &dirs[3], &dirs[4], &dirs[5]);
    apply(&layer1(), u1, &overlay_opts(user_xattr)).unwrap();
    apply(&layer2(), u2, &overlay_opts_on(user_xattr, &[u1])).unwrap();
    apply(&layer1(), plain, &ApplyOptions::default()).unwrap();
    apply(&layer2(), plain, &ApplyOptions::default()).unwrap();

    let extra = if user_xattr { ",userxattr" } else { "" };
    // A read-only view of both layers, as the overlay snapshotter mounts a committed chain.
    let m = Mount::overlay(
        merged,
        &format!("lowerdir={}:{}{extra}", u2.display(), u1.display()),
    )
    .unwrap_or_else(|e| panic!("mounting overlay (userxattr={user_xattr}): {e}"));
    let got = view(merged);
    let want = view(plain);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert_eq!(got, want);
    // Spelled out, so a failure says which rule broke.
    assert!(!merged.join("a/f1").exists() && !merged.join("a/b").exists());
    assert!(fs::symlink_metadata(merged.join("link")).is_err());
    assert_eq!(fs::read(merged.join("a/f2")).unwrap(), b"two v2");
    let mut opq: Vec<_> = fs::read_dir(merged.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new"]);
    assert_eq!(fs::read(merged.join("keep/k")).unwrap(), b"k");
    assert_eq!(fs::read(merged.join("keep/added")).unwrap(), b"added");
    drop(m);

    // An active snapshot on top of both, as containerd mounts one for a container.
    let m = Mount::overlay(
        rw,
        &format!(
            "lowerdir={}:{},upperdir={},workdir={}{extra}",
            u2.display(),
            u1.display(),
            tmp.path().join("plain-upper-unused").display(),
            work.display()
        ),
    );
    // The upper dir above does not exist: the mount must fail and leave nothing mounted.
    assert!(m.is_err());
    let upper3 = tmp.path().join("u3");
    fs::create_dir(&upper3).unwrap();
    let m = Mount::overlay(
        rw,
        &format!(
            "lowerdir={}:{},upperdir={},workdir={}{extra}",
            u2.display(),
            u1.display(),
            upper3.display(),
            work.display()
        ),
    )
    .unwrap();
    assert_eq!(view(rw), want);
    fs::write(rw.join("opq/written"), b"w").unwrap();
    assert_eq!(fs::read(upper3.join("opq/written")).unwrap(), b"w");
    drop(m);
}

#[test]
fn implied_directories_take_metadata_from_the_parents() {
    if !need_root("implied parent directory test (ownership)") {
        return;
    }
    let u1 = tempfile::tempdir().unwrap();
    apply(&layer1(), u1.path(), &overlay_opts(false)).unwrap();
    // Without parents, implied directories are 0755 root-owned.
    let bare = tempfile::tempdir().unwrap();
    apply(&layer2(), bare.path(), &overlay_opts(false)).unwrap();
    let t = tree(bare.path());
    assert_eq!((t["keep"].mode, t["keep"].uid), (0o755, 0));
    assert!(t["keep"].xattrs.is_empty());
    // With the lower layer as parent they copy it; deeper ones missing below stay 0755.
    let u2 = tempfile::tempdir().unwrap();
    apply(&layer2(), u2.path(), &overlay_opts_on(false, &[u1.path()])).unwrap();
    let t = tree(u2.path());
    assert_eq!(
        (t["keep"].mode, t["keep"].uid, t["keep"].gid),
        (0o750, 7, 8)
    );
    assert_eq!(
        t["keep"].xattrs.get("user.note").map(|v| &v[..]),
        Some(&b"lower"[..])
    );
    assert_eq!(t["keep/sub"].mode, 0o700);
    assert_eq!(t["keep/sub/deeper"].mode, 0o755);
    assert_eq!(t["newdir"].mode, 0o755);
}

#[test]
fn mounted_overlay_of_two_applied_layers_matches_a_plain_apply() {
    if !need_root("overlay mount test") {
        return;
    }
    mounted_matches_plain(false);
}

#[test]
fn mounted_overlay_with_userxattr_honours_user_markers() {
    if !need_root("overlay userxattr mount test") {
        return;
    }
    mounted_matches_plain(true);
}

#[test]
fn applying_through_snapshot_mounts_matches_direct_overlay_apply() {
    if !need_root("overlay apply through mounts (trusted xattrs)") {
        return;
    }
    use stowage_core_types::mount::Mount;
    use stowage_diff::{apply_layer_to_mounts, LayerEncoding};
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let p = tmp.path().join(n);
        fs::create_dir(&p).unwrap();
        p
    };
    let (u1, u2, work, direct) = (dir("u1"), dir("u2"), dir("work"), dir("direct"));
    // What the overlay snapshotter returns for an active snapshot on top of u1.
    let mount = Mount::new(
        "overlay",
        "overlay",
        [
            "index=off".to_string(),
            format!("workdir={}", work.display()),
            format!("upperdir={}", u2.display()),
            format!("lowerdir={}", u1.display()),
        ],
    );
    apply(&layer1(), &u1, &overlay_opts(false)).unwrap();
    let l2 = gzip(&layer2());
    apply_layer_to_mounts(
        &l2[..],
        LayerEncoding::Detect,
        &[mount],
        &ApplyOptions::default(),
    )
    .unwrap();
    apply(&l2, &direct, &overlay_opts_on(false, &[&u1])).unwrap();
    assert_eq!(tree_stable(&u2), tree_stable(&direct));
    assert_eq!(
        getxattr(&u2.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(node(&u2.join("keep")).mode, 0o750);
    // A bind mount (native snapshotter) is a plain directory: whiteouts delete.
    let native = dir("native");
    apply(&layer1(), &native, &ApplyOptions::default()).unwrap();
    let bind = Mount::new("bind", native.to_string_lossy(), ["rbind", "rw"]);
    apply_layer_to_mounts(
        &l2[..],
        LayerEncoding::Detect,
        &[bind],
        &ApplyOptions::default(),
    )
    .unwrap();
    assert!(!native.join("a/f1").exists());
    assert_eq!(names(&native.join("opq")), ["new"]);
}
