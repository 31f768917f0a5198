//! Layers that try to write, link or delete outside the target root. Every case checks that
//! the world outside the root is byte-for-byte untouched; refused cases also check that the
//! error is `InvalidArgument`/`NotFound` and names the offending entry.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::*;
use stowage_core_types::{Error, ErrorKind};
use stowage_diff::{ApplyOptions, WhiteoutMode};

/// A target root with a sibling "outside" directory holding a sentinel file.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    before: BTreeMap<String, Node>,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"do not touch").unwrap();
        fs::create_dir(outside.join("dir")).unwrap();
        fs::write(outside.join("dir/inner"), b"inner").unwrap();
        let before = tree(tmp.path().join("outside").as_path());
        Sandbox {
            _tmp: tmp,
            root,
            outside,
            before,
        }
    }

    /// The outside directory and its parent look exactly as before.
    fn assert_outside_untouched(&self) {
        assert_eq!(tree(&self.outside), self.before, "outside tree changed");
        let parent = self.outside.parent().unwrap();
        let mut top: Vec<_> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["outside", "root"],
            "something was created next to the root"
        );
        assert_eq!(
            fs::metadata(self.outside.join("sentinel")).unwrap().nlink(),
            1
        );
    }

    fn apply(&self, layer: &[u8]) -> stowage_core_types::Result<stowage_diff::ApplyResult> {
        apply(&gzip(layer), &self.root, &ApplyOptions::default())
    }

    fn apply_overlay(&self, layer: &[u8]) -> stowage_core_types::Result<stowage_diff::ApplyResult> {
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay { user_xattr: false },
            ..ApplyOptions::default()
        };
        apply(layer, &self.root, &opts)
    }

    /// The absolute path of the outside dir, as an attacker would write it in a symlink.
    fn outside_abs(&self) -> String {
        self.outside.to_string_lossy().into_owned()
    }
}

fn assert_refused(err: &Error, kind: ErrorKind, entry: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("layer entry {entry:?}")),
        "error does not name entry {entry:?}: {msg}"
    );
}

fn etc_passwd_links() -> u64 {
    fs::metadata("/etc/passwd").map(|m| m.nlink()).unwrap_or(0)
}

#[test]
fn dotdot_names_are_refused() {
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "./../outside/sentinel",
        "/../outside/evil",
    ] {
        let sb = Sandbox::new();
        let layer = Layer::new()
            .file("ok-before", 0o644, b"fine")
            .file(name, 0o644, b"pwned")
            .finish();
        let err = sb.apply(&layer).unwrap_err();
        assert_refused(&err, ErrorKind::InvalidArgument, name);
        assert!(err.to_string().contains("escapes"), "{err}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn dotdot_directories_and_links_are_refused() {
    for layer in [
        Layer::new().dir("../outside/newdir/", 0o755).finish(),
        Layer::new()
            .symlink("../outside/link", "/etc/passwd")
            .finish(),
        Layer::new().fifo("../outside/fifo", 0o644).finish(),
    ] {
        let sb = Sandbox::new();
        let err = sb.apply(&layer).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("../outside/"), "{err}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn absolute_names_are_taken_relative_to_the_root() {
    let sb = Sandbox::new();
    let evil = format!("{}/sentinel", sb.outside_abs());
    let layer = Layer::new()
        .file("/etc/hostname", 0o644, b"inside")
        .file(&evil, 0o644, b"pwned")
        .finish();
    sb.apply(&layer).unwrap();
    assert_eq!(fs::read(sb.root.join("etc/hostname")).unwrap(), b"inside");
    let relocated = sb.root.join(evil.trim_start_matches('/'));
    assert_eq!(fs::read(relocated).unwrap(), b"pwned");
    sb.assert_outside_untouched();
}

#[test]
fn symlinked_directory_pointing_outside_is_resolved_inside() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("abs", &sb.outside_abs())
        .symlink("rel", "../../../../../../outside")
        .file("abs/sentinel", 0o644, b"pwned-abs")
        .file("rel/sentinel", 0o644, b"pwned-rel")
        .file("abs/dir/inner", 0o644, b"pwned-inner")
        .finish();
    sb.apply(&layer).unwrap();
    sb.assert_outside_untouched();
    let abs_inside = sb.root.join(sb.outside_abs().trim_start_matches('/'));
    assert_eq!(fs::read(abs_inside.join("sentinel")).unwrap(), b"pwned-abs");
    assert_eq!(
        fs::read(abs_inside.join("dir/inner")).unwrap(),
        b"pwned-inner"
    );
    // `..` stops at the root: "rel" means <root>/outside.
    assert_eq!(
        fs::read(sb.root.join("outside/sentinel")).unwrap(),
        b"pwned-rel"
    );
    // The symlinks themselves are still there, untouched.
    assert_eq!(fs::read_link(sb.root.join("abs")).unwrap(), sb.outside);
}

#[test]
fn symlink_then_file_of_the_same_name_replaces_the_link() {
    let sb = Sandbox::new();
    let target = format!("{}/sentinel", sb.outside_abs());
    let layer = Layer::new()
        .symlink("evil", &target)
        .file("evil", 0o644, b"pwned")
        .symlink("evil-dir", &sb.outside_abs())
        .dir("evil-dir/", 0o777)
        .finish();
    sb.apply(&layer).unwrap();
    sb.assert_outside_untouched();
    assert_eq!(node(&sb.root.join("evil")).kind, "file");
    assert_eq!(fs::read(sb.root.join("evil")).unwrap(), b"pwned");
    assert_eq!(node(&sb.root.join("evil-dir")).kind, "dir");
    // The outside dir's mode did not change through the link.
    assert_eq!(node(&sb.outside).mode, sb_outside_mode(&sb));
}

fn sb_outside_mode(sb: &Sandbox) -> u32 {
    // Created by tempfile/create_dir with the process umask; compare against a fresh sibling.
    let probe = sb.outside.parent().unwrap().join(".probe");
    fs::create_dir(&probe).unwrap();
    let mode = node(&probe).mode;
    fs::remove_dir(&probe).unwrap();
    mode
}

#[test]
fn chain_of_symlinks_through_parents_stays_inside() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .dir("a/", 0o755)
        .symlink("a/b", "../../..")
        .symlink("c", "a/b/a/b/outside")
        .file("c/sentinel", 0o644, b"pwned")
        .finish();
    sb.apply(&layer).unwrap();
    sb.assert_outside_untouched();
    assert_eq!(
        fs::read(sb.root.join("outside/sentinel")).unwrap(),
        b"pwned"
    );
}

#[test]
fn symlink_loops_are_an_error_naming_the_entry() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("x", "y")
        .symlink("y", "x")
        .file("x/file", 0o644, b"z")
        .finish();
    let err = sb.apply(&layer).unwrap_err();
    assert_refused(&err, ErrorKind::InvalidArgument, "x/file");
    assert!(err.to_string().contains("symbolic links"), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn hardlinks_to_outside_are_refused_or_confined() {
    let before = etc_passwd_links();
    // Escaping with `..`: refused.
    let sb = Sandbox::new();
    let layer = Layer::new().hardlink("h", "../outside/sentinel").finish();
    let err = sb.apply(&layer).unwrap_err();
    assert_refused(&err, ErrorKind::InvalidArgument, "h");
    assert!(err.to_string().contains("escapes"), "{err}");
    sb.assert_outside_untouched();

    // Absolute targets mean "inside the root": /etc/passwd is <root>/etc/passwd, absent here.
    let sb = Sandbox::new();
    let layer = Layer::new().hardlink("passwd", "/etc/passwd").finish();
    let err = sb.apply(&layer).unwrap_err();
    assert_refused(&err, ErrorKind::NotFound, "passwd");
    assert_eq!(etc_passwd_links(), before, "/etc/passwd gained a link");
    sb.assert_outside_untouched();

    // Through a symlinked parent pointing outside: resolved inside, so not found.
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("out", &sb.outside_abs())
        .hardlink("h", "out/sentinel")
        .finish();
    let err = sb.apply(&layer).unwrap_err();
    assert_refused(&err, ErrorKind::NotFound, "h");
    sb.assert_outside_untouched();

    // A legitimate link to a file inside the root through the same kind of path works.
    let sb = Sandbox::new();
    let layer = Layer::new()
        .file("etc/passwd", 0o644, b"root:x:0:0")
        .hardlink("h", "/etc/passwd")
        .finish();
    sb.apply(&layer).unwrap();
    assert_eq!(
        node(&sb.root.join("h")).ino,
        node(&sb.root.join("etc/passwd")).ino
    );
    assert_eq!(etc_passwd_links(), before);
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_not_its_target() {
    let sb = Sandbox::new();
    let target = format!("{}/sentinel", sb.outside_abs());
    let layer = Layer::new()
        .symlink("s", &target)
        .hardlink("h", "s")
        .finish();
    sb.apply(&layer).unwrap();
    assert_eq!(node(&sb.root.join("h")).kind, "symlink");
    sb.assert_outside_untouched();
}

#[test]
fn whiteouts_cannot_reach_outside() {
    // `..` in the whiteout's path: refused.
    for name in [
        "../../.wh.sentinel",
        "../outside/.wh.sentinel",
        "a/../../outside/.wh..wh..opq",
    ] {
        let sb = Sandbox::new();
        let layer = Layer::new().whiteout(name).finish();
        let err = sb.apply(&layer).unwrap_err();
        assert_refused(&err, ErrorKind::InvalidArgument, name);
        sb.assert_outside_untouched();
    }
    // Whiteout names that would name the directory itself or its parent: refused.
    for name in ["d/.wh..", "d/.wh.", "d/.wh..."] {
        let sb = Sandbox::new();
        fs::create_dir(sb.root.join("d")).unwrap();
        fs::write(sb.root.join("d/f"), b"f").unwrap();
        let layer = Layer::new().whiteout(name).finish();
        // ".wh..." whites out "..", ".wh.." whites out ".", ".wh." names nothing.
        let err = sb.apply(&layer).unwrap_err();
        assert_refused(&err, ErrorKind::InvalidArgument, name);
        assert!(sb.root.join("d/f").exists());
        sb.assert_outside_untouched();
    }
}

#[test]
fn whiteouts_in_a_symlinked_parent_stay_inside() {
    let sb = Sandbox::new();
    // Layer 1 plants a symlink to the outside directory; layer 2 whites out through it.
    let l1 = Layer::new().symlink("evil", &sb.outside_abs()).finish();
    sb.apply(&l1).unwrap();
    let l2 = Layer::new()
        .whiteout("evil/.wh.sentinel")
        .whiteout("evil/.wh.dir")
        .whiteout("evil/.wh..wh..opq")
        .finish();
    sb.apply(&l2).unwrap();
    sb.assert_outside_untouched();
    // The same in overlay mode, which creates device nodes instead of deleting (trusted.*
    // opaque markers need root).
    if !need_root("overlay-mode whiteouts through a symlinked parent") {
        return;
    }
    let sb = Sandbox::new();
    let l1 = Layer::new().symlink("evil", &sb.outside_abs()).finish();
    sb.apply_overlay(&l1).unwrap();
    let l2 = Layer::new()
        .whiteout("evil/.wh.sentinel")
        .whiteout("evil/.wh..wh..opq")
        .finish();
    sb.apply_overlay(&l2).unwrap();
    sb.assert_outside_untouched();
    let inside = sb.root.join(sb.outside_abs().trim_start_matches('/'));
    assert_eq!(node(&inside.join("sentinel")).kind, "char");
}

#[test]
fn a_file_where_a_parent_should_be_is_an_error() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .file("f", 0o644, b"x")
        .file("f/child", 0o644, b"y")
        .finish();
    let err = sb.apply(&layer).unwrap_err();
    assert!(err.to_string().contains("layer entry \"f/child\""), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn the_root_itself_is_left_alone() {
    let sb = Sandbox::new();
    let before = node(&sb.root);
    let layer = Layer::new()
        .dir("./", 0o700)
        .dir("/", 0o777)
        .file("x", 0o644, b"x")
        .finish();
    sb.apply(&layer).unwrap();
    let after = node(&sb.root);
    assert_eq!(after.mode, before.mode);
    sb.assert_outside_untouched();
}
