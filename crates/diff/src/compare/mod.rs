//! The diff engine's compare half: the changes from a lower tree to an upper tree as an OCI
//! layer, with containerd 1.6's semantics.
//!
//! - [`write_diff`] walks both trees (containerd's double-walk diff) and writes a tar of the
//!   changes: added and modified entries with their mode (setuid/setgid/sticky included),
//!   owner, whole-second modification time and xattrs (PAX `SCHILY.xattr.*` records), hard
//!   links inside the layer as hard links, deletions as `.wh.<name>`, and every parent
//!   directory of a change (taken from the upper tree) before it, as containerd does.
//! - [`write_overlay_diff`] reads an overlayfs upper directory instead of walking the merged
//!   upper tree: overlay whiteouts (0/0 character devices) become `.wh.<name>`, opaque
//!   directories (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) become
//!   `.wh..wh..opq`, and the lower tree is consulted only to decide whether an upper
//!   directory differs from the lower one.
//! - [`compare`] mounts the two mount sets read-only, picks the overlay path when the upper
//!   mount is an overlay whose lower directories are exactly the lower mount, and streams the
//!   layer through the requested compression into the content store, labelled with its DiffID.
//!
//! # Determinism
//! The bytes depend on the trees alone: names are visited in byte order, headers carry no
//! user or group names and no access or change times, PAX records are sorted, whiteouts have
//! a fixed time (the epoch; containerd uses the current time), and gzip headers carry no time.
//!
//! # Where this differs from containerd 1.6, on purpose
//! - containerd compares and writes only the `security.capability` xattr; every xattr but
//!   `trusted.*`, `user.overlay.*` and `security.selinux` is compared and written here, so an
//!   xattr-only change survives the round trip.
//! - containerd never reports a directory whose only change is its modification time; here
//!   such a directory is written, so the applied tree keeps the upper tree's time.
//! - containerd 1.6's comparer writes only `application/vnd.oci.image.layer.v1.tar` and
//!   `…tar+gzip`; zstd and the Docker layer types are written here too.
//! - When the layer blob already exists, containerd only adds a missing
//!   `containerd.io/uncompressed` label; here the caller's labels are set on it as well, so
//!   the blob carries what was asked for whether or not this compare created it.
//!
//! The differ conformance suite is also run against containerd 1.6 itself (stowage-daemon's
//! `diff_conformance` test): it fails exactly the cases these departures touch.

pub(crate) mod fsmeta;
mod header;
mod walk;
mod writer;

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use stowage_core_types::content::{Store, Writer, WriterOptions};
use stowage_core_types::error::{Error, Result};
use stowage_core_types::labels::Labels;
use stowage_core_types::mediatype::{self, Compression as MediaCompression};
use stowage_core_types::mount::Mount;
use stowage_core_types::{Descriptor, ErrorKind};
use stowage_digest_identity::{Digest, Digester};
use stowage_snapshots_storage::mount::TempMount;

use writer::ChangeWriter;

/// The label containerd puts on a layer blob to name its DiffID.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// What a diff wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (whiteouts included, PAX extended headers not).
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
}

/// Writes the changes from the tree `lower` to the tree `upper` to `out` as an uncompressed
/// OCI layer, as containerd 1.6's `archive.WriteDiff` over its double-walk diff.
///
/// Both trees are walked in byte order of names, depth first (containerd's order). The layer
/// holds:
/// - added and changed entries (regular files, directories, symlinks, character and block
///   devices, fifos; sockets are left out) with their mode including setuid/setgid/sticky,
///   numeric owner, whole-second modification time, and xattrs as PAX `SCHILY.xattr.*`
///   records (all but `trusted.*`, `user.overlay.*` and `security.selinux`);
/// - names of one inode (hard links) as one file and `1` (link) entries to it, including
///   unchanged names of an inode when another of its names changed;
/// - a `.wh.<name>` entry for each deleted name (nothing for what was below a deleted
///   directory);
/// - every parent directory of an entry, once, before it, with the upper tree's metadata.
///
/// An entry is unchanged when it is the same inode, or when type, mode, owner, device number,
/// xattrs and modification time (to the nanosecond) match and, for non-directories, size and
/// symlink target match; when both times are whole seconds the file contents are compared
/// too. Headers are ustar blocks with PAX extended headers where needed (long or non-ASCII
/// names, large owners, sizes or times, xattrs); no user or group names, access or change
/// times; whiteouts carry time 0 (containerd stamps the current time). The same trees always
/// give the same bytes.
///
/// containerd compares only the `security.capability` xattr and never reports a directory
/// whose only change is its time; both reach the layer here so they survive a round trip.
pub fn write_diff(lower: &Path, upper: &Path, mut out: impl Write) -> Result<DiffStats> {
    let mut w = ChangeWriter::new(&mut out, upper);
    walk::double_walk(lower, upper, &mut w)?;
    w.finish()?;
    Ok(DiffStats {
        entries: w.entries,
        size: w.size,
    })
}

/// Writes the changes an overlayfs upper directory `upper_dir` holds over the merged lower
/// tree `lower` (the lower directories mounted, or the single lower directory) to `out` as an
/// uncompressed OCI layer, reading only `upper_dir` and looking up in `lower` only the
/// directories `upper_dir` has.
///
/// Upper directories written with overlayfs' `redirect_dir` or `metacopy` features (which
/// containerd does not enable) are refused with `NotImplemented`: a renamed directory or a
/// metadata-only copy keeps its data elsewhere in the stack. [`compare`] then falls back to
/// walking the mounted trees.
pub fn write_overlay_diff(
    lower: &Path,
    upper_dir: &Path,
    mut out: impl Write,
) -> Result<DiffStats> {
    let mut w = ChangeWriter::new(&mut out, upper_dir);
    walk::overlay_walk(lower, upper_dir, &mut w)?;
    w.finish()?;
    Ok(DiffStats {
        entries: w.entries,
        size: w.size,
    })
}

/// Options of [`compare`]: containerd's `diff.Config` as the comparer trait takes it. The
/// media type may be any OCI or Docker layer type: `+gzip`/`.gzip` compress with gzip, `+zstd`
/// with zstd, the plain tar types not at all (containerd 1.6 accepts only the OCI tar and
/// tar+gzip types). An existing ingest under a given reference is truncated first.
pub use stowage_core_types::diff::CompareOptions;

/// How the layer bytes are compressed on their way into the store.
enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    fn new(c: MediaCompression, inner: W) -> io::Result<Self> {
        Ok(match c {
            MediaCompression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            MediaCompression::Zstd => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(inner, 3)?)
            }
            MediaCompression::None | MediaCompression::Unknown => Compressor::None(inner),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// Hashes the uncompressed stream (the DiffID) on its way to the compressor.
struct DiffIdTee<W: Write> {
    digester: Digester,
    inner: W,
}

impl<W: Write> Write for DiffIdTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the bytes going into the store.
struct Counted<'a> {
    inner: &'a mut dyn Writer,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size of the chunks the walking thread hands to the compressing one.
const CHUNK: usize = 1 << 20;

/// The walking side of the pipe: fills chunks and hands them over.
struct ChunkSender {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::other("the layer writer stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `write_tar` on a thread of its own (walking, reading files and hashing the DiffID)
/// while this thread compresses its output into `cw`, so reading and compressing overlap.
/// Returns the DiffID and the number of bytes that went into `cw`.
fn produce_and_store(
    compression: MediaCompression,
    cw: &mut dyn Writer,
    write_tar: impl FnOnce(&mut dyn Write) -> Result<DiffStats> + Send,
) -> Result<(Digest, u64)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> Result<Digest> {
            let mut tee = DiffIdTee {
                digester: Digester::sha256(),
                inner: ChunkSender {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                },
            };
            write_tar(&mut tee)?;
            tee.inner.send().map_err(Error::from)?;
            Ok(tee.digester.finish())
        });
        let stored = (|| -> Result<u64> {
            let mut counted = Counted { inner: cw, n: 0 };
            let mut compressor =
                Compressor::new(compression, BufWriter::with_capacity(CHUNK, &mut counted))
                    .map_err(|e| Error::io("starting the layer compressor", e))?;
            for chunk in rx {
                compressor.write_all(&chunk).map_err(Error::from)?;
            }
            let buffered = compressor.finish().map_err(Error::from)?;
            let counted = buffered
                .into_inner()
                .map_err(|e| Error::from(e.into_error()))?;
            Ok(counted.n)
        })();
        // `rx` is gone by now: a producer still writing sees the hang-up and stops.
        let produced = producer
            .join()
            .map_err(|_| Error::unknown("the layer walking thread panicked"))?;
        match (produced, stored) {
            // The store's error caused the walker's, when both failed.
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(diff_id), Ok(n)) => Ok((diff_id, n)),
        }
    })
}

/// Where the upper tree's changes are read from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Mount the upper mounts and walk both trees.
    Trees,
    /// Read this overlayfs upper directory; its lower directories are the lower mount.
    OverlayUpper(String),
}

/// Picks the overlay path when `upper` is one overlay mount with an `upperdir` whose
/// `lowerdir`s are exactly what `lower` mounts: the same lower directories for an overlay,
/// or the single lower directory for a bind mount (how a view of one parent is mounted).
fn source_of(lower: &[Mount], upper: &[Mount]) -> Source {
    let [u] = upper else { return Source::Trees };
    if u.kind != "overlay" {
        return Source::Trees;
    }
    let Some(upper_dir) = u.option_value("upperdir") else {
        return Source::Trees;
    };
    let lowers = u.lower_dirs();
    let matches = match lower {
        [l] if l.kind == "overlay" => {
            l.option_value("upperdir").is_none() && l.lower_dirs() == lowers
        }
        [l] if l.kind == "bind" || l.has_option("bind") || l.has_option("rbind") => {
            lowers.len() == 1 && Path::new(&l.source) == Path::new(lowers[0])
        }
        _ => false,
    };
    if matches {
        Source::OverlayUpper(upper_dir.to_string())
    } else {
        Source::Trees
    }
}

/// The compression `media_type` asks for; anything that is not a layer type we can write is
/// refused with containerd's error (`unsupported diff media type: <type>: not implemented`).
/// The read-only upper mounts to walk when the overlay fast path refused the upper
/// directory (`reason` is its error): redirects are followed whatever the kernel's default,
/// and metadata-only copies are read through (`metacopy=on`, only when the upper directory
/// has them: older kernels do not know the option).
fn fallback_mounts(upper: &[Mount], reason: &str) -> Vec<Mount> {
    let mut mounts = readonly(upper);
    for m in mounts.iter_mut().filter(|m| m.kind == "overlay") {
        let mut want = vec!["redirect_dir=follow"];
        if reason.contains(walk::METACOPY_MARK) {
            want.push("metacopy=on");
        }
        for opt in want {
            let key = opt.split('=').next().unwrap_or(opt);
            if m.option_value(key).is_none() {
                m.options.push(opt.to_string());
            }
        }
    }
    mounts
}

fn compression_for(media_type: &str) -> Result<MediaCompression> {
    crate::media::check_layer_media_type(media_type)
        .and_then(|()| mediatype::layer_compression(media_type))
        .map_err(|_| Error::not_implemented(format!("unsupported diff media type: {media_type}")))
}

static REF_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_ref() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "compare-{nanos}-{}-{}",
        std::process::id(),
        REF_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn readonly(mounts: &[Mount]) -> Vec<Mount> {
    mounts.iter().map(Mount::to_readonly).collect()
}

/// Computes the layer of changes from `lower` to `upper` (each a mount set, as a snapshotter
/// returns them) and writes it into `content`, as containerd's walking differ's `Compare`.
///
/// Both mount sets are mounted read-only on temporary directories (an overlay upper mount
/// whose lower directories are the lower mount is not mounted: its upper directory is read
/// directly, see [`write_overlay_diff`], unless it turns out to use `redirect_dir` or
/// `metacopy`: then the upper mounts are mounted and both trees walked). The layer is compressed as the media type says,
/// its DiffID computed on the way and committed as the `containerd.io/uncompressed` label
/// (also set on a blob that already existed without it). On failure everything is unmounted
/// and the ingest is aborted.
pub fn compare(
    lower: &[Mount],
    upper: &[Mount],
    content: &dyn Store,
    options: &CompareOptions,
) -> Result<Descriptor> {
    let media_type = if options.media_type.is_empty() {
        mediatype::OCI_LAYER_GZIP
    } else {
        options.media_type.as_str()
    };
    let compression = compression_for(media_type)?;
    let source = source_of(lower, upper);

    let lower_mount =
        TempMount::new(&readonly(lower)).map_err(|e| e.context("mounting the lower mounts"))?;
    let mut upper_mount = match source {
        Source::Trees => Some(
            TempMount::new(&readonly(upper)).map_err(|e| e.context("mounting the upper mounts"))?,
        ),
        Source::OverlayUpper(_) => None,
    };

    let reference = if options.reference.is_empty() {
        unique_ref()
    } else {
        options.reference.clone()
    };
    let mut opened = false;
    let result = (|| -> Result<Descriptor> {
        let mut cw = content.writer(WriterOptions::with_ref(reference.clone()))?;
        opened = true;
        if !options.reference.is_empty() {
            cw.truncate(0)?;
        }
        // The overlay fast path, when it applies; `None` when the trees must be walked, with
        // the mounts to walk the upper tree through when the fast path gave up.
        let mut fallback = None;
        let fast = match &source {
            Source::OverlayUpper(dir) => {
                let upper_dir = Path::new(dir);
                match produce_and_store(compression, &mut *cw, |out| {
                    write_overlay_diff(lower_mount.path(), upper_dir, out)
                }) {
                    // The upper directory uses overlayfs features (redirect_dir, metacopy)
                    // it cannot describe alone: start again and compare the mounted trees,
                    // which is what containerd always does.
                    Err(e) if e.is(ErrorKind::NotImplemented) => {
                        cw.truncate(0)?;
                        fallback = Some(fallback_mounts(upper, e.message()));
                        None
                    }
                    other => Some(other?),
                }
            }
            Source::Trees => None,
        };
        let (diff_id, size) = match fast {
            Some(done) => done,
            None => {
                if upper_mount.is_none() {
                    let mounts = fallback.unwrap_or_else(|| readonly(upper));
                    upper_mount = Some(
                        TempMount::new(&mounts)
                            .map_err(|e| e.context("mounting the upper mounts"))?,
                    );
                }
                let upper_root = upper_mount
                    .as_ref()
                    .map(TempMount::path)
                    .ok_or_else(|| Error::unknown("upper mounts not mounted"))?;
                produce_and_store(compression, &mut *cw, |out| {
                    write_diff(lower_mount.path(), upper_root, out)
                })?
            }
        };
        commit(
            content,
            &mut *cw,
            media_type,
            size,
            &diff_id,
            &options.labels,
        )
    })();
    if result.is_err() && opened {
        // Nothing useful is left in a failed diff's ingest; it may already be gone. An ingest
        // this call could not open (another writer holds the reference) is not ours to end.
        let _ = content.abort(&reference);
    }
    let unmounted = [
        upper_mount.map(TempMount::unmount),
        Some(lower_mount.unmount()),
    ];
    let desc = result?;
    for u in unmounted.into_iter().flatten() {
        u?;
    }
    Ok(desc)
}

/// Commits the layer. When the blob is already there, the requested labels it lacks (or has
/// with other values) are set on it, and the DiffID label if it has none, so the caller finds
/// the blob labelled as asked whether or not this compare created it.
fn commit(
    content: &dyn Store,
    cw: &mut dyn Writer,
    media_type: &str,
    size: u64,
    diff_id: &Digest,
    labels: &Labels,
) -> Result<Descriptor> {
    let digest = cw.digest();
    let mut wanted = labels.clone();
    wanted.insert(UNCOMPRESSED_LABEL.to_string(), diff_id.to_string());
    match cw.commit(Some(size), Some(&digest), wanted) {
        Ok(()) => {}
        Err(e) if e.is(ErrorKind::AlreadyExists) => {
            let mut info = content.info(&digest)?;
            let mut paths = Vec::new();
            if !info.labels.contains_key(UNCOMPRESSED_LABEL) {
                info.labels
                    .insert(UNCOMPRESSED_LABEL.to_string(), diff_id.to_string());
                paths.push(format!("labels.{UNCOMPRESSED_LABEL}"));
            }
            for (k, v) in labels {
                if k != UNCOMPRESSED_LABEL && info.labels.get(k) != Some(v) {
                    info.labels.insert(k.clone(), v.clone());
                    paths.push(format!("labels.{k}"));
                }
            }
            if !paths.is_empty() {
                match content.update(info, &paths) {
                    // A store that keeps no labels (containerd's bare local store) cannot
                    // hold these either; the blob itself is what was asked for.
                    Err(e) if e.is(ErrorKind::FailedPrecondition) => {}
                    other => {
                        other.map_err(|e| e.context("labelling the layer"))?;
                    }
                }
            }
        }
        Err(e) => return Err(e.context("committing the layer")),
    }
    Ok(Descriptor::new(media_type, digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_source_needs_matching_lowers() {
        let upper = Mount::new(
            "overlay",
            "overlay",
            [
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        );
        let lower = Mount::new(
            "overlay",
            "overlay",
            ["index=off", "lowerdir=/s/2/fs:/s/1/fs"],
        );
        assert_eq!(
            source_of(&[lower], std::slice::from_ref(&upper)),
            Source::OverlayUpper("/s/3/fs".into())
        );
        let other = Mount::new("overlay", "overlay", ["lowerdir=/s/9/fs:/s/1/fs"]);
        assert_eq!(
            source_of(&[other], std::slice::from_ref(&upper)),
            Source::Trees
        );
        let bind = Mount::new("bind", "/s/2/fs", ["rbind", "ro"]);
        assert_eq!(
            source_of(&[bind], std::slice::from_ref(&upper)),
            Source::Trees
        );

        let one = Mount::new(
            "overlay",
            "overlay",
            ["workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs"],
        );
        let bind = Mount::new("bind", "/s/2/fs", ["rbind", "ro"]);
        assert_eq!(
            source_of(&[bind], std::slice::from_ref(&one)),
            Source::OverlayUpper("/s/3/fs".into())
        );
        assert_eq!(source_of(&[], &[one]), Source::Trees);
        let plain = Mount::new("bind", "/s/3/fs", ["rbind"]);
        assert_eq!(source_of(&[], &[plain]), Source::Trees);
    }

    #[test]
    fn fallback_mounts_follow_redirects_and_metacopy_only_when_needed() {
        let upper = Mount::new(
            "overlay",
            "overlay",
            [
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/1/fs",
            ],
        );
        let plain = fallback_mounts(std::slice::from_ref(&upper), "x carries a redirect");
        assert_eq!(
            plain[0].options,
            [
                "index=off",
                "lowerdir=/s/3/fs:/s/1/fs",
                "redirect_dir=follow"
            ]
        );
        let meta = fallback_mounts(
            std::slice::from_ref(&upper),
            &format!("/s/3/fs/f {}", walk::METACOPY_MARK),
        );
        assert_eq!(
            meta[0].options,
            [
                "index=off",
                "lowerdir=/s/3/fs:/s/1/fs",
                "redirect_dir=follow",
                "metacopy=on"
            ]
        );
        // A redirect setting the caller chose is kept.
        let mut on = upper.clone();
        on.options.push("redirect_dir=on".into());
        let kept = fallback_mounts(&[on], "redirect");
        assert_eq!(kept[0].option_value("redirect_dir"), Some("on"));
        assert_eq!(kept[0].options.len(), 3);
    }

    #[test]
    fn media_types_choose_the_compression() {
        assert_eq!(
            compression_for(mediatype::OCI_LAYER_GZIP).unwrap(),
            MediaCompression::Gzip
        );
        assert_eq!(
            compression_for(mediatype::OCI_LAYER_ZSTD).unwrap(),
            MediaCompression::Zstd
        );
        assert_eq!(
            compression_for(mediatype::OCI_LAYER).unwrap(),
            MediaCompression::None
        );
        assert_eq!(
            compression_for(mediatype::DOCKER_LAYER_GZIP).unwrap(),
            MediaCompression::Gzip
        );
        for bad in [
            mediatype::OCI_MANIFEST,
            mediatype::OCI_LAYER_GZIP_ENCRYPTED,
            "x",
        ] {
            let err = compression_for(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotImplemented);
            assert_eq!(
                err.to_string(),
                format!("unsupported diff media type: {bad}: not implemented")
            );
        }
    }
}
