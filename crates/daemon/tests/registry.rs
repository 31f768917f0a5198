//! Acceptance test of registry pulls: Debian's `docker-registry` serves the generated fixtures
//! (pushed with `skopeo`), and the real `ctr images pull --plain-http` fetches them into
//! stowaged, unpacks them into the overlayfs and native snapshotters, and the mounted rootfs,
//! content labels and image checks are what containerd 1.6 gives.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::{require_ctr, Stowaged};
use stowage_tests::containerd::Containerd;
use stowage_tests::fixtures::Generated;
use stowage_tests::registry::Registry;

/// True when ctr, docker-registry and skopeo are installed; otherwise panics naming the
/// missing Debian packages, unless STOWAGE_SKIP_EXTERNAL=1.
fn require_tools() -> bool {
    if !require_ctr(true) {
        return false;
    }
    stowage_tests::containerd::require(
        &["docker-registry", "skopeo"],
        "apt-get install docker-registry skopeo",
    )
}

/// Starts a private registry, failing the test with its error.
fn start_registry() -> Registry {
    Registry::start().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Pushes a fixture layout as `fixtures/<name>:latest` (every platform of an index).
fn push(reg: &Registry, f: &Generated) -> String {
    reg.push(&f.layout, &format!("fixtures/{}", f.name))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn fixture(name: &str) -> &'static Generated {
    common::fixtures()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// Digests (hex) of the blobs in an OCI layout: exactly the image's manifests, configs and
/// layers.
fn layout_blobs(layout: &Path) -> BTreeSet<String> {
    blob_files(&layout.join("blobs/sha256"))
}

fn blob_files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn store_blobs(d: &Stowaged) -> BTreeSet<String> {
    blob_files(&d.root.join("io.containerd.content.v1.content/blobs/sha256"))
}

/// The `ctr images check` line of `reference`.
fn check_line(d: &Stowaged, sn: &str, reference: &str) -> String {
    let out = d.ok(&["images", "check", "--snapshotter", sn]);
    out.lines()
        .find(|l| l.starts_with(&format!("{reference} ")))
        .unwrap_or_else(|| panic!("{reference} not in images check:\n{out}"))
        .to_owned()
}

/// `ctr images check` counts the config and the layers of a single-manifest image: every blob
/// of its layout but the manifest; all present, and unpacked.
fn assert_complete(d: &Stowaged, sn: &str, reference: &str, f: &Generated) {
    let line = check_line(d, sn, reference);
    let n = layout_blobs(&f.layout).len() - 1;
    assert!(line.contains(&format!(" complete ({n}/{n}) ")), "{line}");
    assert!(line.trim_end().ends_with("true"), "not unpacked: {line}");
}

fn assert_listed(d: &Stowaged, reference: &str, digest: &str) {
    let ls = d.ok(&["images", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&format!("{reference} ")))
        .unwrap_or_else(|| panic!("{reference} not in images ls:\n{ls}"));
    assert!(line.contains(digest), "expected {digest} in: {line}");
}

/// Every blob of the layout is in the content store and carries the distribution source label
/// naming the registry host and repository it came from.
fn assert_source_labels(d: &Stowaged, reg: &Registry, f: &Generated, blobs: &BTreeSet<String>) {
    let ls = d.ok(&["content", "ls"]);
    // containerd's client keys the label by the host name without the port (url.Hostname).
    let host = reg.host.split(':').next().unwrap();
    let label = format!(
        "containerd.io/distribution.source.{host}=fixtures/{}",
        f.name
    );
    for hex in blobs {
        let line = ls
            .lines()
            .find(|l| l.starts_with(&format!("sha256:{hex}")))
            .unwrap_or_else(|| panic!("blob sha256:{hex} not in content ls:\n{ls}"));
        assert!(line.contains(&label), "expected {label} on: {line}");
    }
}

/// Output lines with whitespace runs collapsed (column widths differ with content).
fn words(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The `ctr: ...` error line, without the timestamped log lines before it.
fn error_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| l.starts_with("ctr: ")).collect()
}

/// Mounts `reference` read-only, calls `check` on the mount point, unmounts.
fn with_mount(d: &Stowaged, sn: &str, reference: &str, platform: &str, check: impl FnOnce(&Path)) {
    let target = tempfile::tempdir().unwrap();
    let t = target.path().to_str().unwrap();
    d.ok(&[
        "images",
        "mount",
        "--snapshotter",
        sn,
        "--platform",
        platform,
        reference,
        t,
    ]);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(target.path())));
    d.ok(&["images", "unmount", "--rm", t]);
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn pull(d: &Stowaged, sn: &str, reference: &str, platform: &[&str]) {
    let mut args = vec!["images", "pull", "--plain-http", "--snapshotter", sn];
    args.extend_from_slice(platform);
    args.push(reference);
    d.ok(&args);
}

fn pull_single_platform_images(sn: &str) {
    if !require_tools() {
        return;
    }
    let reg = start_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();

    let comp = fixture("compressions");
    let r = push(&reg, comp);
    pull(&d, sn, &r, &[]);
    assert_listed(&d, &r, &comp.manifest_digest);
    assert_complete(&d, sn, &r, comp);
    with_mount(&d, sn, &r, "linux/amd64", |m| {
        for tag in ["gz", "zst", "plain"] {
            assert_eq!(
                read(&m.join(tag).join("hello")),
                format!("hello from {tag}\n")
            );
            assert_eq!(
                fs::metadata(m.join(tag).join("blob")).unwrap().len(),
                100_000
            );
        }
    });
    let comp_blobs = layout_blobs(&comp.layout);
    assert_source_labels(&d, &reg, comp, &comp_blobs);

    let wh = fixture("whiteouts");
    let r = push(&reg, wh);
    pull(&d, sn, &r, &[]);
    assert_listed(&d, &r, &wh.manifest_digest);
    assert_complete(&d, sn, &r, wh);
    with_mount(&d, sn, &r, "linux/amd64", |m| {
        assert_eq!(read(&m.join("keep/c")), "upper c\n");
        assert!(!m.join("keep/a").exists(), "keep/a survived its whiteout");
        assert!(!m.join("keep/b").exists(), "keep/b survived its whiteout");
        assert_eq!(
            read(&m.join("opaque/new")),
            "added with the opaque marker\n"
        );
        assert!(
            !m.join("opaque/old1").exists(),
            "opaque/old1 under opaque dir"
        );
        assert!(
            !m.join("opaque/olddir").exists(),
            "opaque/olddir under opaque dir"
        );
        assert_eq!(read(&m.join("gone/again")), "recreated after a whiteout\n");
        assert!(
            !m.join("gone/x").exists(),
            "gone/x survived its dir's whiteout"
        );
        assert_eq!(read(&m.join("replaced/inside")), "now a dir\n");
        assert_eq!(read(&m.join("dir-to-file")), "now a file\n");
        assert!(!m.join("hardlink-src").exists());
        assert_eq!(read(&m.join("hardlink-dst")), "linked\n");
        for name in [".wh.b", ".wh.a", ".wh..wh..opq"] {
            assert!(!m.join("keep").join(name).exists(), "{name} leaked");
            assert!(!m.join("opaque").join(name).exists(), "{name} leaked");
        }
    });
    let wh_blobs = layout_blobs(&wh.layout);
    assert_source_labels(&d, &reg, wh, &wh_blobs);

    // Nothing but the two images' blobs was stored.
    let expected: BTreeSet<String> = comp_blobs.union(&wh_blobs).cloned().collect();
    assert_eq!(store_blobs(&d), expected);
}

#[test]
fn pull_into_overlayfs() {
    pull_single_platform_images("overlayfs");
}

#[test]
fn pull_into_native() {
    pull_single_platform_images("native");
}

#[test]
fn pull_one_platform_and_all_platforms_of_an_index() {
    if !require_tools() {
        return;
    }
    let reg = start_registry();
    let mp = fixture("multiplatform");
    let r = push(&reg, mp);
    let sn = "overlayfs";
    let manifests: serde_like::Index = serde_like::index(&mp.layout, &mp.manifest_digest);

    // One platform: only the index, the arm64 manifest, its config and layer are fetched.
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    pull(&d, sn, &r, &["--platform", "linux/arm64"]);
    assert_listed(&d, &r, &mp.manifest_digest);
    // `ctr images check` judges the host's platform, whose manifest was not fetched: compare
    // status, output and error with containerd 1.6 pulling the same way.
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&cdir.path().join("root"), cdir.path()).unwrap();
    let creg = common::ctr_at(
        &c.address,
        &[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            sn,
            "--platform",
            "linux/arm64",
            &r,
        ],
        None,
    )
    .unwrap();
    assert!(creg.ok, "containerd pull: {}\n{}", creg.stderr, c.log());
    let check = ["images", "check", "--snapshotter", sn];
    let ours = d.ctr(&check).unwrap();
    let theirs = common::ctr_at(&c.address, &check, None).unwrap();
    assert_eq!(
        ours.ok, theirs.ok,
        "ours: {}\ntheirs: {}",
        ours.stderr, theirs.stderr
    );
    assert_eq!(words(&ours.stdout), words(&theirs.stdout));
    assert_eq!(error_lines(&ours.stderr), error_lines(&theirs.stderr));
    drop(c);
    with_mount(&d, sn, &r, "linux/arm64", |m| {
        assert_eq!(read(&m.join("arm64/hello")), "hello from arm64\n");
        assert!(!m.join("amd64").exists());
    });
    let arm64 = manifests.blobs_of("arm64");
    let mut expected: BTreeSet<String> = arm64.clone();
    expected.insert(mp.manifest_digest.trim_start_matches("sha256:").to_owned());
    assert_eq!(store_blobs(&d), expected, "blobs fetched for linux/arm64");
    assert_source_labels(&d, &reg, mp, &expected);
    drop(d);

    // All platforms: every blob, complete, and each platform mounts its own tree.
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    pull(&d, sn, &r, &["--all-platforms"]);
    assert_listed(&d, &r, &mp.manifest_digest);
    // The host's platform is judged: its config and layer.
    let line = check_line(&d, sn, &r);
    assert!(line.contains(" complete (2/2) "), "{line}");
    assert!(line.trim_end().ends_with("true"), "not unpacked: {line}");
    for (platform, arch) in [
        ("linux/amd64", "amd64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/arm/v7", "arm"),
    ] {
        with_mount(&d, sn, &r, platform, |m| {
            assert_eq!(
                read(&m.join(arch).join("hello")),
                format!("hello from {arch}\n")
            );
        });
    }
    let all = layout_blobs(&mp.layout);
    assert_eq!(store_blobs(&d), all);
    assert_source_labels(&d, &reg, mp, &all);
}

#[test]
fn concurrent_pulls_of_one_image_store_each_blob_once() {
    if !require_tools() {
        return;
    }
    let reg = start_registry();
    let f = fixture("compressions");
    let r = push(&reg, f);
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let args = [
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "overlayfs",
        r.as_str(),
    ];
    let runs: Vec<common::Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| common::ctr_at(&d.address, &args, None).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert!(
            run.ok,
            "concurrent pull failed: {}\n--- stowaged log ---\n{}",
            run.stderr,
            d.log()
        );
    }
    assert_listed(&d, &r, &f.manifest_digest);
    assert_complete(&d, "overlayfs", &r, f);
    let blobs = layout_blobs(&f.layout);
    assert_eq!(store_blobs(&d), blobs, "one file per blob");
    // No ingest was left behind by the pull that lost the race.
    let ingest = d.root.join("io.containerd.content.v1.content/ingest");
    if ingest.exists() {
        assert_eq!(
            fs::read_dir(&ingest).unwrap().count(),
            0,
            "leftover ingests"
        );
    }
    with_mount(&d, "overlayfs", &r, "linux/amd64", |m| {
        assert_eq!(read(&m.join("zst/hello")), "hello from zst\n");
    });
}

/// Reads the fixture's own index to know which blobs belong to which platform.
mod serde_like {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// `(architecture, manifest hex, blobs of that manifest incl. itself)`.
    pub struct Index(Vec<(String, BTreeSet<String>)>);

    impl Index {
        pub fn blobs_of(&self, arch: &str) -> BTreeSet<String> {
            self.0
                .iter()
                .find(|(a, _)| a == arch)
                .unwrap_or_else(|| panic!("no {arch} in index"))
                .1
                .clone()
        }
    }

    fn json(layout: &Path, digest: &str) -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    pub fn index(layout: &Path, digest: &str) -> Index {
        let idx = json(layout, digest);
        let mut out = Vec::new();
        for m in idx["manifests"].as_array().unwrap() {
            let arch = m["platform"]["architecture"].as_str().unwrap().to_owned();
            let md = m["digest"].as_str().unwrap();
            let man = json(layout, md);
            let mut blobs = BTreeSet::new();
            blobs.insert(md.trim_start_matches("sha256:").to_owned());
            let cfg = man["config"]["digest"].as_str().unwrap();
            blobs.insert(cfg.trim_start_matches("sha256:").to_owned());
            for l in man["layers"].as_array().unwrap() {
                let d = l["digest"].as_str().unwrap();
                blobs.insert(d.trim_start_matches("sha256:").to_owned());
            }
            out.push((arch, blobs));
        }
        Index(out)
    }
}
