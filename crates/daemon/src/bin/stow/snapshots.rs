//! `snapshots ls|tree|info|usage|prepare|view|mounts|commit|rm|label`.

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use stowage_daemon::api::containerd::services::snapshots::v1::*;
use stowage_daemon::api::containerd::types::Mount;
use tokio_stream::StreamExt;

use crate::output::{
    bytes_binary, label_update, labels_joined, print_json, print_json_ctr, rfc3339, rfc3339_nano,
    system_time, ListArgs, Table,
};
use crate::{rpc, Ctx};

/// The snapshotter used when none is named (containerd's default on Linux).
pub const DEFAULT: &str = "overlayfs";

/// The label that keeps a snapshot from the collector until removed, as ctr sets on the
/// snapshots it prepares and commits.
const GC_ROOT: &str = "containerd.io/gc.root";

/// The `snapshots` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List snapshots.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Snapshots as a tree of parents and children.
    Tree,
    /// A snapshot's info, as JSON.
    Info { key: String },
    /// Disk usage of the given snapshots (all when none is given).
    Usage {
        /// Sizes in bytes instead of KiB, MiB...
        #[arg(short = 'b')]
        bytes: bool,
        keys: Vec<String>,
    },
    /// Create an active snapshot `key` on committed `parent` (none for an empty one).
    Prepare(NewSnapshot),
    /// Create a read-only view `key` of committed `parent`.
    View(NewSnapshot),
    /// The mount commands of snapshot `key` on `target` (JSON with --format json).
    #[command(alias = "m", alias = "mount")]
    Mounts { target: String, key: String },
    /// Commit active snapshot `key` as `name`.
    Commit { name: String, key: String },
    /// Remove snapshots.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm { keys: Vec<String> },
    /// Set (`k=v`) or remove (`k=`) labels of a snapshot; prints the labels left.
    Label { key: String, labels: Vec<String> },
}

/// The arguments of `prepare` and `view`.
#[derive(Debug, clap::Args)]
pub struct NewSnapshot {
    /// Print the mount commands for this target path.
    #[arg(short, long)]
    target: Option<String>,
    /// Print the snapshot's mounts as JSON.
    #[arg(long)]
    mounts: bool,
    key: String,
    parent: Option<String>,
}

fn kind(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// A snapshot's info as ctr prints it (Go's `snapshots.Info` in JSON).
fn info_json(i: &Info) -> Value {
    let mut v = json!({"Kind": kind(i.kind), "Name": i.name});
    if !i.parent.is_empty() {
        v["Parent"] = json!(i.parent);
    }
    if !i.labels.is_empty() {
        v["Labels"] = json!(i.labels);
    }
    v["Created"] = json!(rfc3339_nano(system_time(i.created_at.as_ref())));
    v["Updated"] = json!(rfc3339_nano(system_time(i.updated_at.as_ref())));
    v
}

/// Mounts as ctr prints them: one `mount` command per mount, or JSON.
fn print_mounts(ctx: &Ctx, target: Option<&str>, ms: &[Mount]) {
    if ctx.json() {
        print_json(&mounts_json(ms));
        return;
    }
    if let Some(t) = target {
        for m in ms {
            println!(
                "mount -t {} {} {t} -o {}",
                m.r#type,
                m.source,
                m.options.join(",")
            );
        }
    }
}

fn mounts_json(ms: &[Mount]) -> Value {
    Value::Array(
        ms.iter()
            .map(|m| json!({"Type": m.r#type, "Source": m.source, "Options": m.options}))
            .collect(),
    )
}

fn gc_root() -> HashMap<String, String> {
    HashMap::from([(GC_ROOT.to_string(), rfc3339(SystemTime::now()))])
}

async fn stat(ctx: &Ctx, sn: &str, key: &str) -> Result<Info> {
    let mut c = svc!(ctx, snapshots_client::SnapshotsClient<_>);
    c.stat(StatSnapshotRequest {
        snapshotter: sn.into(),
        key: key.into(),
    })
    .await
    .map_err(rpc)
    .with_context(|| format!("looking up snapshot {key} (see `stow snapshots ls`)"))?
    .into_inner()
    .info
    .with_context(|| format!("the daemon returned no info for snapshot {key}"))
}

async fn walk(ctx: &Ctx, sn: &str, filters: Vec<String>) -> Result<Vec<Info>> {
    let mut c = svc!(ctx, snapshots_client::SnapshotsClient<_>);
    let mut st = c
        .list(ListSnapshotsRequest {
            snapshotter: sn.into(),
            filters,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("listing snapshots of {sn}"))?
        .into_inner();
    let mut infos = Vec::new();
    while let Some(m) = st.next().await {
        infos.extend(
            m.map_err(rpc)
                .with_context(|| format!("listing snapshots of {sn}"))?
                .info,
        );
    }
    Ok(infos)
}

/// Lines of ctr's `snapshots tree`: roots in listing order, each child under its parent,
/// indented two spaces a level and marked `\_`.
fn tree_lines(infos: &[Info]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    let seen = |name: &str, order: &mut Vec<String>| {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
    };
    for i in infos {
        seen(&i.name, &mut order);
        if !i.parent.is_empty() {
            parent.insert(i.name.clone(), i.parent.clone());
            seen(&i.parent, &mut order);
            children
                .entry(i.parent.clone())
                .or_default()
                .push(i.name.clone());
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<(String, usize)> = order
        .iter()
        .filter(|n| !parent.contains_key(*n))
        .rev()
        .map(|n| (n.clone(), 0))
        .collect();
    while let Some((name, level)) = stack.pop() {
        let prefix = if level > 0 {
            format!("{}\\_", "  ".repeat(level))
        } else {
            String::new()
        };
        out.push(format!("{prefix} {name}"));
        if level > 256 {
            continue;
        }
        for c in children.get(&name).into_iter().flatten().rev() {
            stack.push((c.clone(), level + 1));
        }
    }
    out
}

/// Runs one `snapshots` verb.
pub async fn run(ctx: &Ctx, sn: &str, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, snapshots_client::SnapshotsClient<_>);
    let snapshotter = sn.to_string();
    match cmd {
        Cmd::Ls(ListArgs { quiet, filters }) => {
            let mut t = Table::new(&["KEY", "PARENT", "KIND"]);
            for i in walk(ctx, sn, filters).await? {
                t.row(
                    vec![i.name.clone(), i.parent.clone(), kind(i.kind).into()],
                    info_json(&i),
                );
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Tree => {
            let infos = walk(ctx, sn, Vec::new()).await?;
            if ctx.json() {
                print_json(&Value::Array(infos.iter().map(info_json).collect()));
            } else {
                tree_lines(&infos).iter().for_each(|l| println!("{l}"));
            }
        }
        Cmd::Info { key } => {
            let i = stat(ctx, sn, &key).await?;
            print_json_ctr(&info_json(&i));
        }
        Cmd::Usage { bytes, keys } => {
            let keys = if keys.is_empty() {
                walk(ctx, sn, Vec::new())
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys
            };
            let mut t = Table::new(&["KEY", "SIZE", "INODES"]);
            for key in keys {
                let u = c
                    .usage(UsageRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("usage of snapshot {key}"))?
                    .into_inner();
                let size = if bytes {
                    u.size.to_string()
                } else {
                    bytes_binary(u.size)
                };
                t.row(
                    vec![key.clone(), size, u.inodes.to_string()],
                    json!({"key": key, "size": u.size, "inodes": u.inodes}),
                );
            }
            t.print(ctx.format, false);
        }
        Cmd::Prepare(n) => {
            let ms = c
                .prepare(PrepareSnapshotRequest {
                    snapshotter,
                    key: n.key.clone(),
                    parent: n.parent.clone().unwrap_or_default(),
                    labels: gc_root(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("preparing snapshot {}", n.key))?
                .into_inner()
                .mounts;
            print_prepared(ctx, &n, &ms);
        }
        Cmd::View(n) => {
            let ms = c
                .view(ViewSnapshotRequest {
                    snapshotter,
                    key: n.key.clone(),
                    parent: n.parent.clone().unwrap_or_default(),
                    labels: HashMap::new(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("creating view {}", n.key))?
                .into_inner()
                .mounts;
            print_prepared(ctx, &n, &ms);
        }
        Cmd::Mounts { target, key } => {
            let ms = c
                .mounts(MountsRequest {
                    snapshotter,
                    key: key.clone(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("mounts of snapshot {key}"))?
                .into_inner()
                .mounts;
            print_mounts(ctx, Some(&target), &ms);
        }
        Cmd::Commit { name, key } => {
            c.commit(CommitSnapshotRequest {
                snapshotter,
                name: name.clone(),
                key: key.clone(),
                labels: gc_root(),
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("committing snapshot {key} as {name}"))?;
        }
        Cmd::Rm { keys } => {
            for key in keys {
                c.remove(RemoveSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("removing snapshot {key}"))?;
            }
        }
        Cmd::Label { key, labels } => {
            let info = match label_update(&labels) {
                None => {
                    c.stat(StatSnapshotRequest {
                        snapshotter,
                        key: key.clone(),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("looking up snapshot {key}"))?
                    .into_inner()
                    .info
                }
                Some((labels, mask)) => {
                    c.update(UpdateSnapshotRequest {
                        snapshotter,
                        info: Some(Info {
                            name: key.clone(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("labelling snapshot {key}"))?
                    .into_inner()
                    .info
                }
            };
            println!("{}", labels_joined(&info.unwrap_or_default().labels));
        }
    }
    Ok(())
}

/// What `prepare` and `view` print: mount commands for `--target`, JSON mounts for `--mounts`
/// (or `--format json`), nothing otherwise.
fn print_prepared(ctx: &Ctx, n: &NewSnapshot, ms: &[Mount]) {
    if ctx.json() {
        print_json(&mounts_json(ms));
        return;
    }
    print_mounts(ctx, n.target.as_deref(), ms);
    if n.mounts {
        print_json_ctr(&mounts_json(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, parent: &str) -> Info {
        Info {
            name: name.into(),
            parent: parent.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tree_nests_children_under_parents() {
        let infos = [
            info("c", "b"),
            info("a", ""),
            info("b", "a"),
            info("d", "a"),
            info("lone", ""),
        ];
        assert_eq!(
            tree_lines(&infos),
            [" a", "  \\_ b", "    \\_ c", "  \\_ d", " lone"]
        );
    }
}
