//! The generated fixture images are real images: containerd 1.6 imports and unpacks each one,
//! and the unpacked trees show what each fixture is built to exercise (whiteouts, opaque dirs,
//! hardlinks, devices, modes, xattrs, ownership).
//!
//! This pins the fixtures down before stowage's own unpack is compared against containerd's.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use stowage_tests::containerd::{require, Containerd};
use stowage_tests::fixtures;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and live across the call; buf is writable for
    // buf.len() bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

struct Mounted<'a> {
    ctr: &'a Containerd,
    dir: std::path::PathBuf,
}

impl<'a> Mounted<'a> {
    fn new(ctr: &'a Containerd, reference: &str, dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        ctr.ctr(&["images", "mount", reference, dir.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("mount {reference}: {e}\n{}", ctr.log()));
        Mounted {
            ctr,
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self
            .ctr
            .ctr(&["images", "unmount", "--rm", self.dir.to_str().unwrap()]);
    }
}

#[test]
fn containerd_imports_and_unpacks_every_fixture() {
    if !require(&["containerd", "ctr"], "apt-get install containerd") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let ctrd = Containerd::start(&work.path().join("root"), work.path()).unwrap();

    for img in &images {
        let archive = img.archive.to_str().unwrap();
        let mut args = vec!["images", "import", "--snapshotter", "overlayfs"];
        if img.name == "multiplatform" {
            args.push("--all-platforms");
        }
        args.push(archive);
        ctrd.ctr(&args)
            .unwrap_or_else(|e| panic!("import {}: {e}\n{}", img.name, ctrd.log()));
        let listed = ctrd.ctr(&["images", "ls", "-q"]).unwrap();
        assert!(listed.lines().any(|l| l == img.reference), "{listed}");
        let check = ctrd.ctr(&["images", "check"]).unwrap();
        let line = check
            .lines()
            .find(|l| l.starts_with(&img.reference))
            .unwrap_or_else(|| panic!("{} missing from check:\n{check}", img.reference));
        assert!(line.contains("complete"), "{line}");
    }

    let reference = |name: &str| {
        images
            .iter()
            .find(|i| i.name == name)
            .unwrap()
            .reference
            .clone()
    };

    // whiteouts: three layers deleting, hiding and recreating.
    {
        let m = Mounted::new(&ctrd, &reference("whiteouts"), &work.path().join("mnt-w"));
        let r = &m.dir;
        assert!(
            !r.join("keep/a").exists(),
            "keep/a whited out by the top layer"
        );
        assert!(
            !r.join("keep/b").exists(),
            "keep/b whited out by the middle layer"
        );
        assert_eq!(fs::read(r.join("keep/c")).unwrap(), b"upper c\n");
        assert!(!r.join("opaque/old1").exists());
        assert!(!r.join("opaque/olddir").exists());
        assert_eq!(
            fs::read(r.join("opaque/new")).unwrap(),
            b"added with the opaque marker\n"
        );
        assert!(!r.join("gone/x").exists());
        assert_eq!(
            fs::read(r.join("gone/again")).unwrap(),
            b"recreated after a whiteout\n"
        );
        assert_eq!(fs::read(r.join("replaced/inside")).unwrap(), b"now a dir\n");
        assert!(fs::symlink_metadata(r.join("dir-to-file"))
            .unwrap()
            .is_file());
        assert!(!r.join("hardlink-src").exists());
        assert_eq!(fs::read(r.join("hardlink-dst")).unwrap(), b"linked\n");
        let names: Vec<_> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".wh.")),
            "no whiteout files may show in the merged view: {names:?}"
        );
    }

    // base: every entry type and attribute.
    {
        let m = Mounted::new(&ctrd, &reference("base"), &work.path().join("mnt-b"));
        let r = &m.dir;
        let null = fs::symlink_metadata(r.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert!(fs::symlink_metadata(r.join("dev/loop-fixture"))
            .unwrap()
            .file_type()
            .is_block_device());
        assert!(fs::symlink_metadata(r.join("var/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            fs::symlink_metadata(r.join("usr/bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::symlink_metadata(r.join("usr/bin/wall")).unwrap().mode() & 0o7777,
            0o2755
        );
        assert_eq!(
            fs::symlink_metadata(r.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        let tool = fs::symlink_metadata(r.join("usr/bin/tool")).unwrap();
        let link = fs::symlink_metadata(r.join("usr/bin/tool-hardlink")).unwrap();
        assert_eq!(tool.ino(), link.ino(), "hardlink kept as a hardlink");
        assert_eq!(tool.len(), 300_000);
        assert_eq!(
            fs::read_link(r.join("bin/sh")).unwrap(),
            Path::new("/usr/bin/tool")
        );
        assert_eq!(
            xattr(&r.join("etc/labelled"), "user.stowage.test").as_deref(),
            Some(&b"value-1"[..])
        );
        assert!(xattr(&r.join("usr/bin/ping"), "security.capability").is_some());
        let owned = fs::symlink_metadata(r.join("home/user/owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
        assert_eq!(
            fs::symlink_metadata(r.join("home/user")).unwrap().mode() & 0o777,
            0o700
        );
        let long = r.join("d".repeat(120)).join("n".repeat(150));
        assert_eq!(fs::read(long).unwrap(), b"a long name\n");
        assert_eq!(tool.mtime(), 1_700_000_000);
    }

    // compressions: gzip, zstd and plain layers all unpacked.
    {
        let m = Mounted::new(
            &ctrd,
            &reference("compressions"),
            &work.path().join("mnt-c"),
        );
        for tag in ["gz", "zst", "plain"] {
            assert_eq!(
                fs::read(m.dir.join(tag).join("hello")).unwrap(),
                format!("hello from {tag}\n").into_bytes()
            );
        }
    }
    ctrd.stop().unwrap();
}
