//! The image documents: manifests, indexes (Docker manifest lists) and image configs.
//!
//! Field names are the OCI image-spec's JSON names, which Docker schema 2 shares. Parsing checks
//! what containerd 1.6 checks before trusting a document (a manifest must not look like an
//! index and the other way round, schema 1 is refused) and, beyond that, that the fields the
//! rest of stowage relies on are present, so a broken document fails here with a message naming
//! the field rather than later with an empty image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stowage_core_types::content::{read_blob, Provider};
use stowage_core_types::mediatype;
use stowage_core_types::platform::Platform;
use stowage_core_types::{Descriptor, Digest, Error, Result};

/// An image manifest (OCI `application/vnd.oci.image.manifest.v1+json` or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2 for the formats stowage reads.
    pub schema_version: u32,
    /// The manifest's own media type, when the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An index of manifests (OCI image index or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2 for the formats stowage reads.
    pub schema_version: u32,
    /// The index's own media type, when the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes), usually one per platform.
    pub manifests: Vec<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The root filesystem of an image: the DiffIDs of its layers, base first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digest of each layer's uncompressed tar stream, base first.
    pub diff_ids: Vec<Digest>,
}

/// One step of the image's build history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step produced no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (OCI or Docker): the platform, the root filesystem and the runtime
/// defaults (kept as raw JSON: stowage stores images, it does not run them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// Runtime defaults (`Env`, `Cmd`, `User`, ...), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// The layers' DiffIDs.
    pub rootfs: RootFs,
    /// Build history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The platform the config declares, normalized as containerd compares it.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
        }
        .normalize()
    }
}

/// The fields that tell manifests and indexes apart, read before the real parse (containerd
/// does the same to refuse a manifest served as an index and the other way round).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    fs_layers: Option<serde_json::Value>,
}

fn invalid(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("{what}: {detail}"))
}

fn shape(bytes: &[u8], what: &str) -> Result<Shape> {
    let shape: Shape = serde_json::from_slice(bytes).map_err(|e| invalid(what, json_error(&e)))?;
    if shape.fs_layers.is_some() {
        return Err(Error::not_implemented(format!(
            "{what}: Docker schema 1 manifests are not supported"
        )));
    }
    Ok(shape)
}

fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("malformed JSON: {e}"),
        Category::Data => format!("unexpected document: {e}"),
        Category::Io => format!("reading JSON: {e}"),
    }
}

fn check_schema_version(what: &str, v: u32) -> Result<()> {
    if v != 2 {
        return Err(invalid(
            what,
            format!("unsupported schemaVersion {v}, expected 2"),
        ));
    }
    Ok(())
}

impl Manifest {
    /// Parses a manifest served as `media_type` (the descriptor's media type; empty when not
    /// known). InvalidArgument when the JSON is malformed, a required field (`schemaVersion`,
    /// `config`, `layers`) is missing, the document is an index, or its own `mediaType` is not
    /// a manifest type.
    pub fn parse(bytes: &[u8], media_type: &str) -> Result<Manifest> {
        let what = "image manifest";
        if !media_type.is_empty() && !mediatype::is_manifest(media_type) {
            return Err(invalid(
                what,
                format!(
                    "media type {media_type:?} is not a manifest type (expected {:?} or {:?})",
                    mediatype::OCI_MANIFEST,
                    mediatype::DOCKER_MANIFEST
                ),
            ));
        }
        let s = shape(bytes, what)?;
        let declared = s.media_type.as_deref().unwrap_or("");
        if s.manifests.is_some() || mediatype::is_index(declared) {
            return Err(invalid(
                what,
                format!("expected a manifest ({media_type:?}) but found an index"),
            ));
        }
        if !declared.is_empty() && !mediatype::is_manifest(declared) {
            return Err(invalid(
                what,
                format!("document declares media type {declared:?}, not a manifest type"),
            ));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(what, json_error(&e)))?;
        check_schema_version(what, m.schema_version)?;
        Ok(m)
    }

    /// The descriptors this manifest refers to: config first, then the layers.
    pub fn children(&self) -> Vec<Descriptor> {
        let mut out = Vec::with_capacity(1 + self.layers.len());
        out.push(self.config.clone());
        out.extend(self.layers.iter().cloned());
        out
    }
}

impl Index {
    /// Parses an index served as `media_type` (empty when not known). InvalidArgument when the
    /// JSON is malformed, `schemaVersion` or `manifests` is missing, the document is a manifest,
    /// or its own `mediaType` is not an index type.
    pub fn parse(bytes: &[u8], media_type: &str) -> Result<Index> {
        let what = "image index";
        if !media_type.is_empty() && !mediatype::is_index(media_type) {
            return Err(invalid(
                what,
                format!(
                    "media type {media_type:?} is not an index type (expected {:?} or {:?})",
                    mediatype::OCI_INDEX,
                    mediatype::DOCKER_MANIFEST_LIST
                ),
            ));
        }
        let s = shape(bytes, what)?;
        let declared = s.media_type.as_deref().unwrap_or("");
        if s.config.is_some() || s.layers.is_some() || mediatype::is_manifest(declared) {
            return Err(invalid(
                what,
                format!("expected an index ({media_type:?}) but found a manifest"),
            ));
        }
        if !declared.is_empty() && !mediatype::is_index(declared) {
            return Err(invalid(
                what,
                format!("document declares media type {declared:?}, not an index type"),
            ));
        }
        let i: Index = serde_json::from_slice(bytes).map_err(|e| invalid(what, json_error(&e)))?;
        check_schema_version(what, i.schema_version)?;
        Ok(i)
    }
}

impl ImageConfig {
    /// Parses an image config. InvalidArgument when the JSON is malformed or `rootfs` (with
    /// `diff_ids`) is missing or not of type `layers`.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        let what = "image config";
        let c: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| invalid(what, json_error(&e)))?;
        if c.rootfs.kind != "layers" {
            return Err(invalid(
                what,
                format!("rootfs type is {:?}, expected \"layers\"", c.rootfs.kind),
            ));
        }
        Ok(c)
    }
}

/// Reads and parses the manifest `desc` points at.
pub fn read_manifest(provider: &dyn Provider, desc: &Descriptor) -> Result<Manifest> {
    let bytes = read_blob(provider, desc)?;
    Manifest::parse(&bytes, &desc.media_type).map_err(|e| e.context(&desc.digest))
}

/// Reads and parses the index `desc` points at.
pub fn read_index(provider: &dyn Provider, desc: &Descriptor) -> Result<Index> {
    let bytes = read_blob(provider, desc)?;
    Index::parse(&bytes, &desc.media_type).map_err(|e| e.context(&desc.digest))
}

/// Reads and parses the image config `desc` points at; InvalidArgument when `desc` is not a
/// config media type.
pub fn read_config(provider: &dyn Provider, desc: &Descriptor) -> Result<ImageConfig> {
    if !mediatype::is_config(&desc.media_type) {
        return Err(Error::invalid_argument(format!(
            "{}: media type {:?} is not an image config type (expected {:?} or {:?})",
            desc.digest,
            desc.media_type,
            mediatype::OCI_CONFIG,
            mediatype::DOCKER_CONFIG
        )));
    }
    let bytes = read_blob(provider, desc)?;
    ImageConfig::parse(&bytes).map_err(|e| e.context(&desc.digest))
}

/// The descriptors `desc` refers to, as containerd's `images.Children`: a manifest's config
/// and layers, an index's manifests; nothing for layers, configs and unknown types.
pub fn children(provider: &dyn Provider, desc: &Descriptor) -> Result<Vec<Descriptor>> {
    if mediatype::is_manifest(&desc.media_type) {
        Ok(read_manifest(provider, desc)?.children())
    } else if mediatype::is_index(&desc.media_type) {
        Ok(read_index(provider, desc)?.manifests)
    } else {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest_json(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{}","digest":"{D1}","size":7}},
               "layers":[{{"mediaType":"{}","digest":"{D2}","size":9}}]}}"#,
            mediatype::OCI_CONFIG,
            mediatype::OCI_LAYER_GZIP
        )
    }

    #[test]
    fn manifest_parses_and_lists_children() {
        let m = Manifest::parse(
            manifest_json(Some(mediatype::OCI_MANIFEST)).as_bytes(),
            mediatype::OCI_MANIFEST,
        )
        .unwrap();
        assert_eq!(m.config.digest.to_string(), D1);
        let kids = m.children();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0].media_type, mediatype::OCI_CONFIG);
        assert_eq!(kids[1].digest.to_string(), D2);
        assert_eq!(kids[1].size, 9);
        // No mediaType in the document is fine, and Docker's type is a manifest too.
        Manifest::parse(manifest_json(None).as_bytes(), mediatype::DOCKER_MANIFEST).unwrap();
    }

    #[test]
    fn manifest_errors_name_the_problem() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "{not json".into(),
                mediatype::OCI_MANIFEST,
                "malformed JSON",
            ),
            (
                manifest_json(None),
                mediatype::OCI_INDEX,
                "is not a manifest type",
            ),
            (
                manifest_json(Some(mediatype::OCI_INDEX)),
                mediatype::OCI_MANIFEST,
                "found an index",
            ),
            (
                manifest_json(Some("application/json")),
                mediatype::OCI_MANIFEST,
                "not a manifest type",
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#.into(),
                mediatype::OCI_MANIFEST,
                "found an index",
            ),
            (
                r#"{"schemaVersion":2,"layers":[]}"#.to_string(),
                mediatype::OCI_MANIFEST,
                "missing field `config`",
            ),
            (
                manifest_json(None).replace("\"schemaVersion\":2", "\"schemaVersion\":1"),
                mediatype::OCI_MANIFEST,
                "schemaVersion 1",
            ),
            (
                manifest_json(None).replace(D2, "sha256:abc"),
                mediatype::OCI_MANIFEST,
                "unexpected document",
            ),
        ];
        for (json, mt, want) in cases {
            let err = Manifest::parse(json.as_bytes(), mt).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{json}: {err}");
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
        let err = Manifest::parse(
            br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}"#,
            mediatype::DOCKER_MANIFEST,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotImplemented);
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn index_parses_platforms_and_refuses_manifests() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
                {{"mediaType":"{}","digest":"{D1}","size":3,
                  "platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            mediatype::DOCKER_MANIFEST_LIST,
            mediatype::DOCKER_MANIFEST
        );
        let idx = Index::parse(json.as_bytes(), mediatype::DOCKER_MANIFEST_LIST).unwrap();
        assert_eq!(
            idx.manifests[0].platform.as_ref().unwrap().format(),
            "linux/arm/v7"
        );
        let err = Index::parse(manifest_json(None).as_bytes(), mediatype::OCI_INDEX).unwrap_err();
        assert!(err.to_string().contains("found a manifest"), "{err}");
        let err = Index::parse(br#"{"schemaVersion":2}"#, mediatype::OCI_INDEX).unwrap_err();
        assert!(
            err.to_string().contains("missing field `manifests`"),
            "{err}"
        );
        let err = Index::parse(json.as_bytes(), mediatype::OCI_MANIFEST).unwrap_err();
        assert!(err.to_string().contains("is not an index type"), "{err}");
    }

    #[test]
    fn config_parses_rootfs_history_and_platform() {
        let json = format!(
            r#"{{"architecture":"x86_64","os":"linux","created":"2023-11-14T22:13:20Z",
                "config":{{"Env":["A=b"]}},
                "rootfs":{{"type":"layers","diff_ids":["{D1}","{D2}"]}},
                "history":[{{"created_by":"x"}},{{"comment":"c","empty_layer":true}}]}}"#
        );
        let c = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(c.rootfs.diff_ids.len(), 2);
        assert_eq!(c.rootfs.diff_ids[1].to_string(), D2);
        assert_eq!(c.platform().format(), "linux/amd64");
        assert!(c.history[1].empty_layer);
        assert_eq!(c.history[0].created_by.as_deref(), Some("x"));
        assert_eq!(c.config.as_ref().unwrap()["Env"][0], "A=b");

        let err = ImageConfig::parse(br#"{"architecture":"amd64","os":"linux"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `rootfs`"), "{err}");
        let err =
            ImageConfig::parse(br#"{"os":"linux","rootfs":{"type":"something","diff_ids":[]}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("expected \"layers\""), "{err}");
        let err = ImageConfig::parse(b"[1,2]").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
