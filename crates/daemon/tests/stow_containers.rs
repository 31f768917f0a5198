//! `stow containers create` and `stow images rm` held against ctr: the same commands through
//! both tools against one stowaged, the container records read back with Containers.Get and
//! compared field by field; `images rm` also against containerd itself.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::require_ctr;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use stowage_daemon::api::containerd::services::containers::v1 as cpb;
use stowage_daemon::client;
use stowage_daemon::client::{connect, Headers};
use stowage_tests::containerd::Containerd;

fn stow_out(address: &Path, args: &[&str]) -> Output {
    common::stow_at(address, args, b"")
}

fn ctr_out(address: &Path, args: &[&str]) -> Output {
    Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(args)
        .output()
        .unwrap()
}

fn ok(what: &str, o: Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn stow_images_rm_warns_and_goes_on_as_ctr_does() {
    if !require_ctr(false) {
        return;
    }
    let f = &common::fixtures()[0];
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&f.archive]);
    let tag = |names: &[&str]| {
        for n in names {
            d.ok(&["images", "tag", &f.reference, n]);
        }
    };
    // Missing names around present ones: each present one is removed and printed, each
    // missing one warned about on stderr, and the exit status is success.
    let args = ["images", "rm", "nope:1", "t:1", "nope:2", "t:2"];
    tag(&["t:1", "t:2"]);
    let by_ctr = ctr_out(&d.address, &args);
    tag(&["t:1", "t:2"]);
    let by_stow = stow_out(&d.address, &args);
    for (who, o) in [("ctr", &by_ctr), ("stow", &by_stow)] {
        assert!(o.status.success(), "{who}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "t:1\nt:2\n", "{who}");
        let err = text(&o.stderr);
        assert!(
            err.contains("nope:1: image not found") && err.contains("nope:2: image not found"),
            "{who}: {err}"
        );
        assert!(err.contains("warning"), "{who}: {err}");
    }
    assert!(!d.ok(&["images", "ls", "-q"]).contains("t:"));

    // Any other failure is reported for each name, the rest still tried, and the first
    // one is the exit status.
    let args = ["-n", "bad!ns", "images", "rm", "a:1", "b:1"];
    for (who, o) in [
        ("ctr", ctr_out(&d.address, &args)),
        ("stow", stow_out(&d.address, &args)),
    ] {
        assert!(!o.status.success(), "{who} succeeded");
        assert!(o.stdout.is_empty(), "{who}");
        let err = text(&o.stderr);
        assert!(
            err.contains("unable to delete a:1") && err.contains("unable to delete b:1"),
            "{who}: {err}"
        );
        assert!(err.contains("invalid argument"), "{who}: {err}");
    }
}

#[test]
fn stow_images_rm_of_a_missing_image_against_containerd() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&dir.path().join("root"), dir.path()).unwrap();
    let args = ["images", "rm", "nope:1"];
    for (who, o) in [
        ("ctr", ctr_out(&c.address, &args)),
        ("stow", stow_out(&c.address, &args)),
    ] {
        assert!(o.status.success(), "{who}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty(), "{who}");
        assert!(
            text(&o.stderr).contains("nope:1: image not found"),
            "{who}: {}",
            text(&o.stderr)
        );
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Go's name of this machine's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        a => a,
    }
}

/// An OCI archive of one image, [`SPEC_IMAGE`], whose config sets every runtime default a
/// container takes (user, environment, entrypoint and command, working directory, labels,
/// stop signal) and whose tree holds the /etc/passwd and /etc/group the user is looked up in.
fn image_archive(dir: &Path) -> std::path::PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        layer.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", b"", tar::EntryType::Directory);
    add(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        tar::EntryType::Regular,
    );
    add(
        "etc/group",
        b"root:x:0:\napp:x:1001:\nwheel:x:10:root,app\nstaff:x:50:app\n",
        tar::EntryType::Regular,
    );
    add("srv/", b"", tar::EntryType::Directory);
    let layer = layer.into_inner().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": go_arch(), "os": "linux",
        "config": {
            "User": "app", "Env": ["PATH=/usr/bin:/bin", "A=1"],
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/srv",
            "Labels": {"img.label": "1", "k": "from-image"}, "StopSignal": "SIGINT"
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]}
    }))
    .unwrap();
    let desc = |mt: &str, b: &[u8]| json!({"mediaType": mt, "digest": format!("sha256:{}", sha(b)), "size": b.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &layer)]
    }))
    .unwrap();
    let mut mdesc = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
    mdesc["annotations"] = json!({"io.containerd.image.name": SPEC_IMAGE});
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [mdesc]})).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut put = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, path, data).unwrap();
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    put("index.json", &index);
    for b in [&layer, &config, &manifest] {
        put(&format!("blobs/sha256/{}", sha(b)), b);
    }
    let path = dir.join("spec-image.tar");
    std::fs::write(&path, out.into_inner().unwrap()).unwrap();
    path
}

/// The name [`image_archive`]'s image is imported under.
const SPEC_IMAGE: &str = "stowage.test/spec:1";

/// containerd on a root under `dir`, holding [`SPEC_IMAGE`] imported without unpacking.
fn containerd_with_spec_image(dir: &Path) -> Containerd {
    let c = Containerd::start(&dir.join("root"), dir).unwrap();
    let archive = image_archive(dir);
    c.ctr(&["images", "import", "--no-unpack", archive.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("containerd: {e}\n{}", c.log()));
    c
}

/// Runs `args` through `tool` (`ctr` or `stow`) against the daemon at `address`.
fn tool_out(tool: &str, address: &Path, args: &[&str]) -> Output {
    if tool == "ctr" {
        ctr_out(address, args)
    } else {
        stow_out(address, args)
    }
}

/// The records of `ids`, given as (ctr's, stow's) pairs, each pair compared with
/// [`same_record`].
fn get_pairs(address: &Path, ids: &[&str]) -> Vec<cpb::Container> {
    let records = get_all(address, ids);
    for pair in records.chunks(2) {
        same_record(&pair[0], &pair[1]);
    }
    records
}

/// The records of `ids` as Containers.Get answers them.
fn get_all(address: &Path, ids: &[&str]) -> Vec<cpb::Container> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = connect(address).await.unwrap();
        let mut c = client!(
            cpb::containers_client::ContainersClient<_>,
            ch,
            Headers::new(Some("default"), None).unwrap()
        );
        let mut out = Vec::new();
        for id in ids {
            let r = c
                .get(cpb::GetContainerRequest { id: id.to_string() })
                .await
                .unwrap_or_else(|e| panic!("get {id}: {e}"));
            out.push(r.into_inner().container.unwrap());
        }
        out
    })
}

fn spec_of(c: &cpb::Container) -> Value {
    let s = c.spec.as_ref().expect("no spec");
    assert_eq!(
        s.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    );
    serde_json::from_slice(&s.value).expect("spec is not JSON")
}

/// Compares ctr's record with stow's, field by field. Ignored: the IDs (chosen apart) and
/// what follows from them (the snapshot key, which must be each one's own ID, and the
/// default cgroups path `/<namespace>/<id>`), and the created/updated times. For a
/// privileged container the host's device list is compared only on the nodes that never
/// change: /dev is read at each create, and other tests may add nodes (loop devices, ...)
/// between the two.
fn same_record(by_ctr: &cpb::Container, by_stow: &cpb::Container) {
    let what = format!("{} vs {}", by_ctr.id, by_stow.id);
    assert_eq!(by_ctr.labels, by_stow.labels, "labels, {what}");
    assert_eq!(by_ctr.image, by_stow.image, "image, {what}");
    assert_eq!(by_ctr.runtime, by_stow.runtime, "runtime, {what}");
    assert_eq!(
        by_ctr.snapshotter, by_stow.snapshotter,
        "snapshotter, {what}"
    );
    for c in [by_ctr, by_stow] {
        let want = if c.image.is_empty() {
            ""
        } else {
            c.id.as_str()
        };
        assert_eq!(c.snapshot_key, want, "snapshot key of {}", c.id);
    }
    assert_eq!(by_ctr.extensions, by_stow.extensions, "extensions, {what}");
    let unpath = |c: &cpb::Container| {
        let mut s = spec_of(c);
        if let Some(devs) = s
            .pointer_mut("/linux/devices")
            .and_then(Value::as_array_mut)
        {
            if devs.len() > 40 {
                let stable = [
                    "/dev/null",
                    "/dev/zero",
                    "/dev/full",
                    "/dev/random",
                    "/dev/urandom",
                ];
                devs.retain(|d| stable.contains(&d["path"].as_str().unwrap_or("")));
                assert_eq!(devs.len(), stable.len(), "host devices of {}", c.id);
            }
        }
        if let Some(p) = s.pointer_mut("/linux/cgroupsPath") {
            if p == &json!(format!("/default/{}", c.id)) {
                *p = json!("/default/<id>");
            }
        }
        s
    };
    let (a, b) = (unpath(by_ctr), unpath(by_stow));
    assert_eq!(
        a,
        b,
        "spec, {what}:\nctr:  {}\nstow: {}",
        serde_json::to_string_pretty(&a).unwrap(),
        serde_json::to_string_pretty(&b).unwrap()
    );
}

#[test]
fn stow_containers_create_records_what_ctr_records() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = SPEC_IMAGE;
    let d = common::quiet_gc_with_images(dir.path(), &[&image_archive(dir.path())]);
    // A label on the image record: ctr copies those to the container too.
    d.ok(&["images", "label", name, "from.record=yes"]);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // The image's defaults, with labels (one without a value), env and an annotation.
        (
            "defaults",
            vec![
                "--label",
                "k=v",
                "--label",
                "flag",
                "--env",
                "B=2",
                "--env",
                "A=3",
                "--annotation",
                "an=1",
                "--snapshotter-label",
                "sl=1",
                name,
            ],
        ),
        // A command of its own, and flags over the image's process, on another snapshotter.
        (
            "flags",
            vec![
                "--snapshotter",
                "native",
                "--cwd",
                "/tmp",
                "-t",
                "--read-only",
                "--cap-drop",
                "CAP_KILL",
                "--cap-add",
                "CAP_SYS_ADMIN",
                "--memory-limit",
                "1048576",
                "--with-ns",
                "network:/run/netns/x",
                "--mount",
                "type=bind,src=/opt,dst=/opt,options=rbind:ro",
                name,
            ],
        ),
    ];
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "C=3\nA=4\n").unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let (ef, rf) = (env_file.to_str().unwrap(), rootfs.to_str().unwrap());
    // A directory of device nodes, with what containerd passes over in one: a fifo, a
    // plain file, a link, a console and a skipped subdirectory.
    let devs = dir.path().join("devs");
    std::fs::create_dir_all(devs.join("sub")).unwrap();
    std::fs::create_dir_all(devs.join("pts")).unwrap();
    for (node, kind, major, minor) in [
        ("zero", "c", "1", "5"),
        ("sub/full", "c", "1", "7"),
        ("pts/x", "c", "1", "3"),
        ("console", "c", "5", "1"),
        ("blk", "b", "7", "0"),
    ] {
        let st = Command::new("mknod")
            .arg(devs.join(node))
            .args([kind, major, minor])
            .status()
            .expect("mknod (coreutils) is needed");
        assert!(st.success(), "mknod {node}");
    }
    assert!(Command::new("mkfifo")
        .arg(devs.join("pipe"))
        .status()
        .unwrap()
        .success());
    std::fs::write(devs.join("file"), b"x").unwrap();
    std::os::unix::fs::symlink("zero", devs.join("link")).unwrap();
    let dv = devs.to_str().unwrap();
    let seccomp = dir.path().join("seccomp.json");
    std::fs::write(
        &seccomp,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "x": 1,
                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let sc = seccomp.to_str().unwrap();
    let mut cases = cases;
    cases.extend([
        // Host networking (the host's name, hosts and resolv.conf), an env file, AppArmor
        // and RDT names: all recorded only.
        (
            "host",
            vec![
                "--net-host",
                "--env-file",
                ef,
                "--apparmor-profile",
                "p1",
                "--rdt-class",
                "gold",
                "--seccomp",
                "--seccomp-profile",
                sc,
                name,
            ],
        ),
        // Privileged: every capability stow (or ctr) has, every host device.
        ("privileged", vec!["--privileged", name]),
        // Devices from the host: one node and a directory of them.
        (
            "devices",
            vec!["--device", "/dev/null", "--device", dv, name],
        ),
        // A directory for a root filesystem: no image, no snapshot.
        ("rootfs", vec!["--rootfs", "--label", "r=1", rf]),
    ]);
    let mut pairs = Vec::new();
    for (case, flags) in &cases {
        let (ci, si) = (format!("ctr-{case}"), format!("stow-{case}"));
        let mut c_args = vec!["containers", "create"];
        c_args.extend(flags.iter().copied());
        let mut s_args = c_args.clone();
        c_args.push(&ci);
        s_args.push(&si);
        if *case == "flags" || *case == "rootfs" {
            c_args.extend(["/bin/true", "-x"]);
            s_args.extend(["/bin/true", "-x"]);
        }
        let c_out = ok(&format!("ctr {c_args:?}"), ctr_out(&d.address, &c_args));
        let s_out = ok(&format!("stow {s_args:?}"), stow_out(&d.address, &s_args));
        // ctr prints nothing on success; neither does stow.
        assert_eq!(s_out, c_out, "{case}");
        assert!(s_out.is_empty(), "{case}: {s_out:?}");
        pairs.push((ci, si));
    }

    // The spec ctr recorded, given back through --config (once more with another runtime
    // and its config path).
    let spec_file = dir.path().join("spec.json");
    let recorded = get_all(&d.address, &["ctr-defaults"]);
    std::fs::write(&spec_file, &recorded[0].spec.as_ref().unwrap().value).unwrap();
    let sf = spec_file.to_str().unwrap();
    // A hand-written spec with what containerd's types drop or fill in: unknown fields,
    // empty optional ones, a key in another case, a missing required one.
    let odd_file = dir.path().join("odd.json");
    std::fs::write(
        &odd_file,
        r#"{"ociVersion": "1.0.2", "x-top": {"a": 1},
            "process": {"terminal": false, "Args": ["sh"], "user": {"uid": 0, "umask": 18},
                        "oomScoreAdj": 0, "x": 1},
            "root": {"path": "rootfs", "readonly": false}, "hostname": "", "mounts": [],
            "annotations": {"z": "old", "keep": "1"},
            "linux": {"namespaces": [{"type": "pid", "path": ""}],
                      "resources": {"cpu": {"shares": 0}}}}"#,
    )
    .unwrap();
    let of = odd_file.to_str().unwrap();
    for (case, file, extra) in [
        ("config", sf, vec![]),
        ("config-odd", of, vec![]),
        (
            "config-runtime",
            sf,
            vec![
                "--runtime",
                "io.example.other.v1",
                "--runtime-config-path",
                "/etc/x.toml",
            ],
        ),
    ] {
        let (ci, si) = (format!("ctr-{case}"), format!("stow-{case}"));
        for (tool, id) in [("ctr", &ci), ("stow", &si)] {
            let mut a = vec!["containers", "create", "--config", file, "--label", "z=1"];
            a.extend(extra.iter().copied());
            a.push(id);
            ok(
                &format!("{tool} create --config"),
                tool_out(tool, &d.address, &a),
            );
        }
        pairs.push((ci, si));
    }

    let ids: Vec<&str> = pairs
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    let records = get_pairs(&d.address, &ids);

    // What the two agree on is what containerd's defaults and the image give: spelled out
    // here so that a shared mistake cannot pass.
    let stow_defaults = &records[1];
    let s = spec_of(stow_defaults);
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 50]})
    );
    assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(
        s["process"]["env"],
        json!(["PATH=/usr/bin:/bin", "A=3", "B=2"])
    );
    assert_eq!(s["process"]["cwd"], "/srv");
    assert_eq!(s["linux"]["cgroupsPath"], "/default/stow-defaults");
    assert_eq!(
        s["annotations"],
        json!({"an": "1", "k": "v", "flag": "true"})
    );
    assert_eq!(s["ociVersion"], "1.0.2-dev");
    let want: HashMap<String, String> = [
        ("img.label", "1"),
        ("k", "v"),
        ("flag", "true"),
        ("from.record", "yes"),
        ("io.containerd.image.config.stop-signal", "SIGINT"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(stow_defaults.labels, want);
    let rt = stow_defaults.runtime.as_ref().unwrap();
    assert_eq!(rt.name, "io.containerd.runc.v2");
    assert_eq!(
        rt.options.as_ref().unwrap().type_url,
        "containerd.runc.v1.Options"
    );
    assert_eq!(stow_defaults.snapshotter, "overlayfs");
    let flags = spec_of(&records[3]);
    assert_eq!(flags["process"]["args"], json!(["/bin/true", "-x"]));
    assert_eq!(records[3].snapshotter, "native");
    let host = spec_of(&records[5]);
    assert!(host["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("HOSTNAME=")));
    assert_eq!(host["linux"]["namespaces"].as_array().unwrap().len(), 4);
    assert_eq!(host["linux"]["intelRdt"], json!({"closID": "gold"}));
    assert_eq!(
        host["linux"]["seccomp"]["syscalls"][0],
        json!({"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]})
    );
    let privileged = spec_of(&records[7]);
    assert!(privileged["linux"].get("maskedPaths").is_none());
    assert_eq!(
        privileged["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    assert!(
        privileged["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len()
            > 14
    );
    let devices = spec_of(&records[9]);
    let paths: Vec<&str> = devices["linux"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    let under = |n: &str| devs.join(n).to_str().unwrap().to_string();
    assert_eq!(
        paths,
        [
            "/dev/null".to_string(),
            under("blk"),
            under("sub/full"),
            under("zero")
        ]
    );
    let rootfs_spec = spec_of(&records[11]);
    assert_eq!(rootfs_spec["root"]["path"], rf);
    assert!(records[11].image.is_empty() && records[11].snapshotter.is_empty());
    assert_eq!(
        records[13].labels,
        HashMap::from([("z".into(), "1".into())])
    );
    assert!(records[13].image.is_empty());
    assert_eq!(
        spec_of(&records[15]),
        json!({"ociVersion": "1.0.2",
               "process": {"user": {"uid": 0, "gid": 0, "umask": 18}, "args": ["sh"],
                           "cwd": "", "oomScoreAdj": 0},
               "root": {"path": "rootfs"}, "annotations": {"z": "1", "keep": "1"},
               "linux": {"namespaces": [{"type": "pid"}], "resources": {"cpu": {"shares": 0}}}})
    );
    assert_eq!(
        records[17]
            .runtime
            .as_ref()
            .unwrap()
            .options
            .as_ref()
            .unwrap()
            .type_url,
        "runtimeoptions.v1.Options"
    );

    // The snapshot labels reached both snapshots.
    for id in ["ctr-defaults", "stow-defaults"] {
        let info: Value = serde_json::from_str(&d.ok(&["snapshots", "info", id])).unwrap();
        assert_eq!(info["Labels"]["sl"], "1", "{id}: {info}");
    }
    // Nothing mounted for the user lookup is left behind, and the create's lease is gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("stow-rootfs-"), "{mounts}");
    assert!(d.ok(&["leases", "ls", "-q"]).trim().is_empty());

    // ctr's argument errors.
    for bad in [
        vec!["containers", "create", "--config", sf, "x", "y"],
        vec!["containers", "create", name],
        vec![
            "containers",
            "create",
            "--cap-add",
            "SYS_ADMIN",
            name,
            "bad-cap",
        ],
    ] {
        let o = stow_out(&d.address, &bad);
        assert!(!o.status.success(), "stow {bad:?} succeeded");
    }
    assert!(!d.ok(&["containers", "ls", "-q"]).contains("bad-cap"));
    assert!(!d.ok(&["snapshots", "ls"]).contains("bad-cap"));
}

#[test]
fn stow_containers_create_against_containerd_records_what_ctr_records() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = containerd_with_spec_image(dir.path());
    let ctr = |a: &[&str]| {
        c.ctr(a)
            .unwrap_or_else(|e| panic!("containerd: {e}\n{}", c.log()))
    };
    let name = SPEC_IMAGE;
    let flags = ["--label", "k=v", "--env", "B=2", name];
    let mut a = vec!["containers", "create"];
    a.extend(flags);
    let (mut ca, mut sa) = (a.clone(), a);
    ca.push("ctr-c");
    sa.push("stow-c");
    ctr(&ca);
    ok("stow create against containerd", stow_out(&c.address, &sa));
    let records = get_pairs(&c.address, &["ctr-c", "stow-c"]);
    assert_eq!(
        spec_of(&records[1])["process"]["user"]["additionalGids"],
        json!([1001, 10, 50])
    );
    // containerd's own view of the snapshot stow prepared.
    assert!(ctr(&["snapshots", "ls"])
        .lines()
        .any(|l| l.starts_with("stow-c ") && l.contains("Active")));
}

/// The `--seccomp` cases (containerd's default profile, no profile file): alone, with
/// capabilities added and dropped (the profile follows the bounding set as it stands after
/// them), and with --privileged (every capability stow or ctr has: ctr applies the profile
/// after privileging, so the container is confined all the same).
const SECCOMP_CASES: &[(&str, &[&str])] = &[
    ("seccomp", &["--seccomp"]),
    (
        "seccomp-caps",
        &[
            "--cap-add",
            "CAP_SYS_ADMIN",
            "--cap-add",
            "CAP_SYS_PTRACE",
            "--cap-add",
            "CAP_SYS_TIME",
            "--cap-drop",
            "CAP_CHOWN",
            "--seccomp",
        ],
    ),
    ("seccomp-privileged", &["--privileged", "--seccomp"]),
];

/// Creates each seccomp case through ctr and stow on the daemon at `address` and compares
/// the records; returns stow's records, in the cases' order.
fn seccomp_records(address: &Path, image: &str) -> Vec<cpb::Container> {
    let mut ids = Vec::new();
    for (case, flags) in SECCOMP_CASES {
        let (ci, si) = (format!("ctr-{case}"), format!("stow-{case}"));
        for (tool, id) in [("ctr", &ci), ("stow", &si)] {
            let mut a = vec!["containers", "create"];
            a.extend(flags.iter().copied());
            a.extend([image, id.as_str()]);
            let o = tool_out(tool, address, &a);
            assert!(o.stdout.is_empty(), "{tool} {case}: {}", text(&o.stdout));
            ok(&format!("{tool} {a:?}"), o);
        }
        ids.extend([ci, si]);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let records = get_pairs(address, &ids);
    records.chunks(2).map(|p| p[1].clone()).collect()
}

/// The syscall rules of a recorded profile, after checking its default action and (on
/// amd64) its architectures.
fn seccomp_rules(c: &cpb::Container) -> Vec<Value> {
    let s = spec_of(c);
    let p = &s["linux"]["seccomp"];
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO", "{}", c.id);
    if go_arch() == "amd64" {
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            "{}",
            c.id
        );
    }
    p["syscalls"].as_array().expect("no syscalls").clone()
}

/// Whether some rule allows `name` unconditionally.
fn allows(rules: &[Value], name: &str) -> bool {
    rules.iter().any(|r| {
        r["action"] == "SCMP_ACT_ALLOW"
            && r.get("args").is_none()
            && r["names"].as_array().unwrap().contains(&json!(name))
    })
}

/// What the cases' profiles must hold whoever made them, spelled out so that a mistake
/// stow and this test's reading of ctr shared could not pass.
fn check_seccomp_profiles(stow: &[cpb::Container]) {
    let plain = seccomp_rules(&stow[0]);
    assert!(allows(&plain, "read") && allows(&plain, "execve"));
    assert!(!allows(&plain, "mount") && !allows(&plain, "clone"));
    assert!(
        plain.contains(&json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                                   "errnoRet": 38}))
    );
    assert!(plain
        .iter()
        .any(|r| r["names"] == json!(["clone"]) && r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"));
    assert_eq!(
        plain
            .iter()
            .filter(|r| r["names"] == json!(["personality"]))
            .count(),
        5
    );
    let caps = seccomp_rules(&stow[1]);
    for n in [
        "mount",
        "clone",
        "clone3",
        "ptrace",
        "process_vm_readv",
        "settimeofday",
    ] {
        assert!(allows(&caps, n), "{n} with the capabilities added");
    }
    assert!(!caps.iter().any(|r| r["action"] == "SCMP_ACT_ERRNO"));
    let privileged = seccomp_rules(&stow[2]);
    for n in [
        "mount",
        "reboot",
        "init_module",
        "acct",
        "iopl",
        "vhangup",
        "chroot",
    ] {
        assert!(allows(&privileged, n), "{n} when privileged");
    }
}

#[test]
fn stow_containers_create_seccomp_default_profile_as_ctr() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&image_archive(dir.path())]);
    check_seccomp_profiles(&seccomp_records(&d.address, SPEC_IMAGE));
}

#[test]
fn stow_containers_create_seccomp_default_profile_against_containerd() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = containerd_with_spec_image(dir.path());
    check_seccomp_profiles(&seccomp_records(&c.address, SPEC_IMAGE));
}

/// Where the kernel lists loaded AppArmor profiles; ctr reads it first for
/// `--apparmor-default-profile`, and fails there when AppArmor is off.
const APPARMOR_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// The absolute path of program `name` in this process's PATH.
fn which(name: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not in PATH"))
}

/// Runs `args` through `tool` against `address` in directory `cwd` with only the
/// environment `env` (PATH among it): ctr and stow record the caller's PATH lookups and
/// environment in a hook.
fn tool_with_env(
    tool: &str,
    address: &Path,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Output {
    let exe = if tool == "ctr" {
        which("ctr")
    } else {
        env!("CARGO_BIN_EXE_stow").into()
    };
    Command::new(exe)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().copied())
        .arg("--address")
        .arg(address)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn stow_containers_create_apparmor_default_profile_as_ctr() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&image_archive(dir.path())]);
    // Named for this test run, so a host with AppArmor gets it generated and loaded by
    // whichever tool comes first, and found loaded by the other.
    let profile = format!("stowage-test-{}", std::process::id());
    let create = |tool: &str, id: &str, extra: &[&str]| {
        let mut a = vec!["containers", "create"];
        a.extend(extra);
        a.extend([
            "--apparmor-default-profile",
            profile.as_str(),
            SPEC_IMAGE,
            id,
        ]);
        tool_out(tool, &d.address, &a)
    };
    // Both flags at once: refused by both before anything is loaded.
    for tool in ["ctr", "stow"] {
        let o = create(tool, &format!("{tool}-both"), &["--apparmor-profile", "x"]);
        assert!(!o.status.success(), "{tool} took both AppArmor flags");
        let err = text(&o.stderr);
        assert!(
            err.contains("apparmor-profile conflicts with"),
            "{tool}: {err}"
        );
    }
    let outs: Vec<(&str, Output)> = ["ctr", "stow"]
        .into_iter()
        .map(|tool| (tool, create(tool, &format!("{tool}-aa"), &[])))
        .collect();
    if Path::new(APPARMOR_PROFILES).exists() {
        // AppArmor on: both load (or find) the profile and record its name.
        for (tool, o) in outs {
            ok(&format!("{tool} --apparmor-default-profile"), o);
        }
        let records = get_pairs(&d.address, &["ctr-aa", "stow-aa"]);
        assert_eq!(
            spec_of(&records[1])["process"]["apparmorProfile"],
            profile.as_str()
        );
        let loaded = std::fs::read_to_string(APPARMOR_PROFILES).unwrap();
        assert!(
            loaded
                .lines()
                .any(|l| l.starts_with(&format!("{profile} "))),
            "{profile} is not loaded: {loaded}"
        );
    } else {
        // AppArmor off (this kernel has no AppArmor, or it is disabled): both fail where
        // ctr fails, reading the list of loaded profiles, and record nothing.
        for (tool, o) in outs {
            assert!(!o.status.success(), "{tool} succeeded without AppArmor");
            let err = text(&o.stderr);
            assert!(err.contains(APPARMOR_PROFILES), "{tool}: {err}");
        }
    }
    let containers = d.ok(&["containers", "ls", "-q"]);
    assert!(!containers.contains("-both"), "{containers}");
    if !Path::new(APPARMOR_PROFILES).exists() {
        assert!(!containers.contains("-aa"), "{containers}");
        // stow took back the snapshot it had prepared.
        assert!(!d.ok(&["snapshots", "ls"]).contains("stow-aa"));
    }
}

#[test]
fn stow_containers_create_gpus_as_ctr() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = common::quiet_gc_with_images(dir.path(), &[&image_archive(dir.path())]);
    // Two PATHs of one directory each: both with containerd (the hook's runner), and one
    // also with a stand-in nvidia-container-cli, an executable script that would fail if
    // run (nothing runs it: the record only names it).
    let (without, with) = (dir.path().join("bin-without"), dir.path().join("bin-with"));
    for b in [&without, &with] {
        std::fs::create_dir(b).unwrap();
        std::os::unix::fs::symlink(which("containerd"), b.join("containerd")).unwrap();
    }
    let cli = with.join("nvidia-container-cli");
    std::fs::write(&cli, "#!/bin/sh\necho stand-in >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let empty = dir.path().join("bin-empty");
    std::fs::create_dir(&empty).unwrap();

    let create = |tool: &str, path: &str, id: &str| {
        let env = [("LANG", "C"), ("PATH", path)];
        let a = [
            "containers",
            "create",
            "--gpus",
            "0",
            "--gpus",
            "2",
            SPEC_IMAGE,
            id,
        ];
        tool_with_env(tool, &d.address, &a, dir.path(), &env)
    };
    let (empty, without, with_s) = (
        empty.to_str().unwrap(),
        without.to_str().unwrap(),
        with.to_str().unwrap(),
    );
    // What is missing is named, the runner first, as ctr looks them up.
    let not_found = |p: &str| format!("exec: \"{p}\": executable file not found in $PATH");
    // Found only through a relative PATH entry (the working directory is `dir`): refused.
    let relative = format!("{without}:bin-with");
    // Each case its own IDs: ctr's snapshot of a refused create waits for the collector.
    for (case, (path, why)) in [
        (empty, not_found("containerd")),
        (without, not_found("nvidia-container-cli")),
        (
            relative.as_str(),
            "nvidia-container-cli resolves to executable in current directory \
             (./bin-with/nvidia-container-cli)"
                .to_string(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for tool in ["ctr", "stow"] {
            let o = create(tool, path, &format!("{tool}-no-gpus-{case}"));
            assert!(!o.status.success(), "{tool} succeeded with PATH {path}");
            let err = text(&o.stderr);
            assert!(err.contains(&why), "{tool}: {err}");
        }
    }
    assert!(!d.ok(&["containers", "ls", "-q"]).contains("-no-gpus"));

    for tool in ["ctr", "stow"] {
        ok(
            &format!("{tool} --gpus"),
            create(tool, with_s, &format!("{tool}-gpus")),
        );
    }
    let records = get_pairs(&d.address, &["ctr-gpus", "stow-gpus"]);
    // Spelled out too, so that a reading of ctr that stow and this test shared cannot pass.
    let hooks = &spec_of(&records[1])["hooks"];
    let cli = cli.to_str().unwrap();
    let caps = [
        "--compute",
        "--compat32",
        "--graphics",
        "--utility",
        "--video",
        "--display",
    ];
    let mut args = vec![
        "containerd",
        "oci-hook",
        "--",
        cli,
        "--load-kmods",
        "configure",
    ];
    args.push("--device=0,2");
    args.extend(caps);
    args.extend(["--pid={{pid}}", "{{rootfs}}"]);
    assert_eq!(
        hooks,
        &json!({"prestart": [{
            "path": with.join("containerd").to_str().unwrap(),
            "args": args,
            "env": ["LANG=C", format!("PATH={}", with.display())],
        }]})
    );
}
