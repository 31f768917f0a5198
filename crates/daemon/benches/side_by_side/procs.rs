//! The processes the benchmark runs: containerd 1.6 and stowaged on private roots and sockets,
//! and `ctr` against either daemon (the registry is `stowage_tests::registry`). Each is
//! stopped by its own PID on drop, and the scratch directory unmounts whatever was left
//! mounted below it before it is removed, so a failed run leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A scratch directory: on drop, every mount below it is detached, then it is removed.
#[derive(Debug)]
pub struct Workdir {
    dir: Option<tempfile::TempDir>,
}

impl Workdir {
    /// A new directory under `parent`.
    pub fn new(parent: &Path) -> Result<Workdir> {
        fs::create_dir_all(parent)?;
        let dir = tempfile::Builder::new()
            .prefix("stowage-bench-daemon-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a scratch dir in {}", parent.display()))?;
        Ok(Workdir { dir: Some(dir) })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// Mount points at or below this directory, deepest first.
    fn mounts(&self) -> Vec<PathBuf> {
        let me = self.path();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut out: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(me))
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        for m in self.mounts() {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2(2) with a valid NUL-terminated path; MNT_DETACH cannot leave
                // a half-unmounted state, the kernel finishes it when the mount is unused.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        if let Some(d) = self.dir.take() {
            let path = d.path().to_owned();
            if let Err(e) = d.close() {
                eprintln!("removing {}: {e}", path.display());
            }
        }
    }
}

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// containerd 1.6 (Debian's).
    Containerd,
    /// stowaged, as built with this bench.
    Stowaged,
}

impl Kind {
    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Containerd => "containerd",
            Kind::Stowaged => "stowaged",
        }
    }
}

/// A running daemon, SIGTERM then SIGKILL on drop.
#[derive(Debug)]
pub struct Daemon {
    /// Which one.
    pub kind: Kind,
    child: Option<Child>,
    /// The gRPC socket.
    pub address: PathBuf,
    /// Its root directory.
    pub root: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// containerd with root, state and socket under `dir`, and the plugins a storage-only
    /// comparison does not need (CRI, the other snapshotters) disabled.
    pub fn containerd(dir: &Path) -> Result<Daemon> {
        let root = dir.join("root");
        let state = dir.join("state");
        let address = dir.join("containerd.sock");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&state)?;
        let config = dir.join("config.toml");
        fs::write(
            &config,
            stowage_tests::containerd::config_toml(&root, &state, &address, &dir.join("opt")),
        )?;
        let log = dir.join("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting containerd")?;
        Daemon::ready(Kind::Containerd, child, address, root, log)
    }

    /// stowaged (`binary`) with root, state and socket under `dir`, logging at `log_level`.
    pub fn stowaged(binary: &Path, dir: &Path, log_level: &str) -> Result<Daemon> {
        let root = dir.join("root");
        let address = dir.join("stowaged.sock");
        let log = dir.join("stowaged.log");
        let child = Command::new(binary)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&address)
            .args(["--log-level", log_level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Daemon::ready(Kind::Stowaged, child, address, root, log)
    }

    fn ready(
        kind: Kind,
        child: Child,
        address: PathBuf,
        root: PathBuf,
        log: PathBuf,
    ) -> Result<Daemon> {
        let mut me = Daemon {
            kind,
            child: Some(child),
            address,
            root,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.address.exists() && me.ctr(&["version"]).is_ok() {
                return Ok(me);
            }
            if let Some(st) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "{} exited with {st} during start-up:\n{}",
                    kind.name(),
                    me.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer within 30 s:\n{}",
                    kind.name(),
                    me.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let l = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.address).args(args);
        c
    }

    /// Runs `ctr <args>` and returns its stdout; fails naming the command and its stderr.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = self
            .ctr_cmd(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {} against {} failed: {}",
                args.join(" "),
                self.kind.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ctr <args>` with stdout discarded and `stdin` as its input, and returns how long
    /// it took; fails as [`Daemon::ctr`] does.
    pub fn ctr_timed(&self, args: &[&str], stdin: Option<fs::File>) -> Result<Duration> {
        let stdin = stdin.map(Stdio::from).unwrap_or_else(Stdio::null);
        Ok(self.timed(args, stdin, Stdio::null())?.0)
    }

    /// Runs `ctr <args>` and returns how long it took and its stdout; fails as
    /// [`Daemon::ctr_timed`] does.
    pub fn ctr_timed_output(&self, args: &[&str]) -> Result<(Duration, String)> {
        self.timed(args, Stdio::null(), Stdio::piped())
    }

    fn timed(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> Result<(Duration, String)> {
        let start = Instant::now();
        let out = self
            .ctr_cmd(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .context("running ctr")?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "ctr {} against {} failed: {}\n--- {} log ---\n{}",
                args.join(" "),
                self.kind.name(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.kind.name(),
                self.log_tail()
            );
        }
        Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Resets the kernel's peak-RSS mark (VmHWM) of the daemon.
    pub fn reset_peak_rss(&self) {
        // "5" resets the peak resident set size (proc(5), clear_refs).
        let _ = fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// VmHWM in KiB: the peak resident set since start or the last reset.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM for {}", self.kind.name()))
    }

    /// Current resident memory split as the kernel counts it: (RssAnon, RssFile + RssShmem)
    /// in KiB. File pages include mmapped databases, which the peak mark counts too.
    pub fn rss_split_kib(&self) -> Result<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Ok((field("RssAnon:"), field("RssFile:") + field("RssShmem:")))
    }

    /// True when the content store's backing file for `digest` is on disk.
    pub fn has_blob_file(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(hex)
            .exists()
    }

    fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// True when every program is on PATH; otherwise the error names what is missing.
pub fn require(programs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !stowage_tests::containerd::have(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "this benchmark needs {missing:?}: apt-get install containerd docker-registry skopeo"
        );
    }
    Ok(())
}

/// Writes dirty pages back and empties the page cache, so each timed run starts cold. Returns
/// false when the cache cannot be dropped (not root).
pub fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}
