//! Compatibility with the real containerd 1.6: a root written by containerd reads the same in
//! stowage, and a root written by stowage reads the same in containerd.
//!
//! Needs root (overlay mounts), `containerd` and `ctr`; fails saying what is missing unless
//! `STOWAGE_SKIP_EXTERNAL=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_content::LocalStore;
use stowage_core_types::content::{write_blob, Manager};
use stowage_core_types::snapshot::{Info as SnapInfo, Kind, Snapshotter};
use stowage_core_types::{Descriptor, Digest, Labels};
use stowage_metadata::{format_rfc3339, Any, Container, Db, Image, Options, SPEC_TYPE_URL};
use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_tests::containerd::{require, Containerd};
use stowage_tests::fixtures;

const CONTENT_DIR: &str = "io.containerd.content.v1.content";
const OVERLAY_DIR: &str = "io.containerd.snapshotter.v1.overlayfs";

fn externals() -> bool {
    require(&["containerd", "ctr"], "apt-get install containerd")
        && require(
            &["go"],
            "apt-get install golang-go golang-github-containerd-containerd-dev",
        )
        && stowage_snapshots_storage::testsuite::require_root()
}

/// Builds tests/godump (containerd's own metadata package reading a meta.db) once.
fn godump() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let gopath = "/usr/share/gocode";
        let pkg = Path::new(gopath).join("src/github.com/containerd/containerd/metadata");
        assert!(
            pkg.exists(),
            "containerd's Go source is missing at {}: apt-get install golang-github-containerd-containerd-dev",
            pkg.display()
        );
        // Under cargo's per-target temp dir, so Go's build cache survives between runs.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("godump");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("godump");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/godump/main.go");
        let out = std::process::Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.join("cache"))
            .output()
            .expect("run go build");
        assert!(
            out.status.success(),
            "go build of godump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
    .clone()
}

/// containerd's reading of `root`'s meta.db, sorted lines.
fn go_lines(root: &Path) -> Vec<String> {
    let out = std::process::Command::new(godump())
        .arg(stowage_metadata::db_path(root))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "godump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn kv(m: &Labels) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// stowage's reading of the same, in godump's line format.
fn stowage_lines(db: &Db) -> Vec<String> {
    let t = format_rfc3339;
    let mut out = Vec::new();
    for ns in db.list_namespaces().unwrap() {
        out.push(format!(
            "namespace {ns} {}",
            kv(&db.namespace_labels(&ns).unwrap())
        ));
        for i in db.images(&ns).unwrap().list(&[]).unwrap() {
            out.push(format!(
                "image {ns} {} {} {} {} {} {} {} {}",
                i.name,
                i.target.media_type,
                i.target.digest,
                i.target.size,
                t(i.created_at),
                t(i.updated_at),
                kv(&i.labels),
                kv(&i.target.annotations)
            ));
        }
        db.content_store(&ns, None)
            .unwrap()
            .walk(
                &mut |i| {
                    out.push(format!(
                        "content {ns} {} {} {} {} {}",
                        i.digest,
                        i.size,
                        t(i.created_at),
                        t(i.updated_at),
                        kv(&i.labels)
                    ));
                    Ok(())
                },
                &[],
            )
            .unwrap();
        let leases = db.leases(&ns).unwrap();
        for l in leases.list(&[]).unwrap() {
            out.push(format!(
                "lease {ns} {} {} {}",
                l.id,
                t(l.created_at),
                kv(&l.labels)
            ));
            for r in leases.list_resources(&l.id).unwrap() {
                out.push(format!("lease-resource {ns} {} {} {}", l.id, r.kind, r.id));
            }
        }
        for c in db.containers(&ns).unwrap().list(&[]).unwrap() {
            let opts = c
                .runtime
                .options
                .as_ref()
                .map(|o| o.type_url.clone())
                .unwrap_or_else(|| "-".into());
            let spec = c
                .spec
                .as_ref()
                .map(|s| format!("{}:{}", s.type_url, s.value.len()))
                .unwrap_or_else(|| "-".into());
            let ext: Vec<String> = c
                .extensions
                .iter()
                .map(|(k, v)| format!("{k}={}:{}", v.type_url, v.value.len()))
                .collect();
            out.push(format!(
                "container {ns} {} {} {} {opts} {} {} {spec} {} {} {} [{}]",
                c.id,
                c.image,
                c.runtime.name,
                c.snapshotter,
                c.snapshot_key,
                t(c.created_at),
                t(c.updated_at),
                kv(&c.labels),
                ext.join(",")
            ));
        }
    }
    out.sort();
    out
}

fn open_stowage(root: &Path) -> (Db, Arc<LocalStore>, Arc<OverlaySnapshotter>) {
    let content = Arc::new(LocalStore::open(root.join(CONTENT_DIR)).unwrap());
    let overlay = Arc::new(OverlaySnapshotter::new(root.join(OVERLAY_DIR)).unwrap());
    let db = Db::open(
        root,
        Options {
            content: Some(content.clone()),
            snapshotters: BTreeMap::from([(
                "overlayfs".to_string(),
                overlay.clone() as Arc<dyn Snapshotter>,
            )]),
            ..Default::default()
        },
    )
    .unwrap();
    (db, content, overlay)
}

/// Rows of a ctr table (header skipped), split on runs of spaces or tabs.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn parse_labels(s: Option<&String>) -> Labels {
    let mut out = Labels::new();
    // ctr prints `-` for no labels.
    if let Some(s) = s.filter(|s| s.as_str() != "-") {
        for kv in s.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secs(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap().as_secs())
}

type SnapView = (String, String, Labels, String, String);

/// Everything ctr shows about a root, as comparable values.
#[derive(Debug, PartialEq, Eq)]
struct View {
    namespaces: BTreeMap<String, Labels>,
    /// ns → image name → (media type, digest, labels)
    images: BTreeMap<String, BTreeMap<String, (String, String, Labels)>>,
    /// ns → digest → labels
    content: BTreeMap<String, BTreeMap<String, Labels>>,
    /// ns → lease id → (created at, seconds, RFC 3339; labels)
    leases: BTreeMap<String, BTreeMap<String, (String, Labels)>>,
    /// ns → container id → (image, runtime, snapshotter, key, labels, created, updated, spec type)
    containers: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// ns → key → (parent, kind)
    /// ns → key → (parent, kind, labels, created, updated)
    snapshots: BTreeMap<String, BTreeMap<String, SnapView>>,
}

fn ctr_view(c: &Containerd) -> View {
    let run = |args: &[&str]| c.ctr(args).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    let mut v = View {
        namespaces: BTreeMap::new(),
        images: BTreeMap::new(),
        content: BTreeMap::new(),
        leases: BTreeMap::new(),
        containers: BTreeMap::new(),
        snapshots: BTreeMap::new(),
    };
    for r in rows(&run(&["namespaces", "ls"])) {
        v.namespaces.insert(r[0].clone(), parse_labels(r.get(1)));
    }
    let namespaces: Vec<String> = v.namespaces.keys().cloned().collect();
    for ns in &namespaces {
        let n = ns.as_str();
        let imgs = rows(&run(&["-n", n, "images", "ls"]))
            .into_iter()
            .map(|r| {
                (
                    r[0].clone(),
                    (r[1].clone(), r[2].clone(), parse_labels(r.get(6))),
                )
            })
            .collect();
        v.images.insert(ns.clone(), imgs);
        let content = run(&["-n", n, "content", "ls"])
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<String> = l
                    .split('\t')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                (cols[0].clone(), parse_labels(cols.get(3)))
            })
            .collect();
        v.content.insert(ns.clone(), content);
        let leases = rows(&run(&["-n", n, "leases", "ls"]))
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), parse_labels(r.get(2)))))
            .collect();
        v.leases.insert(ns.clone(), leases);
        let mut cs = BTreeMap::new();
        for r in rows(&run(&["-n", n, "containers", "ls"])) {
            let info: serde_json::Value =
                serde_json::from_str(&run(&["-n", n, "containers", "info", &r[0]])).unwrap();
            let s = |p: &str| {
                info.pointer(p)
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let labels = info["Labels"].as_object().map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            cs.insert(
                r[0].clone(),
                vec![
                    s("/Image"),
                    s("/Runtime/Name"),
                    s("/Snapshotter"),
                    s("/SnapshotKey"),
                    labels.unwrap_or_default(),
                    s("/CreatedAt"),
                    s("/UpdatedAt"),
                    s("/Runtime/Options/type_url"),
                    info["Spec"]["ociVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ],
            );
        }
        v.containers.insert(ns.clone(), cs);
        let mut snaps = BTreeMap::new();
        for r in rows(&run(&[
            "-n",
            n,
            "snapshots",
            "--snapshotter",
            "overlayfs",
            "ls",
        ])) {
            let info: serde_json::Value = serde_json::from_str(&run(&[
                "-n",
                n,
                "snapshots",
                "--snapshotter",
                "overlayfs",
                "info",
                &r[0],
            ]))
            .unwrap();
            let s = |k: &str| info[k].as_str().unwrap_or("").to_string();
            let labels: Labels = info["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            snaps.insert(
                r[0].clone(),
                (s("Parent"), s("Kind"), labels, s("Created"), s("Updated")),
            );
        }
        v.snapshots.insert(ns.clone(), snaps);
    }
    v
}

fn kind_name(k: Kind) -> String {
    match k {
        Kind::Active => "Active",
        Kind::View => "View",
        Kind::Committed => "Committed",
        Kind::Unknown => "Unknown",
    }
    .to_string()
}

fn stowage_view(db: &Db) -> View {
    let mut v = View {
        namespaces: BTreeMap::new(),
        images: BTreeMap::new(),
        content: BTreeMap::new(),
        leases: BTreeMap::new(),
        containers: BTreeMap::new(),
        snapshots: BTreeMap::new(),
    };
    for ns in db.list_namespaces().unwrap() {
        v.namespaces
            .insert(ns.clone(), db.namespace_labels(&ns).unwrap());
        let imgs = db
            .images(&ns)
            .unwrap()
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|i| {
                (
                    i.name,
                    (i.target.media_type, i.target.digest.to_string(), i.labels),
                )
            })
            .collect();
        v.images.insert(ns.clone(), imgs);
        let mut content = BTreeMap::new();
        db.content_store(&ns, None)
            .unwrap()
            .walk(
                &mut |i| {
                    content.insert(i.digest.to_string(), i.labels);
                    Ok(())
                },
                &[],
            )
            .unwrap();
        v.content.insert(ns.clone(), content);
        let leases = db
            .leases(&ns)
            .unwrap()
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|l| (l.id, (format_rfc3339(secs(l.created_at)), l.labels)))
            .collect();
        v.leases.insert(ns.clone(), leases);
        let cs = db
            .containers(&ns)
            .unwrap()
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|c| {
                let spec: serde_json::Value = c
                    .spec
                    .as_ref()
                    .and_then(|s| serde_json::from_slice(&s.value).ok())
                    .unwrap_or_default();
                (
                    c.id.clone(),
                    vec![
                        c.image.clone(),
                        c.runtime.name.clone(),
                        c.snapshotter.clone(),
                        c.snapshot_key.clone(),
                        c.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        format_rfc3339(c.created_at),
                        format_rfc3339(c.updated_at),
                        c.runtime
                            .options
                            .as_ref()
                            .map(|o| o.type_url.clone())
                            .unwrap_or_default(),
                        spec["ociVersion"].as_str().unwrap_or("").to_string(),
                    ],
                )
            })
            .collect();
        v.containers.insert(ns.clone(), cs);
        let mut snaps = BTreeMap::new();
        db.snapshotter("overlayfs", &ns, None)
            .unwrap()
            .walk(
                &mut |i: SnapInfo| {
                    snaps.insert(
                        i.name,
                        (
                            i.parent,
                            kind_name(i.kind),
                            i.labels,
                            format_rfc3339(i.created_at),
                            format_rfc3339(i.updated_at),
                        ),
                    );
                    Ok(())
                },
                &[],
            )
            .unwrap();
        v.snapshots.insert(ns.clone(), snaps);
    }
    v
}

#[test]
fn containerd_root_reads_the_same_in_stowage() {
    if !externals() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let archive = |name: &str| {
        images
            .iter()
            .find(|i| i.name == name)
            .unwrap()
            .archive
            .to_str()
            .unwrap()
            .to_string()
    };
    let root = work.path().join("root");
    let started = SystemTime::now();
    let c = Containerd::start(&root, work.path()).unwrap();
    let run = |args: &[&str]| c.ctr(args).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    run(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        &archive("base"),
    ]);
    run(&["namespaces", "create", "team", "a=b", "c=d"]);
    run(&[
        "-n",
        "team",
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        &archive("docker"),
    ]);
    run(&[
        "-n",
        "team",
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        &archive("compressions"),
    ]);
    let base = "stowage.test/fixtures/base:latest";
    run(&["images", "label", base, "foo=bar"]);
    run(&["leases", "create", "--id", "L1", "x=y"]);
    run(&[
        "-n", "team", "leases", "create", "--id", "L2", "-x", "0", "z=w",
    ]);
    run(&["containers", "create", "--label", "role=test", base, "ctr1"]);
    // containerd collects garbage in the background after an import's lease goes: wait until
    // two looks agree, so transient objects do not end up in the comparison.
    let mut want = ctr_view(&c);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let again = ctr_view(&c);
        if again == want {
            break;
        }
        want = again;
    }
    // While containerd runs it holds meta.db's lock: opening fails fast, naming the lock.
    let t = std::time::Instant::now();
    let err = Db::open(&root, Options::default()).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err.kind(),
        stowage_core_types::ErrorKind::Unavailable,
        "{err}"
    );
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    c.stop().unwrap();
    let stopped = SystemTime::now();

    // Record by record, with exact times, against containerd's own metadata package (read
    // before we open the file: bolt's lock is exclusive).
    let go = go_lines(&root);
    let (db, content, overlay) = open_stowage(&root);
    let got = stowage_view(&db);
    assert_eq!(got, want);
    assert!(go.iter().any(|l| l.starts_with("image team ")), "{go:?}");
    assert_eq!(stowage_lines(&db), go);
    // Sanity of what was compared: the fixtures really are there.
    assert_eq!(want.namespaces["team"], labels(&[("a", "b"), ("c", "d")]));
    assert_eq!(want.images["team"].len(), 2);
    assert_eq!(want.containers["default"]["ctr1"][3], "ctr1");
    assert!(want.snapshots["default"].contains_key("ctr1"));

    // Image times are not shown by ctr: they must lie within the run, created <= updated.
    for ns in db.list_namespaces().unwrap() {
        for i in db.images(&ns).unwrap().list(&[]).unwrap() {
            assert!(
                i.created_at >= secs(started) && i.updated_at <= stopped,
                "{i:?}"
            );
            assert!(i.created_at <= i.updated_at);
        }
        // Blob sizes and backend presence agree with the content directory.
        let cs = db.content_store(&ns, None).unwrap();
        cs.walk(
            &mut |i| {
                let file = content.blob_path(&i.digest);
                assert_eq!(std::fs::metadata(&file).unwrap().len(), i.size, "{file:?}");
                Ok(())
            },
            &[],
        )
        .unwrap();
    }
    // Snapshot records name real backend snapshots (`<ns>/<seq>/<key>`).
    let mut backend = BTreeSet::new();
    overlay
        .walk(
            &mut |i| {
                backend.insert(i.name);
                Ok(())
            },
            &[],
        )
        .unwrap();
    assert!(backend
        .iter()
        .any(|k| k.starts_with("default/") && k.ends_with("/ctr1")));
    // A namespace still holding things cannot be deleted; its image list matches ctr's.
    assert!(db.delete_namespace("team").is_err());
}

/// Puts the blobs of an OCI layout into `ns` with containerd's GC labels on the manifest.
fn import_layout(db: &Db, ns: &str, layout: &Path, name: &str) -> Descriptor {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    let mdesc = Descriptor::new(
        m["mediaType"].as_str().unwrap(),
        Digest::parse(m["digest"].as_str().unwrap()).unwrap(),
        m["size"].as_u64().unwrap(),
    );
    let blob =
        |d: &Digest| std::fs::read(layout.join("blobs").join("sha256").join(d.encoded())).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&mdesc.digest)).unwrap();
    let cs = db.content_store(ns, None).unwrap();
    let mut mlabels = Labels::new();
    let put = |d: &serde_json::Value, l: Labels| {
        let dg = Digest::parse(d["digest"].as_str().unwrap()).unwrap();
        let data = blob(&dg);
        let desc = Descriptor::new(
            d["mediaType"].as_str().unwrap(),
            dg.clone(),
            data.len() as u64,
        );
        write_blob(&cs, &format!("import-{dg}"), &mut &data[..], &desc, l).unwrap();
        dg
    };
    let cfg = put(&manifest["config"], Labels::new());
    mlabels.insert(
        "containerd.io/gc.ref.content.config".into(),
        cfg.to_string(),
    );
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let d = put(l, Labels::new());
        mlabels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.to_string());
    }
    let mdata = blob(&mdesc.digest);
    write_blob(&cs, "import-manifest", &mut &mdata[..], &mdesc, mlabels).unwrap();
    let mut img = Image::new(name, mdesc.clone());
    img.labels = labels(&[("made-by", "stowage")]);
    db.images(ns).unwrap().create(img).unwrap();
    mdesc
}

#[test]
fn stowage_root_reads_the_same_in_containerd() {
    if !externals() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let root = work.path().join("root");
    let want = {
        let (db, _content, _overlay) = open_stowage(&root);
        db.create_namespace("team", &labels(&[("a", "b"), ("c", "d")]))
            .unwrap();
        db.create_namespace("default", &Labels::new()).unwrap();
        let base = images.iter().find(|i| i.name == "base").unwrap();
        let docker = images.iter().find(|i| i.name == "docker").unwrap();
        import_layout(&db, "default", &base.layout, &base.reference);
        import_layout(&db, "team", &docker.layout, &docker.reference);
        let expire = format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
        db.leases("default")
            .unwrap()
            .create(
                "L1",
                &labels(&[("containerd.io/gc.expire", &expire), ("x", "y")]),
            )
            .unwrap();
        db.leases("team")
            .unwrap()
            .create("L2", &labels(&[("z", "w")]))
            .unwrap();
        let sn = db.snapshotter("overlayfs", "default", None).unwrap();
        sn.prepare("layer-active", "", Labels::new()).unwrap();
        sn.commit(
            "layer",
            "layer-active",
            labels(&[("containerd.io/gc.root", "1")]),
        )
        .unwrap();
        sn.prepare("ctr1", "layer", Labels::new()).unwrap();
        let spec = br#"{"ociVersion":"1.0.2-dev","process":{"args":["/bin/sh"],"cwd":"/"}}"#;
        let mut c = Container::new(
            "ctr1",
            "io.containerd.runc.v2",
            Any::new(SPEC_TYPE_URL, spec.to_vec()),
        );
        c.image = base.reference.clone();
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "ctr1".into();
        c.labels = labels(&[("role", "test")]);
        // runc options with `NoPivotRoot: true` (field 1, varint 1).
        c.runtime.options = Some(Any::new(
            stowage_metadata::RUNC_OPTIONS_TYPE_URL,
            vec![0x08, 0x01],
        ));
        db.containers("default").unwrap().create(c).unwrap();
        db.leases("default")
            .unwrap()
            .add_resource(
                "L1",
                &stowage_metadata::Resource::snapshot("overlayfs", "ctr1"),
            )
            .unwrap();
        (stowage_view(&db), stowage_lines(&db))
    };
    let (want, ours) = want;
    // containerd's metadata package reads every record, times included, as we wrote it.
    assert_eq!(go_lines(&root), ours);
    // The Db is closed (its lock released): containerd takes over the root.
    let c = Containerd::start(&root, work.path()).unwrap();
    let got = ctr_view(&c);
    let check = c.ctr(&["images", "check"]).unwrap();
    // The blobs stowage placed are usable: containerd unpacks and mounts the image, and the
    // fixture's files are there.
    let base_ref = "stowage.test/fixtures/base:latest";
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    c.ctr(&["images", "mount", base_ref, mnt.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    let entries = std::fs::read_dir(&mnt).unwrap().count();
    c.ctr(&["images", "unmount", "--rm", mnt.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    assert!(entries > 0, "mounted image is empty");
    c.stop().unwrap();
    assert_eq!(got, want);
    assert_eq!(got.leases["team"]["L2"].1, labels(&[("z", "w")]));
    let ctr1 = &got.snapshots["default"]["ctr1"];
    assert_eq!((ctr1.0.as_str(), ctr1.1.as_str()), ("layer", "Active"));
    assert_eq!(
        got.snapshots["default"]["layer"].2,
        labels(&[("containerd.io/gc.root", "1")])
    );
    assert!(check.contains("complete"), "{check}");
}

/// What survives a collection, in stowage's reading of a root plus the backends' contents.
#[derive(Debug, PartialEq, Eq)]
struct Survivors {
    view: View,
    blobs: BTreeSet<String>,
    ingests: BTreeSet<String>,
    backend_snapshots: BTreeSet<String>,
}

fn survivors(root: &Path) -> Survivors {
    let (db, content, overlay) = open_stowage(root);
    let mut blobs = BTreeSet::new();
    content
        .walk(
            &mut |i| {
                blobs.insert(i.digest.to_string());
                Ok(())
            },
            &[],
        )
        .unwrap();
    let ingests = stowage_core_types::content::IngestManager::list_statuses(&*content, &[])
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    let mut backend_snapshots = BTreeSet::new();
    overlay
        .walk(
            &mut |i| {
                backend_snapshots.insert(i.name);
                Ok(())
            },
            &[],
        )
        .unwrap();
    Survivors {
        view: stowage_view(&db),
        blobs,
        ingests,
        backend_snapshots,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {from:?} {to:?}");
}

/// Builds one root holding every GC case, then lets stowage and containerd collect copies of
/// it and compares what is left.
#[test]
fn gc_parity_with_containerd() {
    if !externals() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let images = fixtures::generate(&work.path().join("fixtures"), true).unwrap();
    let base = images.iter().find(|i| i.name == "base").unwrap();
    let docker = images.iter().find(|i| i.name == "docker").unwrap();
    let root = work.path().join("root");
    {
        let (db, _content, _overlay) = open_stowage(&root);
        let ns = "cases";
        let cs = db.content_store(ns, None).unwrap();
        let put = |name: &str, l: Labels| -> Digest {
            let mut h = stowage_digest_identity::Digester::sha256();
            h.update(name.as_bytes());
            let d = h.finish();
            let desc = Descriptor::new("application/octet-stream", d.clone(), name.len() as u64);
            write_blob(&cs, name, &mut name.as_bytes(), &desc, l).unwrap();
            d
        };
        // Case: an image whose manifest refs children with `.`, `/` and exact keys, and a
        // look-alike key that must not count.
        import_layout(&db, ns, &base.layout, &base.reference);
        let dot = put("dot-child", Labels::new());
        let slash = put("slash-child", Labels::new());
        let exact = put("exact-child", Labels::new());
        let lookalike = put("lookalike-child", Labels::new());
        let top = put(
            "top",
            labels(&[
                ("containerd.io/gc.ref.content.x.1", dot.as_str()),
                ("containerd.io/gc.ref.content/y", slash.as_str()),
                ("containerd.io/gc.ref.content", exact.as_str()),
                ("containerd.io/gc.ref.contentX", lookalike.as_str()),
            ]),
        );
        db.images(ns)
            .unwrap()
            .create(Image::new(
                "refs",
                Descriptor::new("application/octet-stream", top, 3),
            ))
            .unwrap();
        // Case: unreferenced blob; gc.root blob.
        put("orphan", Labels::new());
        put("rooted", labels(&[("containerd.io/gc.root", "yes")]));
        // Case: leases — live, expired, unparsable expiry, flat.
        let ls = db.leases(ns).unwrap();
        let past = format_rfc3339(SystemTime::now() - Duration::from_secs(60));
        let future = format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
        let held = |id: &str, l: Labels, blob: &str, child: Option<&str>| {
            ls.create(id, &l).unwrap();
            let c = child.map(|c| put(c, Labels::new()));
            let bl = match &c {
                Some(c) => labels(&[("containerd.io/gc.ref.content.0", c.as_str())]),
                None => Labels::new(),
            };
            let d = put(blob, bl);
            ls.add_resource(id, &stowage_metadata::Resource::content(&d))
                .unwrap();
        };
        held(
            "live",
            labels(&[("containerd.io/gc.expire", &future)]),
            "in-live",
            Some("live-child"),
        );
        held(
            "expired",
            labels(&[("containerd.io/gc.expire", &past)]),
            "in-expired",
            None,
        );
        held(
            "bad-expiry",
            labels(&[("containerd.io/gc.expire", "soon")]),
            "in-bad",
            None,
        );
        held(
            "flat",
            labels(&[("containerd.io/gc.flat", "1")]),
            "in-flat",
            Some("flat-child"),
        );
        ls.create("trigger", &Labels::new()).unwrap();
        // Case: ingests — one fresh, one expired (record aged), one shared of an orphan.
        let mut w = stowage_core_types::content::Ingester::writer(
            &cs,
            stowage_core_types::content::WriterOptions::with_ref("fresh-ingest"),
        )
        .unwrap();
        std::io::Write::write_all(&mut w, b"partial").unwrap();
        drop(w);
        let mut w = stowage_core_types::content::Ingester::writer(
            &cs,
            stowage_core_types::content::WriterOptions::with_ref("stale-ingest"),
        )
        .unwrap();
        std::io::Write::write_all(&mut w, b"partial2").unwrap();
        drop(w);
        {
            let mut tx = db.bolt().begin_write().unwrap();
            let b = tx.bucket_mut(b"v1").unwrap().unwrap();
            let b = b.into_bucket_mut(ns.as_bytes()).unwrap().unwrap();
            let b = b.into_bucket_mut(b"content").unwrap().unwrap();
            let b = b.into_bucket_mut(b"ingests").unwrap().unwrap();
            let mut b = b.into_bucket_mut(b"stale-ingest").unwrap().unwrap();
            b.put(
                b"expireat",
                &stowage_metadata::encode_time(SystemTime::now() - Duration::from_secs(5)),
            )
            .unwrap();
            tx.commit().unwrap();
        }
        // Case: snapshot chains — one kept by a container, one kept by a label ref from
        // content, one unreferenced chain, one gc.root.
        let sn = db.snapshotter("overlayfs", ns, None).unwrap();
        let chain = |prefix: &str, l: Labels| {
            sn.prepare(&format!("{prefix}-a"), "", Labels::new())
                .unwrap();
            sn.commit(
                &format!("{prefix}-1"),
                &format!("{prefix}-a"),
                Labels::new(),
            )
            .unwrap();
            sn.prepare(
                &format!("{prefix}-b"),
                &format!("{prefix}-1"),
                Labels::new(),
            )
            .unwrap();
            sn.commit(&format!("{prefix}-2"), &format!("{prefix}-b"), l)
                .unwrap();
        };
        chain("ctr", Labels::new());
        sn.prepare("ctr-rootfs", "ctr-2", Labels::new()).unwrap();
        chain("byref", Labels::new());
        chain("unused", Labels::new());
        chain("rooted", labels(&[("containerd.io/gc.root", "1")]));
        put(
            "snap-referrer",
            labels(&[
                ("containerd.io/gc.root", "1"),
                ("containerd.io/gc.ref.snapshot.overlayfs/any", "byref-2"),
            ]),
        );
        let mut c = Container::new(
            "ctr",
            "io.containerd.runc.v2",
            Any::new(SPEC_TYPE_URL, br#"{"ociVersion":"1.0.2-dev"}"#.to_vec()),
        );
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "ctr-rootfs".into();
        db.containers(ns).unwrap().create(c).unwrap();
        // A second namespace sharing a blob with the first: deleting its image must not remove
        // the shared bytes.
        import_layout(&db, "other", &docker.layout, &docker.reference);
        db.images("other")
            .unwrap()
            .delete(&docker.reference)
            .unwrap();
    }
    let ours = work.path().join("ours");
    let theirs = work.path().join("theirs");
    copy_tree(&root, &ours);
    copy_tree(&root, &theirs);

    {
        let (db, _c, _o) = open_stowage(&ours);
        db.leases("cases").unwrap().delete("trigger").unwrap();
        let stats = db.collect().unwrap();
        assert!(!stats.removed.is_empty());
    }
    let cwork = work.path().join("cwork");
    std::fs::create_dir_all(&cwork).unwrap();
    let c = Containerd::start(&theirs, &cwork).unwrap();
    c.ctr(&["-n", "cases", "leases", "rm", "--sync", "trigger"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    c.stop().unwrap();

    let a = survivors(&ours);
    let b = survivors(&theirs);
    assert_eq!(a, b);
    // And the table really exercised something: removed and kept objects both exist.
    let content = &a.view.content["cases"];
    assert!(!content.is_empty());
    let names: BTreeSet<&String> = a.view.snapshots["cases"].keys().collect();
    assert!(names.contains(&"ctr-1".to_string()) && !names.contains(&"unused-1".to_string()));
    assert!(a.view.leases["cases"].contains_key("live"));
    assert!(!a.view.leases["cases"].contains_key("expired"));
    assert!(a.ingests.iter().any(|r| r.ends_with("/fresh-ingest")));
    assert!(!a.ingests.iter().any(|r| r.ends_with("/stale-ingest")));
}

fn go_raw(path: &Path) -> String {
    let out = std::process::Command::new(godump())
        .arg("raw")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "godump raw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An old meta.db: a snapshot chain without child links and the pre-1.2 flat ingest bucket.
fn old_db(path: &Path, version: Option<i64>) {
    let b = stowage_bolt::Db::open(path, stowage_bolt::Options::default()).unwrap();
    let mut tx = b.begin_write().unwrap();
    let mut v1 = tx.create_bucket(b"v1").unwrap();
    if let Some(v) = version {
        v1.put(b"version", &stowage_metadata::encode_varint(v))
            .unwrap();
    }
    for ns in [&b"default"[..], b"other"] {
        let mut n = v1.create_bucket(ns).unwrap();
        {
            let mut snaps = n.create_bucket(b"snapshots").unwrap();
            let mut ov = snaps.create_bucket(b"overlayfs").unwrap();
            ov.create_bucket(b"base")
                .unwrap()
                .put(b"name", b"x/1/base")
                .unwrap();
            let mut c = ov.create_bucket(b"child").unwrap();
            c.put(b"name", b"x/2/child").unwrap();
            c.put(b"parent", b"base").unwrap();
            let mut g = ov.create_bucket(b"grandchild").unwrap();
            g.put(b"parent", b"child").unwrap();
            ov.create_bucket(b"orphan")
                .unwrap()
                .put(b"parent", b"missing")
                .unwrap();
        }
        let mut content = n.create_bucket(b"content").unwrap();
        let mut old = content.create_bucket(b"ingest").unwrap();
        old.put(b"pull-1", b"default/1/pull-1").unwrap();
        old.put(b"pull-2", b"default/2/pull-2").unwrap();
    }
    tx.commit().unwrap();
}

/// Migrations from versions 0, 1 and 2 (and none at 3) leave exactly the tree containerd's
/// own `DB.Init` leaves.
#[test]
fn migrations_match_containerd_init() {
    if !require(
        &["go"],
        "apt-get install golang-go golang-github-containerd-containerd-dev",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for version in [None, Some(1), Some(2), Some(3)] {
        let ours = work.path().join(format!("ours-{version:?}.db"));
        let theirs = work.path().join(format!("theirs-{version:?}.db"));
        old_db(&ours, version);
        std::fs::copy(&ours, &theirs).unwrap();
        let before = go_raw(&ours);
        drop(Db::open_file(&ours, Options::default()).unwrap());
        let out = std::process::Command::new(godump())
            .arg("init")
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "containerd init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (a, b) = (go_raw(&ours), go_raw(&theirs));
        assert_eq!(a, b, "after migrating from {version:?}");
        // The test is not vacuous: below 3 the tree changed.
        assert_eq!(a != before, version != Some(3), "{version:?}");
    }
}
