//! Shared helpers for stowage's cross-crate and end-to-end tests: deterministic fixture images,
//! a harness that runs the real containerd 1.6 on a private root, a local registry to pull
//! from, and small shell programs.

pub mod containerd;
pub mod fixtures;
pub mod registry;
pub mod shell;
