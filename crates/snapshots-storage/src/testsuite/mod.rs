//! The snapshotter conformance suite, run against every [`Snapshotter`].
//!
//! It pins down the behaviours containerd's `snapshots/testsuite` checks (prepare, commit,
//! view, stat, transitivity, parent chains, removal rules, file changes across layers,
//! ownership and permissions, read-only views, 128-layer stacks, usage, labels, walking with
//! filters, cleanup) plus persistence across reopening. The cases really mount what the
//! snapshotter returns, so they need root; without it they fail with a message saying so,
//! unless `STOWAGE_SKIP_EXTERNAL=1` is set.
//!
//! A snapshotter's tests run it with [`snapshotter_conformance!`](crate::snapshotter_conformance),
//! which makes one `#[test]` per case, or call [`run_case`] directly.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stowage_core_types::snapshot::{Info, Kind, Snapshotter};
use stowage_core_types::{ErrorKind, Labels, Result};

use crate::mount::{unmount_all, TempMount};

pub mod gocheck;

/// Builds a fresh snapshotter on a root directory (the same root again reopens it).
pub type Factory<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn Snapshotter>>;

/// One conformance case: the snapshotter under test, its factory (to reopen it), its root,
/// and a scratch directory on the same filesystem.
pub type CaseFn = fn(&mut Ctx<'_>);

/// What a case gets.
pub struct Ctx<'a> {
    /// The snapshotter under test (None only while it is being reopened).
    sn: Option<Box<dyn Snapshotter>>,
    /// Builds another snapshotter on a root.
    pub factory: Factory<'a>,
    /// The snapshotter's root.
    pub root: PathBuf,
    /// Scratch space for mount points and expected trees.
    pub work: PathBuf,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("root", &self.root)
            .field("work", &self.work)
            .finish()
    }
}

/// Every case, by name.
pub const CASES: &[(&str, CaseFn)] = &[
    ("basic", basic),
    ("stat_active", stat_active),
    ("stat_committed", stat_committed),
    ("transitivity", transitivity),
    ("prepare_view_failing", prepare_view_failing),
    ("commit_errors", commit_errors),
    ("update_labels", update_labels),
    ("remove", remove),
    ("remove_intermediate", remove_intermediate),
    ("walk", walk),
    ("stat_in_walk", stat_in_walk),
    ("layer_file_update", layer_file_update),
    (
        "remove_directory_in_lower_layer",
        remove_directory_in_lower_layer,
    ),
    ("chown", chown),
    (
        "directory_permission_on_commit",
        directory_permission_on_commit,
    ),
    ("deleted_files_in_child", deleted_files_in_child),
    ("move_file_from_lower_layer", move_file_from_lower_layer),
    ("special_files", special_files),
    ("view_readonly", view_readonly),
    ("root_permission", root_permission),
    ("layers_128", layers_128),
    ("usage", usage),
    ("cleanup", cleanup),
    ("reopen", reopen),
    ("concurrent", concurrent),
];

/// False (skip) when not root and `STOWAGE_SKIP_EXTERNAL=1`; panics when not root otherwise.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: snapshotter conformance needs root (STOWAGE_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!(
        "snapshotter conformance needs root to mount; run as root or set STOWAGE_SKIP_EXTERNAL=1"
    );
}

/// Runs case `name` on a fresh snapshotter from `factory` in a new temporary directory.
pub fn run_case(factory: Factory<'_>, name: &str) {
    if !require_root() {
        return;
    }
    let case = CASES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no conformance case {name:?}"))
        .1;
    let tmp = tempfile::Builder::new()
        .prefix("stowage-snap-conformance-")
        .tempdir()
        .expect("create temp dir");
    let root = tmp.path().join("root");
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).expect("create work dir");
    let sn = factory(&root).expect("create snapshotter");
    let mut ctx = Ctx {
        sn: Some(sn),
        factory,
        root,
        work: work.clone(),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut ctx)));
    drop(ctx);
    // A failed case may leave mounts behind; never delete through them.
    if let Ok(entries) = fs::read_dir(&work) {
        for e in entries.flatten() {
            let _ = unmount_all(&e.path());
        }
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Defines one `#[test]` per conformance case for the snapshotter built by `$factory`
/// (an expression of type `fn(&Path) -> Result<Box<dyn Snapshotter>>` or a closure).
#[macro_export]
macro_rules! snapshotter_conformance {
    ($factory:expr) => {
        $crate::snapshotter_conformance!(@cases $factory;
            basic stat_active stat_committed transitivity prepare_view_failing commit_errors
            update_labels remove remove_intermediate walk stat_in_walk layer_file_update
            remove_directory_in_lower_layer chown directory_permission_on_commit
            deleted_files_in_child move_file_from_lower_layer special_files view_readonly
            root_permission layers_128 usage cleanup reopen concurrent);
    };
    (@cases $factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::testsuite::run_case(&$factory, stringify!($name));
            }
        )*
    };
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kind_of(r: Result<impl Sized>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

impl Ctx<'_> {
    /// The snapshotter under test.
    pub fn sn(&self) -> &dyn Snapshotter {
        self.sn.as_deref().expect("snapshotter is open")
    }

    /// Closes the snapshotter and opens a new one on the same root.
    pub fn reopen(&mut self) {
        self.sn = None;
        self.sn = Some((self.factory)(&self.root).expect("reopen snapshotter"));
    }

    /// Mounts the mounts of `key` (prepared or viewed) on a temporary mount point.
    fn mount(&self, mounts: &[stowage_core_types::mount::Mount]) -> TempMount {
        TempMount::new_in(&self.work, mounts).expect("mount snapshot")
    }

    /// Prepares `key` on `parent`, runs `f` on its mounted tree, unmounts.
    fn prepare_with(&self, key: &str, parent: &str, f: impl FnOnce(&Path)) {
        let m = self
            .sn()
            .prepare(key, parent, Labels::new())
            .expect("prepare");
        let tm = self.mount(&m);
        f(tm.path());
        tm.unmount().expect("unmount");
    }

    /// Prepares on `parent`, applies `f`, commits as `name`.
    fn layer(&self, name: &str, parent: &str, f: impl FnOnce(&Path)) {
        let key = format!("{name}-active");
        self.prepare_with(&key, parent, f);
        self.sn().commit(name, &key, Labels::new()).expect("commit");
    }

    /// Views `name`, runs `f` on the mounted tree, removes the view.
    fn with_view<T>(&self, name: &str, f: impl FnOnce(&Path) -> T) -> T {
        let key = format!("{name}-view-{}", unique());
        let m = self.sn().view(&key, name, Labels::new()).expect("view");
        let tm = self.mount(&m);
        let out = f(tm.path());
        tm.unmount().expect("unmount view");
        self.sn().remove(&key).expect("remove view");
        out
    }

    /// containerd's checkSnapshots: applies each layer through the snapshotter and to a plain
    /// directory, and after each commit checks a view of it equals the plain directory.
    fn check_layers(&self, layers: &[&dyn Fn(&Path)]) {
        let flat = self.work.join(format!("flat-{}", unique()));
        fs::create_dir(&flat).unwrap();
        fs::set_permissions(&flat, fs::Permissions::from_mode(0o755)).unwrap();
        let mut parent = String::new();
        for (i, apply) in layers.iter().enumerate() {
            let name = format!("layer-{i}-{}", unique());
            self.layer(&name, &parent, apply);
            apply(&flat);
            let want = tree(&flat);
            let got = self.with_view(&name, tree);
            assert_trees_eq(&want, &got, &format!("after layer {}", i + 1));
            parent = name;
        }
        fs::remove_dir_all(&flat).unwrap();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One entry of a tree as the suite compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// File content, symlink target, or device number as text.
    pub data: Vec<u8>,
    /// Number of links, for regular files.
    pub nlink: u64,
}

/// Every path under `root` (relative, `""` for the root) and what it is.
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let data = if ft.is_file() {
            fs::read(&p).unwrap()
        } else if ft.is_symlink() {
            fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            Vec::new()
        } else {
            format!("rdev={}", md.rdev()).into_bytes()
        };
        out.insert(
            rel.to_string_lossy().into_owned(),
            Entry {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                data,
                nlink: if ft.is_file() { md.nlink() } else { 0 },
            },
        );
    }
    out
}

/// Panics with the first differences when the trees differ.
pub fn assert_trees_eq(want: &BTreeMap<String, Entry>, got: &BTreeMap<String, Entry>, what: &str) {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k:?}")),
            Some(g) if g != w => diffs.push(format!("{k:?}: want {w:?}, got {g:?}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("unexpected {k:?}"));
    }
    assert!(
        diffs.is_empty(),
        "trees differ {what}: {}",
        diffs.join("; ")
    );
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_owner(root: &Path, rel: &str, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
}

fn remove_all(root: &Path, rel: &str) {
    let p = root.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(&p).unwrap(),
        Ok(_) => fs::remove_file(&p).unwrap(),
        Err(_) => {}
    }
}

fn near_now(t: SystemTime) -> bool {
    let now = SystemTime::now();
    let d = now.duration_since(t).unwrap_or_else(|e| e.duration());
    d < Duration::from_secs(60)
}

fn basic(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.prepare_with("preparing", "", |p| {
        mkdir(p, "a", 0o755);
        write(p, "a/b", b"hello", 0o644);
        std::os::unix::fs::symlink("a/b", p.join("link")).unwrap();
    });
    sn.commit("committed", "preparing", Labels::new()).unwrap();
    assert_eq!(kind_of(sn.stat("preparing")), Some(ErrorKind::NotFound));
    let si = sn.stat("committed").unwrap();
    assert_eq!(
        (si.kind, si.name.as_str(), si.parent.as_str()),
        (Kind::Committed, "committed", "")
    );

    c.prepare_with("next", "committed", |p| {
        assert_eq!(fs::read(p.join("a/b")).unwrap(), b"hello");
        assert_eq!(fs::read_link(p.join("link")).unwrap(), Path::new("a/b"));
        write(p, "a/c", b"world", 0o600);
        fs::remove_file(p.join("link")).unwrap();
    });
    let ni = sn.stat("next").unwrap();
    assert_eq!((ni.kind, ni.parent.as_str()), (Kind::Active, "committed"));
    sn.commit("next-committed", "next", Labels::new()).unwrap();
    assert_eq!(sn.stat("next-committed").unwrap().parent, "committed");

    let got = c.with_view("next-committed", tree);
    let paths: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(paths, ["", "a", "a/b", "a/c"]);
    assert_eq!(got["a/c"].data, b"world");
    assert_eq!(got["a/c"].mode & 0o7777, 0o600);

    // The base layer is unchanged by its child.
    let base = c.with_view("committed", tree);
    assert!(
        base.contains_key("link") && !base.contains_key("a/c"),
        "{base:?}"
    );

    // Committed snapshots have no mounts.
    assert!(sn.mounts("committed").is_err());
    assert_eq!(kind_of(sn.mounts("missing")), Some(ErrorKind::NotFound));

    sn.remove("next-committed").unwrap();
    sn.remove("committed").unwrap();
    assert_eq!(kind_of(sn.stat("committed")), Some(ErrorKind::NotFound));
}

fn stat_active(c: &mut Ctx<'_>) {
    let sn = c.sn();
    let l = labels(&[("a", "1")]);
    let m = sn.prepare("active", "", l.clone()).unwrap();
    assert!(!m.is_empty());
    let si = sn.stat("active").unwrap();
    assert_eq!(si.kind, Kind::Active);
    assert_eq!(si.name, "active");
    assert_eq!(si.parent, "");
    assert_eq!(si.labels.get("a").map(String::as_str), Some("1"));
    assert!(near_now(si.created_at) && near_now(si.updated_at), "{si:?}");
    assert_eq!(sn.mounts("active").unwrap(), m, "mounts are stable");
    assert_eq!(kind_of(sn.stat("other")), Some(ErrorKind::NotFound));
}

fn stat_committed(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("base", "", |p| write(p, "f", b"x", 0o644));
    sn.prepare("child", "base", Labels::new()).unwrap();
    sn.commit("committed", "child", labels(&[("k", "v")]))
        .unwrap();
    let si = sn.stat("committed").unwrap();
    assert_eq!(si.kind, Kind::Committed);
    assert_eq!(si.name, "committed");
    assert_eq!(si.parent, "base");
    assert_eq!(si.labels, labels(&[("k", "v")]));
    assert!(near_now(si.created_at));
}

fn transitivity(c: &mut Ctx<'_>) {
    c.layer("a", "", |p| write(p, "foo", b"content a", 0o644));
    c.layer("b", "a", |p| write(p, "foo", b"content b", 0o644));
    assert_eq!(
        c.with_view("b", |p| fs::read(p.join("foo")).unwrap()),
        b"content b"
    );
    assert_eq!(
        c.with_view("a", |p| fs::read(p.join("foo")).unwrap()),
        b"content a"
    );
}

fn prepare_view_failing(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("snap-a", "", |_| {});
    sn.prepare("new-layer", "snap-a", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.view("new-layer", "snap-a", Labels::new())),
        Some(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        kind_of(sn.prepare("new-layer", "snap-a", Labels::new())),
        Some(ErrorKind::AlreadyExists)
    );
    sn.view("view-layer", "snap-a", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.view("view-layer", "snap-a", Labels::new())),
        Some(ErrorKind::AlreadyExists)
    );
    // Parents must exist and be committed.
    assert_eq!(
        kind_of(sn.prepare("x", "missing", Labels::new())),
        Some(ErrorKind::NotFound)
    );
    assert!(sn.prepare("y", "new-layer", Labels::new()).is_err());
    assert!(sn.view("z", "view-layer", Labels::new()).is_err());
    // A failed create leaves no record behind.
    assert_eq!(kind_of(sn.stat("y")), Some(ErrorKind::NotFound));
    assert_eq!(kind_of(sn.stat("x")), Some(ErrorKind::NotFound));
}

fn commit_errors(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("base", "", |_| {});
    sn.view("v", "base", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.commit("from-view", "v", Labels::new())),
        Some(ErrorKind::FailedPrecondition)
    );
    sn.prepare("a", "base", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.commit("base", "a", Labels::new())),
        Some(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        kind_of(sn.commit("new", "missing", Labels::new())),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind_of(sn.commit("again", "base", Labels::new())),
        Some(ErrorKind::FailedPrecondition)
    );
    // The failed commits left "a" active and usable.
    assert_eq!(sn.stat("a").unwrap().kind, Kind::Active);
    sn.commit("a-committed", "a", Labels::new()).unwrap();
    assert_eq!(sn.stat("a-committed").unwrap().parent, "base");
}

fn update_labels(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("committed", "", |_| {});
    sn.prepare("active", "committed", labels(&[("l1", "v1"), ("l2", "v2")]))
        .unwrap();
    for key in ["committed", "active"] {
        let before = sn.stat(key).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut info = before.clone();
        info.labels = labels(&[("l1", "v1"), ("l3", "v3")]);
        let after = sn.update(info.clone(), &[]).unwrap();
        assert_eq!(after.labels, labels(&[("l1", "v1"), ("l3", "v3")]));
        assert_eq!(after.created_at, before.created_at);
        assert!(after.updated_at > before.updated_at, "{before:?} {after:?}");
        assert_eq!(after.kind, before.kind);
        assert_eq!(after.parent, before.parent);
        assert_eq!(sn.stat(key).unwrap().labels, after.labels);

        // One label set, one removed, by field path.
        info.labels = labels(&[("l1", "changed"), ("l4", "v4")]);
        let after = sn
            .update(
                info.clone(),
                &["labels.l4".to_string(), "labels.l3".to_string()],
            )
            .unwrap();
        assert_eq!(after.labels, labels(&[("l1", "v1"), ("l4", "v4")]));

        info.labels = labels(&[("only", "this")]);
        let after = sn.update(info.clone(), &["labels".to_string()]).unwrap();
        assert_eq!(after.labels, labels(&[("only", "this")]));

        assert_eq!(
            kind_of(sn.update(info.clone(), &["kind".to_string()])),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(sn.stat(key).unwrap().labels, labels(&[("only", "this")]));

        info.labels = Labels::new();
        assert!(sn.update(info, &[]).unwrap().labels.is_empty());
        assert!(sn.stat(key).unwrap().labels.is_empty());
    }
    let mut missing = sn.stat("active").unwrap();
    missing.name = "missing".into();
    assert_eq!(kind_of(sn.update(missing, &[])), Some(ErrorKind::NotFound));
}

fn remove(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("parent", "", |_| {});
    sn.prepare("child", "parent", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.remove("parent")),
        Some(ErrorKind::FailedPrecondition)
    );
    sn.remove("child").unwrap();
    sn.view("view", "parent", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.remove("parent")),
        Some(ErrorKind::FailedPrecondition)
    );
    sn.remove("view").unwrap();
    sn.remove("parent").unwrap();
    assert_eq!(kind_of(sn.remove("parent")), Some(ErrorKind::NotFound));
    let mut n = 0;
    sn.walk(
        &mut |_| {
            n += 1;
            Ok(())
        },
        &[],
    )
    .unwrap();
    assert_eq!(n, 0);
}

fn remove_intermediate(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("base", "", |p| write(p, "base", b"1", 0o644));
    c.layer("middle", "base", |p| write(p, "middle", b"2", 0o644));
    sn.prepare("top", "middle", Labels::new()).unwrap();
    assert_eq!(
        kind_of(sn.remove("middle")),
        Some(ErrorKind::FailedPrecondition)
    );
    assert_eq!(
        kind_of(sn.remove("base")),
        Some(ErrorKind::FailedPrecondition)
    );
    let m = sn.mounts("top").unwrap();
    let tm = c.mount(&m);
    assert!(tm.path().join("base").exists() && tm.path().join("middle").exists());
    tm.unmount().unwrap();
    sn.remove("top").unwrap();
    sn.remove("middle").unwrap();
    sn.remove("base").unwrap();
}

fn collect_walk(sn: &dyn Snapshotter, filters: &[&str]) -> Result<Vec<String>> {
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    let mut names = Vec::new();
    sn.walk(
        &mut |i: Info| {
            names.push(i.name);
            Ok(())
        },
        &filters,
    )?;
    names.sort();
    Ok(names)
}

fn walk(c: &mut Ctx<'_>) {
    let sn = c.sn();
    let mut all = Vec::new();
    for i in 0..4 {
        let parent = if i == 0 {
            String::new()
        } else {
            format!("c{}", i - 1)
        };
        let l = labels(&[
            ("idx", &i.to_string()),
            ("even", if i % 2 == 0 { "yes" } else { "no" }),
        ]);
        sn.prepare(&format!("a{i}"), &parent, Labels::new())
            .unwrap();
        sn.commit(&format!("c{i}"), &format!("a{i}"), l).unwrap();
        all.push(format!("c{i}"));
    }
    sn.prepare("active", "c3", labels(&[("even", "yes")]))
        .unwrap();
    sn.view("view", "c1", Labels::new()).unwrap();
    all.push("active".into());
    all.push("view".into());
    all.sort();

    assert_eq!(collect_walk(sn, &[]).unwrap(), all);
    assert_eq!(
        collect_walk(sn, &["kind==committed"]).unwrap(),
        ["c0", "c1", "c2", "c3"]
    );
    assert_eq!(collect_walk(sn, &["kind==active"]).unwrap(), ["active"]);
    assert_eq!(collect_walk(sn, &["kind==view"]).unwrap(), ["view"]);
    assert_eq!(collect_walk(sn, &["name==c2"]).unwrap(), ["c2"]);
    assert_eq!(collect_walk(sn, &["parent==c1"]).unwrap(), ["c2", "view"]);
    assert_eq!(
        collect_walk(sn, &["labels.even==yes"]).unwrap(),
        ["active", "c0", "c2"]
    );
    assert_eq!(
        collect_walk(sn, &["labels.even==yes,kind==committed"]).unwrap(),
        ["c0", "c2"]
    );
    assert_eq!(
        collect_walk(sn, &["labels.idx"]).unwrap(),
        ["c0", "c1", "c2", "c3"]
    );
    // Several filters are OR'd.
    assert_eq!(
        collect_walk(sn, &["name==c0", "kind==view"]).unwrap(),
        ["c0", "view"]
    );
    assert_eq!(collect_walk(sn, &["name~=^c[12]$"]).unwrap(), ["c1", "c2"]);
    assert_eq!(
        collect_walk(sn, &["name!=c0,kind==committed"]).unwrap(),
        ["c1", "c2", "c3"]
    );
    assert!(collect_walk(sn, &["name==nothing"]).unwrap().is_empty());
    assert_eq!(
        collect_walk(sn, &["name=="]).map_err(|e| e.kind()).err(),
        Some(ErrorKind::InvalidArgument)
    );
    // An error from the callback stops the walk and is returned.
    let mut seen = 0;
    let err = sn
        .walk(
            &mut |_| {
                seen += 1;
                Err(stowage_core_types::Error::aborted("stop"))
            },
            &[],
        )
        .unwrap_err();
    assert_eq!((err.kind(), seen), (ErrorKind::Aborted, 1));
}

fn stat_in_walk(c: &mut Ctx<'_>) {
    let sn = c.sn();
    sn.prepare("c1-a", "", Labels::new()).unwrap();
    sn.commit("c1", "c1-a", labels(&[("x", "1")])).unwrap();
    sn.prepare("c2-a", "c1", Labels::new()).unwrap();
    sn.commit("c2", "c2-a", Labels::new()).unwrap();
    sn.prepare("a1", "c2", Labels::new()).unwrap();
    sn.view("v1", "c2", Labels::new()).unwrap();
    let mut n = 0;
    sn.walk(
        &mut |info| {
            n += 1;
            let again = sn.stat(&info.name)?;
            assert_eq!(again, info);
            Ok(())
        },
        &[],
    )
    .unwrap();
    assert_eq!(n, 4);
}

fn layer_file_update(c: &mut Ctx<'_>) {
    // Same sizes, different content and modes: a snapshotter must not lose an update that
    // only differs in content or mode.
    let l1 = |p: &Path| {
        mkdir(p, "etc", 0o700);
        write(p, "etc/hosts", b"mydomain 10.0.0.1", 0o644);
        write(p, "etc/profile", b"PATH=/usr/bin", 0o644);
    };
    let l2 = |p: &Path| {
        write(p, "etc/hosts", b"mydomain 10.0.0.2", 0o644);
        write(p, "etc/profile", b"PATH=/usr/bin", 0o666);
        mkdir(p, "root", 0o700);
        write(p, "root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644);
    };
    c.check_layers(&[&l1, &l2]);
}

fn remove_directory_in_lower_layer(c: &mut Ctx<'_>) {
    let l1 = |p: &Path| {
        mkdir(p, "lib", 0o700);
        write(p, "lib/hidden", b"", 0o644);
    };
    let l2 = |p: &Path| {
        remove_all(p, "lib");
        mkdir(p, "lib", 0o700);
        write(p, "lib/not-hidden", b"", 0o644);
    };
    let l3 = |p: &Path| write(p, "lib/newfile", b"", 0o644);
    c.check_layers(&[&l1, &l2, &l3]);
}

fn chown(c: &mut Ctx<'_>) {
    let l1 = |p: &Path| {
        mkdir(p, "opt", 0o700);
        mkdir(p, "opt/a", 0o700);
        mkdir(p, "opt/a/b", 0o700);
        write(p, "opt/a/b/file.txt", b"hello", 0o644);
    };
    let l2 = |p: &Path| {
        for d in ["opt", "opt/a", "opt/a/b", "opt/a/b/file.txt"] {
            set_owner(p, d, 1, 1);
        }
    };
    c.check_layers(&[&l1, &l2]);
}

fn directory_permission_on_commit(c: &mut Ctx<'_>) {
    let l1 = |p: &Path| {
        for d in ["dir1", "dir2", "dir3", "dir4", "dir5"] {
            mkdir(p, d, 0o700);
        }
        write(p, "dir4/f1", b"...", 0o644);
        write(p, "dir5/f1", b"...", 0o644);
        for d in ["dir1", "dir2", "dir3", "dir5", "dir5/f1"] {
            set_owner(p, d, 1, 1);
        }
    };
    let l2 = |p: &Path| {
        set_owner(p, "dir2", 0, 0);
        remove_all(p, "dir3");
        set_owner(p, "dir4", 1, 1);
        set_owner(p, "dir4/f1", 1, 1);
    };
    let l3 = |p: &Path| {
        mkdir(p, "dir3", 0o700);
        set_owner(p, "dir3", 1, 1);
        remove_all(p, "dir5");
        mkdir(p, "dir5", 0o700);
        set_owner(p, "dir5", 1, 1);
    };
    c.check_layers(&[&l1, &l2, &l3]);
}

fn deleted_files_in_child(c: &mut Ctx<'_>) {
    let l1 = |p: &Path| {
        write(p, "foo", b"foo\n", 0o777);
        write(p, "foobar", b"foobar\n", 0o777);
    };
    let l2 = |p: &Path| remove_all(p, "foobar");
    let l3 = |_: &Path| {};
    c.check_layers(&[&l1, &l2, &l3]);
}

fn move_file_from_lower_layer(c: &mut Ctx<'_>) {
    let l1 = |p: &Path| {
        mkdir(p, "dir1", 0o700);
        write(p, "dir1/f1", b"Hello", 0o644);
        mkdir(p, "dir2", 0o700);
        write(p, "dir2/f2", b"...", 0o644);
    };
    let l2 = |p: &Path| {
        mkdir(p, "dir3", 0o700);
        write(p, "dir3/f1", b"Hello", 0o644);
        remove_all(p, "dir1");
        fs::hard_link(p.join("dir2/f2"), p.join("dir3/f2")).unwrap();
        remove_all(p, "dir2/f2");
        fs::rename(p.join("dir3/f1"), p.join("dir2/moved")).unwrap();
    };
    c.check_layers(&[&l1, &l2]);
}

fn special_files(c: &mut Ctx<'_>) {
    // Kinds of files, special mode bits and hardlinks survive layering.
    let l1 = |p: &Path| {
        write(p, "setuid", b"#!/bin/sh\n", 0o4755);
        write(p, "setgid", b"x", 0o2711);
        mkdir(p, "sticky", 0o1777);
        write(p, "linked", b"shared", 0o640);
        fs::hard_link(p.join("linked"), p.join("linked2")).unwrap();
        std::os::unix::fs::symlink("/nowhere/absolute", p.join("dangling")).unwrap();
        let fifo =
            std::ffi::CString::new(p.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: `fifo` is a NUL-terminated path alive for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let dev =
            std::ffi::CString::new(p.join("null").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: `dev` is a NUL-terminated path alive for the call.
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
    };
    // Writing to one name of a lower hardlink copies only that name up in overlayfs (with
    // index=off, as containerd mounts it), so the child leaves the links alone and checks
    // they survive untouched.
    let l2 = |p: &Path| {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(p.join("setgid"))
            .unwrap();
        f.write_all(b" and more").unwrap();
        write(p, "new", b"n", 0o600);
    };
    c.check_layers(&[&l1, &l2]);
}

fn view_readonly(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("committed", "", |p| write(p, "f", b"x", 0o644));
    c.layer("second", "committed", |p| write(p, "g", b"y", 0o644));
    for parent in ["committed", "second"] {
        let key = format!("view-{parent}");
        let m = sn.view(&key, parent, Labels::new()).unwrap();
        assert!(
            m.iter().all(|m| m.is_readonly() || m.kind == "overlay"),
            "{m:?}"
        );
        let tm = c.mount(&m);
        let err = fs::write(tm.path().join("testfile"), b"testcontent").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert!(fs::write(tm.path().join("f"), b"changed").is_err());
        tm.unmount().unwrap();
        sn.remove(&key).unwrap();
    }
    assert_eq!(
        c.with_view("committed", |p| fs::read(p.join("f")).unwrap()),
        b"x"
    );
    sn.remove("second").unwrap();
    sn.remove("committed").unwrap();
}

fn root_permission(c: &mut Ctx<'_>) {
    c.prepare_with("preparing", "", |p| {
        let mode = fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755, "root of a new snapshot is 0{mode:o}");
    });
}

fn layers_128(c: &mut Ctx<'_>) {
    let sn = c.sn();
    let mut parent = String::new();
    for i in 0..128 {
        let name = format!("layer-{i}");
        c.layer(&name, &parent, |p| {
            write(p, &format!("file-{i}"), i.to_string().as_bytes(), 0o644);
            write(p, "latest", i.to_string().as_bytes(), 0o644);
        });
        parent = name;
    }
    let m = sn.prepare("top", &parent, Labels::new()).unwrap();
    let tm = c.mount(&m);
    let p = tm.path();
    for i in 0..128 {
        assert_eq!(
            fs::read(p.join(format!("file-{i}"))).unwrap(),
            i.to_string().as_bytes()
        );
    }
    assert_eq!(fs::read(p.join("latest")).unwrap(), b"127");
    write(p, "top-file", b"top", 0o644);
    tm.unmount().unwrap();
    let got = c.with_view("layer-127", tree);
    assert_eq!(got.len(), 1 + 128 + 1, "root, 128 files, latest");
}

fn usage(c: &mut Ctx<'_>) {
    let sn = c.sn();
    let m = sn.prepare("active", "", Labels::new()).unwrap();
    let empty = sn.usage("active").unwrap();
    let tm = c.mount(&m);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 13) as u8).collect();
    write(tm.path(), "big", &data, 0o644);
    fs::hard_link(tm.path().join("big"), tm.path().join("big-link")).unwrap();
    tm.unmount().unwrap();
    let used = sn.usage("active").unwrap();
    assert_eq!(
        used.inodes,
        empty.inodes + 1,
        "one new inode, hardlink counted once: {used:?}"
    );
    assert!(
        used.size >= empty.size + (1 << 20) && used.size < empty.size + (1 << 20) + (1 << 16),
        "{empty:?} -> {used:?}"
    );
    sn.commit("committed", "active", Labels::new()).unwrap();
    assert_eq!(
        sn.usage("committed").unwrap(),
        used,
        "usage recorded at commit"
    );
    assert_eq!(kind_of(sn.usage("missing")), Some(ErrorKind::NotFound));

    // A child's usage is measured on its own directory: how much it holds depends on the
    // snapshotter (overlay: only the changes; native: a full copy), but it is live.
    let m = sn.prepare("child", "committed", Labels::new()).unwrap();
    let before = sn.usage("child").unwrap();
    let tm = c.mount(&m);
    write(tm.path(), "small", &[7u8; 20_000], 0o644);
    tm.unmount().unwrap();
    let after = sn.usage("child").unwrap();
    assert_eq!(after.inodes, before.inodes + 1, "{before:?} -> {after:?}");
    assert!(
        after.size >= before.size + 20_000,
        "{before:?} -> {after:?}"
    );
}

fn cleanup(c: &mut Ctx<'_>) {
    let sn = c.sn();
    c.layer("keep", "", |p| write(p, "kept", b"data", 0o644));
    c.layer("drop", "keep", |p| write(p, "dropped", b"data", 0o644));
    sn.prepare("active", "keep", Labels::new()).unwrap();
    sn.remove("drop").unwrap();
    sn.cleanup().unwrap();
    sn.cleanup().unwrap();
    assert_eq!(
        c.with_view("keep", |p| fs::read(p.join("kept")).unwrap()),
        b"data"
    );
    let m = sn.mounts("active").unwrap();
    let tm = c.mount(&m);
    assert!(tm.path().join("kept").exists());
    tm.unmount().unwrap();
    assert_eq!(collect_walk(sn, &[]).unwrap(), ["active", "keep"]);
}

fn reopen(c: &mut Ctx<'_>) {
    c.layer("base", "", |p| write(p, "f", b"persisted", 0o644));
    c.sn()
        .prepare("active", "base", labels(&[("k", "v")]))
        .unwrap();
    let walk_all = |sn: &dyn Snapshotter| {
        let mut v = Vec::new();
        sn.walk(
            &mut |i| {
                v.push(i);
                Ok(())
            },
            &[],
        )
        .unwrap();
        v
    };
    let infos_before = walk_all(c.sn());
    let mounts_before = c.sn().mounts("active").unwrap();
    let base_usage = c.sn().usage("base").unwrap();

    c.reopen();
    let sn = c.sn();
    assert_eq!(walk_all(sn), infos_before);
    assert_eq!(sn.mounts("active").unwrap(), mounts_before);
    assert_eq!(sn.usage("base").unwrap(), base_usage);
    assert_eq!(
        c.with_view("base", |p| fs::read(p.join("f")).unwrap()),
        b"persisted"
    );
    // Ids keep growing after a reopen: a new snapshot never reuses an old directory.
    c.layer("after", "base", |p| write(p, "g", b"new", 0o644));
    assert_eq!(
        c.with_view("base", |p| fs::read(p.join("f")).unwrap()),
        b"persisted"
    );
    assert_eq!(
        c.with_view("after", |p| fs::read(p.join("g")).unwrap()),
        b"new"
    );
}

fn concurrent(c: &mut Ctx<'_>) {
    // Several writers at once: every operation succeeds, no two snapshots share a directory.
    c.layer("base", "", |p| write(p, "base", b"base", 0o644));
    let sn = c.sn();
    let work = c.work.as_path();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..6 {
                    let name = format!("t{t}-{i}");
                    let key = format!("{name}-active");
                    let m = sn.prepare(&key, "base", Labels::new()).unwrap();
                    let tm = TempMount::new_in(work, &m).unwrap();
                    write(tm.path(), "who", name.as_bytes(), 0o644);
                    tm.unmount().unwrap();
                    sn.commit(&name, &key, Labels::new()).unwrap();
                    sn.view(&format!("{name}-v"), &name, Labels::new()).unwrap();
                    let mut info = sn.stat(&name).unwrap();
                    info.labels = labels(&[("thread", &t.to_string())]);
                    sn.update(info, &[]).unwrap();
                }
            });
        }
    });
    for t in 0..4 {
        for i in 0..6 {
            let name = format!("t{t}-{i}");
            let (who, base) = c.with_view(&name, |p| {
                (
                    fs::read(p.join("who")).unwrap(),
                    fs::read(p.join("base")).unwrap(),
                )
            });
            assert_eq!((who, base), (name.clone().into_bytes(), b"base".to_vec()));
            assert_eq!(
                c.sn().stat(&name).unwrap().labels,
                labels(&[("thread", &t.to_string())])
            );
        }
    }
    assert_eq!(collect_walk(c.sn(), &["kind==view"]).unwrap().len(), 24);
    assert_eq!(
        collect_walk(c.sn(), &["labels.thread==2"]).unwrap().len(),
        6
    );
}
