//! Opening a root, building the services and serving them on a unix socket until a signal.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stowage_content::LocalStore;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Error, Result};
use stowage_diff::StreamProcessor;
use stowage_metadata::{Db, Options, Scheduler};
use stowage_snapshots_native::NativeSnapshotter;
use stowage_snapshots_overlay::OverlaySnapshotter;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::eager::Eager;
use crate::events::Exchange;
use crate::services;

pub mod recovery;

/// containerd's content plugin directory.
pub const CONTENT_DIR: &str = "io.containerd.content.v1.content";
/// containerd's overlayfs snapshotter directory.
pub const OVERLAY_DIR: &str = "io.containerd.snapshotter.v1.overlayfs";
/// containerd's native snapshotter directory.
pub const NATIVE_DIR: &str = "io.containerd.snapshotter.v1.native";
/// The file holding the daemon's UUID (Introspection.Server), kept across restarts.
pub const UUID_FILE: &str = "io.containerd.grpc.v1.introspection/uuid";
/// Largest gRPC message either way, as containerd's clients use.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Everything the services share.
#[derive(Debug)]
pub struct State {
    /// The metadata database (and through it, content and snapshotters).
    pub db: Db,
    /// The event exchange.
    pub exchange: Exchange,
    /// The daemon's persistent UUID.
    pub uuid: String,
    /// The root directory.
    pub root: PathBuf,
    /// The state directory (temporary mounts live below it).
    pub state: PathBuf,
    /// Snapshotters that loaded, by name, and the error of those that did not.
    pub snapshotters: BTreeMap<String, std::result::Result<(), String>>,
    /// Each snapshotter's root directory (`root_path` or its directory under the root).
    pub snapshotter_roots: BTreeMap<String, PathBuf>,
    /// The configured `[stream_processors]`, run by the Diff service's applier.
    pub stream_processors: Vec<StreamProcessor>,
    /// The garbage collection scheduler, stopped at shutdown.
    pub scheduler: std::sync::Mutex<Option<Scheduler>>,
    /// Eager unpack: its configuration, jobs and their pending layers.
    pub eager: Eager,
}

/// How long shutdown waits for eager unpack jobs to reach their next layer and stop. A job
/// still applying a layer after that is abandoned: what it made belongs to its lease.
const EAGER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Fails with Unavailable when another process holds the lock of a database file under
/// `root` (containerd and bbolt take an exclusive `flock`), so start-up refuses a root in use
/// at once instead of waiting on it.
fn check_root_free(root: &Path, snapshotter_roots: &BTreeMap<String, PathBuf>) -> Result<()> {
    let files = std::iter::once(root.join("io.containerd.metadata.v1.bolt/meta.db"))
        .chain(snapshotter_roots.values().map(|r| r.join("metadata.db")));
    for path in files {
        let Ok(f) = OpenOptions::new().read(true).open(&path) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; it only affects the lock state of that file.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::unavailable(format!(
                "root {} is in use by another daemon ({} is locked); stop it or choose another --root",
                root.display(),
                path.display()
            )));
        }
        // Closing `f` releases the probe lock.
    }
    Ok(())
}

fn load_uuid(root: &Path) -> Result<String> {
    let path = root.join(UUID_FILE);
    if let Ok(s) = fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if uuid::Uuid::parse_str(&s).is_ok() {
            return Ok(s);
        }
    }
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, &id).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(format!("rename {}", path.display()), e))?;
    Ok(id)
}

impl State {
    /// Opens the stores under `cfg.root` (creating them when new) and starts the GC scheduler.
    pub fn open(cfg: &Config) -> Result<State> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&cfg.root)
            .map_err(|e| Error::io(format!("create root {}", cfg.root.display()), e))?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&cfg.state)
            .map_err(|e| Error::io(format!("create state {}", cfg.state.display()), e))?;
        for w in &cfg.warnings {
            tracing::warn!("config: {w}");
        }
        for p in &cfg.stream_processors {
            tracing::info!(
                id = %p.id,
                accepts = ?p.accepts,
                returns = %p.returns,
                path = %p.path.display(),
                "stream processor configured"
            );
        }
        let overlay_root = cfg
            .overlay
            .root_path
            .clone()
            .unwrap_or_else(|| cfg.root.join(OVERLAY_DIR));
        let native_root = cfg
            .native
            .root_path
            .clone()
            .unwrap_or_else(|| cfg.root.join(NATIVE_DIR));
        let roots: BTreeMap<String, PathBuf> = [
            ("overlayfs".to_string(), overlay_root.clone()),
            ("native".to_string(), native_root.clone()),
        ]
        .into();
        check_root_free(&cfg.root, &roots)?;
        let content_root = cfg.root.join(CONTENT_DIR);
        let content = Arc::new(LocalStore::open(&content_root)?);
        let mut snapshotters: BTreeMap<String, Arc<dyn Snapshotter>> = BTreeMap::new();
        let mut loaded = BTreeMap::new();
        let overlay = OverlaySnapshotter::with_options(
            &overlay_root,
            stowage_snapshots_overlay::Options {
                upperdir_label: cfg.overlay.upperdir_label,
                // containerd 1.6 always defers removal to the collector's cleanup; 1.7's
                // `sync_remove = true` removes the directory within the call.
                async_remove: cfg.overlay.sync_remove != Some(true),
            },
        )
        .map(|s| Arc::new(s) as Arc<dyn Snapshotter>);
        let native =
            NativeSnapshotter::new(&native_root).map(|s| Arc::new(s) as Arc<dyn Snapshotter>);
        for (name, opened) in [("overlayfs", overlay), ("native", native)] {
            match opened {
                Ok(s) => {
                    // Directories a crash left behind, before anything can create new ones.
                    recovery::clean_snapshotter(name, s.as_ref());
                    snapshotters.insert(name.into(), s);
                    loaded.insert(name.to_string(), Ok(()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{name} snapshotter not loaded");
                    loaded.insert(name.to_string(), Err(e.to_string()));
                }
            }
        }
        let db = Db::open(
            &cfg.root,
            Options {
                lock_timeout: Duration::from_millis(200),
                content: Some(content),
                snapshotters,
                no_sync: false,
                content_sharing: cfg.sharing_policy.into(),
            },
        )
        .map_err(|e| e.context(format!("opening metadata under {}", cfg.root.display())))?;
        // With meta.db locked no other daemon works on this root, and nothing is served yet.
        let removed = recovery::clean_content(&content_root)
            .map_err(|e| e.context("cleaning up the content store"))?;
        if removed != recovery::Removed::default() {
            tracing::info!(
                temp_files = removed.temp_files,
                dead_ingests = removed.dead_ingests,
                "removed content left by an earlier crash"
            );
        }
        recovery::remove_temp_beside(&cfg.root.join(UUID_FILE))?;
        // Backend snapshots and blobs no record names (a crash between a backend's commit and
        // meta.db's) go at the scheduler's first collection: every backend starts dirty.
        let scheduler = Scheduler::start(&db, cfg.gc)?;
        Ok(State {
            db,
            exchange: Exchange::new(),
            uuid: load_uuid(&cfg.root)?,
            root: cfg.root.clone(),
            state: cfg.state.clone(),
            snapshotters: loaded,
            snapshotter_roots: roots,
            stream_processors: cfg.stream_processors.clone(),
            scheduler: std::sync::Mutex::new(Some(scheduler)),
            eager: Eager::new(cfg.eager.clone()),
        })
    }

    /// Stops eager unpack jobs (waiting a little for them to reach a layer boundary) and the
    /// GC scheduler (waiting for a running collection).
    pub fn close(&self) {
        self.eager.request_stop();
        if !self.eager.wait_idle(EAGER_STOP_WAIT) {
            tracing::info!("eager unpack still applying a layer at shutdown; left to its lease");
        }
        if let Ok(mut s) = self.scheduler.lock() {
            if let Some(s) = s.take() {
                s.stop();
            }
        }
    }
}

/// Binds the unix socket at `path` (0660, owned by `uid:gid`), replacing a stale one.
pub fn bind(path: &Path, uid: u32, gid: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("remove stale socket {}", path.display()),
                e,
            ))
        }
    }
    let l = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
    Ok(l)
}

/// Serves every service on `listener` until `shutdown` resolves, then closes the state.
pub async fn serve(
    state: Arc<State>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let router = services::router(state.clone());
    let incoming = UnixListenerStream::new(listener);
    // Jobs stop at their next layer as soon as the signal comes, so that requests waiting on
    // them are answered and the server can drain.
    let st = state.clone();
    let shutdown = async move {
        shutdown.await;
        st.eager.request_stop();
    };
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.close()).await?;
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
