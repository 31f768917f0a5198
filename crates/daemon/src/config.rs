//! The daemon's configuration: a TOML file shaped like containerd's `config.toml` (version 2)
//! and the command-line flags that override it.
//!
//! ```toml
//! version = 2
//! root = "/var/lib/stowage"
//! state = "/run/stowage"
//! [grpc]
//!   address = "/run/stowage/stowaged.sock"
//!   uid = 0
//!   gid = 0
//! [plugins."io.containerd.gc.v1.scheduler"]
//!   pause_threshold = 0.02
//!   deletion_threshold = 0
//!   mutation_threshold = 100
//!   schedule_delay = "0s"
//!   startup_delay = "100ms"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stowage_core_types::{Error, Result};
use stowage_metadata::GcConfig;

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/stowage";
/// Default state directory.
pub const DEFAULT_STATE: &str = "/run/stowage";
/// Default socket address.
pub const DEFAULT_ADDRESS: &str = "/run/stowage/stowaged.sock";

/// The plugin table key of the GC scheduler's knobs.
pub const GC_PLUGIN: &str = "io.containerd.gc.v1.scheduler";

/// The daemon's effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Persistent data (containerd's directory names below it).
    pub root: PathBuf,
    /// Runtime state (temporary mounts, the socket's directory by default).
    pub state: PathBuf,
    /// The unix socket path.
    pub address: PathBuf,
    /// Owner of the socket.
    pub uid: u32,
    /// Group of the socket.
    pub gid: u32,
    /// The garbage collector's scheduling.
    pub gc: GcConfig,
    /// `tracing` filter (`info`, `debug`, ...).
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            address: DEFAULT_ADDRESS.into(),
            uid: 0,
            gid: 0,
            gc: GcConfig::default(),
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: Option<i64>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    #[serde(default)]
    grpc: Grpc,
    #[serde(default)]
    debug: Debug,
    #[serde(default)]
    plugins: BTreeMap<String, toml::Value>,
    // containerd keys with no meaning for the storage plane: accepted, so one config.toml
    // serves both daemons, and ignored.
    #[allow(dead_code)]
    disabled_plugins: Option<toml::Value>,
    #[allow(dead_code)]
    required_plugins: Option<toml::Value>,
    #[allow(dead_code)]
    oom_score: Option<toml::Value>,
    #[allow(dead_code)]
    imports: Option<toml::Value>,
    #[allow(dead_code)]
    plugin_dir: Option<toml::Value>,
    #[allow(dead_code)]
    temp: Option<toml::Value>,
    #[allow(dead_code)]
    ttrpc: Option<toml::Value>,
    #[allow(dead_code)]
    metrics: Option<toml::Value>,
    #[allow(dead_code)]
    cgroup: Option<toml::Value>,
    #[allow(dead_code)]
    timeouts: Option<toml::Value>,
    #[allow(dead_code)]
    stream_processors: Option<toml::Value>,
    #[allow(dead_code)]
    proxy_plugins: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Grpc {
    address: Option<PathBuf>,
    uid: Option<u32>,
    gid: Option<u32>,
    #[allow(dead_code)]
    max_recv_message_size: Option<i64>,
    #[allow(dead_code)]
    max_send_message_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct Debug {
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcFile {
    pause_threshold: Option<f64>,
    deletion_threshold: Option<usize>,
    mutation_threshold: Option<usize>,
    schedule_delay: Option<String>,
    startup_delay: Option<String>,
}

/// Parses a Go-style duration (`"100ms"`, `"1s"`, `"2m"`, `"0s"`, `"1.5s"`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| Error::invalid_argument(format!("duration {s:?} has no unit")))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid_argument(format!("duration {s:?}: bad number {num:?}")))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(Error::invalid_argument(format!(
                "duration {s:?}: unknown unit {unit:?} (expected ns, us, ms, s, m or h)"
            )))
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// The configuration in `text` (a config.toml) over the defaults.
    pub fn parse(text: &str) -> Result<Config> {
        let file: File =
            toml::from_str(text).map_err(|e| Error::invalid_argument(format!("config: {e}")))?;
        if let Some(v) = file.version {
            if v != 2 {
                return Err(Error::invalid_argument(format!(
                    "config: version {v} is not supported, expected 2"
                )));
            }
        }
        let mut c = Config::default();
        if let Some(r) = file.root {
            c.root = r;
        }
        if let Some(s) = file.state {
            c.state = s;
        }
        if let Some(a) = file.grpc.address {
            c.address = a;
        }
        c.uid = file.grpc.uid.unwrap_or(0);
        c.gid = file.grpc.gid.unwrap_or(0);
        if let Some(l) = file.debug.level {
            c.log_level = l;
        }
        if let Some(gc) = file.plugins.get(GC_PLUGIN) {
            let gc: GcFile = gc.clone().try_into().map_err(|e| {
                Error::invalid_argument(format!("config: [plugins.\"{GC_PLUGIN}\"]: {e}"))
            })?;
            if let Some(v) = gc.pause_threshold {
                if !(v > 0.0 && v <= 0.5) {
                    return Err(Error::invalid_argument(format!(
                        "config: gc pause_threshold {v} must be in (0, 0.5]"
                    )));
                }
                c.gc.pause_threshold = v;
            }
            if let Some(v) = gc.deletion_threshold {
                c.gc.deletion_threshold = v;
            }
            if let Some(v) = gc.mutation_threshold {
                c.gc.mutation_threshold = v;
            }
            if let Some(v) = gc.schedule_delay {
                c.gc.schedule_delay = parse_duration(&v)?;
            }
            if let Some(v) = gc.startup_delay {
                c.gc.startup_delay = parse_duration(&v)?;
            }
        }
        Ok(c)
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        Config::parse(&text).map_err(|e| e.context(path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_shaped_file() {
        let c = Config::parse(
            r#"
version = 2
root = "/tmp/r"
state = "/tmp/s"
[grpc]
  address = "/tmp/s/x.sock"
  uid = 5
  gid = 6
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.1
  deletion_threshold = 3
  mutation_threshold = 50
  schedule_delay = "10ms"
  startup_delay = "1s"
"#,
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.state, PathBuf::from("/tmp/s"));
        assert_eq!(c.address, PathBuf::from("/tmp/s/x.sock"));
        assert_eq!((c.uid, c.gid), (5, 6));
        assert_eq!(c.gc.pause_threshold, 0.1);
        assert_eq!(c.gc.deletion_threshold, 3);
        assert_eq!(c.gc.mutation_threshold, 50);
        assert_eq!(c.gc.schedule_delay, Duration::from_millis(10));
        assert_eq!(c.gc.startup_delay, Duration::from_secs(1));
    }

    #[test]
    fn a_containerd_config_is_accepted() {
        let c = Config::parse(
            r#"
version = 2
root = "/tmp/r"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
oom_score = 0
[ttrpc]
  address = "/tmp/s/x.sock.ttrpc"
[debug]
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
"#,
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn defaults_and_bad_input() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(Config::parse("version = 1").is_err());
        assert!(Config::parse("bogus = 1").is_err());
        let e = Config::parse("[plugins.\"io.containerd.gc.v1.scheduler\"]\npause_threshold = 2.0")
            .unwrap_err();
        assert!(e.message().contains("pause_threshold"), "{e}");
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }
}
