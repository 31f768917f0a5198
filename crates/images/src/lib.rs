//! Images: the documents that describe them and turning them into filesystems.
//!
//! - [`model`]: OCI and Docker manifests, indexes (manifest lists) and image configs, parsed
//!   with errors that name what is wrong, and the children of a descriptor.
//! - [`platform`]: choosing the manifest for a platform from an index, best match first, as
//!   containerd 1.6's `images.Manifest` does.
//! - [`unpack`](mod@unpack): applying an image's layers into committed snapshots named by
//!   ChainID, with containerd 1.6's unpacker semantics (reuse of existing layers, `extract-…`
//!   keys, no half-applied snapshot left behind), each layer applied by an `Applier`.
//!
//! Everything here works on the core-types traits (`Provider`, `Snapshotter`, `Applier`), so
//! it runs on the local stores and differ, on the namespaced metadata wrappers and on remote
//! clients alike.

pub mod model;
pub mod platform;
pub mod unpack;

pub use model::{children, read_config, read_index, read_manifest, ImageConfig, Index, Manifest};
pub use platform::{matching_manifests, resolve_manifest};
pub use unpack::{record_labels, unpack, UnpackOptions, Unpacked, UnpackedLayer};
