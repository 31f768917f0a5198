//! Runs the real containerd 1.6 (Debian's) for compatibility tests: a private root, state
//! directory and socket in a temp dir, started by the test and stopped by PID.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Set to `1` to skip tests that need programs from outside the workspace. CI never sets it.
pub const SKIP_ENV: &str = "STOWAGE_SKIP_EXTERNAL";

/// True when `program` can be run from `PATH`.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Decides whether an external-tool test runs: `true` when all `programs` exist; `false` when
/// some are missing and [`SKIP_ENV`] is `1`; otherwise panics with a message naming what is
/// missing and how to get it.
pub fn require(programs: &[&str], install_hint: &str) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipping: {missing:?} not installed and {SKIP_ENV}=1");
        return false;
    }
    panic!(
        "this test needs {missing:?}, which is not installed: {install_hint} \
         (`cargo xtask test` installs it as root), or set {SKIP_ENV}=1 to skip"
    );
}

/// A containerd 1.6 `config.toml` for a private daemon: `root`, `state`, the gRPC socket at
/// `address` (ttrpc beside it), shims looked up under `opt`, and the plugins a storage-only
/// daemon does not need (CRI, the other snapshotters, tracing) disabled.
pub fn config_toml(root: &Path, state: &Path, address: &Path, opt: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = root.display(),
        state = state.display(),
        address = address.display(),
        opt = opt.display(),
    )
}

/// A running containerd on a private root. Stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    /// The root directory (`--root`): content, metadata and snapshots live here.
    pub root: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    /// The gRPC socket.
    pub address: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Starts containerd with `root` (created if missing) and a state dir and socket under
    /// `workdir`, and waits until it answers `ctr version`.
    pub fn start(root: &Path, workdir: &Path) -> Result<Containerd> {
        Containerd::start_with(root, workdir, "")
    }

    /// [`Containerd::start`] with `extra` appended to the generated `config.toml` (plugin
    /// tables such as the bolt plugin's `content_sharing_policy`).
    pub fn start_with(root: &Path, workdir: &Path, extra: &str) -> Result<Containerd> {
        let state = workdir.join("state");
        let address = workdir.join("containerd.sock");
        let config = workdir.join("config.toml");
        let log = workdir.join("containerd.log");
        fs::create_dir_all(root)?;
        fs::create_dir_all(&state)?;
        let mut toml = config_toml(root, &state, &address, &workdir.join("opt"));
        toml.push_str(extra);
        fs::write(&config, toml)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(workdir.join("containerd.stderr"))?)
            .spawn()
            .context("starting containerd")?;
        let mut me = Containerd {
            child: Some(child),
            root: root.to_owned(),
            state,
            address,
            log,
        };
        me.wait_ready(workdir)?;
        Ok(me)
    }

    fn wait_ready(&mut self, workdir: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let err =
                        fs::read_to_string(workdir.join("containerd.stderr")).unwrap_or_default();
                    bail!("containerd exited with {status} during start-up:\n{err}");
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer on {} within 30 s",
                    self.address.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr --address <socket> <args>`, not yet run: for callers that feed it input or
    /// abandon it part-way (a client killed mid-ingest).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.address).args(args);
        cmd
    }

    /// Runs `ctr --address <socket> <args>` with `stdin` as its input and returns its stdout
    /// as bytes (blobs from `ctr content get` are binary); fails with its stderr.
    pub fn ctr_with_input(&self, args: &[&str], stdin: Stdio) -> Result<Vec<u8>> {
        let out = self
            .ctr_command(args)
            .stdin(stdin)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// Runs `ctr --address <socket> <args>` and returns its stdout; fails with its stderr.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr_with_input(args, Stdio::null())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The daemon's output so far (stdout, then stderr, where containerd's logger writes).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(&self.log).unwrap_or_default();
        out.push_str(&fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default());
        out
    }

    /// Stops containerd: SIGTERM, up to 10 s, then SIGKILL. The root is left as containerd
    /// closed it.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
