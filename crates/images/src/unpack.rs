//! Unpacking an image's layers into committed snapshots, with containerd 1.6's unpacker
//! semantics.
//!
//! Layer `i` becomes the committed snapshot named by the ChainID of DiffIDs `0..=i`, whose
//! parent is the snapshot of layers `0..i`. A layer whose snapshot already exists is skipped,
//! so unpacking an image twice, or two images sharing base layers, reuses what is there.
//! Otherwise a fresh active snapshot is prepared with containerd's key
//! `extract-<unique> <chainID>` and label `containerd.io/snapshot.ref=<chainID>` (plus the
//! layer's `containerd.io/snapshot/*` annotations), the layer is applied onto its mounts by an
//! [`Applier`] (the local differ, or a daemon's Diff service, as containerd's client unpacks),
//! the DiffID it reports is checked against the config's, and the snapshot is committed; on
//! any failure the active snapshot is removed, so nothing half applied remains and no committed
//! snapshot exists for a layer that did not apply cleanly.

use std::fs::File;
use std::path::Path;

use stowage_core_types::content::{Manager, Provider};
use stowage_core_types::diff::{Applier, ApplyConfig};
use stowage_core_types::mount::Mount;
use stowage_core_types::platform::Matcher;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Digest, Error, ErrorKind, Labels, Result};
use stowage_diff::{direct_target, DirectTarget};
use stowage_digest_identity::chain_id;

use crate::model::read_config;
use crate::platform::resolve_manifest;

/// The label containerd puts on extraction snapshots, naming the ChainID they will become.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";
/// Layer annotations with this prefix are copied onto the layer's snapshot, as containerd's
/// `snapshots.FilterInheritedLabels` does (remote snapshotters rely on them).
pub const INHERITED_LABEL_PREFIX: &str = "containerd.io/snapshot/";
/// The first word of an extraction snapshot's key.
pub const UNPACK_KEY_PREFIX: &str = "extract";

/// Options of [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Passed to every apply, as containerd's unpack `WithApplyOpts` (payloads for the
    /// applier's stream processors, such as decryption parameters).
    pub apply: ApplyConfig,
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
    /// Its DiffID (from the config; the applier's result matched it when `applied`).
    pub diff_id: Digest,
    /// The name of its committed snapshot.
    pub chain_id: Digest,
    /// True when applied now; false when the snapshot already existed and was reused.
    pub applied: bool,
}

/// Unpacks the image `target` (a manifest, or an index resolved with `matcher`) read from
/// `provider` into `snapshotter`, each layer applied by `applier`, and returns the top ChainID
/// with what was done.
///
/// `applier` reads the layer blobs from its own content store, which must hold what
/// `provider` does (the same store, or the same namespace of a daemon). When it writes a layer
/// straight into a directory of this host (an overlay upper directory, a bind mount's source),
/// that filesystem is flushed (`syncfs`) before the layer's snapshot is committed.
///
/// Errors: NotFound when no manifest matches the platform; InvalidArgument when the config's
/// DiffIDs do not pair up with the manifest's layers or a document is malformed; DataLoss when
/// a layer's DiffID differs from the config's; whatever the snapshotter or the applier report
/// otherwise, with the layer named.
pub fn unpack(
    provider: &dyn Provider,
    snapshotter: &dyn Snapshotter,
    applier: &dyn Applier,
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
            snapshotter,
            applier,
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
/// `containerd.io/uncompressed=<DiffID>` on every layer applied now (the applier reported that
/// DiffID), then `containerd.io/gc.ref.snapshot.<snapshotter_name>=<top ChainID>` on the
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
    snapshotter: &dyn Snapshotter,
    applier: &dyn Applier,
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
    if let Err(e) = apply_into(applier, layer, diff_id, &mounts, &options.apply) {
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

/// Applies `layer` onto the snapshot behind `mounts` through `applier`, checks that the
/// uncompressed stream it applied has the config's `diff_id`, and flushes the written
/// filesystem so that the commit that follows records durable data.
fn apply_into(
    applier: &dyn Applier,
    layer: &Descriptor,
    diff_id: &Digest,
    mounts: &[Mount],
    config: &ApplyConfig,
) -> Result<()> {
    let applied = applier.apply(layer, mounts, config)?;
    if applied.digest != *diff_id {
        return Err(Error::data_loss(format!(
            "layer DiffID mismatch: expected {diff_id}, got {}",
            applied.digest
        )));
    }
    // Appliers write an overlay snapshot through its upper directory and a bind-mounted one
    // through its source, so that directory's filesystem holds the layer now. Any other mount
    // set (several mounts, a block device, relative paths) the applier mounted itself and has
    // unmounted again; there is no directory here to flush, and unmounting does not sync, so
    // such a layer is as durable as the applier left it.
    if let Ok(target) = direct_target(mounts) {
        let dir = match target {
            DirectTarget::OverlayUpper { upper, .. } => upper,
            DirectTarget::Directory(dir) => dir,
        };
        // A relative path has a meaning only to the mount that was made of it.
        if dir.is_absolute() {
            sync_filesystem(&dir)?;
        }
    }
    Ok(())
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
}
