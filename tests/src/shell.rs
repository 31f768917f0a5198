//! Small programs for tests that need a real executable: `/bin/sh` scripts (stream
//! processors, failing tools) and coreutils' `base64` to encode what such a script decodes.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Writes `body` as the `/bin/sh` script `dir/name`, executable (0755), and returns its path.
pub fn script(dir: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}"))
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", path.display()))?;
    Ok(path)
}

/// `data` encoded by coreutils' `base64` (lines of 76 characters, as `base64 -d` reads back).
pub fn base64(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("base64")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running base64 (coreutils)")?;
    let mut stdin = child.stdin.take().context("base64's stdin")?;
    let data = data.to_vec();
    // Written from another thread: base64 fills its stdout pipe before it has read all input.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().context("waiting for base64")?;
    match writer.join() {
        Ok(r) => r.context("writing to base64")?,
        Err(_) => bail!("the thread writing to base64 panicked"),
    }
    if !out.status.success() {
        bail!("base64 exited with {}", out.status);
    }
    Ok(out.stdout)
}
