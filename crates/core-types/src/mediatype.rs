//! Media type constants (OCI and Docker) and helpers to classify them.
//!
//! The classification follows containerd 1.6's `images` package: a layer is any
//! `application/vnd.oci.image.layer.*` type or one of Docker's rootfs diff types, manifests and
//! indexes are matched exactly, and the compression of a layer is read from its `+gzip`/`+zstd`
//! suffix (Docker's plain `.tar` layer type says nothing reliable, so it is `Unknown`: detect it
//! from the bytes).

use std::fmt;

use crate::error::{Error, Result};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI content descriptor.
pub const OCI_DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";
/// OCI layout header (`oci-layout` file).
pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip-compressed layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd-compressed layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI uncompressed layer that must not be pushed to other registries.
pub const OCI_LAYER_NON_DISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI gzip-compressed non-distributable layer.
pub const OCI_LAYER_NON_DISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI zstd-compressed non-distributable layer.
pub const OCI_LAYER_NON_DISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// OCI uncompressed layer encrypted with ocicrypt.
pub const OCI_LAYER_ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+encrypted";
/// OCI gzip-compressed layer encrypted with ocicrypt.
pub const OCI_LAYER_GZIP_ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the multi-platform index), schema 2.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer; despite the name, registries commonly serve it gzip-compressed.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker gzip-compressed layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign layer (fetched from its URLs, not pushed to other registries).
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
/// Docker gzip-compressed foreign layer.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema 1 signed manifest; recognised only to be refused (containerd 1.6 converts it).
pub const DOCKER_SCHEMA1_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// An uncompressed tar stream.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// The media type does not say; detect it from the first bytes of the blob.
    Unknown,
}

impl Compression {
    /// containerd's name for it: `""`, `"gzip"`, `"zstd"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Unknown => "unknown",
        }
    }

    /// The OCI layer media type for this compression; `None` for `Unknown`.
    pub fn oci_layer_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(OCI_LAYER),
            Compression::Gzip => Some(OCI_LAYER_GZIP),
            Compression::Zstd => Some(OCI_LAYER_ZSTD),
            Compression::Unknown => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            other => other.as_str(),
        })
    }
}

/// Splits `base+ext1+ext2` into the base and its `+` suffixes, sorted as containerd sorts them.
fn split_suffixes(media_type: &str) -> (&str, Vec<&str>) {
    let mut parts = media_type.split('+');
    let base = parts.next().unwrap_or("");
    let mut ext: Vec<&str> = parts.collect();
    ext.sort_unstable();
    (base, ext)
}

/// True for layer media types: any `application/vnd.oci.image.layer.*` and Docker's rootfs
/// diff types (with or without `+` suffixes).
pub fn is_layer(media_type: &str) -> bool {
    if media_type.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    matches!(
        split_suffixes(media_type).0,
        DOCKER_LAYER | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN | DOCKER_LAYER_FOREIGN_GZIP
    )
}

/// True for image manifests (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// True for indexes of manifests (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// True for image configs (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// True for Docker media types (`application/vnd.docker.*`).
pub fn is_docker(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.docker.")
}

/// True for layers that registries must not receive on push: OCI non-distributable layers and
/// Docker foreign layers.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

/// The compression of a layer, as containerd's `images.DiffCompression` decides it.
///
/// OCI layers: `+gzip` or `+zstd` among the suffixes (the last one once sorted) says so,
/// otherwise uncompressed. Docker `…diff.tar.gzip` is gzip and plain `…diff.tar` is
/// [`Compression::Unknown`]; either with any `+` suffix counts as uncompressed, matching
/// containerd. Anything that is not a layer type is NotImplemented.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    let (base, ext) = split_suffixes(media_type);
    match base {
        DOCKER_LAYER | DOCKER_LAYER_FOREIGN if ext.is_empty() => Ok(Compression::Unknown),
        DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP if ext.is_empty() => Ok(Compression::Gzip),
        DOCKER_LAYER | DOCKER_LAYER_FOREIGN | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => {
            Ok(Compression::None)
        }
        OCI_LAYER | OCI_LAYER_NON_DISTRIBUTABLE => Ok(match ext.last() {
            Some(&"gzip") => Compression::Gzip,
            Some(&"zstd") => Compression::Zstd,
            _ => Compression::None,
        }),
        _ => Err(Error::not_implemented(format!(
            "unrecognised mediatype {media_type:?}: expected an OCI or Docker layer media type"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const LAYERS: &[&str] = &[
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NON_DISTRIBUTABLE,
        OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
        OCI_LAYER_NON_DISTRIBUTABLE_ZSTD,
        OCI_LAYER_ENCRYPTED,
        OCI_LAYER_GZIP_ENCRYPTED,
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_FOREIGN,
        DOCKER_LAYER_FOREIGN_GZIP,
    ];
    const OTHERS: &[&str] = &[
        OCI_INDEX,
        OCI_MANIFEST,
        OCI_CONFIG,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_CONFIG,
        DOCKER_SCHEMA1_MANIFEST,
        "application/octet-stream",
        "",
    ];

    /// Reads `Name = "value"` constants from a Go source file.
    fn go_constants(path: &str) -> Option<std::collections::HashMap<String, String>> {
        let src = std::fs::read_to_string(path).ok()?;
        let re = regex::Regex::new(r#"(?m)^\s*(\w+)\s*=\s*"([^"]+)"\s*$"#).unwrap();
        Some(
            re.captures_iter(&src)
                .map(|c| (c[1].to_string(), c[2].to_string()))
                .collect(),
        )
    }

    #[test]
    fn constants_match_containerd_and_image_spec_sources() {
        // A typo here would break pulls from every registry, so check against the Go sources
        // Debian ships (golang-github-containerd-containerd-dev and its image-spec dependency).
        const GO: &str = "/usr/share/gocode/src/github.com";
        let oci_path = format!("{GO}/opencontainers/image-spec/specs-go/v1/mediatype.go");
        let ctd_path = format!("{GO}/containerd/containerd/images/mediatypes.go");
        let (Some(oci), Some(ctd)) = (go_constants(&oci_path), go_constants(&ctd_path)) else {
            if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
                return;
            }
            panic!(
                "missing {oci_path} or {ctd_path}: install golang-github-containerd-containerd-dev \
                 (or set STOWAGE_SKIP_EXTERNAL=1)"
            );
        };
        let ours_vs_oci = [
            (OCI_INDEX, "MediaTypeImageIndex"),
            (OCI_MANIFEST, "MediaTypeImageManifest"),
            (OCI_CONFIG, "MediaTypeImageConfig"),
            (OCI_DESCRIPTOR, "MediaTypeDescriptor"),
            (OCI_LAYOUT_HEADER, "MediaTypeLayoutHeader"),
            (OCI_LAYER, "MediaTypeImageLayer"),
            (OCI_LAYER_GZIP, "MediaTypeImageLayerGzip"),
            (OCI_LAYER_ZSTD, "MediaTypeImageLayerZstd"),
            (
                OCI_LAYER_NON_DISTRIBUTABLE,
                "MediaTypeImageLayerNonDistributable",
            ),
            (
                OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
                "MediaTypeImageLayerNonDistributableGzip",
            ),
            (
                OCI_LAYER_NON_DISTRIBUTABLE_ZSTD,
                "MediaTypeImageLayerNonDistributableZstd",
            ),
        ];
        for (ours, name) in ours_vs_oci {
            assert_eq!(oci.get(name).map(String::as_str), Some(ours), "{name}");
        }
        let ours_vs_ctd = [
            (DOCKER_MANIFEST, "MediaTypeDockerSchema2Manifest"),
            (DOCKER_MANIFEST_LIST, "MediaTypeDockerSchema2ManifestList"),
            (DOCKER_CONFIG, "MediaTypeDockerSchema2Config"),
            (DOCKER_LAYER, "MediaTypeDockerSchema2Layer"),
            (DOCKER_LAYER_GZIP, "MediaTypeDockerSchema2LayerGzip"),
            (DOCKER_LAYER_FOREIGN, "MediaTypeDockerSchema2LayerForeign"),
            (
                DOCKER_LAYER_FOREIGN_GZIP,
                "MediaTypeDockerSchema2LayerForeignGzip",
            ),
            (DOCKER_SCHEMA1_MANIFEST, "MediaTypeDockerSchema1Manifest"),
        ];
        for (ours, name) in ours_vs_ctd {
            assert_eq!(ctd.get(name).map(String::as_str), Some(ours), "{name}");
        }
        // containerd builds the encrypted types by appending "+encrypted".
        assert_eq!(OCI_LAYER_ENCRYPTED, format!("{OCI_LAYER}+encrypted"));
        assert_eq!(
            OCI_LAYER_GZIP_ENCRYPTED,
            format!("{OCI_LAYER_GZIP}+encrypted")
        );
    }

    #[test]
    fn classification_is_exclusive() {
        for mt in LAYERS {
            assert!(is_layer(mt), "{mt}");
            assert!(!is_manifest(mt) && !is_index(mt) && !is_config(mt), "{mt}");
        }
        for mt in OTHERS {
            assert!(!is_layer(mt), "{mt}");
        }
        assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
        assert!(!is_manifest(DOCKER_SCHEMA1_MANIFEST) && !is_manifest(OCI_INDEX));
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(OCI_MANIFEST));
        assert!(is_config(OCI_CONFIG) && is_config(DOCKER_CONFIG));
        assert!(is_docker(DOCKER_LAYER) && !is_docker(OCI_LAYER));
        // Suffixes on Docker layer types still make a layer.
        assert!(is_layer(
            "application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted"
        ));
    }

    #[test]
    fn non_distributable_layers() {
        let yes = [
            OCI_LAYER_NON_DISTRIBUTABLE,
            OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
            OCI_LAYER_NON_DISTRIBUTABLE_ZSTD,
            DOCKER_LAYER_FOREIGN,
            DOCKER_LAYER_FOREIGN_GZIP,
        ];
        for mt in LAYERS.iter().chain(OTHERS) {
            assert_eq!(is_non_distributable(mt), yes.contains(mt), "{mt}");
        }
    }

    #[test]
    fn compression_of_each_layer_type() {
        let cases = [
            (OCI_LAYER, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (OCI_LAYER_ZSTD, Compression::Zstd),
            (OCI_LAYER_NON_DISTRIBUTABLE, Compression::None),
            (OCI_LAYER_NON_DISTRIBUTABLE_GZIP, Compression::Gzip),
            (OCI_LAYER_NON_DISTRIBUTABLE_ZSTD, Compression::Zstd),
            (OCI_LAYER_ENCRYPTED, Compression::None),
            (OCI_LAYER_GZIP_ENCRYPTED, Compression::Gzip),
            (DOCKER_LAYER, Compression::Unknown),
            (DOCKER_LAYER_FOREIGN, Compression::Unknown),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_FOREIGN_GZIP, Compression::Gzip),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted",
                Compression::None,
            ),
        ];
        for (mt, want) in cases {
            assert_eq!(layer_compression(mt).unwrap(), want, "{mt}");
        }
        for mt in OTHERS {
            let err = layer_compression(mt).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotImplemented, "{mt}");
            assert!(err.message().contains(&format!("{mt:?}")), "{err}");
        }
    }

    #[test]
    fn compression_names_and_media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mt = c.oci_layer_media_type().unwrap();
            assert_eq!(layer_compression(mt).unwrap(), c);
        }
        assert_eq!(Compression::Unknown.oci_layer_media_type(), None);
        assert_eq!(Compression::Gzip.as_str(), "gzip");
        assert_eq!(Compression::None.as_str(), "");
        assert_eq!(Compression::None.to_string(), "uncompressed");
    }

    const GO_IMAGES_PROGRAM: &str = r#"package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/images"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var mt string
		if err := json.Unmarshal(in.Bytes(), &mt); err != nil {
			panic(err)
		}
		c, err := images.DiffCompression(context.Background(), mt)
		if err != nil {
			c = "error"
		}
		b, _ := json.Marshal([]interface{}{
			images.IsLayerType(mt), images.IsManifestType(mt), images.IsIndexType(mt),
			images.IsConfigType(mt), images.IsDockerType(mt), images.IsNonDistributable(mt), c,
		})
		fmt.Fprintf(out, "%s\n", b)
	}
}
"#;

    #[test]
    fn classification_agrees_with_containerd_images_package() {
        if !crate::gotest::have_containerd_package("images", "containerd's images package") {
            return;
        }
        // Every known type, bare and with suffixes in both orders, plus near misses.
        let mut inputs: Vec<String> = Vec::new();
        for mt in LAYERS.iter().chain(OTHERS) {
            for suffix in ["", "+gzip", "+zstd", "+encrypted", "+zstd+gzip", "+x"] {
                inputs.push(format!("{mt}{suffix}"));
            }
            inputs.push(mt.to_uppercase());
            if let Some(cut) = mt.get(..mt.len().saturating_sub(1)) {
                inputs.push(cut.to_string());
            }
        }
        inputs.extend(
            [
                "application/vnd.oci.image.layer.",
                "application/vnd.oci.image.layer.v2.tar+gzip",
                "application/vnd.oci.image.layer.nondistributable.",
                "application/vnd.docker.image.rootfs.foreign.diff.tar.zstd",
                "application/vnd.docker.",
                "+gzip",
            ]
            .map(String::from),
        );

        let lines: Vec<String> = inputs
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        let answers: Vec<serde_json::Value> =
            crate::gotest::run_lines("mediatype", GO_IMAGES_PROGRAM, &lines)
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(answers.len(), inputs.len());
        for (mt, go) in inputs.iter().zip(answers) {
            let compression = match layer_compression(mt) {
                Ok(c) => c.as_str(),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::NotImplemented, "{mt}");
                    "error"
                }
            };
            let ours = serde_json::json!([
                is_layer(mt),
                is_manifest(mt),
                is_index(mt),
                is_config(mt),
                is_docker(mt),
                is_non_distributable(mt),
                compression
            ]);
            assert_eq!(ours, go, "{mt}");
        }
    }
}
