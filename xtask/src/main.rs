//! `cargo xtask`: the project's automation, so that a fresh machine needs only `cargo`.
//!
//! - `cargo xtask test`: install the system packages the tests need (as root, with apt), then run
//!   every test of the workspace.
//! - `cargo xtask demo`: the main job: stowaged driven by the real `ctr` (see README).
//! - `cargo xtask fixtures`: generate the deterministic test images.
//! - `cargo xtask bench [NAME...]`: run the benchmarks side by side with their references.
//! - `cargo xtask spec-fields [--check]`: regenerate (or check) stow's runtime-spec field table.

mod demo;
mod demo_content;
mod fixtures;
mod spec_fields;
mod system;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test            install missing system packages (as root), then run the whole test suite
  demo [content]  start stowaged on a temp root, import and unpack a generated image with the
                  real ctr, mount and list its rootfs, stop; `content`: the content store alone
  fixtures [--out DIR] [--small]
                  generate the deterministic test images (OCI layouts and archives)
  bench [NAME..]  run benchmarks (content, bolt, diff, snapshots-overlay,
                  snapshots-native, metadata, diff-compare, daemon; default: all)
                  daemon: stowaged next to containerd 1.6 through ctr (pulls from a
                  local registry, lists, snapshots, ingest; STOWAGE_BENCH_QUICK=1 for
                  a short run)
  spec-fields [--check]
                  regenerate crates/daemon/src/bin/stow/spec_fields.rs from the
                  runtime-spec Go types; --check: fail if the committed file differs
  help            this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fixtures") => fixtures::run(&args[1..]),
        Some("spec-fields") => spec_fields::run(&args[1..]),
        Some("help") | Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(extra: &[String]) -> Result<()> {
    system::ensure_packages(system::TEST_PACKAGES)?;
    let mut cmd = Command::new(cargo());
    // Libraries, binaries and test targets, not benches: bench binaries measure for real and
    // belong to `cargo xtask bench` (clippy --all-targets still compiles them in CI).
    // `--include-ignored`: the slow acceptance tests (full fixture fidelity against containerd)
    // are ignored in a plain `cargo test` for quick local runs, but the suite runs them.
    cmd.args(["test", "--workspace", "--lib", "--bins", "--tests"])
        .args(extra)
        .args(["--", "--include-ignored"]);
    run(&mut cmd).context("the test suite failed")?;
    // Doc tests are not part of the target selection above.
    let mut doc = Command::new(cargo());
    doc.args(["test", "--workspace", "--doc"]);
    run(&mut doc).context("the doc tests failed")
}

/// Benchmarks by name: the package and bench target each one runs.
const BENCHES: &[(&str, &str, &str)] = &[
    ("content", "stowage-content", "ingest"),
    ("bolt", "stowage-bolt", "compare"),
    ("diff", "stowage-diff", "apply"),
    ("snapshots-overlay", "stowage-snapshots-overlay", "ops"),
    ("snapshots-native", "stowage-snapshots-native", "ops"),
    ("metadata", "stowage-metadata", "metadata"),
    ("diff-compare", "stowage-diff", "compare"),
    ("daemon", "stowage-daemon", "side_by_side"),
];

fn bench(names: &[String]) -> Result<()> {
    system::ensure_packages(system::TEST_PACKAGES)?;
    let selected: Vec<_> = if names.is_empty() {
        BENCHES.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                BENCHES
                    .iter()
                    .find(|(name, _, _)| name == n)
                    .with_context(|| format!("unknown benchmark {n:?}"))
            })
            .collect::<Result<_>>()?
    };
    for (name, package, target) in selected {
        println!("== bench {name}");
        let mut cmd = Command::new(cargo());
        cmd.args(["bench", "-p", package, "--bench", target]);
        run(&mut cmd).with_context(|| format!("benchmark {name} failed"))?;
    }
    Ok(())
}

/// True when `program` is on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs a command with inherited stdio and fails if it does.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}
