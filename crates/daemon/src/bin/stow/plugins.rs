//! `plugins ls` and `version`.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use stowage_daemon::api::containerd::services::{introspection::v1 as intro, version::v1 as ver};

use crate::output::{ListArgs, Table};
use crate::{rpc, Ctx};

/// The `plugins` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List plugins.
    #[command(alias = "list")]
    Ls(ListArgs),
}

/// Runs one `plugins` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let Cmd::Ls(ListArgs { quiet, filters }) = cmd;
    let mut c = svc!(ctx, intro::introspection_client::IntrospectionClient<_>);
    let plugins = c
        .plugins(intro::PluginsRequest { filters })
        .await
        .map_err(rpc)
        .context("listing plugins")?
        .into_inner()
        .plugins;
    // As ctr: the quiet listing names plugins by ID, the second column.
    let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]).id_column(1);
    for p in &plugins {
        let platforms: Vec<String> = p
            .platforms
            .iter()
            .map(|x| {
                [x.os.as_str(), x.architecture.as_str(), x.variant.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        let status = if p.init_err.is_some() { "error" } else { "ok" };
        t.row(
            vec![
                p.r#type.clone(),
                p.id.clone(),
                if platforms.is_empty() {
                    "-".into()
                } else {
                    platforms.join(",")
                },
                status.into(),
            ],
            json!({"type": p.r#type, "id": p.id, "platforms": platforms, "requires": p.requires,
                   "exports": p.exports, "status": status,
                   "error": p.init_err.as_ref().map(|e| e.message.clone())}),
        );
    }
    t.print(ctx.format, quiet);
    Ok(())
}

/// Prints the client's and the daemon's versions (and the daemon's UUID).
pub async fn version(ctx: &Ctx) -> Result<()> {
    let mut v = svc!(ctx, ver::version_client::VersionClient<_>);
    let r = v
        .version(())
        .await
        .map_err(rpc)
        .context("asking the daemon's version")?
        .into_inner();
    let mut i = svc!(ctx, intro::introspection_client::IntrospectionClient<_>);
    let u = i
        .server(())
        .await
        .map_err(rpc)
        .context("asking the daemon's UUID")?
        .into_inner();
    let client = env!("CARGO_PKG_VERSION");
    if ctx.json() {
        crate::output::print_json(
            &json!({"client": client, "server": r.version, "revision": r.revision, "uuid": u.uuid}),
        );
    } else {
        println!(
            "Client:\n  Version:  {client}\n\nServer:\n  Version:  {}\n  Revision: {}\n  UUID: {}",
            r.version, r.revision, u.uuid
        );
    }
    Ok(())
}
