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
//! [plugins."io.containerd.snapshotter.v1.overlayfs"]
//!   root_path = "/data/overlayfs"
//!   upperdir_label = true
//! [plugins."io.containerd.snapshotter.v1.native"]
//!   root_path = "/data/native"
//! [plugins."io.containerd.metadata.v1.bolt"]
//!   # "shared" (default): a namespace gets a blob another one stored by its digest alone;
//!   # "isolated": it must write the whole blob (containerd 1.6 semantics; 1.7's
//!   # containerd.io/namespace.shareable namespace label is not honoured).
//!   content_sharing_policy = "shared"
//! [plugins."io.stowage.unpack.v1.eager"]
//!   # Unpack an image in the daemon as soon as a client holding a lease creates or retargets
//!   # it (see [`crate::eager`]); the snapshotter is the one the namespace last unpacked
//!   # into, or this one.
//!   enabled = true
//!   snapshotter = "overlayfs"
//! [stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]
//!   accepts = ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
//!   returns = "application/vnd.oci.image.layer.v1.tar+gzip"
//!   path = "ctd-decoder"
//!   args = ["--decryption-keys-path", "/keys"]
//!   env = ["OCICRYPT_KEYPROVIDER_CONFIG=/etc/ocicrypt.json"]
//! ```
//!
//! As in containerd, a key a plugin table does not know is ignored (it is reported in
//! [`Config::warnings`] so the daemon can log it), while a known key of the wrong type fails
//! the load. Tables of plugins stowage does not have (the CRI plugin, `opt`, ...) are
//! accepted and ignored, so one config.toml serves both daemons.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stowage_core_types::{Error, Result};
use stowage_diff::StreamProcessor;
use stowage_metadata::GcConfig;

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/stowage";
/// Default state directory.
pub const DEFAULT_STATE: &str = "/run/stowage";
/// Default socket address.
pub const DEFAULT_ADDRESS: &str = "/run/stowage/stowaged.sock";

/// The plugin table key of the GC scheduler's knobs.
pub const GC_PLUGIN: &str = "io.containerd.gc.v1.scheduler";
/// The plugin table key of the overlayfs snapshotter.
pub const OVERLAY_PLUGIN: &str = "io.containerd.snapshotter.v1.overlayfs";
/// The plugin table key of the native snapshotter.
pub const NATIVE_PLUGIN: &str = "io.containerd.snapshotter.v1.native";
/// The plugin table key of the metadata store.
pub const BOLT_PLUGIN: &str = "io.containerd.metadata.v1.bolt";
/// The plugin table key of eager unpacking (stowage's own; containerd ignores the table).
pub const EAGER_PLUGIN: &str = "io.stowage.unpack.v1.eager";
/// The snapshotters stowaged has, by name.
pub const SNAPSHOTTERS: &[&str] = &["overlayfs", "native"];

/// Eager unpacking's options (`[plugins."io.stowage.unpack.v1.eager"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EagerConfig {
    /// `enabled` (default true): unpack images created or retargeted under a lease.
    pub enabled: bool,
    /// `snapshotter` (default `overlayfs`): where to unpack for a namespace that has not
    /// unpacked anything since the daemon started.
    pub snapshotter: String,
}

impl Default for EagerConfig {
    fn default() -> Self {
        EagerConfig {
            enabled: true,
            snapshotter: "overlayfs".into(),
        }
    }
}

/// The overlayfs snapshotter's options (containerd 1.6's `overlay/plugin.Config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayConfig {
    /// `root_path`: the snapshotter's root instead of `<root>/io.containerd.snapshotter.v1.overlayfs`.
    pub root_path: Option<PathBuf>,
    /// `upperdir_label`: stat, update and walk add `containerd.io/snapshot/overlay.upperdir`.
    pub upperdir_label: bool,
    /// `sync_remove` (containerd 1.7; 1.6 does not know it and always defers). Unset or
    /// `false`: removing a snapshot deletes its record and leaves the directory to the
    /// cleanup the collector runs next, as 1.6 does; `true`: the directory goes in the same
    /// call.
    pub sync_remove: Option<bool>,
}

/// The native snapshotter's options (containerd 1.6's `native/plugin.Config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeConfig {
    /// `root_path`: the snapshotter's root instead of `<root>/io.containerd.snapshotter.v1.native`.
    pub root_path: Option<PathBuf>,
}

/// How content is shared between namespaces (the bolt plugin's `content_sharing_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SharingPolicy {
    /// `"shared"`: a blob stored in one namespace can be added to another by its digest alone.
    #[default]
    Shared,
    /// `"isolated"`: a namespace gets a blob only by writing all of its bytes.
    Isolated,
}

impl From<SharingPolicy> for stowage_metadata::ContentSharing {
    fn from(p: SharingPolicy) -> Self {
        match p {
            SharingPolicy::Shared => stowage_metadata::ContentSharing::Shared,
            SharingPolicy::Isolated => stowage_metadata::ContentSharing::Isolated,
        }
    }
}

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
    /// The overlayfs snapshotter's options.
    pub overlay: OverlayConfig,
    /// The native snapshotter's options.
    pub native: NativeConfig,
    /// The metadata store's content sharing policy.
    pub sharing_policy: SharingPolicy,
    /// The `[stream_processors]` the Diff service's applier runs, ordered by id.
    pub stream_processors: Vec<StreamProcessor>,
    /// Eager unpacking.
    pub eager: EagerConfig,
    /// Keys of plugin tables that were ignored because the plugin does not know them.
    pub warnings: Vec<String>,
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
            overlay: OverlayConfig::default(),
            native: NativeConfig::default(),
            sharing_policy: SharingPolicy::Shared,
            stream_processors: Vec::new(),
            eager: EagerConfig::default(),
            warnings: Vec::new(),
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
    #[serde(default)]
    stream_processors: BTreeMap<String, toml::Value>,
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
struct GcFile {
    pause_threshold: Option<f64>,
    deletion_threshold: Option<usize>,
    mutation_threshold: Option<usize>,
    schedule_delay: Option<String>,
    startup_delay: Option<String>,
}

const GC_KEYS: &[&str] = &[
    "pause_threshold",
    "deletion_threshold",
    "mutation_threshold",
    "schedule_delay",
    "startup_delay",
];

#[derive(Debug, Default, Deserialize)]
struct OverlayFile {
    root_path: Option<String>,
    upperdir_label: Option<bool>,
    sync_remove: Option<bool>,
}

const OVERLAY_KEYS: &[&str] = &["root_path", "upperdir_label", "sync_remove"];

#[derive(Debug, Default, Deserialize)]
struct NativeFile {
    root_path: Option<String>,
}

const NATIVE_KEYS: &[&str] = &["root_path"];

#[derive(Debug, Default, Deserialize)]
struct BoltFile {
    content_sharing_policy: Option<String>,
}

const BOLT_KEYS: &[&str] = &["content_sharing_policy"];

#[derive(Debug, Default, Deserialize)]
struct EagerFile {
    enabled: Option<bool>,
    snapshotter: Option<String>,
}

const EAGER_KEYS: &[&str] = &["enabled", "snapshotter"];

/// One `[stream_processors."<id>"]` table (containerd 1.6's `config.StreamProcessor`).
#[derive(Debug, Default, Deserialize)]
struct ProcessorFile {
    #[serde(default)]
    accepts: Vec<String>,
    #[serde(default)]
    returns: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

const PROCESSOR_KEYS: &[&str] = &["accepts", "returns", "path", "args", "env"];

/// The `[stream_processors]` tables, by id. Unknown keys are noted in `warnings` as in plugin
/// tables; a processor with no `path` could never run, so it fails the load rather than every
/// apply of the types it accepts.
fn stream_processors(
    tables: &BTreeMap<String, toml::Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<StreamProcessor>> {
    let mut out = Vec::with_capacity(tables.len());
    for (id, v) in tables {
        let toml::Value::Table(t) = v else {
            return Err(Error::invalid_argument(format!(
                "config: [stream_processors.\"{id}\"] must be a table"
            )));
        };
        for k in t.keys().filter(|k| !PROCESSOR_KEYS.contains(&k.as_str())) {
            warnings.push(format!(
                "[stream_processors.\"{id}\"]: unknown key {k:?} ignored (known: {})",
                PROCESSOR_KEYS.join(", ")
            ));
        }
        let p: ProcessorFile = v.clone().try_into().map_err(|e| {
            Error::invalid_argument(format!("config: [stream_processors.\"{id}\"]: {e}"))
        })?;
        if p.path.is_empty() {
            return Err(Error::invalid_argument(format!(
                "config: [stream_processors.\"{id}\"]: path is required"
            )));
        }
        out.push(StreamProcessor {
            id: id.clone(),
            accepts: p.accepts,
            returns: p.returns,
            path: p.path.into(),
            args: p.args,
            env: p.env,
        });
    }
    Ok(out)
}

/// Decodes the table of plugin `name`, if present, into `T`, noting keys outside `known` in
/// `warnings` (containerd's decoder ignores them).
fn plugin_table<T: serde::de::DeserializeOwned>(
    plugins: &BTreeMap<String, toml::Value>,
    name: &str,
    known: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Option<T>> {
    let Some(v) = plugins.get(name) else {
        return Ok(None);
    };
    let toml::Value::Table(t) = v else {
        return Err(Error::invalid_argument(format!(
            "config: [plugins.\"{name}\"] must be a table"
        )));
    };
    for k in t.keys().filter(|k| !known.contains(&k.as_str())) {
        warnings.push(format!(
            "[plugins.\"{name}\"]: unknown key {k:?} ignored (known: {})",
            known.join(", ")
        ));
    }
    v.clone()
        .try_into()
        .map(Some)
        .map_err(|e| Error::invalid_argument(format!("config: [plugins.\"{name}\"]: {e}")))
}

/// A `root_path` as containerd takes it: empty means unset.
fn root_path(v: Option<String>) -> Option<PathBuf> {
    v.filter(|s| !s.is_empty()).map(PathBuf::from)
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
        // containerd refuses plugin keys that are not URIs of at least four parts.
        for k in file.plugins.keys() {
            if k.split('.').count() < 4 {
                return Err(Error::invalid_argument(format!(
                    "config: invalid plugin key URI {k:?} expect io.containerd.x.vx"
                )));
            }
        }
        let mut warnings = Vec::new();
        if let Some(gc) = plugin_table::<GcFile>(&file.plugins, GC_PLUGIN, GC_KEYS, &mut warnings)?
        {
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
        if let Some(o) =
            plugin_table::<OverlayFile>(&file.plugins, OVERLAY_PLUGIN, OVERLAY_KEYS, &mut warnings)?
        {
            c.overlay = OverlayConfig {
                root_path: root_path(o.root_path),
                upperdir_label: o.upperdir_label.unwrap_or(false),
                sync_remove: o.sync_remove,
            };
        }
        if let Some(n) =
            plugin_table::<NativeFile>(&file.plugins, NATIVE_PLUGIN, NATIVE_KEYS, &mut warnings)?
        {
            c.native.root_path = root_path(n.root_path);
        }
        if let Some(b) =
            plugin_table::<BoltFile>(&file.plugins, BOLT_PLUGIN, BOLT_KEYS, &mut warnings)?
        {
            c.sharing_policy = match b.content_sharing_policy.as_deref() {
                // containerd keeps its default for an empty policy.
                None | Some("") | Some("shared") => SharingPolicy::Shared,
                Some("isolated") => SharingPolicy::Isolated,
                Some(p) => {
                    return Err(Error::invalid_argument(format!(
                        "config: [plugins.\"{BOLT_PLUGIN}\"]: unknown policy: {p}"
                    )))
                }
            };
        }
        if let Some(e) =
            plugin_table::<EagerFile>(&file.plugins, EAGER_PLUGIN, EAGER_KEYS, &mut warnings)?
        {
            if let Some(v) = e.enabled {
                c.eager.enabled = v;
            }
            match e.snapshotter.as_deref() {
                None | Some("") => {}
                Some(name) if SNAPSHOTTERS.contains(&name) => c.eager.snapshotter = name.into(),
                Some(name) => {
                    return Err(Error::invalid_argument(format!(
                    "config: [plugins.\"{EAGER_PLUGIN}\"]: snapshotter {name:?} is not one of {}",
                    SNAPSHOTTERS.join(", ")
                )))
                }
            }
        }
        c.stream_processors = stream_processors(&file.stream_processors, &mut warnings)?;
        c.warnings = warnings;
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
        let e = Config::parse("[plugins.\"io.containerd.gc\"]\nx = 1").unwrap_err();
        assert!(e.message().contains("invalid plugin key URI"), "{e}");
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn snapshotter_and_metadata_options() {
        let c = Config::parse(
            r#"
version = 2
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "/data/ovl"
  upperdir_label = true
  sync_remove = true
[plugins."io.containerd.snapshotter.v1.native"]
  root_path = "/data/native"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "shared"
"#,
        )
        .unwrap();
        assert_eq!(
            c.overlay,
            OverlayConfig {
                root_path: Some("/data/ovl".into()),
                upperdir_label: true,
                sync_remove: Some(true),
            }
        );
        assert_eq!(c.native.root_path, Some(PathBuf::from("/data/native")));
        assert_eq!(c.sharing_policy, SharingPolicy::Shared);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        // Absent tables and an empty root_path keep the defaults, as in containerd.
        let c = Config::parse(
            "[plugins.\"io.containerd.snapshotter.v1.native\"]\nroot_path = \"\"\n\
             [plugins.\"io.containerd.metadata.v1.bolt\"]\ncontent_sharing_policy = \"\"",
        )
        .unwrap();
        assert_eq!(c.native.root_path, None);
        assert_eq!(c.overlay, OverlayConfig::default());
        assert_eq!(c.sharing_policy, SharingPolicy::Shared);
    }

    #[test]
    fn plugin_tables_ignore_unknown_keys_but_check_types() {
        let c = Config::parse(
            r#"
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  upperdir_label = true
  mount_options = ["nodev"]
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1s"
  future_knob = 3
[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
"#,
        )
        .unwrap();
        assert!(c.overlay.upperdir_label);
        assert_eq!(c.gc.startup_delay, Duration::from_secs(1));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("future_knob"), "{:?}", c.warnings);
        assert!(c.warnings[1].contains("mount_options"), "{:?}", c.warnings);

        for bad in [
            "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\nupperdir_label = \"yes\"",
            "[plugins.\"io.containerd.snapshotter.v1.native\"]\nroot_path = 7",
            "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\nsync_remove = 1",
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(
                e.is(stowage_core_types::ErrorKind::InvalidArgument),
                "{bad}: {e}"
            );
            assert!(e.message().contains("io.containerd.snapshotter.v1."), "{e}");
        }
    }

    #[test]
    fn stream_processor_tables() {
        let c = Config::parse(
            r#"
version = 2
[stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]
  accepts = ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
  returns = "application/vnd.oci.image.layer.v1.tar+gzip"
  path = "ctd-decoder"
  args = ["--decryption-keys-path", "/keys"]
  env = ["A=1", "B=2"]
[stream_processors."example.b64"]
  accepts = ["x/a", "x/b"]
  returns = "application/vnd.oci.image.layer.v1.tar"
  path = "/usr/local/bin/unb64"
  timeout = "1s"
"#,
        )
        .unwrap();
        assert_eq!(
            c.stream_processors,
            vec![
                StreamProcessor {
                    id: "example.b64".into(),
                    accepts: vec!["x/a".into(), "x/b".into()],
                    returns: "application/vnd.oci.image.layer.v1.tar".into(),
                    path: "/usr/local/bin/unb64".into(),
                    args: vec![],
                    env: vec![],
                },
                StreamProcessor {
                    id: "io.containerd.ocicrypt.decoder.v1.tar.gzip".into(),
                    accepts: vec!["application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into()],
                    returns: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    path: "ctd-decoder".into(),
                    args: vec!["--decryption-keys-path".into(), "/keys".into()],
                    env: vec!["A=1".into(), "B=2".into()],
                },
            ]
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("example.b64") && c.warnings[0].contains("timeout"),
            "{:?}",
            c.warnings
        );
        assert!(Config::parse("").unwrap().stream_processors.is_empty());

        for (bad, what) in [
            (
                "[stream_processors.p]\npath = \"x\"\naccepts = \"x/a\"",
                "accepts",
            ),
            (
                "[stream_processors.p]\npath = \"x\"\nreturns = 3",
                "returns",
            ),
            ("[stream_processors.p]\npath = [\"x\"]", "path"),
            ("[stream_processors.p]\npath = \"x\"\nargs = [1]", "args"),
            ("[stream_processors.p]\npath = \"x\"\nenv = \"A=1\"", "env"),
            (
                "[stream_processors.p]\naccepts = [\"x/a\"]",
                "path is required",
            ),
            ("stream_processors = { p = 1 }", "must be a table"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(
                e.is(stowage_core_types::ErrorKind::InvalidArgument),
                "{bad}: {e}"
            );
            assert!(
                e.message().contains("[stream_processors.\"p\"]"),
                "{bad}: {e}"
            );
            assert!(e.message().contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn eager_unpack_table() {
        assert_eq!(Config::parse("").unwrap().eager, EagerConfig::default());
        assert!(EagerConfig::default().enabled);
        let c = Config::parse(
            "[plugins.\"io.stowage.unpack.v1.eager\"]\nenabled = false\nsnapshotter = \"native\"\nlater = 1",
        )
        .unwrap();
        assert_eq!(
            c.eager,
            EagerConfig {
                enabled: false,
                snapshotter: "native".into()
            }
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("later"), "{:?}", c.warnings);
        // An empty name keeps the default, as containerd treats empty strings.
        let c =
            Config::parse("[plugins.\"io.stowage.unpack.v1.eager\"]\nsnapshotter = \"\"").unwrap();
        assert_eq!(c.eager, EagerConfig::default());
        for (bad, what) in [
            ("enabled = \"yes\"", "enabled"),
            ("snapshotter = 3", "snapshotter"),
            (
                "snapshotter = \"zfs\"",
                "\"zfs\" is not one of overlayfs, native",
            ),
        ] {
            let e = Config::parse(&format!("[plugins.\"io.stowage.unpack.v1.eager\"]\n{bad}"))
                .unwrap_err();
            assert!(
                e.is(stowage_core_types::ErrorKind::InvalidArgument),
                "{bad}: {e}"
            );
            assert!(e.message().contains("io.stowage.unpack.v1.eager"), "{e}");
            assert!(e.message().contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn sharing_policies() {
        let policy = |p: &str| {
            Config::parse(&format!(
                "[plugins.\"io.containerd.metadata.v1.bolt\"]\ncontent_sharing_policy = \"{p}\""
            ))
        };
        assert_eq!(
            policy("shared").unwrap().sharing_policy,
            SharingPolicy::Shared
        );
        assert_eq!(
            policy("isolated").unwrap().sharing_policy,
            SharingPolicy::Isolated
        );
        assert_eq!(
            stowage_metadata::ContentSharing::from(SharingPolicy::Isolated),
            stowage_metadata::ContentSharing::Isolated
        );
        assert_eq!(
            stowage_metadata::ContentSharing::from(SharingPolicy::Shared),
            stowage_metadata::ContentSharing::Shared
        );
        // Policy names are case-sensitive in containerd.
        let e = policy("Isolated").unwrap_err();
        assert!(e.is(stowage_core_types::ErrorKind::InvalidArgument), "{e}");
        let e = policy("open").unwrap_err();
        assert!(e.is(stowage_core_types::ErrorKind::InvalidArgument), "{e}");
        assert!(e.message().contains("unknown policy: open"), "{e}");
    }
}
