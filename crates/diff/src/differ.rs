//! The local differ: [`Applier`] and [`Comparer`] over a content store, as containerd's
//! walking differ (`diff/apply` and `diff/walking`).
//!
//! Give it the plain local store to diff outside any namespace, or a namespaced (metadata)
//! content store to have layers read from and written into a namespace under a lease, which
//! is how the daemon serves the Diff service.

use std::sync::Arc;

use stowage_core_types::content::{SectionReader, Store};
use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer};
use stowage_core_types::error::{Error, ErrorKind, Result};
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_core_types::Descriptor;
use stowage_snapshots_storage::mount::with_temp_mount;

use crate::{apply_layer, apply_layer_to_mounts, direct_target, ApplyOptions, LayerEncoding};

/// The text containerd's `diff.ErrNoProcessor` carries.
pub const NO_PROCESSOR: &str = "no processor for media-type";

/// Applies layers from, and writes compared layers into, one content store.
#[derive(Clone)]
pub struct LocalDiffer {
    content: Arc<dyn Store>,
    apply_options: ApplyOptions,
}

impl std::fmt::Debug for LocalDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDiffer").finish_non_exhaustive()
    }
}

impl LocalDiffer {
    /// A differ over `content`, applying with the default [`ApplyOptions`] (privileged when
    /// running as root).
    pub fn new(content: Arc<dyn Store>) -> Self {
        LocalDiffer {
            content,
            apply_options: ApplyOptions::default(),
        }
    }

    /// Uses `options` for every apply (the whiteout mode and parents are still taken from the
    /// mounts).
    pub fn with_apply_options(mut self, options: ApplyOptions) -> Self {
        self.apply_options = options;
        self
    }

    /// The content store layers are read from and written into.
    pub fn content(&self) -> &Arc<dyn Store> {
        &self.content
    }
}

/// Resolves the stream processor chain for `media_type`, as containerd's applier does before
/// reading anything: the built-in processor takes every OCI and Docker layer type (the
/// compression is detected from the stream); there are no configured processors, so any other
/// type fails with containerd's `ErrNoProcessor`. Payloads are for configured processors only,
/// so with none configured they are never read — containerd ignores them the same way.
fn resolve_processors(media_type: &str, _config: &ApplyConfig) -> Result<()> {
    mediatype::layer_compression(media_type).map_err(|_| {
        Error::unknown(format!(
            "failed to get stream processor for {media_type}: {NO_PROCESSOR}"
        ))
    })?;
    Ok(())
}

impl Applier for LocalDiffer {
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<Descriptor> {
        resolve_processors(&desc.media_type, config)?;
        let ra = self
            .content
            .reader_at(desc)
            .map_err(|e| e.context("failed to get reader from content store"))?;
        let reader = SectionReader::new(&*ra, 0);
        let encoding = LayerEncoding::MediaType(&desc.media_type);
        let result = match direct_target(mounts) {
            Ok(_) => apply_layer_to_mounts(reader, encoding, mounts, &self.apply_options)?,
            // Several mounts, or a filesystem that is not a directory: write through a
            // temporary mount of them, as containerd always does.
            Err(e) if e.is(ErrorKind::NotImplemented) => with_temp_mount(mounts, |root| {
                let mut options = self.apply_options.clone();
                options.whiteouts = crate::WhiteoutMode::Delete;
                options.parents = Vec::new();
                apply_layer(reader, encoding, root, &options)
            })?,
            Err(e) => return Err(e),
        };
        Ok(Descriptor::new(
            mediatype::OCI_LAYER,
            result.diff_id,
            result.size,
        ))
    }
}

impl Comparer for LocalDiffer {
    fn compare(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        options: &CompareOptions,
    ) -> Result<Descriptor> {
        crate::compare(lower, upper, &*self.content, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_media_types_have_no_processor() {
        let config = ApplyConfig::default();
        for mt in [mediatype::OCI_MANIFEST, "application/octet-stream", ""] {
            let err = resolve_processors(mt, &config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unknown);
            assert_eq!(
                err.message(),
                format!("failed to get stream processor for {mt}: no processor for media-type")
            );
        }
        for mt in [
            mediatype::OCI_LAYER,
            mediatype::OCI_LAYER_GZIP,
            mediatype::OCI_LAYER_ZSTD,
            mediatype::DOCKER_LAYER,
            mediatype::DOCKER_LAYER_GZIP,
        ] {
            resolve_processors(mt, &config).unwrap();
        }
    }
}
