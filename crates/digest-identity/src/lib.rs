//! stub
pub use stowage_core_types::digest::{Algorithm, Digest};
