//! The vocabulary every stowage crate speaks.
//!
//! This crate holds value types (descriptors, digests, platforms, mounts, labels), the filter and
//! field-path languages containerd's API uses, the one [`Error`] type whose kinds mirror
//! containerd's `errdefs`, and the traits each subsystem implements (for example the content store
//! traits in [`content`]). It does no I/O and knows nothing of bolt, gRPC or the filesystem layout.

pub mod conformance;
pub mod content;
pub mod descriptor;
pub mod diff;
pub mod digest;
pub mod error;
pub mod fieldpath;
pub mod filters;
#[cfg(test)]
mod gotest;
pub mod image;
pub mod labels;
pub mod mediatype;
pub mod mount;
pub mod namespace;
pub mod platform;
pub mod snapshot;

pub use descriptor::Descriptor;
pub use digest::{Algorithm, Digest};
pub use error::{Error, ErrorKind, Result};
pub use labels::Labels;
