//! Which layer media types the applier accepts.

use stowage_core_types::error::{Error, Result};
use stowage_core_types::mediatype;

/// Accepts `media_type` if it is a layer the applier can unpack: any OCI or Docker layer type
/// that containerd's `images.DiffCompression` knows, with no `+` suffix other than `gzip` or
/// `zstd`. Wrapped layers (`+encrypted`, ...) are `NotImplemented` here, as in containerd
/// without a processor for them: [`crate::LocalDiffer`]'s apply takes them only through a
/// configured [`crate::StreamProcessor`] accepting their type (see [`crate::processor`]),
/// which turns them into a type this function accepts.
///
/// The applier detects the real compression from the stream's magic bytes, as containerd's
/// decompressor does; the media type only decides whether the layer is accepted.
pub fn check_layer_media_type(media_type: &str) -> Result<()> {
    mediatype::layer_compression(media_type)?;
    if let Some(ext) = media_type
        .split('+')
        .skip(1)
        .find(|e| *e != "gzip" && *e != "zstd")
    {
        return Err(Error::not_implemented(format!(
            "no stream processor for {ext:?} layers (media type {media_type:?})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    #[test]
    fn layer_types_are_accepted() {
        for mt in [
            mediatype::OCI_LAYER,
            mediatype::OCI_LAYER_GZIP,
            mediatype::OCI_LAYER_ZSTD,
            mediatype::OCI_LAYER_NON_DISTRIBUTABLE_ZSTD,
            mediatype::DOCKER_LAYER,
            mediatype::DOCKER_LAYER_GZIP,
            mediatype::DOCKER_LAYER_FOREIGN_GZIP,
        ] {
            check_layer_media_type(mt).unwrap();
        }
    }

    #[test]
    fn other_types_are_not_implemented() {
        for mt in [
            mediatype::OCI_LAYER_ENCRYPTED,
            mediatype::OCI_LAYER_GZIP_ENCRYPTED,
            mediatype::OCI_MANIFEST,
            "application/octet-stream",
            "",
        ] {
            let err = check_layer_media_type(mt).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotImplemented, "{mt}");
            assert!(err.to_string().contains(mt), "{err}");
        }
    }
}
