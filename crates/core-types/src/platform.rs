//! Platforms (`os/arch/variant`): parsing, normalization and matching.

use serde::{Deserialize, Serialize};

/// The platform an image or manifest targets, with the OCI JSON field names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`, `windows`, ...).
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
    /// CPU variant (`v7`, `v8`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}
