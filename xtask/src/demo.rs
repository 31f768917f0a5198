//! `cargo xtask demo`: the product end to end, with the real `ctr` as the client.
//!
//! Builds and starts `stowaged` on a temporary root and socket, imports a generated multi-layer
//! image (whiteouts, opaque directories, type changes across three layers; no network needed)
//! with `ctr images import --snapshotter overlayfs`, which unpacks it into overlayfs snapshots
//! through stowaged's Content, Images, Leases, Snapshots and Diff services; mounts the image's
//! rootfs with `ctr images mount`, lists it, unmounts it and stops the daemon with SIGTERM.
//!
//! `cargo xtask demo content` runs the smaller content-store demo instead.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use stowage_tests::fixtures;

use crate::system;

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None => daemon_demo(),
        Some("content") => crate::demo_content::run(),
        Some(other) => bail!("demo: unknown demo {other:?} (none for the daemon, or `content`)"),
    }
}

/// The workspace's target directory, as cargo picks it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn daemon_demo() -> Result<()> {
    // `ctr` comes with Debian's containerd package; the demo uses it only as a client.
    system::ensure_packages(&["containerd"])?;
    anyhow::ensure!(
        crate::have("ctr"),
        "the demo drives stowaged with the real `ctr`: run it as root so it can install \
         Debian's containerd package, or `apt-get install containerd`"
    );
    println!("== building stowaged");
    crate::run(Command::new(crate::cargo()).args([
        "build",
        "--quiet",
        "-p",
        "stowage-daemon",
        "--bin",
        "stowaged",
    ]))?;
    let stowaged = target_dir().join("debug/stowaged");

    let work = tempfile::Builder::new().prefix("stowage-demo-").tempdir()?;
    let dir = work.path();
    let images = fixtures::generate(&dir.join("fixtures"), true)?;
    let image = images
        .iter()
        .find(|i| i.name == "whiteouts")
        .context("fixture whiteouts missing")?;

    println!("== starting stowaged (root {})", dir.join("root").display());
    let daemon = Daemon::start(&stowaged, dir)?;
    let ctr = |args: &[&str]| daemon.ctr(args);

    print!("{}", ctr(&["version"])?);
    println!(
        "\n$ ctr images import --snapshotter overlayfs {}",
        image.archive.display()
    );
    print!(
        "{}",
        ctr(&[
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            image.archive.to_str().context("non-UTF-8 path")?,
        ])?
    );
    println!("\n$ ctr images ls");
    print!("{}", ctr(&["images", "ls"])?);
    println!("\n$ ctr snapshots --snapshotter overlayfs tree");
    print!(
        "{}",
        ctr(&["snapshots", "--snapshotter", "overlayfs", "tree"])?
    );

    let mnt = dir.join("rootfs");
    fs::create_dir_all(&mnt)?;
    let mnt_s = mnt.to_str().context("non-UTF-8 path")?;
    println!("\n$ ctr images mount {} {mnt_s}", image.reference);
    print!("{}", ctr(&["images", "mount", &image.reference, mnt_s])?);
    println!("\nthe image's rootfs, three layers merged by overlayfs:");
    let listed = list_tree(&mnt, &mnt);
    println!("\n$ ctr images unmount --rm {mnt_s}");
    let unmounted = ctr(&["images", "unmount", "--rm", mnt_s]);
    listed?;
    print!("{}", unmounted?);

    println!("\n== stopping stowaged (SIGTERM)");
    daemon.stop()?;
    println!("stopped cleanly");
    Ok(())
}

/// Prints every entry under `root` with its type, mode and size, like `find -ls` trimmed.
fn list_tree(root: &Path, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let md = fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            '-'
        };
        let rel = path.strip_prefix(root)?.display();
        let extra = if ft.is_symlink() {
            format!(" -> {}", fs::read_link(&path)?.display())
        } else {
            String::new()
        };
        println!(
            "  {kind} {:04o} {:>8}  /{rel}{extra}",
            md.mode() & 0o7777,
            md.len()
        );
        if ft.is_dir() {
            list_tree(root, &path)?;
        }
    }
    Ok(())
}

/// stowaged running on a private root, stopped with SIGTERM (and SIGKILL if it hangs).
struct Daemon {
    child: Option<Child>,
    address: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(binary: &Path, dir: &Path) -> Result<Daemon> {
        let address = dir.join("stowaged.sock");
        let log = dir.join("stowaged.log");
        let child = Command::new(binary)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut d = Daemon {
            child: Some(child),
            address,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.ctr(&["version"]).is_err() {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "stowaged exited with {st} during start-up:\n{}",
                    d.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!("stowaged did not answer within 20 s:\n{}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                anyhow::ensure!(
                    st.success(),
                    "stowaged exited with {st}:\n{}",
                    self.log_text()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        bail!("stowaged did not stop within 15 s of SIGTERM; killed")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
