//! `images ls|rm|tag|label|check|mount|unmount`, and the unpack that `mount` and
//! `containers create` share (driven from here, each layer applied by the daemon).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use stowage_core_types::content::{Manager, Provider};
use stowage_core_types::mediatype;
use stowage_core_types::platform::{Matcher, Platform};
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_daemon::api::containerd::services::images::v1::*;
use stowage_daemon::api::containerd::services::snapshots::v1 as snapshots_pb;
use stowage_daemon::convert::descriptor;
use stowage_daemon::remote::content::RemoteContentStore;
use stowage_digest_identity::chain_id;
use stowage_images::{read_config, read_index, read_manifest, resolve_manifest};
use stowage_snapshots_storage::mount::{mount_all, unmount_all};

use crate::output::{bytes_binary, label_update, labels_cell, labels_joined, ListArgs, Table};
use crate::{blocking, rpc, Ctx};

/// The `images` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove images.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Wait for the garbage collection.
        #[arg(long)]
        sync: bool,
        names: Vec<String>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Set (`k=v`) or remove (`k=`) labels of an image; prints the labels it has then.
    Label {
        /// Replace all labels with the ones given.
        #[arg(short, long)]
        replace_all: bool,
        name: String,
        labels: Vec<String>,
    },
    /// Whether each image's content (for this host's platform) is all present, and unpacked.
    Check {
        /// Print only the references of complete images.
        #[arg(short, long)]
        quiet: bool,
        /// Snapshotter whose unpacked snapshots are looked for.
        #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = crate::snapshots::DEFAULT)]
        snapshotter: String,
        /// Filters (containerd filter syntax).
        filters: Vec<String>,
    },
    /// Unpack an image if needed and mount its root filesystem on a directory (read-only
    /// unless --rw); the snapshot and its lease are named by the target path.
    Mount {
        /// Snapshotter to unpack into and mount from.
        #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = crate::snapshots::DEFAULT)]
        snapshotter: String,
        /// Mount writable (an active snapshot instead of a view).
        #[arg(long)]
        rw: bool,
        /// Platform to mount, for multi-platform images (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// The image reference.
        reference: String,
        /// An existing directory to mount on.
        target: PathBuf,
    },
    /// Unmount what `images mount` mounted; with --rm also remove its snapshot and lease.
    Unmount {
        /// Snapshotter the snapshot lives in.
        #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = crate::snapshots::DEFAULT)]
        snapshotter: String,
        /// Remove the snapshot (and its lease) after unmounting.
        #[arg(long)]
        rm: bool,
        target: PathBuf,
    },
}

/// Runs one `images` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, images_client::ImagesClient<_>);
    match cmd {
        Cmd::Ls(ListArgs { quiet, filters }) => {
            let list = list(ctx, filters).await?;
            if quiet && !ctx.json() {
                list.iter().for_each(|i| println!("{}", i.name));
                return Ok(());
            }
            let store = ctx.remote(None)?.content_store();
            let facts = blocking(move || {
                Ok(list
                    .into_iter()
                    .map(|i| {
                        let f = target(&i).ok().map(|t| size_and_platforms(&store, &t));
                        (i, f)
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
            let mut t = Table::new(&["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]);
            for (i, f) in facts {
                let tg = i.target.clone().unwrap_or_default();
                let (size, platforms) = match f {
                    Some(Ok((s, p))) => (Some(s), p),
                    _ => (None, Vec::new()),
                };
                t.row(
                    vec![
                        i.name.clone(),
                        tg.media_type.clone(),
                        tg.digest.clone(),
                        bytes_binary(i64::try_from(size.unwrap_or(0)).unwrap_or(i64::MAX)),
                        if platforms.is_empty() {
                            "-".into()
                        } else {
                            platforms.join(",")
                        },
                        labels_cell(&i.labels),
                    ],
                    json!({"name": i.name, "mediaType": tg.media_type, "digest": tg.digest,
                           "size": size, "platforms": platforms, "labels": i.labels}),
                );
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Rm { sync, names } => {
            // As ctr: a name that is not there is a warning, any other failure is reported
            // and the rest are still removed; the first failure is the exit status.
            let n = names.len();
            let mut first_err = None;
            for (k, name) in names.into_iter().enumerate() {
                let r = c
                    .delete(DeleteImageRequest {
                        name: name.clone(),
                        // As ctr: only the last removal waits for the collector.
                        sync: sync && k + 1 == n,
                    })
                    .await;
                match r {
                    Ok(_) => println!("{name}"),
                    Err(st) if st.code() == tonic::Code::NotFound => {
                        eprintln!("stow: warning: {name}: image not found");
                    }
                    Err(st) => {
                        let e = rpc(st).context(format!("unable to delete {name}"));
                        eprintln!("stow: error: {e:#}");
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Cmd::Tag { source, target } => {
            let mut img = get(ctx, &source).await?;
            img.name = target.clone();
            img.created_at = None;
            img.updated_at = None;
            c.create(CreateImageRequest { image: Some(img) })
                .await
                .map_err(rpc)
                .with_context(|| format!("tagging {source} as {target}"))?;
            println!("{target}");
        }
        Cmd::Label {
            replace_all,
            name,
            labels,
        } => {
            let img = match label_update(&labels) {
                None => get(ctx, &name).await?,
                Some((labels, mut mask)) => {
                    if replace_all {
                        mask.paths = vec!["labels".into()];
                    }
                    c.update(UpdateImageRequest {
                        image: Some(Image {
                            name: name.clone(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("labelling image {name}"))?
                    .into_inner()
                    .image
                    .unwrap_or_default()
                }
            };
            println!("{}", labels_joined(&img.labels));
        }
        Cmd::Check {
            quiet,
            snapshotter,
            filters,
        } => check(ctx, quiet, snapshotter, filters).await?,
        Cmd::Mount {
            snapshotter,
            rw,
            platform,
            reference,
            target,
        } => {
            mount(
                ctx,
                &snapshotter,
                rw,
                platform.as_deref(),
                &reference,
                &target,
            )
            .await?
        }
        Cmd::Unmount {
            snapshotter,
            rm,
            target,
        } => {
            let t = target.clone();
            blocking(move || {
                unmount_all(&t).with_context(|| format!("unmounting {}", t.display()))
            })
            .await?;
            if rm {
                let key = key_of(&target)?;
                crate::leases::remove(ctx, &key).await?;
                let mut s = svc!(ctx, snapshots_pb::snapshots_client::SnapshotsClient<_>);
                let gone = s
                    .remove(snapshots_pb::RemoveSnapshotRequest {
                        snapshotter,
                        key: key.clone(),
                    })
                    .await;
                ignore_not_found(gone).with_context(|| format!("removing snapshot {key}"))?;
            }
            println!("{}", target.display());
        }
    }
    Ok(())
}

fn ignore_not_found<T>(r: std::result::Result<T, tonic::Status>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => Err(rpc(st)),
    }
}

/// The snapshot key and lease ID `images mount` uses for `target`: the path as given.
fn key_of(target: &Path) -> Result<String> {
    target.to_str().map(str::to_string).with_context(|| {
        format!(
            "target {} is not UTF-8: choose another path",
            target.display()
        )
    })
}

async fn list(ctx: &Ctx, filters: Vec<String>) -> Result<Vec<Image>> {
    let mut c = svc!(ctx, images_client::ImagesClient<_>);
    Ok(c.list(ListImagesRequest { filters })
        .await
        .map_err(rpc)
        .context("listing images")?
        .into_inner()
        .images)
}

/// The image record `name`.
pub async fn get(ctx: &Ctx, name: &str) -> Result<Image> {
    let mut c = svc!(ctx, images_client::ImagesClient<_>);
    c.get(GetImageRequest { name: name.into() })
        .await
        .map_err(rpc)
        .with_context(|| format!("looking up image {name} (see `stow images ls`)"))?
        .into_inner()
        .image
        .with_context(|| format!("the daemon returned no record for image {name}"))
}

/// The image's target as a core descriptor.
pub fn target(img: &Image) -> Result<Descriptor> {
    let t = img
        .target
        .as_ref()
        .with_context(|| format!("image {} has no target", img.name))?;
    descriptor(t).with_context(|| format!("image {} has a malformed target", img.name))
}

/// The image's size for this host's platform (index, manifest, config and layers, as ctr
/// counts it) and the platforms it offers.
fn size_and_platforms(p: &dyn Provider, target: &Descriptor) -> Result<(u64, Vec<String>)> {
    let (mdesc, m) = resolve_manifest(p, target, &Matcher::host())?;
    let mut size = mdesc.size + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    if mdesc.digest != target.digest {
        size += target.size;
    }
    let mut platforms = BTreeSet::new();
    collect_platforms(p, target, &mut platforms, 0)?;
    Ok((size, platforms.into_iter().collect()))
}

/// Platforms as containerd's `images.Platforms` finds them: an index entry's own platform,
/// else the config's.
fn collect_platforms(
    p: &dyn Provider,
    desc: &Descriptor,
    out: &mut BTreeSet<String>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Ok(());
    }
    if mediatype::is_index(&desc.media_type) {
        for m in read_index(p, desc)?.manifests {
            match &m.platform {
                Some(pl) => {
                    out.insert(pl.format());
                }
                None => collect_platforms(p, &m, out, depth + 1)?,
            }
        }
    } else if mediatype::is_manifest(&desc.media_type) {
        let m = read_manifest(p, desc)?;
        out.insert(read_config(p, &m.config)?.platform().format());
    }
    Ok(())
}

/// What `images check` finds for one image.
struct Checked {
    available: bool,
    required: Vec<Descriptor>,
    present: Vec<Descriptor>,
    missing: Vec<Descriptor>,
}

/// containerd's `images.Check`: the manifest for `matcher` must resolve (else the image is
/// unavailable), then its config and layers are each present or missing.
fn check_content(store: &RemoteContentStore, target: &Descriptor) -> Result<Checked> {
    let m = match resolve_manifest(store, target, &Matcher::host()) {
        Ok((_, m)) => m,
        Err(e) if e.is(ErrorKind::NotFound) => {
            return Ok(Checked {
                available: false,
                required: vec![target.clone()],
                present: Vec::new(),
                missing: vec![target.clone()],
            })
        }
        Err(e) => return Err(e).with_context(|| format!("checking image {}", target.digest)),
    };
    let required: Vec<Descriptor> = std::iter::once(m.config.clone()).chain(m.layers).collect();
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for d in &required {
        match store.info(&d.digest) {
            Ok(_) => present.push(d.clone()),
            Err(e) if e.is(ErrorKind::NotFound) => missing.push(d.clone()),
            Err(e) => return Err(e).with_context(|| format!("checking blob {}", d.digest)),
        }
    }
    Ok(Checked {
        available: true,
        required,
        present,
        missing,
    })
}

/// The ChainID of the image's layers for this host's platform.
fn image_chain_id(p: &dyn Provider, target: &Descriptor, matcher: &Matcher) -> Result<Digest> {
    let (_, m) = resolve_manifest(p, target, matcher)?;
    let cfg = read_config(p, &m.config)?;
    chain_id(&cfg.rootfs.diff_ids).with_context(|| format!("image {} has no layers", target.digest))
}

async fn check(ctx: &Ctx, quiet: bool, sn: String, filters: Vec<String>) -> Result<()> {
    let images = list(ctx, filters).await?;
    let remote = ctx.remote(None)?;
    let (store, snap) = (remote.content_store(), remote.snapshotter(&sn));
    let results = blocking(move || {
        Ok(images
            .into_iter()
            .map(|i| {
                let checked = target(&i).and_then(|t| check_content(&store, &t));
                let unpacked = target(&i).and_then(|t| {
                    let id = image_chain_id(&store, &t, &Matcher::host())?;
                    match snap.stat(id.as_str()) {
                        Ok(_) => Ok(true),
                        Err(e) if e.is(ErrorKind::NotFound) => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                });
                (i, checked, unpacked)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let mut first_err = None;
    let mut t = Table::new(&["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]);
    let mut complete_refs = Vec::new();
    for (i, checked, unpacked) in results {
        let tg = i.target.clone().unwrap_or_default();
        let unpacked = unpacked.unwrap_or_else(|e| {
            first_err.get_or_insert(e.context(format!("checking whether {} is unpacked", i.name)));
            false
        });
        let (status, size, complete, js) = match checked {
            Err(e) => {
                first_err.get_or_insert(e.context(format!("checking {}", i.name)));
                (
                    "error".to_string(),
                    "-".to_string(),
                    false,
                    json!({"status": "error"}),
                )
            }
            Ok(c) => {
                let sum = |v: &[Descriptor]| v.iter().map(|d| d.size).sum::<u64>();
                let (req, pres) = (sum(&c.required), sum(&c.present));
                let b = |n: u64| bytes_binary(i64::try_from(n).unwrap_or(i64::MAX));
                let complete = c.available && c.missing.is_empty();
                let word = if !c.available {
                    "unavailable"
                } else if c.missing.is_empty() {
                    "complete"
                } else {
                    "incomplete"
                };
                let (status, size) = if c.available {
                    (
                        format!("{word} ({}/{})", c.present.len(), c.required.len()),
                        format!("{}/{}", b(pres), b(req)),
                    )
                } else {
                    (
                        format!("{word} ({}/?)", c.present.len()),
                        format!("{}/?", b(pres)),
                    )
                };
                let missing: Vec<String> = c.missing.iter().map(|d| d.digest.to_string()).collect();
                let js = json!({"status": word, "present": c.present.len(),
                    "required": if c.available { Some(c.required.len()) } else { None },
                    "presentSize": pres, "requiredSize": if c.available { Some(req) } else { None },
                    "missing": missing});
                (status, size, complete, js)
            }
        };
        if complete {
            complete_refs.push(i.name.clone());
        }
        let mut js = js;
        js["name"] = json!(i.name);
        js["mediaType"] = json!(tg.media_type);
        js["digest"] = json!(tg.digest);
        js["unpacked"] = json!(unpacked);
        t.row(
            vec![
                i.name.clone(),
                tg.media_type,
                tg.digest,
                status,
                size,
                unpacked.to_string(),
            ],
            js,
        );
    }
    if quiet && !ctx.json() {
        // As ctr: the quiet form names only the complete images.
        complete_refs.iter().for_each(|r| println!("{r}"));
    } else {
        t.print(ctx.format, false);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long the lease of an `images mount` keeps the snapshot from the collector, as in ctr.
const MOUNT_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Unpacks image `reference` for `matcher` into `sn` under lease `lease` if it is not already,
/// recording the unpack in the content labels as containerd does; returns the top ChainID.
///
/// As with ctr, the snapshots are prepared and committed from here while the daemon's Diff
/// service applies each layer, so stow never writes into the daemon's snapshot directories.
pub async fn unpack(
    ctx: &Ctx,
    reference: &str,
    sn: &str,
    matcher: Matcher,
    lease: &str,
) -> Result<Digest> {
    let img = get(ctx, reference).await?;
    let target = target(&img)?;
    let remote = ctx.remote(Some(lease))?;
    let (store, snap, applier) = (
        remote.content_store(),
        remote.snapshotter(sn),
        remote.differ(),
    );
    let (reference, sn) = (reference.to_string(), sn.to_string());
    blocking(move || {
        let u = stowage_images::unpack(
            &store,
            &snap,
            &applier,
            &target,
            &matcher,
            &Default::default(),
        )
        .with_context(|| format!("unpacking {reference} into {sn}"))?;
        stowage_images::record_labels(&store as &dyn Manager, &u, &sn)
            .with_context(|| format!("labelling the content of {reference}"))?;
        Ok(u.chain_id)
    })
    .await
}

async fn mount(
    ctx: &Ctx,
    sn: &str,
    rw: bool,
    platform: Option<&str>,
    reference: &str,
    target: &Path,
) -> Result<()> {
    let key = key_of(target)?;
    let matcher = match platform {
        Some(p) => Matcher::only(
            &Platform::parse(p)
                .with_context(|| format!("--platform {p}: use os/arch[/variant]"))?,
        ),
        None => Matcher::host(),
    };
    let mut labels = HashMap::new();
    labels.insert(format!("containerd.io/gc.ref.snapshot.{sn}"), key.clone());
    // A lease named by the target holds the snapshot (and the unpack) until `unmount --rm`;
    // one left by an earlier mount of the same target is reused, as ctr does.
    let created = match crate::leases::create(ctx, &key, MOUNT_LEASE, labels).await {
        Ok(_) => true,
        Err(e) if is_kind(&e, ErrorKind::AlreadyExists) => false,
        Err(e) => return Err(e),
    };
    let r = mount_under_lease(ctx, sn, rw, matcher, reference, target, &key).await;
    if r.is_err() && created {
        // The error that matters is the mount's; a lease left behind expires anyway.
        let _ = crate::leases::remove(ctx, &key).await;
    }
    r
}

/// True when `e` carries a core error of kind `kind`.
fn is_kind(e: &anyhow::Error, kind: ErrorKind) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<stowage_core_types::Error>()
            .is_some_and(|x| x.is(kind))
    })
}

async fn mount_under_lease(
    ctx: &Ctx,
    sn: &str,
    rw: bool,
    matcher: Matcher,
    reference: &str,
    target: &Path,
    key: &str,
) -> Result<()> {
    let chain = unpack(ctx, reference, sn, matcher, key).await?;
    println!("{chain}");
    let snap = ctx.remote(Some(key))?.snapshotter(sn);
    let (k, t) = (key.to_string(), target.to_path_buf());
    blocking(move || {
        let made = if rw {
            snap.prepare(&k, chain.as_str(), Labels::new())
        } else {
            snap.view(&k, chain.as_str(), Labels::new())
        };
        let mounts = match made {
            Ok(m) => m,
            Err(e) if e.is(ErrorKind::AlreadyExists) => snap.mounts(&k)?,
            Err(e) => return Err(e).with_context(|| format!("preparing snapshot {k}")),
        };
        if let Err(e) = mount_all(&mounts, &t) {
            let _ = snap.remove(&k);
            return Err(e)
                .with_context(|| format!("mounting on {} (is it a directory?)", t.display()));
        }
        Ok(())
    })
    .await?;
    println!("{}", target.display());
    Ok(())
}
