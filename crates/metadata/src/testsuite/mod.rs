//! Conformance suites for the stores this crate implements, written once and run by every
//! implementation (here, and through the daemon's gRPC clients). Feature `testsuite`.

pub mod images;
