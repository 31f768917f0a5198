//! `content ls|get|rm|label|active|ingest`.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use stowage_core_types::content::{Ingester, WriterOptions};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_daemon::api::containerd::services::content::v1::*;
use tokio_stream::StreamExt;

use crate::output::{
    age, bytes_decimal, label_update, labels_cell, labels_joined, rfc3339_nano, system_time,
    ListArgs, Table,
};
use crate::{blocking, rpc, Ctx};

/// The `content` verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List blobs.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Write a blob to stdout.
    Get { digest: String },
    /// Remove blobs.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm { digests: Vec<String> },
    /// Set (`k=v`) or remove (`k=`) labels of a blob; prints the labels left.
    Label { digest: String, labels: Vec<String> },
    /// List ingests in progress.
    Active {
        /// Ref IDs only.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax), e.g. `ref~=layer`.
        filters: Vec<String>,
    },
    /// Store standard input as a blob through an ingest named `reference`.
    Ingest {
        /// Fail unless exactly this many bytes arrive.
        #[arg(long)]
        expected_size: Option<u64>,
        /// Fail unless the data has this digest.
        #[arg(long)]
        expected_digest: Option<String>,
        /// The ingest (transaction) reference.
        reference: String,
    },
}

/// Runs one `content` verb.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let mut c = svc!(ctx, content_client::ContentClient<_>);
    match cmd {
        Cmd::Ls(ListArgs { quiet, filters }) => {
            let mut st = c
                .list(ListContentRequest { filters })
                .await
                .map_err(rpc)
                .context("listing content")?
                .into_inner();
            let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
            while let Some(m) = st.next().await {
                for i in m.map_err(rpc).context("listing content")?.info {
                    let created = system_time(i.created_at.as_ref());
                    t.row(
                        vec![i.digest.clone(), bytes_decimal(i.size), age(created), labels_cell(&i.labels)],
                        json!({"digest": i.digest, "size": i.size, "created": rfc3339_nano(created),
                               "updated": rfc3339_nano(system_time(i.updated_at.as_ref())), "labels": i.labels}),
                    );
                }
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Get { digest } => {
            let mut st = c
                .read(ReadContentRequest {
                    digest: digest.clone(),
                    offset: 0,
                    size: 0,
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("reading {digest}"))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(m) = st.next().await {
                let data = m
                    .map_err(rpc)
                    .with_context(|| format!("reading {digest}"))?
                    .data;
                out.write_all(&data).context("writing to standard output")?;
            }
            out.flush().context("writing to standard output")?;
        }
        Cmd::Rm { digests } => {
            for digest in digests {
                c.delete(DeleteContentRequest {
                    digest: digest.clone(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("removing {digest}"))?;
                println!("{digest}");
            }
        }
        Cmd::Label { digest, labels } => {
            let info = match label_update(&labels) {
                None => {
                    c.info(InfoRequest {
                        digest: digest.clone(),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("looking up {digest}"))?
                    .into_inner()
                    .info
                }
                Some((labels, mask)) => {
                    c.update(UpdateRequest {
                        info: Some(Info {
                            digest: digest.clone(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("labelling {digest}"))?
                    .into_inner()
                    .info
                }
            };
            println!("{}", labels_joined(&info.unwrap_or_default().labels));
        }
        Cmd::Active { quiet, filters } => {
            let sts = c
                .list_statuses(ListStatusesRequest { filters })
                .await
                .map_err(rpc)
                .context("listing ingests")?
                .into_inner()
                .statuses;
            let mut t = Table::new(&["REF", "SIZE", "AGE"]);
            for s in sts {
                let started = system_time(s.started_at.as_ref());
                t.row(
                    vec![s.r#ref.clone(), bytes_decimal(s.offset), age(started)],
                    json!({"ref": s.r#ref, "offset": s.offset, "total": s.total,
                           "expected": s.expected, "started": rfc3339_nano(started),
                           "updated": rfc3339_nano(system_time(s.updated_at.as_ref()))}),
                );
            }
            t.print(ctx.format, quiet);
        }
        Cmd::Ingest {
            expected_size,
            expected_digest,
            reference,
        } => ingest(ctx, reference, expected_size, expected_digest).await?,
    }
    Ok(())
}

/// Streams standard input into ingest `reference` and commits it, checked against the
/// expected size and digest when given (ctr's `content.WriteBlob`: content already stored is
/// not an error).
async fn ingest(
    ctx: &Ctx,
    reference: String,
    size: Option<u64>,
    digest: Option<String>,
) -> Result<()> {
    let digest: Option<Digest> = digest
        .map(|d| {
            d.parse::<Digest>()
                .with_context(|| format!("--expected-digest {d:?}: use <algorithm>:<hex>"))
        })
        .transpose()?;
    let store = ctx.remote(None)?.content_store();
    blocking(move || {
        let mut opts = WriterOptions::with_ref(&reference);
        match (&digest, size) {
            (Some(d), s) => opts = opts.expect(Descriptor::new("", d.clone(), s.unwrap_or(0))),
            (None, Some(s)) => opts = opts.expect_size(s),
            (None, None) => {}
        }
        let mut w = match store.writer(opts) {
            Ok(w) => w,
            Err(e) if e.is(ErrorKind::AlreadyExists) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("opening ingest {reference}")),
        };
        let mut stdin = std::io::stdin().lock();
        std::io::copy(&mut stdin, &mut w)
            .map_err(stowage_core_types::Error::from)
            .with_context(|| format!("writing standard input to ingest {reference}"))?;
        match w.commit(size, digest.as_ref(), Labels::new()) {
            Err(e) if e.is(ErrorKind::AlreadyExists) => Ok(()),
            // The ingest stays for a retry, as in containerd: say where it is.
            Err(e) if e.is(ErrorKind::FailedPrecondition) => Err(e).with_context(|| {
                format!("committing ingest {reference} (kept: see `stow content active`)")
            }),
            r => r.with_context(|| format!("committing ingest {reference}")),
        }
    })
    .await
}
