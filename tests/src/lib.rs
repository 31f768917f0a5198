//! Shared helpers for stowage cross-crate tests.
