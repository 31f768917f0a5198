//! Unpacking an image's layers into committed snapshots, with containerd 1.6's unpacker
//! semantics.
//!
//! Layer `i` becomes the committed snapshot named by the ChainID of DiffIDs `0..=i`, whose
//! parent is the snapshot of layers `0..i`. A layer whose snapshot already exists is skipped,
//! so unpacking an image twice, or two images sharing base layers, reuses what is there.
//! Otherwise the layer is applied into a fresh active snapshot with containerd's key
//! `extract-<unique> <chainID>` and label `containerd.io/snapshot.ref=<chainID>` (plus the
//! layer's `containerd.io/snapshot/*` annotations), its DiffID checked by the applier, and the
//! snapshot committed; on any failure the active snapshot is removed, so nothing half applied
//! remains and no committed snapshot exists for a layer that did not apply cleanly.

use std::fs::File;
use std::path::Path;

use stowage_core_types::content::{Manager, Provider, SectionReader};
use stowage_core_types::mount::Mount;
use stowage_core_types::platform::Matcher;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest, Error, ErrorKind, Labels, Result};
use stowage_diff::{apply_layer, ApplyOptions, ApplyResult, LayerEncoding, WhiteoutMode};
use stowage_digest_identity::chain_id;
use stowage_snapshots_storage::mount::with_temp_mount;

use crate::model::read_config;
use crate::platform::resolve_manifest;

/// The label containerd puts on extraction snapshots, naming the ChainID they will become.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";
/// Layer annotations with this prefix are copied onto the layer's snapshot, as containerd's
/// `snapshots.FilterInheritedLabels` does (remote snapshotters rely on them).
pub const INHERITED_LABEL_PREFIX: &str = "containerd.io/snapshot/";
/// The first word of an extraction snapshot's key.
pub const UNPACK_KEY_PREFIX: &str = "extract";

/// How a layer gets into its snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApplyMode {
    /// containerd's choice, plus one shortcut: when the snapshot's mounts are a single
    /// `overlay` mount with an `upperdir`, apply straight into the upper directory writing
    /// overlayfs' own whiteouts, with the lower directories consulted for implied parent
    /// directories (containerd's fast path); when they are a single writable `bind` mount of a
    /// directory (a base layer, or the native snapshotter), apply straight into that directory,
    /// which gives the tree the mount would, without a mount and unmount per layer; otherwise
    /// mount the snapshot on a temporary directory and apply there, whiteouts deleting.
    ///
    /// Unlike containerd, the overlay fast path is also taken inside a user namespace: the
    /// snapshotter's `userxattr` option selects the `user.overlay.*` whiteout forms.
    #[default]
    Auto,
    /// Always mount the snapshot and apply onto the mounted tree (whiteouts delete; overlayfs,
    /// if mounted, records them its own way).
    Mount,
}

/// Options of [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// How layers are applied.
    pub apply_mode: ApplyMode,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The ChainID of the whole image: the name of the top committed snapshot.
    pub chain_id: Digest,
    /// The manifest that was unpacked (the platform's, when the target is an index).
    pub manifest: Descriptor,
    /// The image config.
    pub config: Descriptor,
    /// Per layer, base first.
    pub layers: Vec<UnpackedLayer>,
}

/// One layer of an [`Unpacked`] image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// The layer blob.
    pub descriptor: Descriptor,
    /// Its DiffID (from the config; verified by the applier when `applied`).
    pub diff_id: Digest,
    /// The name of its committed snapshot.
    pub chain_id: Digest,
    /// True when applied now; false when the snapshot already existed and was reused.
    pub applied: bool,
}

/// Unpacks the image `target` (a manifest, or an index resolved with `matcher`) from
/// `provider` into `snapshotter` and returns the top ChainID with what was done.
///
/// Errors: NotFound when no manifest matches the platform; InvalidArgument when the config's
/// DiffIDs do not pair up with the manifest's layers or a document is malformed; DataLoss when
/// a layer's DiffID differs from the config's; whatever the snapshotter or the applier report
/// otherwise, with the layer named.
pub fn unpack(
    provider: &dyn Provider,
    snapshotter: &dyn Snapshotter,
    target: &Descriptor,
    matcher: &Matcher,
    options: &UnpackOptions,
) -> Result<Unpacked> {
    let (manifest_desc, manifest) = resolve_manifest(provider, target, matcher)?;
    let config = read_config(provider, &manifest.config)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::invalid_argument(format!(
            "number of layers and diffIDs don't match: {} layers in manifest {}, {} diff_ids in config {}",
            manifest.layers.len(),
            manifest_desc.digest,
            diff_ids.len(),
            manifest.config.digest
        )));
    }
    if diff_ids.is_empty() {
        return Err(Error::invalid_argument(format!(
            "manifest {} has no layers to unpack",
            manifest_desc.digest
        )));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    let mut top = None;
    for (i, layer) in manifest.layers.iter().enumerate() {
        let parent = chain_id(&diff_ids[..i]);
        let Some(chain) = chain_id(&diff_ids[..=i]) else {
            return Err(Error::unknown("empty layer chain"));
        };
        let applied = unpack_layer(
            provider,
            snapshotter,
            layer,
            &diff_ids[i],
            parent.as_ref(),
            &chain,
            options,
        )?;
        layers.push(UnpackedLayer {
            descriptor: layer.clone(),
            diff_id: diff_ids[i].clone(),
            chain_id: chain.clone(),
            applied,
        });
        top = Some(chain);
    }
    let Some(chain_id) = top else {
        return Err(Error::unknown("no layer unpacked"));
    };
    Ok(Unpacked {
        chain_id,
        manifest: manifest_desc,
        config: manifest.config,
        layers,
    })
}

/// The label containerd puts on a compressed layer blob once its DiffID is verified.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";
/// Prefix of the label on the image config that keeps the unpacked snapshot from garbage
/// collection: `containerd.io/gc.ref.snapshot.<snapshotter>=<top ChainID>`.
pub const GC_REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";

/// Records an unpack in the content store's labels as containerd's unpacker does:
/// `containerd.io/uncompressed=<DiffID>` on every layer applied now (its DiffID was verified
/// by the apply), then `containerd.io/gc.ref.snapshot.<snapshotter_name>=<top ChainID>` on the
/// config. Other labels are left alone.
pub fn record_labels(
    manager: &dyn Manager,
    unpacked: &Unpacked,
    snapshotter_name: &str,
) -> Result<()> {
    for layer in unpacked.layers.iter().filter(|l| l.applied) {
        set_label(
            manager,
            &layer.descriptor.digest,
            UNCOMPRESSED_LABEL,
            layer.diff_id.as_str(),
        )?;
    }
    set_label(
        manager,
        &unpacked.config.digest,
        &format!("{GC_REF_SNAPSHOT_PREFIX}{snapshotter_name}"),
        unpacked.chain_id.as_str(),
    )
}

fn set_label(manager: &dyn Manager, digest: &Digest, key: &str, value: &str) -> Result<()> {
    let mut info = manager.info(digest)?;
    info.labels.insert(key.to_string(), value.to_string());
    manager
        .update(info, &[format!("labels.{key}")])
        .map(|_| ())
        .map_err(|e| e.context(format!("label {digest} with {key}")))
}

/// Applies one layer as the committed snapshot `chain`; `Ok(false)` when it already existed.
fn unpack_layer(
    provider: &dyn Provider,
    snapshotter: &dyn Snapshotter,
    layer: &Descriptor,
    diff_id: &Digest,
    parent: Option<&Digest>,
    chain: &Digest,
    options: &UnpackOptions,
) -> Result<bool> {
    let chain_name = chain.as_str();
    match snapshotter.stat(chain_name) {
        Ok(_) => return Ok(false),
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) => return Err(e.context(format!("failed to stat snapshot {chain}"))),
    }
    let mut labels: Labels = layer
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(INHERITED_LABEL_PREFIX) || *k == SNAPSHOT_REF_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(SNAPSHOT_REF_LABEL.to_string(), chain.to_string());
    let parent_name = parent.map(Digest::as_str).unwrap_or("");

    // A key collision is rare (the unique part is time and randomness); containerd tries three
    // keys, and stops early when someone else committed the layer meanwhile.
    let mut prepared = None;
    let mut last_err = None;
    for _ in 0..3 {
        let key = format!("{UNPACK_KEY_PREFIX}-{} {chain}", unique_part());
        match snapshotter.prepare(&key, parent_name, labels.clone()) {
            Ok(mounts) => {
                prepared = Some((key, mounts));
                break;
            }
            Err(e) if e.is(ErrorKind::AlreadyExists) => match snapshotter.stat(chain_name) {
                Ok(_) => return Ok(false),
                Err(se) if se.is(ErrorKind::NotFound) => last_err = Some(e),
                Err(se) => return Err(se.context(format!("failed to stat snapshot {chain}"))),
            },
            Err(e) => {
                return Err(e.context(format!("failed to prepare extraction snapshot {key:?}")))
            }
        }
    }
    let Some((key, mounts)) = prepared else {
        let e = last_err.unwrap_or_else(|| Error::unknown("no key tried"));
        return Err(e.context("unable to prepare extraction snapshot"));
    };

    let abort = |err: Error| -> Error {
        match snapshotter.remove(&key) {
            Ok(()) => err,
            Err(re) => err.context(format!(
                "(removing extraction snapshot {key:?} also failed: {re})"
            )),
        }
    };
    if let Err(e) = apply_into(provider, layer, diff_id, &mounts, options.apply_mode) {
        return Err(abort(e.context(format!(
            "failed to extract layer {diff_id} ({})",
            layer.digest
        ))));
    }
    match snapshotter.commit(chain_name, &key, labels) {
        Ok(()) => Ok(true),
        Err(e) if e.is(ErrorKind::AlreadyExists) => {
            // Someone else committed the same layer first: theirs is as good as ours.
            let _ = snapshotter.remove(&key);
            Ok(false)
        }
        Err(e) => Err(abort(
            e.context(format!("failed to commit snapshot {key:?}")),
        )),
    }
}

/// Streams `layer` from the provider into the snapshot behind `mounts`, checking `diff_id`,
/// and flushes the written filesystem before returning so a commit records durable data.
fn apply_into(
    provider: &dyn Provider,
    layer: &Descriptor,
    diff_id: &Digest,
    mounts: &[Mount],
    mode: ApplyMode,
) -> Result<ApplyResult> {
    let ra = provider.reader_at(layer)?;
    let reader = SectionReader::new(&*ra, 0);
    let encoding = LayerEncoding::MediaType(&layer.media_type);
    if mode == ApplyMode::Auto {
        if let Some((upper, lowers, user_xattr)) = overlay_upper(mounts) {
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Overlay { user_xattr },
                expected_diff_id: Some(diff_id.clone()),
                parents: lowers,
                ..ApplyOptions::default()
            };
            let result = apply_layer(reader, encoding, &upper, &opts)?;
            sync_filesystem(&upper)?;
            return Ok(result);
        }
        if let Some(dir) = writable_bind_source(mounts) {
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                expected_diff_id: Some(diff_id.clone()),
                ..ApplyOptions::default()
            };
            let result = apply_layer(reader, encoding, &dir, &opts)?;
            sync_filesystem(&dir)?;
            return Ok(result);
        }
    }
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        expected_diff_id: Some(diff_id.clone()),
        ..ApplyOptions::default()
    };
    with_temp_mount(mounts, |root| {
        let result = apply_layer(reader, encoding, root, &opts)?;
        sync_filesystem(root)?;
        Ok(result)
    })
}

/// The upper directory, lower directories (nearest first) and `userxattr` flag of a single
/// overlay mount, when the mounts are exactly that and the paths are absolute (a relative
/// path would need the mount's working directory, which only mounting knows).
fn overlay_upper(mounts: &[Mount]) -> Option<(std::path::PathBuf, Vec<std::path::PathBuf>, bool)> {
    let [m] = mounts else { return None };
    if m.kind != "overlay" {
        return None;
    }
    let upper = Path::new(m.option_value("upperdir")?);
    let lowers: Vec<std::path::PathBuf> = m.lower_dirs().iter().map(Into::into).collect();
    if !upper.is_absolute() || lowers.iter().any(|l| !l.is_absolute()) {
        return None;
    }
    Some((upper.to_path_buf(), lowers, m.has_option("userxattr")))
}

/// The source directory of a single writable bind mount, when the mounts are exactly that
/// and the source is an absolute path to a directory.
fn writable_bind_source(mounts: &[Mount]) -> Option<std::path::PathBuf> {
    let [m] = mounts else { return None };
    if m.kind != "bind" || m.is_readonly() {
        return None;
    }
    let src = Path::new(&m.source);
    let is_dir = std::fs::symlink_metadata(src).is_ok_and(|md| md.is_dir());
    (src.is_absolute() && is_dir).then(|| src.to_path_buf())
}

/// `syncfs(2)` on the filesystem holding `path`.
fn sync_filesystem(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on a file descriptor we own and keep open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::io(
            format!("syncfs {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `<nanoseconds>-<4 URL-safe base64 characters>`, containerd's unique part of unpack keys:
/// the sub-second time and three random bytes.
fn unique_part() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut b = [0u8; 3];
    // SAFETY: getrandom writes at most b.len() bytes into the buffer we own. A short or
    // failed read only makes the key less unique, which the retry loop tolerates.
    unsafe {
        libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0);
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    let enc: String = (0..4)
        .map(|i| ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char)
        .collect();
    format!("{nanos}-{enc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_part_has_containerds_shape() {
        let a = unique_part();
        let (nanos, rand) = a.split_once('-').unwrap();
        assert!(nanos.parse::<u32>().unwrap() < 1_000_000_000);
        assert_eq!(rand.len(), 4);
        assert!(rand
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(unique_part(), unique_part());
    }

    #[test]
    fn fast_path_only_for_a_single_absolute_overlay_mount() {
        let ov = Mount::new(
            "overlay",
            "overlay",
            [
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        );
        let (upper, lowers, ux) = overlay_upper(std::slice::from_ref(&ov)).unwrap();
        assert_eq!(upper, Path::new("/s/3/fs"));
        assert_eq!(lowers, vec![Path::new("/s/2/fs"), Path::new("/s/1/fs")]);
        assert!(!ux);
        let mut ux_mount = ov.clone();
        ux_mount.options.push("userxattr".into());
        assert!(overlay_upper(&[ux_mount]).unwrap().2);
        assert!(overlay_upper(&[ov.clone(), ov.clone()]).is_none());
        assert!(overlay_upper(&[Mount::new("bind", "/s/1/fs", ["rw", "rbind"])]).is_none());
        assert!(overlay_upper(&[ov.to_readonly()]).is_none());
        let rel = Mount::new("overlay", "overlay", ["upperdir=3/fs", "lowerdir=2/fs"]);
        assert!(overlay_upper(&[rel]).is_none());
    }

    #[test]
    fn direct_path_only_for_a_single_writable_bind_of_a_directory() {
        let d = std::env::temp_dir();
        let dir = d.to_str().unwrap();
        let bind = Mount::new("bind", dir, ["rw", "rbind"]);
        assert_eq!(
            writable_bind_source(std::slice::from_ref(&bind)),
            Some(d.clone())
        );
        assert!(writable_bind_source(&[bind.to_readonly()]).is_none());
        assert!(writable_bind_source(&[bind.clone(), bind.clone()]).is_none());
        assert!(writable_bind_source(&[Mount::new("bind", "relative/dir", ["rbind"])]).is_none());
        assert!(writable_bind_source(&[Mount::new("bind", "/nonexistent/x", ["rbind"])]).is_none());
        assert!(writable_bind_source(&[Mount::new("tmpfs", dir, Vec::<String>::new())]).is_none());
    }
}
