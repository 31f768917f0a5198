//! stow: stowaged's command-line client, with ctr's verbs and flag names where they overlap.
//!
//! Listing verbs print ctr-like tables, ids only with `--quiet`, or JSON with `--format json`
//! for scripts (one array; one object per line for the `events` stream). One module per noun;
//! [`output`] holds everything that prints.

/// A generated client of service `$c` on the context's channel, with its headers and limits.
macro_rules! svc {
    ($ctx:expr, $c:ty) => {
        stowage_daemon::client!($c, $ctx.conn.channel(), $ctx.headers.clone())
    };
}

mod apparmor;
mod containers;
mod content;
mod events;
mod images;
mod leases;
mod namespaces;
mod nvidia;
mod output;
mod plugins;
mod seccomp;
mod snapshots;
mod spec;
mod spec_fields;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use output::Format;
use stowage_daemon::client::Headers;
use stowage_daemon::errors::from_status;
use stowage_daemon::remote::{Connection, Scope};

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
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Client and server versions.
    Version,
    /// Plugins the daemon runs.
    #[command(alias = "plugin")]
    Plugins {
        #[command(subcommand)]
        cmd: plugins::Cmd,
    },
    /// Namespaces.
    #[command(alias = "ns", alias = "namespace")]
    Namespaces {
        #[command(subcommand)]
        cmd: namespaces::Cmd,
    },
    /// Images.
    #[command(alias = "i", alias = "image")]
    Images {
        #[command(subcommand)]
        cmd: images::Cmd,
    },
    /// Content blobs.
    Content {
        #[command(subcommand)]
        cmd: content::Cmd,
    },
    /// Snapshots.
    #[command(alias = "snapshot")]
    Snapshots {
        /// Snapshotter name.
        #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = snapshots::DEFAULT)]
        snapshotter: String,
        #[command(subcommand)]
        cmd: snapshots::Cmd,
    },
    /// Leases.
    Leases {
        #[command(subcommand)]
        cmd: leases::Cmd,
    },
    /// Containers (metadata).
    #[command(alias = "c", alias = "container")]
    Containers {
        #[command(subcommand)]
        cmd: containers::Cmd,
    },
    /// Print the daemon's events until interrupted; arguments are filters
    /// (e.g. `topic=="/images/create"`).
    #[command(alias = "event")]
    Events { filters: Vec<String> },
}

/// What every verb needs: the connection, the namespace and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The one connection to the daemon: the generated clients and the synchronous remote
    /// stores all use it.
    pub conn: Connection,
    /// Namespace header for every call.
    pub headers: Headers,
    /// The namespace worked in.
    pub namespace: String,
    /// Listing format.
    pub format: Format,
}

impl Ctx {
    /// True when listings are JSON.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// The remote stores (content, snapshotters, differ) in the context's namespace, under
    /// `lease` if given, on the context's connection.
    pub fn remote(&self, lease: Option<&str>) -> Result<Scope> {
        self.conn
            .scope(&self.namespace, lease)
            .with_context(|| format!("lease {lease:?}: use an ASCII name"))
    }
}

/// A gRPC status as the error it carries (containerd's wording: "image x: not found").
pub fn rpc(st: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(from_status(&st))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One connection (socket and runtime) for the whole command: stow's own async code runs
    // on its runtime, and the remote stores block on it from `spawn_blocking` threads. It is
    // dropped here, outside the runtime, after everything that used it has finished.
    let conn = match Connection::open(&cli.address) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "stow: cannot reach the daemon at {}: is stowaged running? Give its socket with --address or CONTAINERD_ADDRESS: {e}",
                cli.address.display()
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    match conn.runtime().block_on(run(cli, conn.clone())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, conn: Connection) -> Result<()> {
    let headers = Headers::new(Some(&cli.namespace), None)
        .with_context(|| format!("namespace {:?}: use an ASCII name", cli.namespace))?;
    let ctx = Ctx {
        conn,
        headers,
        namespace: cli.namespace,
        format: cli.format,
    };
    match cli.cmd {
        Cmd::Version => plugins::version(&ctx).await,
        Cmd::Plugins { cmd } => plugins::run(&ctx, cmd).await,
        Cmd::Namespaces { cmd } => namespaces::run(&ctx, cmd).await,
        Cmd::Images { cmd } => images::run(&ctx, cmd).await,
        Cmd::Content { cmd } => content::run(&ctx, cmd).await,
        Cmd::Snapshots { snapshotter, cmd } => snapshots::run(&ctx, &snapshotter, cmd).await,
        Cmd::Leases { cmd } => leases::run(&ctx, cmd).await,
        Cmd::Containers { cmd } => containers::run(&ctx, cmd).await,
        Cmd::Events { filters } => events::run(&ctx, filters).await,
    }
}

/// Runs synchronous work (the remote stores, mounts) off the async thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a worker thread of stow failed")?
}
