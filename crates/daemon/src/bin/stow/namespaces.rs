//! `namespaces ls|create|label|rm`.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use stowage_daemon::api::containerd::services::namespaces::v1::*;

use crate::output::{label_args, label_update, labels_cell, Table};
use crate::{rpc, Ctx};

/// The `namespaces` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List namespaces.
    #[command(alias = "list")]
    Ls {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a namespace with labels (`k=v`).
    Create { name: String, labels: Vec<String> },
    /// Set (`k=v`) or remove (`k=`) labels.
    Label { name: String, labels: Vec<String> },
    /// Remove namespaces.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm { names: Vec<String> },
}

/// Runs one `namespaces` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, namespaces_client::NamespacesClient<_>);
    match cmd {
        Cmd::Ls { quiet } => {
            let list = c
                .list(ListNamespacesRequest::default())
                .await
                .map_err(rpc)
                .context("listing namespaces")?
                .into_inner()
                .namespaces;
            let mut t = Table::new(&["NAME", "LABELS"]);
            for n in list {
                t.row(
                    vec![n.name.clone(), labels_cell(&n.labels)],
                    json!({"name": n.name, "labels": n.labels}),
                );
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Create { name, labels } => {
            c.create(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name: name.clone(),
                    labels: label_args(&labels),
                }),
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("creating namespace {name}"))?;
        }
        Cmd::Label { name, labels } => {
            // As ctr: nothing to do without labels, nothing printed.
            if let Some((labels, mask)) = label_update(&labels) {
                c.update(UpdateNamespaceRequest {
                    namespace: Some(Namespace {
                        name: name.clone(),
                        labels,
                    }),
                    update_mask: Some(mask),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("labelling namespace {name}"))?;
            }
        }
        Cmd::Rm { names } => {
            for name in names {
                c.delete(DeleteNamespaceRequest { name: name.clone() })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("removing namespace {name}"))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}
