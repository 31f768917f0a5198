//! System packages the tests need, installed with apt when running as root.

use std::process::Command;

use anyhow::{Context, Result};

/// Debian packages the test suite uses: the real containerd 1.6 and `ctr` for compatibility
/// tests; Go with bbolt's and containerd's source for the differential tests that run the Go
/// implementation next to ours (bolt files, filters, platforms, media types); a local registry
/// and skopeo to push fixture images that `ctr images pull` then fetches through stowaged.
pub const TEST_PACKAGES: &[&str] = &[
    "containerd",
    "golang-go",
    "golang-github-coreos-bbolt-dev",
    "golang-github-containerd-containerd-dev",
    // The runtime-spec Go types `cargo xtask spec-fields --check` regenerates stow's table from
    // (containerd's dev package pulls it in too; named so the check's input is explicit).
    "golang-github-opencontainers-specs-dev",
    "docker-registry",
    "skopeo",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs whichever of `packages` are missing. Without root it only reports them: the tests
/// that need them then fail with a message naming what is missing.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: missing system packages {missing:?}; run as root to install them \
             (apt-get install {}), or the tests that need them will fail",
            missing.join(" ")
        );
        return Ok(());
    }
    println!("xtask: installing {}", missing.join(" "));
    crate::run(Command::new("apt-get").args(["update", "-q"])).context("apt-get update failed")?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))
}
