//! The image store trait: names pointing at root descriptors, with labels.
//!
//! It mirrors containerd's `images.Store`. A store is bound to one namespace (as the
//! namespaced content and snapshot views are); names are unique within it. Implementations:
//! the namespaced store in `stowage-metadata` and the gRPC client in `stowage-daemon`; both
//! run one conformance suite (`stowage_metadata::testsuite::images`).
//!
//! What every implementation does, as containerd 1.6 does:
//! - `create` fails with `AlreadyExists` for a taken name and `InvalidArgument` for an empty
//!   name, invalid labels, a target of size zero or without a media type. The store sets
//!   `created_at` and `updated_at` (equal) and ignores the caller's.
//! - `get`, `update` and `delete` of a name the namespace does not hold fail with `NotFound`.
//! - `update` with no field paths replaces labels and target (annotations included); otherwise
//!   only the named fields change: `labels`, `labels.<key>`, `annotations`,
//!   `annotations.<key>` (the target's annotations) and `target`. Any other path (`name`
//!   included: names are immutable) is `InvalidArgument`. A `<map>.<key>` path whose key the
//!   caller's image lacks removes that key. The result is validated as at create;
//!   `created_at` is kept and `updated_at` set.
//! - Only the target's media type, digest, size and annotations are stored; URLs, platform and
//!   artifact type are not (containerd's API does not carry them).
//! - `list` takes containerd filters over `name`, `target.digest`, `target.mediatype`,
//!   `labels.<key>` and `annotations.<key>`; filters are alternatives (an image matching any
//!   is listed), selectors within one filter (comma-separated) must all match. Images come in
//!   name order.

use std::time::SystemTime;

use crate::descriptor::Descriptor;
use crate::error::Result;
use crate::filters::map_field;
use crate::labels::Labels;

/// An image record: a name pointing at a target descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image name (a reference such as `docker.io/library/alpine:3`).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// The root descriptor (index or manifest); its annotations are stored on the image.
    pub target: Descriptor,
    /// Set by the store at create.
    pub created_at: SystemTime,
    /// Set by the store at each update.
    pub updated_at: SystemTime,
}

impl Image {
    /// An image named `name` pointing at `target`, without labels.
    pub fn new(name: impl Into<String>, target: Descriptor) -> Image {
        Image {
            name: name.into(),
            labels: Labels::new(),
            target,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// The value of filter field `path` (`name`, `target.digest`, `target.mediatype`,
    /// `labels.<key>`, `annotations.<key>`), `None` when the image has none; what a store's
    /// `list` matches filters against.
    pub fn filter_field(&self, path: &[&str]) -> Option<String> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match path {
            ["name"] => nonempty(&self.name),
            ["target", "digest", ..] => Some(self.target.digest.to_string()),
            ["target", "mediatype", ..] => nonempty(&self.target.media_type),
            ["labels", rest @ ..] if !self.labels.is_empty() => map_field(rest, &self.labels),
            ["annotations", rest @ ..] if !self.target.annotations.is_empty() => {
                map_field(rest, &self.target.annotations)
            }
            _ => None,
        }
    }
}

/// How [`Store::delete`] deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Wait for the garbage collection the deletion causes before returning, so what only
    /// the image held is gone when `delete` returns (containerd's `SynchronousDelete`).
    pub synchronous: bool,
}

impl DeleteOptions {
    /// Options for a synchronous delete.
    pub fn synchronous() -> Self {
        DeleteOptions { synchronous: true }
    }
}

/// The images of one namespace (containerd's `images.Store`). See the module documentation
/// for the semantics every implementation shares.
pub trait Store: Send + Sync {
    /// The image `name`; `NotFound` when absent.
    fn get(&self, name: &str) -> Result<Image>;
    /// The images matching any of `filters` (all of them when there is none), in name order;
    /// `InvalidArgument` for a filter that does not parse.
    fn list(&self, filters: &[String]) -> Result<Vec<Image>>;
    /// Creates `image` and returns it as stored, with its times set.
    fn create(&self, image: Image) -> Result<Image>;
    /// Updates the fields of image `image.name` named by `fieldpaths` (all of them when
    /// empty) and returns the stored image.
    fn update(&self, image: Image, fieldpaths: &[String]) -> Result<Image>;
    /// Deletes image `name`; `NotFound` when absent.
    fn delete(&self, name: &str, opts: DeleteOptions) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::Filter;
    use crate::Digest;

    fn image() -> Image {
        let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let mut i = Image::new(
            "docker.io/library/x:1",
            Descriptor::new("application/vnd.oci.image.index.v1+json", digest, 10),
        );
        i.labels.insert("a.b".into(), "1".into());
        i.target.annotations.insert("k".into(), "v".into());
        i
    }

    #[test]
    fn filter_fields() {
        let i = image();
        let matches = |f: &str| {
            Filter::parse(f)
                .unwrap()
                .matches(&|p: &[&str]| i.filter_field(p))
        };
        assert!(matches("name==docker.io/library/x:1"));
        assert!(matches(r#"labels."a.b"==1"#));
        assert!(matches("labels.a.b==1"));
        assert!(matches("annotations.k==v"));
        assert!(matches("target.mediatype~=index"));
        assert!(matches(&format!(
            "target.digest==sha256:{}",
            "ab".repeat(32)
        )));
        assert!(!matches("labels.missing"));
        assert!(!matches("size==10"));
        assert!(!matches("target"));
    }
}
