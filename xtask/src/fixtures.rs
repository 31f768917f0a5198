//! `cargo xtask fixtures [--out DIR] [--small]`: writes the test images `stowage-tests` generates.

use std::path::PathBuf;

use anyhow::{Context, Result};
use stowage_tests::fixtures;

pub fn run(args: &[String]) -> Result<()> {
    let mut out = fixtures::default_dir();
    let mut small = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
            "--small" => small = true,
            other => anyhow::bail!("fixtures: unknown argument {other:?} (use --out DIR, --small)"),
        }
    }
    for img in fixtures::generate(&out, small)? {
        println!(
            "{:<14} {:<45} {}\n               layout {}\n               archive {}",
            img.name,
            img.reference,
            img.manifest_digest,
            img.layout.display(),
            img.archive.display()
        );
    }
    Ok(())
}
