//! stow: stowaged's command-line client, with ctr's verbs and flag names where they overlap.
//!
//! Listing verbs print ctr-like tables, names only with `--quiet`, or JSON with
//! `--format json` (one array) for scripts.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use stowage_daemon::api::containerd::services as s;
use stowage_daemon::client::{connect, Headers};
use stowage_daemon::errors::from_status;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Talks to stowaged (or containerd) over its unix socket.
#[derive(Debug, Parser)]
#[command(name = "stow", version)]
struct Cli {
    /// Address of the daemon's socket.
    #[arg(short, long, env = "CONTAINERD_ADDRESS", default_value = stowage_daemon::config::DEFAULT_ADDRESS)]
    address: PathBuf,
    /// Namespace to work in.
    #[arg(short, long, env = "CONTAINERD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Output format of listings.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Client and server versions.
    Version,
    /// Plugins the daemon runs.
    #[command(alias = "plugin")]
    Plugins {
        #[command(subcommand)]
        cmd: ListOnly,
    },
    /// Namespaces.
    #[command(alias = "ns", alias = "namespace")]
    Namespaces {
        #[command(subcommand)]
        cmd: NsCmd,
    },
    /// Images.
    #[command(alias = "i", alias = "image")]
    Images {
        #[command(subcommand)]
        cmd: ImgCmd,
    },
    /// Content blobs.
    Content {
        #[command(subcommand)]
        cmd: ContentCmd,
    },
    /// Snapshots.
    #[command(alias = "snapshot")]
    Snapshots {
        /// Snapshotter name.
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        #[command(subcommand)]
        cmd: SnapCmd,
    },
    /// Leases.
    Leases {
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// Containers (metadata).
    #[command(alias = "c", alias = "container")]
    Containers {
        #[command(subcommand)]
        cmd: ContainerCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ListOnly {
    /// List.
    #[command(alias = "list")]
    Ls {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax).
        filters: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NsCmd {
    /// List namespaces.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a namespace with labels (`k=v`).
    Create { name: String, labels: Vec<String> },
    /// Set (`k=v`) or remove (`k=`) labels.
    Label { name: String, labels: Vec<String> },
    /// Remove namespaces.
    #[command(alias = "remove", alias = "delete")]
    Rm { names: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum ImgCmd {
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Remove images.
    #[command(alias = "remove", alias = "delete")]
    Rm {
        /// Wait for the garbage collection.
        #[arg(long)]
        sync: bool,
        names: Vec<String>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
}

#[derive(Debug, Subcommand)]
enum ContentCmd {
    /// List blobs.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Write a blob to stdout.
    Get { digest: String },
    /// Remove blobs.
    #[command(alias = "remove", alias = "delete")]
    Rm { digests: Vec<String> },
    /// Set (`k=v`) or remove (`k`) labels of a blob.
    Label { digest: String, labels: Vec<String> },
    /// List ingests in progress.
    Active { filters: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum SnapCmd {
    /// List snapshots.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// A snapshot's info.
    Info { key: String },
    /// Disk usage of snapshots.
    Usage { keys: Vec<String> },
    /// Mounts of a snapshot.
    Mounts { key: String },
    /// Remove snapshots.
    #[command(alias = "remove", alias = "delete")]
    Rm { keys: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum LeaseCmd {
    /// List leases.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Create a lease.
    Create {
        #[arg(long, default_value = "")]
        id: String,
        labels: Vec<String>,
    },
    /// Remove leases.
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(long)]
        sync: bool,
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ContainerCmd {
    /// List containers.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// A container's record.
    Info { id: String },
    /// Remove containers.
    #[command(alias = "remove", alias = "delete")]
    Rm { ids: Vec<String> },
}

type Result<T> = std::result::Result<T, String>;

fn err(st: tonic::Status) -> String {
    from_status(&st).to_string()
}

fn kv(labels: &[String]) -> HashMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // As ctr: a bare key means "true"; `key=` removes it.
            None => (l.clone(), "true".to_string()),
        })
        .collect()
}

fn labels_str(m: &HashMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| format!("{}.{:09}", t.seconds, t.nanos))
        .unwrap_or_default()
}

/// Prints `rows` as an aligned table under `header`, names only, or JSON.
fn print(format: Format, quiet: bool, header: &[&str], rows: Vec<Vec<String>>, json: Vec<Value>) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    if quiet {
        for r in rows {
            println!("{}", r.first().cloned().unwrap_or_default());
        }
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", s.join(" ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stow: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stow: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ch: Channel = connect(&cli.address).await.map_err(|e| e.to_string())?;
    let h = Headers::new(Some(&cli.namespace), None).map_err(|e| e.to_string())?;
    let f = cli.format;
    macro_rules! cl {
        ($c:ty) => {
            stowage_daemon::client!($c, ch.clone(), h.clone())
        };
    }
    match cli.cmd {
        Cmd::Version => {
            let mut v = cl!(s::version::v1::version_client::VersionClient<_>);
            let r = v.version(()).await.map_err(err)?.into_inner();
            let mut i = cl!(s::introspection::v1::introspection_client::IntrospectionClient<_>);
            let u = i.server(()).await.map_err(err)?.into_inner();
            if f == Format::Json {
                println!(
                    "{}",
                    json!({"client": env!("CARGO_PKG_VERSION"), "server": r.version, "revision": r.revision, "uuid": u.uuid})
                );
            } else {
                println!("Client:\n  Version:  {}\n\nServer:\n  Version:  {}\n  Revision: {}\n  UUID: {}", env!("CARGO_PKG_VERSION"), r.version, r.revision, u.uuid);
            }
        }
        Cmd::Plugins {
            cmd: ListOnly::Ls { quiet, filters },
        } => {
            let mut i = cl!(s::introspection::v1::introspection_client::IntrospectionClient<_>);
            let ps = i
                .plugins(s::introspection::v1::PluginsRequest { filters })
                .await
                .map_err(err)?
                .into_inner()
                .plugins;
            if quiet && f == Format::Table {
                // As ctr: the quiet listing names plugins by ID.
                for p in &ps {
                    println!("{}", p.id);
                }
                return Ok(());
            }
            let rows = ps
                .iter()
                .map(|p| {
                    let plats: Vec<String> = p
                        .platforms
                        .iter()
                        .map(|x| {
                            [x.os.as_str(), x.architecture.as_str(), x.variant.as_str()]
                                .iter()
                                .filter(|s| !s.is_empty())
                                .copied()
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .collect();
                    vec![
                        p.r#type.clone(),
                        p.id.clone(),
                        if plats.is_empty() {
                            "-".into()
                        } else {
                            plats.join(",")
                        },
                        if p.init_err.is_some() {
                            "error".into()
                        } else {
                            "ok".into()
                        },
                    ]
                })
                .collect();
            let js = ps
                .iter()
                .map(|p| json!({"type": p.r#type, "id": p.id, "ok": p.init_err.is_none()}))
                .collect();
            print(f, quiet, &["TYPE", "ID", "PLATFORMS", "STATUS"], rows, js);
        }
        Cmd::Namespaces { cmd } => {
            use s::namespaces::v1::*;
            let mut n = cl!(namespaces_client::NamespacesClient<_>);
            match cmd {
                NsCmd::Ls { quiet } => {
                    let list = n
                        .list(ListNamespacesRequest::default())
                        .await
                        .map_err(err)?
                        .into_inner()
                        .namespaces;
                    let rows = list
                        .iter()
                        .map(|x| vec![x.name.clone(), labels_str(&x.labels)])
                        .collect();
                    let js = list
                        .iter()
                        .map(|x| json!({"name": x.name, "labels": x.labels}))
                        .collect();
                    print(f, quiet, &["NAME", "LABELS"], rows, js);
                }
                NsCmd::Create { name, labels } => {
                    n.create(CreateNamespaceRequest {
                        namespace: Some(Namespace {
                            name,
                            labels: kv(&labels),
                        }),
                    })
                    .await
                    .map_err(err)?;
                }
                NsCmd::Label { name, labels } => {
                    let l = kv(&labels);
                    let paths = l.keys().map(|k| format!("labels.{k}")).collect();
                    n.update(UpdateNamespaceRequest {
                        namespace: Some(Namespace {
                            name,
                            labels: l.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })
                    .await
                    .map_err(err)?;
                }
                NsCmd::Rm { names } => {
                    for name in names {
                        n.delete(DeleteNamespaceRequest { name: name.clone() })
                            .await
                            .map_err(err)?;
                        println!("{name}");
                    }
                }
            }
        }
        Cmd::Images { cmd } => {
            use s::images::v1::*;
            let mut c = cl!(images_client::ImagesClient<_>);
            match cmd {
                ImgCmd::Ls { quiet, filters } => {
                    let list = c
                        .list(ListImagesRequest { filters })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .images;
                    let rows = list
                        .iter()
                        .map(|i| {
                            let t = i.target.clone().unwrap_or_default();
                            vec![
                                i.name.clone(),
                                t.media_type,
                                t.digest,
                                t.size.to_string(),
                                labels_str(&i.labels),
                            ]
                        })
                        .collect();
                    let js = list
                        .iter()
                        .map(|i| {
                            let t = i.target.clone().unwrap_or_default();
                            json!({"name": i.name, "mediaType": t.media_type, "digest": t.digest, "size": t.size, "labels": i.labels})
                        })
                        .collect();
                    print(
                        f,
                        quiet,
                        &["REF", "TYPE", "DIGEST", "SIZE", "LABELS"],
                        rows,
                        js,
                    );
                }
                ImgCmd::Rm { sync, names } => {
                    for name in names {
                        c.delete(DeleteImageRequest {
                            name: name.clone(),
                            sync,
                        })
                        .await
                        .map_err(err)?;
                        println!("{name}");
                    }
                }
                ImgCmd::Tag { source, target } => {
                    let mut img = c
                        .get(GetImageRequest { name: source })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .image
                        .unwrap_or_default();
                    img.name = target.clone();
                    img.created_at = None;
                    img.updated_at = None;
                    c.create(CreateImageRequest { image: Some(img) })
                        .await
                        .map_err(err)?;
                    println!("{target}");
                }
            }
        }
        Cmd::Content { cmd } => {
            use s::content::v1::*;
            let mut c = cl!(content_client::ContentClient<_>);
            match cmd {
                ContentCmd::Ls { quiet, filters } => {
                    let mut st = c
                        .list(ListContentRequest { filters })
                        .await
                        .map_err(err)?
                        .into_inner();
                    let mut infos = Vec::new();
                    while let Some(m) = st.next().await {
                        infos.extend(m.map_err(err)?.info);
                    }
                    let rows = infos
                        .iter()
                        .map(|i| vec![i.digest.clone(), i.size.to_string(), labels_str(&i.labels)])
                        .collect();
                    let js = infos.iter().map(|i| json!({"digest": i.digest, "size": i.size, "created": ts(&i.created_at), "labels": i.labels})).collect();
                    print(f, quiet, &["DIGEST", "SIZE", "LABELS"], rows, js);
                }
                ContentCmd::Get { digest } => {
                    use std::io::Write as _;
                    let mut st = c
                        .read(ReadContentRequest {
                            digest,
                            offset: 0,
                            size: 0,
                        })
                        .await
                        .map_err(err)?
                        .into_inner();
                    let mut out = std::io::stdout().lock();
                    while let Some(m) = st.next().await {
                        out.write_all(&m.map_err(err)?.data)
                            .map_err(|e| e.to_string())?;
                    }
                }
                ContentCmd::Rm { digests } => {
                    for digest in digests {
                        c.delete(DeleteContentRequest {
                            digest: digest.clone(),
                        })
                        .await
                        .map_err(err)?;
                        println!("{digest}");
                    }
                }
                ContentCmd::Label { digest, labels } => {
                    let l = kv(&labels);
                    let paths = l.keys().map(|k| format!("labels.{k}")).collect();
                    c.update(UpdateRequest {
                        info: Some(Info {
                            digest,
                            labels: l.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })
                    .await
                    .map_err(err)?;
                }
                ContentCmd::Active { filters } => {
                    let sts = c
                        .list_statuses(ListStatusesRequest { filters })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .statuses;
                    let rows = sts
                        .iter()
                        .map(|s| vec![s.r#ref.clone(), s.offset.to_string(), s.total.to_string()])
                        .collect();
                    let js = sts.iter().map(|s| json!({"ref": s.r#ref, "offset": s.offset, "total": s.total, "expected": s.expected})).collect();
                    print(f, false, &["REF", "OFFSET", "TOTAL"], rows, js);
                }
            }
        }
        Cmd::Snapshots { snapshotter, cmd } => {
            use s::snapshots::v1::*;
            let mut c = cl!(snapshots_client::SnapshotsClient<_>);
            let kind = |k: i32| {
                Kind::try_from(k)
                    .map(|k| match k {
                        Kind::View => "View",
                        Kind::Active => "Active",
                        Kind::Committed => "Committed",
                        Kind::Unknown => "Unknown",
                    })
                    .unwrap_or("Unknown")
            };
            match cmd {
                SnapCmd::Ls { quiet, filters } => {
                    let mut st = c
                        .list(ListSnapshotsRequest {
                            snapshotter,
                            filters,
                        })
                        .await
                        .map_err(err)?
                        .into_inner();
                    let mut infos = Vec::new();
                    while let Some(m) = st.next().await {
                        infos.extend(m.map_err(err)?.info);
                    }
                    let rows = infos
                        .iter()
                        .map(|i| vec![i.name.clone(), i.parent.clone(), kind(i.kind).to_string()])
                        .collect();
                    let js = infos.iter().map(|i| json!({"name": i.name, "parent": i.parent, "kind": kind(i.kind), "labels": i.labels})).collect();
                    print(f, quiet, &["KEY", "PARENT", "KIND"], rows, js);
                }
                SnapCmd::Info { key } => {
                    let i = c
                        .stat(StatSnapshotRequest { snapshotter, key })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .info
                        .unwrap_or_default();
                    println!("{}", serde_json::to_string_pretty(&json!({"Kind": kind(i.kind), "Name": i.name, "Parent": i.parent, "Labels": i.labels})).unwrap_or_default());
                }
                SnapCmd::Usage { keys } => {
                    let mut rows = Vec::new();
                    let mut js = Vec::new();
                    for key in keys {
                        let u = c
                            .usage(UsageRequest {
                                snapshotter: snapshotter.clone(),
                                key: key.clone(),
                            })
                            .await
                            .map_err(err)?
                            .into_inner();
                        rows.push(vec![key.clone(), u.size.to_string(), u.inodes.to_string()]);
                        js.push(json!({"key": key, "size": u.size, "inodes": u.inodes}));
                    }
                    print(f, false, &["KEY", "SIZE", "INODES"], rows, js);
                }
                SnapCmd::Mounts { key } => {
                    let ms = c
                        .mounts(MountsRequest { snapshotter, key })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .mounts;
                    let js: Vec<Value> = ms
                        .iter()
                        .map(
                            |m| json!({"type": m.r#type, "source": m.source, "options": m.options}),
                        )
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&js).unwrap_or_default());
                }
                SnapCmd::Rm { keys } => {
                    for key in keys {
                        c.remove(RemoveSnapshotRequest {
                            snapshotter: snapshotter.clone(),
                            key,
                        })
                        .await
                        .map_err(err)?;
                    }
                }
            }
        }
        Cmd::Leases { cmd } => {
            use s::leases::v1::*;
            let mut c = cl!(leases_client::LeasesClient<_>);
            match cmd {
                LeaseCmd::Ls { quiet, filters } => {
                    let list = c
                        .list(ListRequest { filters })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .leases;
                    let rows = list
                        .iter()
                        .map(|l| vec![l.id.clone(), ts(&l.created_at), labels_str(&l.labels)])
                        .collect();
                    let js = list.iter().map(|l| json!({"id": l.id, "created": ts(&l.created_at), "labels": l.labels})).collect();
                    print(f, quiet, &["ID", "CREATED AT", "LABELS"], rows, js);
                }
                LeaseCmd::Create { id, labels } => {
                    let l = c
                        .create(CreateRequest {
                            id,
                            labels: kv(&labels),
                        })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .lease
                        .unwrap_or_default();
                    println!("{}", l.id);
                }
                LeaseCmd::Rm { sync, ids } => {
                    for id in ids {
                        c.delete(DeleteRequest {
                            id: id.clone(),
                            sync,
                        })
                        .await
                        .map_err(err)?;
                        println!("{id}");
                    }
                }
            }
        }
        Cmd::Containers { cmd } => {
            use s::containers::v1::*;
            let mut c = cl!(containers_client::ContainersClient<_>);
            match cmd {
                ContainerCmd::Ls { quiet, filters } => {
                    let list = c
                        .list(ListContainersRequest { filters })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .containers;
                    let rows = list
                        .iter()
                        .map(|x| {
                            vec![
                                x.id.clone(),
                                x.image.clone(),
                                x.runtime
                                    .as_ref()
                                    .map(|r| r.name.clone())
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect();
                    let js = list.iter().map(|x| json!({"id": x.id, "image": x.image, "snapshotter": x.snapshotter, "snapshotKey": x.snapshot_key, "labels": x.labels})).collect();
                    print(f, quiet, &["CONTAINER", "IMAGE", "RUNTIME"], rows, js);
                }
                ContainerCmd::Info { id } => {
                    let x = c
                        .get(GetContainerRequest { id })
                        .await
                        .map_err(err)?
                        .into_inner()
                        .container
                        .unwrap_or_default();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({"ID": x.id, "Labels": x.labels, "Image": x.image, "Runtime": {"Name": x.runtime.map(|r| r.name)}, "Snapshotter": x.snapshotter, "SnapshotKey": x.snapshot_key})).unwrap_or_default()
                    );
                }
                ContainerCmd::Rm { ids } => {
                    for id in ids {
                        c.delete(DeleteContainerRequest { id }).await.map_err(err)?;
                    }
                }
            }
        }
    }
    Ok(())
}
