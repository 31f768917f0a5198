//! The diff traits: applying a layer onto mounts ([`Applier`]) and computing the layer between
//! two mount sets ([`Comparer`]).
//!
//! They mirror containerd 1.6's `diff.Applier` and `diff.Comparer` with their option sets
//! (`diff.ApplyConfig` and `diff.Config`; 1.6 has no source-date-epoch option, and its
//! `Compressor` callback cannot cross the gRPC API, so neither is here). Implementations: the
//! local differ in `stowage-diff` (over a local or a namespaced content store) and the gRPC
//! client in `stowage-daemon`; all run the conformance suite in `stowage-diff`'s `testsuite`.
//! Like the content store and snapshotter traits, the methods are synchronous and may block on
//! the filesystem; async callers use `spawn_blocking`.

use std::collections::BTreeMap;

use crate::descriptor::Descriptor;
use crate::error::Result;
use crate::labels::Labels;
use crate::mount::Mount;

/// An opaque payload for a stream processor: a protobuf `Any` (type URL and encoded message),
/// passed through untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The message type.
    pub type_url: String,
    /// The encoded message.
    pub value: Vec<u8>,
}

/// Options of [`Applier::apply`], as containerd's `diff.ApplyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyConfig {
    /// Payloads for the stream processors, by processor id. A processor receives the payload
    /// under its own id; payloads no processor in the chain asks for are ignored.
    pub payloads: BTreeMap<String, Payload>,
}

/// Applies layers onto mounts.
pub trait Applier: Send + Sync {
    /// Applies the content `desc` names onto the filesystem `mounts` give (as a snapshotter's
    /// prepare returned them) and returns the descriptor of the uncompressed layer that was
    /// applied: media type `application/vnd.oci.image.layer.v1.tar`, the DiffID as digest and
    /// the uncompressed size.
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<Descriptor>;
}

/// Options of [`Comparer::compare`], as containerd's `diff.Config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompareOptions {
    /// The layer's media type; empty means `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// Labels for the committed blob; the `containerd.io/uncompressed` label is added.
    pub labels: Labels,
    /// The content ingest reference; empty means a unique one.
    pub reference: String,
}

/// Computes layers from the difference of two mount sets.
pub trait Comparer: Send + Sync {
    /// Writes the changes from the filesystem of `lower` to that of `upper` as a layer into the
    /// comparer's content store and returns its descriptor (media type as requested, digest
    /// and size of the stored blob).
    fn compare(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        options: &CompareOptions,
    ) -> Result<Descriptor>;
}

/// Both halves, as containerd's Diff service requires of a differ.
pub trait Differ: Applier + Comparer {}

impl<T: Applier + Comparer + ?Sized> Differ for T {}
