//! Shared helpers for stowage's cross-crate and end-to-end tests: deterministic fixture images
//! and a harness that runs the real containerd 1.6 on a private root.

pub mod containerd;
pub mod fixtures;
