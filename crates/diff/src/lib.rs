//! The diff engine's apply half: unpacks an OCI or Docker layer onto a directory.
//!
//! [`apply_layer`] streams a layer (plain tar, gzip or zstd, detected from the magic bytes)
//! through the tar parser onto `target_root`, computing the DiffID of the uncompressed stream
//! on the way, and fails if an expected DiffID is given and differs. The caller (a
//! snapshotter's unpack) discards the snapshot when the apply fails; this crate never cleans up
//! after a partial apply.
//!
//! # Memory
//! Whatever the layer size, an apply holds at most 5 MiB of uncompressed stream (1 MiB chunks:
//! 3 in flight from the decompressor thread, one being filled, one being applied) and, with
//! threads, small files waiting for the workers in batches: at most 4.5 MiB with one worker,
//! 6.75 MiB with four. In [`WhiteoutMode::Delete`] it also remembers the path of every entry
//! the layer created (about 80 bytes each), which an opaque marker later in the layer needs;
//! overlay mode does not.
//!
//! # Whiteouts
//! OCI whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are turned into deletions
//! when applying onto a plain directory ([`WhiteoutMode::Delete`]; an opaque directory keeps
//! only what this layer puts in it), or into overlayfs' own markers when applying onto an
//! overlay upper directory ([`WhiteoutMode::Overlay`]: a 0/0 character device per deleted
//! name, and `trusted.overlay.opaque=y` — `user.overlay.opaque=y` with `userxattr` — on opaque
//! directories), without mounting anything.
//!
//! [`apply_layer_to_mounts`] takes the mounts a snapshotter returned instead of a directory:
//! an overlay mount is written through its `upperdir` in overlay mode with its `lowerdir`s as
//! [`ApplyOptions::parents`], a bind mount through its source directory, as containerd's
//! applier does; other mount sets need a temporary mount and are refused.
//!
//! # The differ
//! [`LocalDiffer`] implements `core_types::diff::{Applier, Comparer}` over a content store
//! (the local one, or a namespaced one from `stowage-metadata`): apply reads the layer blob
//! and writes through the mounts (a temporary mount when they are not a single overlay or
//! bind mount), compare is [`compare`]. Layer media types that need a program to turn them
//! into a layer stream first (decryption) go through configured [`StreamProcessor`]s, as
//! containerd's `[stream_processors]`. With the `testsuite` feature, module `testsuite` holds
//! the conformance suite every differ runs (local, metadata-wrapped, through gRPC).
//!
//! # Path policy (never writing outside the root)
//! - A name is taken relative to the root: a leading `/` is dropped, as containerd and GNU tar
//!   do.
//! - A `..` that climbs above the root (`../x`, `a/../../x`, `/../x`) is **refused**: the apply
//!   fails with `InvalidArgument` naming the entry. (containerd clamps such names to the root;
//!   no tool writes them, so we treat them as an attack.) The same holds for hard link targets
//!   and for whiteout names (`.wh..`, `.wh.` alone).
//! - Symlinks met in the parent directories of an entry are **resolved inside the root**, as
//!   containerd's `fs.RootPath` does: an absolute target restarts at the root and `..` stops at
//!   the root. `link -> /etc` followed by `link/passwd` writes `<root>/etc/passwd`. This keeps
//!   real layers that write through symlinks working. Each component is opened with
//!   `O_NOFOLLOW` relative to its resolved parent, so nothing is looked up from the top again.
//! - The final component of an entry is never followed: an existing entry there (of any type,
//!   symlinks included) is removed and replaced, except that a directory entry merges into an
//!   existing directory.
//! - Hard link targets resolve the same way (symlinked parents inside the root, the last
//!   component not followed); a target that does not exist is `NotFound`.
//! - Whiteouts resolve their parent the same way, so they can only delete inside the root.
//!
//! # Privilege policy
//! [`ApplyOptions::privileged`] defaults to "running as root". Privileged applies set
//! ownership, device nodes and every xattr (`security.capability` included) as the layer says.
//! Unprivileged applies skip ownership, skip character and block devices (counted in
//! [`ApplyResult::skipped`]), and skip xattrs the kernel refuses with `EPERM`. In both modes
//! `trusted.*` xattrs from a layer are ignored (they would let a layer forge overlayfs
//! markers), and xattrs the filesystem does not support are ignored, as containerd does.
//!
//! # Times and modes
//! Modification and access times are set as the layer says (access = the later of the two, as
//! containerd does; times before 1970 become the epoch); directory times are restored after the
//! whole layer is applied. `chmod` and `chown` are called only when the created inode would not
//! already have the wanted mode and owner, and always in the order that preserves
//! setuid/setgid bits and file capabilities (`chown`, xattrs, `chmod`, times).

mod apply;
mod compare;
mod differ;
mod entry;
pub mod media;
pub mod mounts;
pub mod processor;
mod readahead;
mod resolve;
mod stream;
mod sys;
#[cfg(feature = "testsuite")]
pub mod testsuite;

use std::io::Read;
use std::path::Path;

pub use compare::{
    compare, write_diff, write_overlay_diff, CompareOptions, DiffStats, UNCOMPRESSED_LABEL,
};
pub use differ::LocalDiffer;
pub use mounts::{apply_layer_to_mounts, direct_target, DirectTarget};
pub use processor::{StreamProcessor, NO_PROCESSOR};
use stowage_core_types::error::{Error, Result};
pub use stowage_digest_identity::Compression;
use stowage_digest_identity::{decompressed_bufread, decompressed_reader, Digest};

/// How whiteout entries are materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target is a plain directory holding the merged lower layers: whiteouts delete.
    Delete,
    /// The target is an (unmounted) overlayfs upper directory: write overlayfs' own markers.
    Overlay {
        /// Use `user.overlay.*` xattrs (overlay mounted with `userxattr`) instead of
        /// `trusted.overlay.*`.
        user_xattr: bool,
    },
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// The DiffID the uncompressed stream must have; a mismatch fails the apply.
    pub expected_diff_id: Option<Digest>,
    /// Apply ownership, device nodes and privileged xattrs (default: running as root).
    pub privileged: bool,
    /// Lower directories, newest first, consulted when the layer implies a directory it does
    /// not list (`a/b/file` without an `a/b/` entry): the new directory takes the owner, mode
    /// and (non-`trusted.`) xattrs of the newest lower directory at that path instead of
    /// 0755 root. The overlay snapshotter passes its `lowerdir`s, as containerd does, so the
    /// merged view keeps the lower directory's metadata.
    pub parents: Vec<std::path::PathBuf>,
    /// Checked before every entry: once set, the apply stops with `Canceled` (the daemon sets
    /// it when the client goes away).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Use helper threads (default: true): decompression of a compressed layer runs on its
    /// own thread, overlapping with writing, and the contents of small regular files are
    /// written by a worker while the next entries are created (for plain tar streams too).
    /// `false` does everything on the calling thread.
    pub threaded: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            expected_diff_id: None,
            privileged: sys::effective_ids().0 == 0,
            parents: Vec::new(),
            cancel: None,
            threaded: true,
        }
    }
}

impl ApplyOptions {
    /// Options for applying onto an overlayfs upper directory.
    pub fn overlay(user_xattr: bool) -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Overlay { user_xattr },
            ..ApplyOptions::default()
        }
    }

    /// Sets the expected DiffID.
    pub fn with_expected_diff_id(mut self, diff_id: Digest) -> Self {
        self.expected_diff_id = Some(diff_id);
        self
    }
}

/// How the layer stream is encoded.
#[derive(Debug, Clone, Copy)]
pub enum LayerEncoding<'a> {
    /// Detect the compression from the stream.
    Detect,
    /// The layer's media type: unsupported types are refused with `NotImplemented`; the
    /// compression is still detected from the stream (a Docker "gzip" layer that is really a
    /// plain tar applies, as in containerd).
    MediaType(&'a str),
}

/// What an apply produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream in bytes.
    pub size: u64,
    /// Compression detected on the stream.
    pub compression: Compression,
    /// Entries applied (whiteouts included, extended headers not).
    pub entries: u64,
    /// Entries skipped by the unprivileged policy (device nodes).
    pub skipped: u64,
}

/// Applies the layer read from `reader` onto `target_root`. See the crate documentation for
/// the path, whiteout and privilege policies.
///
/// On error the target is left partially applied; the caller discards it. Errors about one
/// entry name it (`layer entry "a/b": ...`).
pub fn apply_layer<R: Read + Send>(
    reader: R,
    encoding: LayerEncoding<'_>,
    target_root: &Path,
    options: &ApplyOptions,
) -> Result<ApplyResult> {
    if let LayerEncoding::MediaType(mt) = encoding {
        media::check_layer_media_type(mt)?;
    }
    let root_fd = sys::open_dir_path(target_root)
        .map_err(|e| Error::io(format!("opening target root {}", target_root.display()), e))?;
    let mut applier = apply::Applier::new(target_root, root_fd, options)?;
    let (compression, diff_id, size) = if options.threaded {
        // Three threads besides the workers: reading the blob, inflating it, and this one
        // parsing, hashing and writing. Each thread owns what feeds it and drops it when it
        // stops, so a failure anywhere unblocks the others and the scope can end.
        std::thread::scope(|scope| {
            let (ahead, feeder) = readahead::pair();
            let mut reader = reader;
            scope.spawn(move || feeder.run(&mut reader));
            let (compression, mut decoder) = decompressed_bufread(ahead)?;
            if compression == Compression::Uncompressed {
                let mut source = stream::InlineSource { reader: decoder };
                let (diff_id, size) = applier.run(&mut source, compression)?;
                return Ok((compression, diff_id, size));
            }
            let (mut source, producer) = stream::channel_pair();
            let worker = scope.spawn(move || producer.run(&mut *decoder));
            let result = applier.run(&mut source, compression);
            // Hanging up first lets a producer blocked on a full channel exit.
            drop(source);
            if worker.join().is_err() {
                return Err(Error::unknown("layer decompression thread panicked"));
            }
            let (diff_id, size) = result?;
            Ok((compression, diff_id, size))
        })?
    } else {
        let (compression, decoder) = decompressed_reader(reader)?;
        let mut source = stream::InlineSource { reader: decoder };
        let (diff_id, size) = applier.run(&mut source, compression)?;
        (compression, diff_id, size)
    };
    if let Some(expected) = &options.expected_diff_id {
        if *expected != diff_id {
            return Err(Error::data_loss(format!(
                "layer DiffID mismatch: expected {expected}, got {diff_id}"
            )));
        }
    }
    Ok(ApplyResult {
        diff_id,
        size,
        compression,
        entries: applier.counts.entries,
        skipped: applier.counts.skipped,
    })
}
