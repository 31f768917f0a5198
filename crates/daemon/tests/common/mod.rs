//! Starts the `stowaged` built with these tests on a private root and socket, and runs the
//! real `ctr` against it.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running stowaged, stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct Stowaged {
    child: Option<Child>,
    /// `--root`.
    pub root: PathBuf,
    /// `--state`.
    pub state: PathBuf,
    /// The socket.
    pub address: PathBuf,
    log: PathBuf,
}

/// The result of one `ctr` run.
#[derive(Debug)]
pub struct Run {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

fn run_of(out: Output) -> Run {
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ctr --address <address> <args>` with `stdin` fed in.
pub fn ctr_at(address: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<Run> {
    use std::io::Write as _;
    let mut child = Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ctr")?;
    if let Some(data) = stdin {
        let mut si = child.stdin.take().context("ctr stdin")?;
        si.write_all(data)?;
    }
    Ok(run_of(child.wait_with_output()?))
}

impl Stowaged {
    /// Starts stowaged with root `<dir>/root`, state `<dir>/state`, socket `<dir>/s.sock`, and
    /// waits until `ctr version` answers.
    pub fn start(dir: &Path) -> Result<Stowaged> {
        Stowaged::start_with(&dir.join("root"), dir, &[])
    }

    /// Starts stowaged as [`Stowaged::start`] does, with a config that keeps the garbage
    /// collector from running on its own schedule: tests that store unreferenced content
    /// (as `ctr content ingest` does, with no lease) look at it before it could be collected.
    pub fn start_quiet_gc(dir: &Path) -> Result<Stowaged> {
        let cfg = dir.join("config.toml");
        fs::write(
            &cfg,
            "version = 2\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n  startup_delay = \"1h\"\n  mutation_threshold = 100000\n",
        )?;
        let cfg = cfg.to_str().context("config path")?.to_string();
        Stowaged::start_with(&dir.join("root"), dir, &["--config", &cfg])
    }

    /// Starts stowaged on `root` with its state and socket under `dir` and extra flags.
    pub fn start_with(root: &Path, dir: &Path, extra: &[&str]) -> Result<Stowaged> {
        let state = dir.join("state");
        let address = dir.join("s.sock");
        let log = dir.join("stowaged.log");
        let child = Command::new(env!("CARGO_BIN_EXE_stowaged"))
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(&state)
            .arg("--address")
            .arg(&address)
            .args(["--log-level", "stowage_daemon=debug,info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting stowaged")?;
        let mut me = Stowaged {
            child: Some(child),
            root: root.to_owned(),
            state,
            address,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if me.address.exists() && me.ctr(&["version"]).map(|r| r.ok).unwrap_or(false) {
                return Ok(me);
            }
            if let Some(c) = me.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("stowaged exited with {st} during start-up:\n{}", me.log());
                }
            }
            if Instant::now() > deadline {
                bail!("stowaged did not answer within 20 s:\n{}", me.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs ctr against this daemon.
    pub fn ctr(&self, args: &[&str]) -> Result<Run> {
        ctr_at(&self.address, args, None)
    }

    /// Runs ctr and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.ctr(args).expect("running ctr");
        assert!(
            r.ok,
            "ctr {} failed: {}\n--- stowaged log tail ---\n{}",
            args.join(" "),
            r.stderr,
            self.log_tail()
        );
        r.stdout
    }

    /// Runs ctr and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.ctr(args).expect("running ctr");
        assert!(!r.ok, "ctr {} succeeded: {}", args.join(" "), r.stdout);
        r.stderr
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then waits up to 10 s for a clean exit; returns whether it exited by itself
    /// with status 0.
    pub fn stop(mut self) -> Result<bool> {
        self.stop_inner()
    }

    /// SIGKILL: the daemon dies mid-work, as in a crash.
    pub fn kill(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn stop_inner(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(false)
    }
}

impl Drop for Stowaged {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Runs the `stow` built with these tests against the daemon at `address`, with `stdin`
/// fed in.
pub fn stow_at(address: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stow"))
        .arg("--address")
        .arg(address)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running stow");
    child
        .stdin
        .take()
        .expect("stow stdin")
        .write_all(stdin)
        .expect("feeding stow");
    child.wait_with_output().expect("waiting for stow")
}

/// A stowaged on `dir` with the collector kept quiet ([`Stowaged::start_quiet_gc`]) holding
/// the image archives `archives`, imported without unpacking (blobs and records only).
pub fn quiet_gc_with_images(dir: &Path, archives: &[&Path]) -> Stowaged {
    let d = Stowaged::start_quiet_gc(dir).expect("starting stowaged");
    for a in archives {
        d.ok(&[
            "images",
            "import",
            "--no-unpack",
            a.to_str().expect("archive path"),
        ]);
    }
    d
}

/// True when ctr (and, with `containerd`, the daemon) is installed; otherwise panics naming
/// it, unless STOWAGE_SKIP_EXTERNAL=1.
pub fn require_ctr(containerd: bool) -> bool {
    let mut progs = vec!["ctr"];
    if containerd {
        progs.push("containerd");
    }
    stowage_tests::containerd::require(&progs, "apt-get install containerd")
}

/// The small fixture archives, generated once per test binary under target/.
pub fn fixtures() -> &'static [stowage_tests::fixtures::Generated] {
    static ONCE: std::sync::OnceLock<Vec<stowage_tests::fixtures::Generated>> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = stowage_tests::fixtures::default_dir().join("daemon-small");
        stowage_tests::fixtures::generate(&dir, true).expect("generating fixtures")
    })
}

/// One line per entry below `root`, sorted: path, type, mode, owner, size, link target,
/// device number and a content hash, for comparing two unpacked trees.
pub fn tree(root: &Path) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let md = fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let ft = md.file_type();
            let extra = if ft.is_symlink() {
                fs::read_link(&p).expect("readlink").display().to_string()
            } else if ft.is_file() {
                hex(&Sha256::digest(fs::read(&p).expect("read")))
            } else if ft.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev={}", md.rdev())
            };
            let size = if ft.is_dir() { 0 } else { md.size() };
            out.push(format!(
                "{rel} mode={:o} uid={} gid={} size={size} nlink_file={} {extra}",
                md.mode(),
                md.uid(),
                md.gid(),
                if ft.is_file() { md.nlink() } else { 0 }
            ));
        }
    }
    out.sort();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
