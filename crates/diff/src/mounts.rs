//! Applying onto the mounts a snapshotter hands out, without mounting when that is possible.
//!
//! containerd's applier writes straight into an overlay snapshot's `upperdir` (converting
//! whiteouts to overlay's own, with the `lowerdir`s as parents for implied directories) and
//! mounts anything else temporarily. A native snapshot's single bind mount is just a directory,
//! so it is written directly too; every other mount set needs a temporary mount, which the
//! snapshotters' mount helpers provide.

use std::io::Read;
use std::path::PathBuf;

use stowage_core_types::error::{Error, Result};
use stowage_core_types::mount::Mount;

use crate::{apply_layer, ApplyOptions, ApplyResult, LayerEncoding, WhiteoutMode};

/// Where a layer for a set of mounts can be written without mounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectTarget {
    /// An overlay upper directory, with the lower directories (top-most first).
    OverlayUpper {
        /// The `upperdir`.
        upper: PathBuf,
        /// The `lowerdir`s, top-most first.
        lowers: Vec<PathBuf>,
        /// The mount uses `userxattr`, so opaque markers are `user.overlay.opaque`.
        user_xattr: bool,
    },
    /// A plain directory (the source of a bind mount).
    Directory(PathBuf),
}

/// Decides where a layer for `mounts` goes. Read-only mounts are `FailedPrecondition`; mount
/// sets that need a real mount (several mounts, other filesystem types, overlay without an
/// upper directory) are `NotImplemented`.
pub fn direct_target(mounts: &[Mount]) -> Result<DirectTarget> {
    let [m] = mounts else {
        return Err(Error::not_implemented(format!(
            "applying onto {} mounts needs a temporary mount",
            mounts.len()
        )));
    };
    if m.is_readonly() {
        return Err(Error::failed_precondition(format!(
            "cannot apply a layer onto a read-only {} mount of {:?}",
            m.kind, m.source
        )));
    }
    let is_bind = m.kind == "bind" || m.has_option("bind") || m.has_option("rbind");
    match m.kind.as_str() {
        "overlay" => {
            let Some(upper) = m.option_value("upperdir") else {
                return Err(Error::not_implemented(
                    "overlay mount without upperdir needs a temporary mount",
                ));
            };
            Ok(DirectTarget::OverlayUpper {
                upper: PathBuf::from(upper),
                lowers: m.lower_dirs().into_iter().map(PathBuf::from).collect(),
                user_xattr: m.has_option("userxattr"),
            })
        }
        _ if is_bind => Ok(DirectTarget::Directory(PathBuf::from(&m.source))),
        other => Err(Error::not_implemented(format!(
            "applying onto a {other:?} mount needs a temporary mount"
        ))),
    }
}

/// Applies a layer onto `mounts` (as returned by a snapshotter's prepare), writing directly
/// into the directory they name. `options.whiteouts` and `options.parents` are set from the
/// mounts; the other options apply as given.
pub fn apply_layer_to_mounts<R: Read + Send>(
    reader: R,
    encoding: LayerEncoding<'_>,
    mounts: &[Mount],
    options: &ApplyOptions,
) -> Result<ApplyResult> {
    let mut options = options.clone();
    let root = match direct_target(mounts)? {
        DirectTarget::OverlayUpper {
            upper,
            lowers,
            user_xattr,
        } => {
            options.whiteouts = WhiteoutMode::Overlay { user_xattr };
            options.parents = lowers;
            upper
        }
        DirectTarget::Directory(dir) => {
            options.whiteouts = WhiteoutMode::Delete;
            options.parents = Vec::new();
            dir
        }
    };
    apply_layer(reader, encoding, &root, &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    #[test]
    fn overlay_mounts_target_the_upper_dir() {
        let m = Mount::new(
            "overlay",
            "overlay",
            [
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        );
        assert_eq!(
            direct_target(&[m]).unwrap(),
            DirectTarget::OverlayUpper {
                upper: "/s/3/fs".into(),
                lowers: vec!["/s/2/fs".into(), "/s/1/fs".into()],
                user_xattr: false,
            }
        );
        let m = Mount::new(
            "overlay",
            "overlay",
            ["userxattr", "upperdir=/u", "workdir=/w", "lowerdir=/l"],
        );
        assert!(matches!(
            direct_target(&[m]).unwrap(),
            DirectTarget::OverlayUpper {
                user_xattr: true,
                ..
            }
        ));
    }

    #[test]
    fn bind_mounts_target_their_source() {
        let m = Mount::new("bind", "/s/1", ["rbind", "rw"]);
        assert_eq!(
            direct_target(&[m]).unwrap(),
            DirectTarget::Directory("/s/1".into())
        );
    }

    #[test]
    fn other_mount_sets_are_refused() {
        let ro = Mount::new("bind", "/s/1", ["rbind", "ro"]);
        assert_eq!(
            direct_target(&[ro]).unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
        let view = Mount::new("overlay", "overlay", ["lowerdir=/a:/b"]);
        assert_eq!(
            direct_target(&[view]).unwrap_err().kind(),
            ErrorKind::NotImplemented
        );
        let dev = Mount::new("ext4", "/dev/vdb", ["rw"]);
        assert_eq!(
            direct_target(&[dev]).unwrap_err().kind(),
            ErrorKind::NotImplemented
        );
        assert_eq!(
            direct_target(&[]).unwrap_err().kind(),
            ErrorKind::NotImplemented
        );
    }
}
