//! `containers ls|info|create|label|rm`: container records (stowage stores them; it runs nothing).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use stowage_core_types::mount::Mount;
use stowage_core_types::platform::Matcher;
use stowage_core_types::snapshot::Snapshotter as _;
use stowage_daemon::api::containerd::services::containers::v1::*;
use stowage_daemon::api::containerd::services::snapshots::v1 as snapshots_pb;

use crate::output::{
    label_args, label_update, labels_joined, print_json, rfc3339_nano, system_time, ListArgs, Table,
};
use stowage_snapshots_storage::mount::{mount_all, unmount_all};

use crate::{blocking, rpc, spec, Ctx};

/// The type URL containerd gives an OCI runtime spec (the value is the spec's JSON).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The runtime ctr records by default.
const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// The type URL of runc's (empty) options, which ctr records for the default runtime.
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// The type URL of the options carrying `--runtime-config-path` for other runtimes.
const RUNTIME_OPTIONS_TYPE_URL: &str = "runtimeoptions.v1.Options";
/// The label holding the signal that stops the container.
const STOP_SIGNAL_LABEL: &str = "io.containerd.image.config.stop-signal";
/// The stop signal when the image names none.
const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";

/// The `containers` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List containers.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// A container's record, as JSON.
    Info {
        /// Print only the OCI spec.
        #[arg(long)]
        spec: bool,
        id: String,
    },
    /// Record a container as `ctr containers create` does: the image is unpacked if needed,
    /// an active snapshot named by the ID is prepared on it, and containerd's default spec
    /// is recorded with the image's process defaults; with --rootfs a directory stands for
    /// the image; with --config the given spec is recorded.
    Create(Box<CreateArgs>),
    /// Set (`k=v`) or remove (`k=`) labels of a container; prints the labels it has then.
    Label { id: String, labels: Vec<String> },
    /// Remove containers and (unless --keep-snapshot) their snapshots.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Leave the container's snapshot in place.
        #[arg(long)]
        keep_snapshot: bool,
        ids: Vec<String>,
    },
}

/// The arguments of `containers create`: ctr's, where they only shape the record.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Snapshotter of the container's snapshot.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = crate::snapshots::DEFAULT)]
    snapshotter: String,
    /// Labels (`k=v`) of the new snapshot, repeatable.
    #[arg(long = "snapshotter-label")]
    snapshotter_labels: Vec<String>,
    /// An OCI runtime spec (JSON) to record instead of the default one; then only the
    /// container ID is given, and no image.
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// Working directory of the process.
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variables (`K=v`; a bare `K` unsets), repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// A file of environment variables, one a line.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Labels (`k=v`), repeatable; they become spec annotations too, as in ctr.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// OCI annotations (`k=v`), repeatable.
    #[arg(long = "annotation")]
    annotations: Vec<String>,
    /// Extra mounts (`type=bind,src=/a,dst=/b,options=rbind:ro`), repeatable.
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// Make the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Runtime name recorded for the container.
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    runtime: String,
    /// Config path handed to a runtime other than runc (recorded in the runtime options).
    #[arg(long)]
    runtime_config_path: Option<String>,
    /// Give the process a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Join an existing Linux namespace (`nstype:path`), repeatable.
    #[arg(long = "with-ns")]
    with_ns: Vec<String>,
    /// Turn off the spec's noNewPrivileges.
    #[arg(long)]
    allow_new_privs: bool,
    /// A host device node, or a directory of them, to give the container; repeatable.
    #[arg(long = "device")]
    devices: Vec<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory_limit: Option<u64>,
    /// Add Linux capabilities (`CAP_...`), repeatable.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (`CAP_...`), repeatable.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// CPU CFS quota (-1: unset).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    cpu_quota: i64,
    /// CPU CFS period (0: unset).
    #[arg(long, default_value_t = 0)]
    cpu_period: u64,
    /// Propagation of the root filesystem mount.
    #[arg(long)]
    rootfs_propagation: Option<String>,
    /// A privileged container: all of stow's own effective capabilities, every host device,
    /// no masked or read-only paths, writable /sys.
    #[arg(long)]
    privileged: bool,
    /// Share the host's network: no network namespace, the host's /etc/hosts and
    /// /etc/resolv.conf, and its HOSTNAME.
    #[arg(long)]
    net_host: bool,
    /// Confine the process with seccomp: containerd's default profile (made for the
    /// container's capabilities, this architecture and kernel), or --seccomp-profile's.
    #[arg(long)]
    seccomp: bool,
    /// A seccomp profile (JSON, the spec's `linux.seccomp`), with --seccomp.
    #[arg(long)]
    seccomp_profile: Option<PathBuf>,
    /// An AppArmor profile (already loaded) for the process.
    #[arg(long)]
    apparmor_profile: Option<String>,
    /// Confine the process with containerd's default AppArmor profile under this name,
    /// generated and loaded with apparmor_parser unless loaded already (needs AppArmor).
    #[arg(long)]
    apparmor_default_profile: Option<String>,
    /// GPUs (indexes) for NVIDIA's prestart hook, repeatable; needs containerd and
    /// nvidia-container-cli in PATH, whose paths the hook records.
    #[arg(long = "gpus", allow_negative_numbers = true)]
    gpus: Vec<i64>,
    /// The RDT class (CLOS) of the container.
    #[arg(long)]
    rdt_class: Option<String>,
    /// The first argument is a root filesystem directory instead of an image (no snapshot).
    #[arg(long)]
    rootfs: bool,
    /// `IMAGE ID [COMMAND [ARG...]]` (the command defaults to the image's), or with
    /// --config only `ID`.
    #[arg(trailing_var_arg = true, value_name = "IMAGE ID [COMMAND [ARG...]]")]
    args: Vec<String>,
}

/// The spec's JSON when the record holds one as containerd encodes it.
fn spec_json(c: &Container) -> Value {
    c.spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null)
}

fn container_json(c: &Container) -> Value {
    json!({"ID": c.id, "Labels": c.labels, "Image": c.image,
           "Runtime": {"Name": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default()},
           "Spec": spec_json(c), "SnapshotKey": c.snapshot_key, "Snapshotter": c.snapshotter,
           "CreatedAt": rfc3339_nano(system_time(c.created_at.as_ref())),
           "UpdatedAt": rfc3339_nano(system_time(c.updated_at.as_ref()))})
}

/// Runs one `containers` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, containers_client::ContainersClient<_>);
    match cmd {
        Cmd::Ls(ListArgs { quiet, filters }) => {
            let list = c
                .list(ListContainersRequest { filters })
                .await
                .map_err(rpc)
                .context("listing containers")?
                .into_inner()
                .containers;
            let mut t = Table::new(&["CONTAINER", "IMAGE", "RUNTIME"]);
            for x in &list {
                let image = if x.image.is_empty() { "-" } else { &x.image };
                let runtime = x
                    .runtime
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                t.row(vec![x.id.clone(), image.into(), runtime], container_json(x));
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Info { spec, id } => {
            let x = get(ctx, &id).await?;
            print_json(&if spec {
                spec_json(&x)
            } else {
                container_json(&x)
            });
        }
        Cmd::Create(args) => create(ctx, *args).await?,
        Cmd::Label { id, labels } => {
            let x = match label_update(&labels) {
                None => get(ctx, &id).await?,
                Some((labels, mask)) => c
                    .update(UpdateContainerRequest {
                        container: Some(Container {
                            id: id.clone(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("labelling container {id}"))?
                    .into_inner()
                    .container
                    .unwrap_or_default(),
            };
            println!("{}", labels_joined(&x.labels));
        }
        Cmd::Rm { keep_snapshot, ids } => {
            for id in ids {
                let x = get(ctx, &id).await?;
                c.delete(DeleteContainerRequest { id: id.clone() })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("removing container {id}"))?;
                if !keep_snapshot && !x.snapshot_key.is_empty() {
                    let mut s = svc!(ctx, snapshots_pb::snapshots_client::SnapshotsClient<_>);
                    let r = s
                        .remove(snapshots_pb::RemoveSnapshotRequest {
                            snapshotter: x.snapshotter.clone(),
                            key: x.snapshot_key.clone(),
                        })
                        .await;
                    match r {
                        Err(st) if st.code() != tonic::Code::NotFound => {
                            return Err(rpc(st)).with_context(|| {
                                format!("removing snapshot {} of container {id}", x.snapshot_key)
                            })
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

async fn get(ctx: &Ctx, id: &str) -> Result<Container> {
    let mut c = svc!(ctx, containers_client::ContainersClient<_>);
    c.get(GetContainerRequest { id: id.into() })
        .await
        .map_err(rpc)
        .with_context(|| format!("looking up container {id} (see `stow containers ls`)"))?
        .into_inner()
        .container
        .with_context(|| format!("the daemon returned no record for container {id}"))
}

/// The runtime options ctr records: empty runc options for runc, a config path for other
/// runtimes when one is given.
fn runtime_options(runtime: &str, config_path: Option<&str>) -> Option<prost_types::Any> {
    if runtime == DEFAULT_RUNTIME {
        return Some(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE_URL.into(),
            value: Vec::new(),
        });
    }
    config_path.filter(|p| !p.is_empty()).map(|p| {
        use prost::Message as _;
        prost_types::Any {
            type_url: RUNTIME_OPTIONS_TYPE_URL.into(),
            value: RuntimeConfigOptions {
                type_url: String::new(),
                config_path: p.to_string(),
            }
            .encode_to_vec(),
        }
    })
}

/// containerd's `runtimeoptions.v1.Options`.
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeConfigOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
}

/// `k=v` arguments as a map; unlike labels, a value is required.
fn annotation_args(args: &[String]) -> Result<HashMap<String, String>> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("annotation {a:?} is not key=value"))
        })
        .collect()
}

/// What the image gives a container.
struct FromImage {
    /// The image config's `config` object (runtime defaults), if any.
    config: Option<Value>,
    /// The image record's labels.
    labels: HashMap<String, String>,
    /// /etc/passwd and /etc/group of the prepared root filesystem (`None`: absent).
    passwd: Option<String>,
    group: Option<String>,
}

/// The largest key plus value containerd accepts for a label.
const MAX_LABEL: usize = 4096;

/// The container labels ctr records for an image: the config's labels, the image record's
/// (those containerd would accept), then the command line's, and the stop signal.
fn image_labels(img: &FromImage, cmd: &HashMap<String, String>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = img
        .config
        .as_ref()
        .and_then(|c| c.get("Labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &img.labels {
        if k.len() + v.len() > MAX_LABEL {
            eprintln!("stow: warning: image label {k} is too long for a container; left out");
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    out.extend(cmd.iter().map(|(k, v)| (k.clone(), v.clone())));
    let stop = img
        .config
        .as_ref()
        .and_then(|c| c.get("StopSignal"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_STOP_SIGNAL);
    out.insert(STOP_SIGNAL_LABEL.into(), stop.into());
    out
}

/// The spec ctr generates for these arguments: the default Unix spec edited by the flags
/// and, with an image, its config, in ctr's order.
fn generated_spec(
    a: &CreateArgs,
    ns: &str,
    id: &str,
    args: &[String],
    rootfs: Option<&str>,
    image: Option<&FromImage>,
) -> Result<Value> {
    let mut s = spec::default_unix(ns, id);
    if let Some(f) = &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --env-file {}", f.display()))?;
        let vars: Vec<String> = text.lines().map(str::to_string).collect();
        spec::with_env(&mut s, &vars);
    }
    spec::with_env(&mut s, &a.env);
    let mounts = a
        .mounts
        .iter()
        .map(|m| spec::parse_mount(m))
        .collect::<Result<Vec<_>>>()?;
    spec::with_mounts(&mut s, mounts);
    if let Some(dir) = rootfs {
        s["root"]["path"] = json!(dir);
    }
    if let Some(img) = image {
        let mut read = |path: &str| -> Result<Option<String>> {
            Ok(match path {
                "/etc/passwd" => img.passwd.clone(),
                "/etc/group" => img.group.clone(),
                _ => None,
            })
        };
        spec::with_image_config(&mut s, img.config.as_ref(), &mut read)?;
    }
    if a.read_only {
        s["root"]["readonly"] = json!(true);
    }
    if !args.is_empty() {
        s["process"]["args"] = json!(args);
    }
    if let Some(cwd) = &a.cwd {
        s["process"]["cwd"] = json!(cwd);
    }
    if a.tty {
        s["process"]["terminal"] = json!(true);
        let mut env = spec::env(&s);
        env.push("TERM=xterm".into());
        s["process"]["env"] = json!(env);
    }
    if a.privileged {
        let status = std::fs::read_to_string("/proc/self/status")
            .context("reading this process's capabilities for --privileged")?;
        let host = spec::host_devices(Path::new("/dev"))?;
        spec::with_privileged(&mut s, spec::effective_caps(&status)?, host);
    }
    if a.net_host {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading this host's name for --net-host")?;
        spec::without_namespace(&mut s, "network");
        spec::with_mounts(
            &mut s,
            ["/etc/hosts", "/etc/resolv.conf"]
                .iter()
                .map(|p| {
                    json!({"destination": p, "type": "bind", "source": p,
                                "options": ["rbind", "ro"]})
                })
                .collect(),
        );
        spec::with_env(
            &mut s,
            &[format!("HOSTNAME={}", host.trim_end_matches('\n'))],
        );
    }
    spec::with_annotations(&mut s, &annotation_args(&a.annotations)?);
    for (flag, caps) in [("--cap-add", &a.cap_add), ("--cap-drop", &a.cap_drop)] {
        if let Some(c) = caps.iter().find(|c| !c.starts_with("CAP_")) {
            bail!("{flag} {c}: capabilities are named with the CAP_ prefix");
        }
    }
    if !a.cap_add.is_empty() {
        spec::with_added_caps(&mut s, &a.cap_add);
    }
    if !a.cap_drop.is_empty() {
        spec::with_dropped_caps(&mut s, &a.cap_drop);
    }
    if a.seccomp_profile.is_some() && !a.seccomp {
        bail!("--seccomp-profile needs --seccomp");
    }
    let apparmor_profile = a.apparmor_profile.as_deref().filter(|p| !p.is_empty());
    let apparmor_default = a
        .apparmor_default_profile
        .as_deref()
        .filter(|p| !p.is_empty());
    if apparmor_profile.is_some() && apparmor_default.is_some() {
        bail!("--apparmor-profile conflicts with --apparmor-default-profile");
    }
    match (a.seccomp, &a.seccomp_profile) {
        // Made from the capabilities set so far, as ctr does (so after --privileged and
        // --cap-add/--cap-drop).
        (true, None) => s["linux"]["seccomp"] = crate::seccomp::default_profile(&s),
        (true, Some(f)) => {
            let text = std::fs::read(f)
                .with_context(|| format!("reading seccomp profile {}", f.display()))?;
            let given: Value = serde_json::from_slice(&text)
                .with_context(|| format!("seccomp profile {} is not JSON", f.display()))?;
            s["linux"]["seccomp"] = spec::seccomp_normalized(&given)
                .with_context(|| format!("seccomp profile {}", f.display()))?;
        }
        (false, _) => {}
    }
    if let Some(p) = apparmor_default {
        // Loaded on this host, as ctr loads it on its own: the record only names it.
        crate::apparmor::ensure_default_profile(p)
            .with_context(|| format!("--apparmor-default-profile {p}"))?;
        s["process"]["apparmorProfile"] = json!(p);
    }
    if let Some(p) = apparmor_profile {
        s["process"]["apparmorProfile"] = json!(p);
    }
    if a.cpu_quota != -1 || a.cpu_period != 0 {
        let cpu = spec::resources(&mut s)
            .entry("cpu")
            .or_insert_with(|| json!({}));
        cpu["quota"] = json!(a.cpu_quota);
        cpu["period"] = json!(a.cpu_period);
    }
    for ns in &a.with_ns {
        let (kind, path) = ns
            .split_once(':')
            .filter(|(_, p)| !p.contains(':'))
            .with_context(|| format!("--with-ns {ns}: use nstype:path"))?;
        if !["pid", "network", "uts", "mount", "user", "ipc", "cgroup"].contains(&kind) {
            bail!("--with-ns {ns}: {kind} is not a Linux namespace type");
        }
        spec::with_namespace(&mut s, kind, path);
    }
    if !a.gpus.is_empty() {
        let hook = crate::nvidia::prestart_hook(&a.gpus).context("--gpus")?;
        crate::nvidia::with_prestart(&mut s, hook);
    }
    if a.allow_new_privs {
        s["process"]["noNewPrivileges"] = json!(false);
    }
    if let Some(limit) = a.memory_limit.filter(|l| *l != 0) {
        // Go stores the limit as a signed 64-bit number.
        spec::resources(&mut s).insert("memory".into(), json!({"limit": limit as i64}));
    }
    for d in &a.devices {
        spec::with_devices(&mut s, spec::host_devices(d)?, "rwm");
    }
    if let Some(p) = a.rootfs_propagation.as_deref().filter(|p| !p.is_empty()) {
        s["linux"]["rootfsPropagation"] = json!(p);
    }
    if let Some(c) = a.rdt_class.as_deref().filter(|c| !c.is_empty()) {
        s["linux"]["intelRdt"] = json!({"closID": c});
    }
    Ok(s)
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let (reference, id, cmd) = match (&a.config, a.args.as_slice()) {
        (Some(_), [id]) => (None, id.clone(), Vec::new()),
        (Some(_), _) => bail!("with --config, give only the container ID"),
        (None, [image, id, cmd @ ..]) => (Some(image.clone()), id.clone(), cmd.to_vec()),
        (None, _) => bail!("give the image and the container ID: IMAGE ID [COMMAND [ARG...]]"),
    };
    if id.is_empty() {
        bail!("the container ID must not be empty");
    }
    let labels = label_args(&a.labels);
    let mut container = Container {
        id: id.clone(),
        runtime: Some(container::Runtime {
            name: a.runtime.clone(),
            options: runtime_options(&a.runtime, a.runtime_config_path.as_deref()),
        }),
        ..Default::default()
    };
    let mut lease = None;
    let spec = if let Some(path) = &a.config {
        let text = std::fs::read(path)
            .with_context(|| format!("reading the spec file {}", path.display()))?;
        let given: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not an OCI runtime spec (JSON)", path.display()))?;
        // Recorded as containerd's types read it, as ctr records it.
        let mut s = spec::go_normalized(&given).with_context(|| {
            format!(
                "{} is not an OCI runtime spec (containerd reads runtime-spec {})",
                path.display(),
                spec::OCI_VERSION
            )
        })?;
        container.labels = labels.clone();
        spec::with_annotations(&mut s, &labels);
        s
    } else if a.rootfs {
        // A directory of the client's: no image, no snapshot, nothing from an image config.
        let dir = absolute(&reference.unwrap_or_default())?;
        container.labels = labels.clone();
        let mut s = generated_spec(&a, &ctx.namespace, &id, &cmd, Some(&dir), None)?;
        spec::with_annotations(&mut s, &labels);
        s
    } else {
        let reference = reference.unwrap_or_default();
        // A short lease holds the unpacked layers and the new snapshot until the container
        // record references the snapshot.
        let l = crate::leases::create(ctx, "", Duration::from_secs(3600), HashMap::new()).await?;
        lease = Some(l.id.clone());
        let sn_labels = label_args(&a.snapshotter_labels);
        let made = prepare(ctx, &reference, &a.snapshotter, &id, sn_labels, &l.id).await;
        let img = match made {
            Ok(img) => img,
            Err(e) => {
                end_lease(ctx, lease).await;
                return Err(e);
            }
        };
        container.image = reference;
        container.snapshotter = a.snapshotter.clone();
        container.snapshot_key = id.clone();
        container.labels = image_labels(&img, &labels);
        let s = generated_spec(&a, &ctx.namespace, &id, &cmd, None, Some(&img)).map(|mut s| {
            spec::with_annotations(&mut s, &labels);
            s
        });
        match s {
            Ok(s) => s,
            Err(e) => {
                remove_snapshot(ctx, &container).await;
                end_lease(ctx, lease).await;
                return Err(e);
            }
        }
    };
    container.spec = Some(prost_types::Any {
        type_url: SPEC_TYPE_URL.into(),
        value: serde_json::to_vec(&spec).context("encoding the spec")?,
    });
    let mut c = svc!(ctx, containers_client::ContainersClient<_>);
    let created = c
        .create(CreateContainerRequest {
            container: Some(container.clone()),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("creating container {id}"));
    if created.is_err() {
        remove_snapshot(ctx, &container).await;
    }
    end_lease(ctx, lease).await;
    // Silent on success, as ctr is.
    created?;
    Ok(())
}

/// `path` made absolute against the working directory and cleaned lexically, as Go's
/// `filepath.Abs` does.
fn absolute(path: &str) -> Result<String> {
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the working directory")?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in full.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.to_str()
        .map(str::to_string)
        .with_context(|| format!("--rootfs {path}: the path is not UTF-8"))
}

/// Removes the snapshot a failed create prepared; the create's error is the one reported.
async fn remove_snapshot(ctx: &Ctx, container: &Container) {
    if container.snapshot_key.is_empty() {
        return;
    }
    let mut s = svc!(ctx, snapshots_pb::snapshots_client::SnapshotsClient<_>);
    let _ = s
        .remove(snapshots_pb::RemoveSnapshotRequest {
            snapshotter: container.snapshotter.clone(),
            key: container.snapshot_key.clone(),
        })
        .await;
}

/// Ends the create's lease; a failure to do so leaves a lease that expires on its own.
async fn end_lease(ctx: &Ctx, lease: Option<String>) {
    if let Some(id) = lease {
        let _ = crate::leases::remove(ctx, &id).await;
    }
}

/// Unpacks `reference` into `sn` if needed and prepares `key` on it under `lease`; returns
/// what the image gives the container, its users and groups read from the prepared tree.
async fn prepare(
    ctx: &Ctx,
    reference: &str,
    sn: &str,
    key: &str,
    labels: HashMap<String, String>,
    lease: &str,
) -> Result<FromImage> {
    let chain = crate::images::unpack(ctx, reference, sn, Matcher::host(), lease).await?;
    let img = crate::images::get(ctx, reference).await?;
    let target = crate::images::target(&img)?;
    let remote = ctx.remote(Some(lease))?;
    let store = remote.content_store();
    let config = blocking(move || {
        let (_, m) = stowage_images::resolve_manifest(&store, &target, &Matcher::host())?;
        Ok(stowage_images::read_config(&store, &m.config)?.config)
    })
    .await?;
    // Under the lease too: until the container record names it, nothing else keeps the new
    // snapshot from a collection that runs in between.
    let snap = remote.snapshotter(sn);
    let (k, parent) = (key.to_string(), chain.to_string());
    let labels: stowage_core_types::Labels = labels.into_iter().collect();
    let what = format!("preparing snapshot {key} on {reference}");
    let (passwd, group) = blocking(move || {
        let mounts = snap.prepare(&k, &parent, labels).context(what)?;
        let read = read_users(mounts);
        if read.is_err() {
            let _ = snap.remove(&k);
        }
        read
    })
    .await?;
    Ok(FromImage {
        config,
        labels: img.labels,
        passwd,
        group,
    })
}

/// /etc/passwd and /etc/group of a snapshot, mounted read-only for the reading as
/// containerd does (it looks users and groups up in the container's own tree).
fn read_users(mut mounts: Vec<Mount>) -> Result<(Option<String>, Option<String>)> {
    if let [m] = mounts.as_mut_slice() {
        if m.kind == "overlay" {
            m.options.push("ro".into());
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "stow-rootfs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let read = mount_all(&mounts, &dir)
        .with_context(|| {
            format!(
                "mounting the container's root filesystem on {} (stow needs root for this)",
                dir.display()
            )
        })
        .and_then(|()| {
            let r = spec::read_in_root(&dir, "/etc/passwd")
                .and_then(|p| spec::read_in_root(&dir, "/etc/group").map(|g| (p, g)));
            let u = unmount_all(&dir).with_context(|| format!("unmounting {}", dir.display()));
            let r = r?;
            u?;
            Ok(r)
        });
    let _ = std::fs::remove_dir(&dir);
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        a: CreateArgs,
    }

    fn args(v: &[&str]) -> CreateArgs {
        T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
    }

    fn img(config: Value) -> FromImage {
        FromImage {
            config: Some(config),
            labels: HashMap::from([("from.record".to_string(), "r".to_string())]),
            passwd: None,
            group: None,
        }
    }

    #[test]
    fn command_line_edits_follow_the_image_defaults() {
        let a = args(&[
            "--env",
            "A=2",
            "--cwd",
            "/w",
            "-t",
            "--read-only",
            "--annotation",
            "x=1",
            "--cap-drop",
            "CAP_KILL",
            "--cap-add",
            "CAP_SYS_ADMIN",
            "--memory-limit",
            "64",
            "--with-ns",
            "network:/run/netns/n",
            "img",
            "c1",
            "/bin/true",
            "-x",
        ]);
        assert_eq!(a.args, ["img", "c1", "/bin/true", "-x"]);
        let cfg = json!({"Env": ["A=1", "PATH=/b"], "Entrypoint": ["/e"], "Cmd": ["c"]});
        let s = generated_spec(&a, "ns", "c1", &a.args[2..], None, Some(&img(cfg))).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/true", "-x"]));
        assert_eq!(s["process"]["env"], json!(["A=2", "PATH=/b", "TERM=xterm"]));
        assert_eq!(s["process"]["cwd"], "/w");
        assert_eq!(s["process"]["terminal"], true);
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(s["annotations"], json!({"x": "1"}));
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")) && !caps.contains(&json!("CAP_KILL")));
        assert_eq!(s["linux"]["resources"]["memory"], json!({"limit": 64}));
        assert_eq!(s["linux"]["cgroupsPath"], "/ns/c1");
        assert_eq!(
            s["linux"]["namespaces"][4],
            json!({"type": "network", "path": "/run/netns/n"})
        );
        assert!(s["linux"]["resources"].get("cpu").is_none());

        let bad = args(&["--cap-add", "SYS_ADMIN", "img", "c1"]);
        assert!(generated_spec(&bad, "ns", "c1", &[], None, None).is_err());
    }

    #[test]
    fn labels_layer_config_record_command_line_then_stop_signal() {
        let i = img(json!({"Labels": {"a": "cfg", "b": "cfg"}, "StopSignal": "SIGINT"}));
        let cmd = HashMap::from([("b".to_string(), "cmd".to_string())]);
        let l = image_labels(&i, &cmd);
        assert_eq!(l["a"], "cfg");
        assert_eq!(l["b"], "cmd");
        assert_eq!(l["from.record"], "r");
        assert_eq!(l[STOP_SIGNAL_LABEL], "SIGINT");
        assert_eq!(
            image_labels(&img(json!({})), &cmd)[STOP_SIGNAL_LABEL],
            "SIGTERM"
        );
    }

    #[test]
    fn runtime_options_as_ctr_records_them() {
        let runc = runtime_options(DEFAULT_RUNTIME, None).unwrap();
        assert_eq!(runc.type_url, RUNC_OPTIONS_TYPE_URL);
        assert!(runc.value.is_empty());
        assert!(runtime_options("io.x.v1", None).is_none());
        let o = runtime_options("io.x.v1", Some("/c.toml")).unwrap();
        assert_eq!(o.value, b"\x12\x07/c.toml");
    }
}
