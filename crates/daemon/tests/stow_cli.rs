//! The `stow` CLI against stowaged, cross-checked with what `ctr` sees.

mod common;

use common::{require_ctr, Stowaged};

fn stow(d: &Stowaged, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stow"))
        .arg("--address")
        .arg(&d.address)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stow {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stow_fails(d: &Stowaged, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stow"))
        .arg("--address")
        .arg(&d.address)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "stow {} succeeded", args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn stow_lists_what_ctr_lists() {
    if !require_ctr(false) {
        return;
    }
    let fixtures = common::fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    for f in &fixtures[..2] {
        d.ok(&["images", "import", f.archive.to_str().unwrap()]);
    }
    let v = stow(&d, &["version"]);
    assert!(v.contains("UUID: ") && v.contains("-stowage"), "{v}");

    assert_eq!(
        lines(&stow(&d, &["images", "ls", "-q"])),
        lines(&d.ok(&["images", "ls", "-q"]))
    );
    assert_eq!(
        lines(&stow(&d, &["content", "ls", "-q"])),
        lines(&d.ok(&["content", "ls", "-q"]))
    );
    let ctr_keys: Vec<String> = {
        let mut v: Vec<String> = d
            .ok(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert!(!ctr_keys.is_empty());
    assert_eq!(lines(&stow(&d, &["snapshots", "ls", "-q"])), ctr_keys);
    let js: serde_json::Value =
        serde_json::from_str(&stow(&d, &["--format", "json", "images", "ls"])).unwrap();
    let arr = js.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for f in &fixtures[..2] {
        assert!(
            arr.iter()
                .any(|i| i["name"] == f.reference.as_str()
                    && i["digest"] == f.manifest_digest.as_str()),
            "{js}"
        );
    }
    let table = stow(&d, &["images", "ls"]);
    assert!(table.starts_with("REF "), "{table}");

    stow(&d, &["namespaces", "create", "tools", "a=1"]);
    stow(&d, &["namespaces", "label", "tools", "b=2", "a="]);
    let ns = d.ok(&["namespaces", "ls"]);
    let line = ns.lines().find(|l| l.starts_with("tools")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["tools", "b=2"],
        "{ns}"
    );
    stow(&d, &["namespaces", "rm", "tools"]);
    assert!(!d.ok(&["namespaces", "ls", "-q"]).contains("tools"));

    let id = stow(&d, &["leases", "create", "--id", "stow-lease"]);
    assert_eq!(id.trim(), "stow-lease");
    assert!(d.ok(&["leases", "ls", "-q"]).contains("stow-lease"));
    stow(&d, &["leases", "rm", "stow-lease"]);
    assert!(!d.ok(&["leases", "ls", "-q"]).contains("stow-lease"));

    let plugins = stow(
        &d,
        &["plugins", "ls", "-q", "type==io.containerd.snapshotter.v1"],
    );
    assert_eq!(lines(&plugins), ["native", "overlayfs"]);

    let err = stow_fails(&d, &["images", "rm", "nope"]);
    assert!(err.contains("not found"), "{err}");
    let err = stow_fails(&d, &["snapshots", "--snapshotter", "zfs", "ls"]);
    assert!(err.contains("snapshotter not loaded: zfs"), "{err}");
}
