//! `--gpus N`: the NVIDIA prestart hook ctr records. The hook runs `containerd oci-hook`,
//! which hands the container's pid and root to `nvidia-container-cli configure`; both
//! programs are looked up in PATH when the record is made (and their paths recorded), and
//! the hook carries the caller's whole environment.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The program that runs OCI hooks for containerd.
const HOOK_RUNNER: &str = "containerd";
/// NVIDIA's helper that sets the GPUs up in the container.
const NVIDIA_CLI: &str = "nvidia-container-cli";
/// Every driver capability, in the order ctr passes them.
const CAPABILITIES: [&str; 6] = [
    "compute", "compat32", "graphics", "utility", "video", "display",
];

/// The prestart hook for GPUs `devices` (indexes), with this process's PATH and environment.
pub fn prestart_hook(devices: &[i64]) -> Result<Value> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let runner = look_path(HOOK_RUNNER, &path)?;
    let cli = look_path(NVIDIA_CLI, &path)?;
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv.to_string_lossy().into_owned()
        })
        .collect();
    Ok(hook(&runner, &cli, devices, env))
}

/// The hook entry: the runner's path, its arguments ending with the CLI's, and `env`.
fn hook(runner: &str, cli: &str, devices: &[i64], env: Vec<String>) -> Value {
    let mut args: Vec<String> = vec![
        "containerd".into(),
        "oci-hook".into(),
        "--".into(),
        cli.into(),
        // Loads the kernel modules the devices need.
        "--load-kmods".into(),
        "configure".into(),
    ];
    if !devices.is_empty() {
        let ids: Vec<String> = devices.iter().map(i64::to_string).collect();
        args.push(format!("--device={}", ids.join(",")));
    }
    args.extend(CAPABILITIES.iter().map(|c| format!("--{c}")));
    // Placeholders containerd's oci-hook fills in from the container's state.
    args.extend(["--pid={{pid}}".into(), "{{rootfs}}".into()]);
    json!({"path": runner, "args": args, "env": env})
}

/// Adds `hook` to the spec's prestart hooks.
pub fn with_prestart(spec: &mut Value, hook: Value) {
    let hooks = &mut spec["hooks"];
    if !hooks.is_object() {
        *hooks = json!({});
    }
    match hooks["prestart"].as_array_mut() {
        Some(list) => list.push(hook),
        None => hooks["prestart"] = json!([hook]),
    }
}

/// `name` looked up in `path_var` as Go's `exec.LookPath` (and ctr) does: the first regular
/// file with an execute bit, an empty entry meaning the working directory; a match in a
/// relative directory is refused rather than run from wherever the caller happens to be.
fn look_path(name: &str, path_var: &OsString) -> Result<String> {
    for dir in std::env::split_paths(path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(name);
        if !is_executable(&candidate) {
            continue;
        }
        if candidate.is_relative() {
            let shown = candidate.strip_prefix(".").unwrap_or(&candidate);
            bail!(
                "{name} resolves to executable in current directory (./{})",
                shown.display()
            );
        }
        return Ok(candidate.to_string_lossy().into_owned());
    }
    bail!("exec: {name:?}: executable file not found in $PATH (needed by --gpus)")
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| !m.is_dir() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_devices_and_every_capability() {
        let h = hook(
            "/bin/containerd",
            "/x/nvidia-container-cli",
            &[0, 2],
            vec!["A=1".into()],
        );
        assert_eq!(h["path"], "/bin/containerd");
        assert_eq!(
            h["args"],
            json!([
                "containerd",
                "oci-hook",
                "--",
                "/x/nvidia-container-cli",
                "--load-kmods",
                "configure",
                "--device=0,2",
                "--compute",
                "--compat32",
                "--graphics",
                "--utility",
                "--video",
                "--display",
                "--pid={{pid}}",
                "{{rootfs}}"
            ])
        );
        assert_eq!(h["env"], json!(["A=1"]));
        let mut s = json!({"process": {}});
        with_prestart(&mut s, json!({"path": "/a"}));
        with_prestart(&mut s, json!({"path": "/b"}));
        assert_eq!(
            s["hooks"],
            json!({"prestart": [{"path": "/a"}, {"path": "/b"}]})
        );
    }

    #[test]
    fn lookup_takes_the_first_executable_file() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(a.join("tool")).unwrap(); // a directory: skipped
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("tool"), "").unwrap(); // not executable: skipped
        let c = d.path().join("c");
        std::fs::create_dir(&c).unwrap();
        std::fs::write(c.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(c.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        assert_eq!(
            look_path("tool", &path).unwrap(),
            c.join("tool").to_str().unwrap()
        );
        let none = std::env::join_paths([&a, &b]).unwrap();
        let e = look_path("tool", &none).unwrap_err().to_string();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        // The same directory named relative to the working directory: refused.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count() - 1);
        let rel = PathBuf::from(format!("{up}{}", c.strip_prefix("/").unwrap().display()));
        assert!(rel.is_relative() && rel.join("tool").exists());
        let e = look_path("tool", &std::env::join_paths([&rel]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tool resolves to executable in current directory (./../"),
            "{e}"
        );
    }
}
