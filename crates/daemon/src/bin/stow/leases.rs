//! `leases ls|create|rm`.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use stowage_daemon::api::containerd::services::leases::v1::*;

use crate::output::{label_args, labels_cell, rfc3339, system_time, ListArgs, Table};
use crate::{rpc, Ctx};

/// The label whose RFC 3339 time lets the collector drop a lease.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// The `leases` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List leases.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Create a lease; prints its ID.
    Create {
        /// The lease's ID (random when empty).
        #[arg(long, default_value = "")]
        id: String,
        /// Lifetime before the collector may drop it (`24h`, `30m`, `90s`; `0` for none).
        #[arg(short = 'x', long, default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// Labels (`k=v`).
        labels: Vec<String>,
    },
    /// Remove leases.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Wait for the garbage collection.
        #[arg(long)]
        sync: bool,
        ids: Vec<String>,
    },
}

/// Go-style durations as ctr takes them: a number with `h`, `m`, `s` or `ms`, or `0`.
fn parse_duration(s: &str) -> Result<Duration> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number and a unit, e.g. 24h"))?;
    let secs = match unit {
        "h" => n * 3600.0,
        "m" => n * 60.0,
        "s" => n,
        "ms" => n / 1000.0,
        _ => bail!("duration {s:?}: unit must be h, m, s or ms"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Creates lease `id` with `labels`, expiring after `expires` (never when zero).
pub async fn create(
    ctx: &Ctx,
    id: &str,
    expires: Duration,
    mut labels: std::collections::HashMap<String, String>,
) -> Result<Lease> {
    if !expires.is_zero() {
        labels.insert(EXPIRE_LABEL.into(), rfc3339(SystemTime::now() + expires));
    }
    let mut c = svc!(ctx, leases_client::LeasesClient<_>);
    Ok(c.create(CreateRequest {
        id: id.to_string(),
        labels,
    })
    .await
    .map_err(rpc)
    .with_context(|| format!("creating lease {id:?}"))?
    .into_inner()
    .lease
    .unwrap_or_default())
}

/// Removes lease `id`; one already gone is fine.
pub async fn remove(ctx: &Ctx, id: &str) -> Result<()> {
    let mut c = svc!(ctx, leases_client::LeasesClient<_>);
    match c
        .delete(DeleteRequest {
            id: id.to_string(),
            sync: false,
        })
        .await
    {
        Err(st) if st.code() != tonic::Code::NotFound => {
            Err(rpc(st)).with_context(|| format!("removing lease {id}"))
        }
        _ => Ok(()),
    }
}

/// Runs one `leases` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, leases_client::LeasesClient<_>);
    match cmd {
        Cmd::Ls(ListArgs { quiet, filters }) => {
            let list = c
                .list(ListRequest { filters })
                .await
                .map_err(rpc)
                .context("listing leases")?
                .into_inner()
                .leases;
            let mut t = Table::new(&["ID", "CREATED AT", "LABELS"]);
            for l in list {
                let created = rfc3339(system_time(l.created_at.as_ref()));
                t.row(
                    vec![l.id.clone(), created.clone(), labels_cell(&l.labels)],
                    json!({"id": l.id, "created": created, "labels": l.labels}),
                );
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Create {
            id,
            expires,
            labels,
        } => {
            let l = create(ctx, &id, expires, label_args(&labels)).await?;
            println!("{}", l.id);
        }
        Cmd::Rm { sync, ids } => {
            for id in ids {
                c.delete(DeleteRequest {
                    id: id.clone(),
                    sync,
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("removing lease {id}"))?;
                println!("{id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_ctr_takes_them() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("h").is_err());
    }
}
