//! Content identity: hashing streams into [`Digest`]s, verifying streams against them, and the
//! two layer identities image handling needs, the DiffID (digest of the uncompressed layer) and
//! the ChainID (the identity of a stack of layers).
//!
//! [`Digest`] and [`Algorithm`] are value types that live in `stowage-core-types` (descriptors
//! carry them); they are re-exported here so a crate that only needs digests can depend on this
//! crate alone.

mod chain;
mod digester;
mod layer;
mod verify;

pub use chain::{chain_id, chain_ids};
pub use digester::{digest_of, digest_of_with, digest_reader, digest_reader_with, Digester};
pub use layer::{
    decompressed_bufread, decompressed_reader, detect_compression, diff_id, layer_digests,
    Compression, LayerDigests,
};
pub use stowage_core_types::digest::{Algorithm, Digest};
pub use verify::VerifyingReader;
