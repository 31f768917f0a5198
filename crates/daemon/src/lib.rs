//! stowaged: containerd 1.6's v1 gRPC storage API served over a unix socket, backed by the
//! stowage crates (content, metadata, snapshotters, diff, images).
//!
//! - [`api`]: the code generated from `proto/`.
//! - [`errors`]: the one mapping of [`ErrorKind`](stowage_core_types::ErrorKind) to gRPC codes
//!   and back.
//! - [`config`]: containerd-shaped `config.toml` and command-line flags.
//! - [`server`]: opening a root, the services, serving on a socket, shutting down.
//! - [`services`]: one module per containerd service.
//! - [`eager`]: eager unpack, an image unpacked in the daemon as soon as a client holding a
//!   lease creates it, with client requests for its layers waiting for the job.

pub mod client;
pub mod config;
pub mod convert;
pub mod eager;
pub mod errors;
pub mod events;
pub mod remote;
pub mod request;
pub mod server;
pub mod services;

/// Code generated from `proto/`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/api.rs"));
}

/// The version stowaged reports (containerd's Version service).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
