//! Compiles `proto/` (our definitions of containerd's v1 API) into Rust with protox, so no
//! system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "containerd/types.proto",
        "containerd/events.proto",
        "containerd/services/version.proto",
        "containerd/services/introspection.proto",
        "containerd/services/namespaces.proto",
        "containerd/services/content.proto",
        "containerd/services/images.proto",
        "containerd/services/leases.proto",
        "containerd/services/snapshots.proto",
        "containerd/services/containers.proto",
        "containerd/services/diff.proto",
        "containerd/services/events.proto",
        "google/rpc/status.proto",
        "grpc/health/v1/health.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Write payloads arrive as slices of tonic's decode buffer instead of fresh Vec copies:
        // a pull streams every layer at once, so the copies add up.
        .bytes(".containerd.services.content.v1.WriteContentRequest.data")
        .include_file("api.rs")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
