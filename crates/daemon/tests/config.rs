//! stowaged started with containerd's snapshotter plugin options in its config.toml: the
//! snapshotters live under their `root_path`, and overlayfs reports each snapshot's upper
//! directory in the `containerd.io/snapshot/overlay.upperdir` label when `upperdir_label` is on.

mod common;

use std::path::Path;

use common::{require_ctr, Stowaged};

const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// The labels of `ctr snapshots info` output (JSON).
fn labels(info: &str) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(info).unwrap_or_else(|e| panic!("{e}: {info}"));
    v.get("Labels")
        .and_then(|l| l.as_object())
        .cloned()
        .unwrap_or_default()
}

fn start(work: &Path, config: &str) -> Stowaged {
    let cfg = work.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    Stowaged::start_with(
        &work.join("root"),
        work,
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap()
}

#[test]
fn root_path_and_upperdir_label() {
    if !require_ctr(false) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ovl = work.path().join("elsewhere/overlay");
    let nat = work.path().join("elsewhere/native");
    let d = start(
        work.path(),
        &format!(
            r#"version = 2
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "{}"
  upperdir_label = true
  sync_remove = false
  a_key_from_the_future = 1
[plugins."io.containerd.snapshotter.v1.native"]
  root_path = "{}"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "shared"
[plugins."io.containerd.internal.v1.opt"]
  path = "{}"
"#,
            ovl.display(),
            nat.display(),
            work.path().join("opt").display()
        ),
    );
    // containerd 1.7's sync_remove is a known key (honoured), unlike the one from the future.
    assert!(
        !d.log().contains("unknown key \"sync_remove\""),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("a_key_from_the_future"),
        "the ignored key is not logged:\n{}",
        d.log()
    );

    d.ok(&["snapshots", "prepare", "base", ""]);
    let info = d.ok(&["snapshots", "info", "base"]);
    let l = labels(&info);
    let upper = l
        .get(UPPERDIR_LABEL)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no {UPPERDIR_LABEL} label: {info}"))
        .to_string();
    assert!(
        upper.starts_with(ovl.join("snapshots").to_str().unwrap()) && upper.ends_with("/fs"),
        "{upper}"
    );
    // The label is the real upper directory: a file put there is in the committed layer.
    std::fs::write(Path::new(&upper).join("hello"), "from the upper dir").unwrap();
    d.ok(&["snapshots", "commit", "layer", "base"]);
    let l = labels(&d.ok(&["snapshots", "info", "layer"]));
    assert_eq!(
        l.get(UPPERDIR_LABEL).and_then(|v| v.as_str()),
        Some(&*upper)
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&upper).join("hello")).unwrap(),
        "from the upper dir"
    );
    // Listing and label updates carry it too; it is computed, never stored.
    let ls = d.ok(&["snapshots", "ls"]);
    assert!(ls.contains("layer"), "{ls}");
    d.ok(&["snapshots", "label", "layer", "x=y"]);
    let l = labels(&d.ok(&["snapshots", "info", "layer"]));
    assert_eq!(l.get("x").and_then(|v| v.as_str()), Some("y"));
    assert_eq!(
        l.get(UPPERDIR_LABEL).and_then(|v| v.as_str()),
        Some(&*upper)
    );

    d.ok(&["snapshots", "--snapshotter", "native", "prepare", "n1", ""]);
    let l = labels(&d.ok(&["snapshots", "--snapshotter", "native", "info", "n1"]));
    assert!(!l.contains_key(UPPERDIR_LABEL), "{l:?}");

    // Everything of the snapshotters is under root_path, nothing under the root.
    assert!(ovl.join("metadata.db").is_file());
    assert!(nat.join("metadata.db").is_file());
    assert_eq!(std::fs::read_dir(nat.join("snapshots")).unwrap().count(), 1);
    let root = work.path().join("root");
    for dir in [
        "io.containerd.snapshotter.v1.overlayfs",
        "io.containerd.snapshotter.v1.native",
    ] {
        assert!(!root.join(dir).exists(), "{dir} was created under the root");
    }
    assert!(root
        .join("io.containerd.metadata.v1.bolt/meta.db")
        .is_file());
    // As in containerd, removal drops the record and leaves the backend to the collector;
    // the collection removes the directory under root_path.
    d.ok(&["snapshots", "--snapshotter", "native", "rm", "n1"]);
    d.ok(&["leases", "create", "--id", "gc-trigger"]);
    d.ok(&["leases", "rm", "--sync", "gc-trigger"]);
    assert_eq!(std::fs::read_dir(nat.join("snapshots")).unwrap().count(), 0);
    // Introspection reports the snapshotter's real root.
    let plugins = d.ok(&["plugins", "ls", "--detailed", "id==overlayfs"]);
    assert!(plugins.contains(ovl.to_str().unwrap()), "{plugins}");
    assert!(d.stop().unwrap());

    // Restarted without the label option: same snapshots, no label.
    let d = start(
        work.path(),
        &format!(
            "version = 2\n[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\n  root_path = \"{}\"\n",
            ovl.display()
        ),
    );
    let l = labels(&d.ok(&["snapshots", "info", "layer"]));
    assert!(!l.contains_key(UPPERDIR_LABEL), "{l:?}");
    assert_eq!(l.get("x").and_then(|v| v.as_str()), Some("y"));
}

#[test]
fn bad_plugin_options_stop_the_start() {
    let work = tempfile::tempdir().unwrap();
    for (config, want) in [
        (
            "[plugins.\"io.containerd.metadata.v1.bolt\"]\ncontent_sharing_policy = \"sometimes\"\n",
            "unknown policy: sometimes",
        ),
        (
            "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\nupperdir_label = \"on\"\n",
            "upperdir_label",
        ),
    ] {
        let cfg = work.path().join("bad.toml");
        std::fs::write(&cfg, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowaged"))
            .arg("--config")
            .arg(&cfg)
            .arg("--root")
            .arg(work.path().join("root"))
            .arg("--state")
            .arg(work.path().join("state"))
            .arg("--address")
            .arg(work.path().join("s.sock"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{config}: {err}");
        assert!(!work.path().join("root").exists(), "{config}");
    }
}
