//! `containers ls|info|create|label|rm`: container records (stowage stores them; it runs nothing).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use stowage_core_types::platform::Matcher;
use stowage_daemon::api::containerd::services::containers::v1::*;
use stowage_daemon::api::containerd::services::snapshots::v1 as snapshots_pb;

use crate::output::{
    label_args, label_update, labels_joined, print_json, rfc3339_nano, system_time, ListArgs, Table,
};
use crate::{blocking, rpc, Ctx};

/// The type URL containerd gives an OCI runtime spec (the value is the spec's JSON).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The runtime ctr records by default.
const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

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
    /// Record a container: with --image, the image is unpacked if needed and an active
    /// snapshot on it is prepared for the container's root filesystem.
    Create(CreateArgs),
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

/// The arguments of `containers create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The image the container runs.
    #[arg(long)]
    image: Option<String>,
    /// Snapshotter of the container's snapshot.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = crate::snapshots::DEFAULT)]
    snapshotter: String,
    /// Key of the container's snapshot (default: the container ID).
    #[arg(long)]
    snapshot_key: Option<String>,
    /// Runtime name recorded for the container.
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    runtime: String,
    /// Labels (`k=v`), repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The container ID.
    id: String,
    /// Command and arguments (default: the image's entrypoint and command).
    #[arg(trailing_var_arg = true)]
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
        Cmd::Create(args) => create(ctx, args).await?,
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

/// A minimal OCI runtime spec: the process (args, env, cwd) and the root filesystem
/// directory, taken from the image config's defaults where the command line gives none.
fn minimal_spec(config: Option<&Value>, args: Vec<String>) -> Value {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let args = if args.is_empty() {
        let mut a = strings(config.and_then(|c| c.get("Entrypoint")));
        a.extend(strings(config.and_then(|c| c.get("Cmd"))));
        a
    } else {
        args
    };
    let mut env = strings(config.and_then(|c| c.get("Env")));
    if env.is_empty() {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let cwd = config
        .and_then(|c| c.get("WorkingDir"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    json!({"ociVersion": "1.0.2-dev",
           "process": {"user": {"uid": 0, "gid": 0}, "args": args, "env": env, "cwd": cwd},
           "root": {"path": "rootfs"}})
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let CreateArgs {
        image,
        snapshotter,
        snapshot_key,
        runtime,
        labels,
        id,
        args,
    } = a;
    let mut container = Container {
        id: id.clone(),
        labels: label_args(&labels),
        runtime: Some(container::Runtime {
            name: runtime,
            options: None,
        }),
        ..Default::default()
    };
    let mut lease = None;
    let mut config = None;
    if let Some(reference) = &image {
        // A short lease holds the unpacked layers and the new snapshot until the container
        // record references the snapshot.
        let l = crate::leases::create(ctx, "", Duration::from_secs(3600), HashMap::new()).await?;
        let key = snapshot_key.unwrap_or_else(|| id.clone());
        let prepared = prepare(ctx, reference, &snapshotter, &key, &l.id).await;
        lease = Some(l.id);
        match prepared {
            Ok(cfg) => config = cfg,
            Err(e) => {
                end_lease(ctx, lease).await;
                return Err(e);
            }
        }
        container.image = reference.clone();
        container.snapshotter = snapshotter;
        container.snapshot_key = key;
    }
    let spec = minimal_spec(config.as_ref(), args);
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
    if created.is_err() && !container.snapshot_key.is_empty() {
        let mut s = svc!(ctx, snapshots_pb::snapshots_client::SnapshotsClient<_>);
        let _ = s
            .remove(snapshots_pb::RemoveSnapshotRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            })
            .await;
    }
    end_lease(ctx, lease).await;
    created?;
    println!("{id}");
    Ok(())
}

/// Ends the create's lease; a failure to do so leaves a lease that expires on its own.
async fn end_lease(ctx: &Ctx, lease: Option<String>) {
    if let Some(id) = lease {
        let _ = crate::leases::remove(ctx, &id).await;
    }
}

/// Unpacks `reference` into `sn` if needed and prepares `key` on it under `lease`; returns
/// the image config's runtime defaults.
async fn prepare(
    ctx: &Ctx,
    reference: &str,
    sn: &str,
    key: &str,
    lease: &str,
) -> Result<Option<Value>> {
    let chain = crate::images::unpack(ctx, reference, sn, Matcher::host(), lease).await?;
    let img = crate::images::get(ctx, reference).await?;
    let target = crate::images::target(&img)?;
    let store = crate::images::content_store(ctx, Some(lease)).await?;
    let config = blocking(move || {
        let (_, m) = stowage_images::resolve_manifest(&store, &target, &Matcher::host())?;
        Ok(stowage_images::read_config(&store, &m.config)?.config)
    })
    .await?;
    let mut s = svc!(ctx, snapshots_pb::snapshots_client::SnapshotsClient<_>);
    s.prepare(snapshots_pb::PrepareSnapshotRequest {
        snapshotter: sn.into(),
        key: key.into(),
        parent: chain.to_string(),
        labels: HashMap::new(),
    })
    .await
    .map_err(rpc)
    .with_context(|| format!("preparing snapshot {key} on {reference}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_takes_the_image_defaults_unless_args_are_given() {
        let cfg = json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"],
                         "WorkingDir": "/srv"});
        let s = minimal_spec(Some(&cfg), Vec::new());
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(s["process"]["env"], json!(["A=1"]));
        assert_eq!(s["process"]["cwd"], "/srv");
        let s = minimal_spec(Some(&cfg), vec!["true".into()]);
        assert_eq!(s["process"]["args"], json!(["true"]));
        assert_eq!(minimal_spec(None, Vec::new())["process"]["cwd"], "/");
    }
}
