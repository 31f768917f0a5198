//! Debian's `docker-registry` on 127.0.0.1, for tests and benchmarks that pull over HTTP, and
//! `skopeo` to push OCI layouts into it.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the registry may take to answer `/v2/` after it is started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A `docker-registry serve` on 127.0.0.1 with its own storage, killed by PID on drop.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub host: String,
    log: PathBuf,
    /// The private directory of [`Registry::start`], removed after the registry stops.
    _dir: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry in a private temporary directory.
    pub fn start() -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("stowage-registry-")
            .tempdir()
            .context("creating the registry's directory")?;
        let mut reg = Registry::start_in(dir.path())?;
        reg._dir = Some(dir);
        Ok(reg)
    }

    /// Starts a registry with its configuration, storage and log under `dir`, and waits until
    /// `GET /v2/` answers 200.
    pub fn start_in(dir: &Path) -> Result<Registry> {
        // The kernel picks a free port; the listener closes just before the registry binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for docker-registry")?
            .port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
        let config = dir.join("config.yml");
        // Warnings only: the registry serves the pulls benchmarks time, on the same cores.
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {host}\n",
                storage.display()
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("registry.log");
        let stderr =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = Registry {
            child: Some(child),
            host,
            log,
            _dir: None,
        };
        let deadline = Instant::now() + READY_WITHIN;
        while !reg.answers() {
            if let Some(st) = reg.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("docker-registry exited with {st}:\n{}", reg.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer on {} within {READY_WITHIN:?}:\n{}",
                    reg.host,
                    reg.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    /// Whether `GET /v2/` answers 200, as the distribution API promises once it is up.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200")
    }

    /// What the registry has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pushes the OCI layout at `layout` (its `latest` tag; every platform of an index, with
    /// digests kept) as `<host>/<repository>:latest`, and returns that reference.
    pub fn push(&self, layout: &Path, repository: &str) -> Result<String> {
        let reference = format!("{}/{repository}:latest", self.host);
        let src = format!("oci:{}:latest", layout.display());
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--all",
                "--preserve-digests",
                "-q",
            ])
            .arg(&src)
            .arg(format!("docker://{reference}"))
            .output()
            .context("running skopeo (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {src} to {reference} failed: {}\n--- registry log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
