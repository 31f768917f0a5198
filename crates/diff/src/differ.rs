//! The local differ: [`Applier`] and [`Comparer`] over a content store, as containerd's
//! walking differ (`diff/apply` and `diff/walking`).
//!
//! Give it the plain local store to diff outside any namespace, or a namespaced (metadata)
//! content store to have layers read from and written into a namespace under a lease, which
//! is how the daemon serves the Diff service. Layers of media types that need a stream
//! processor (see [`crate::processor`]) go through the configured programs first.

use std::io::{self, Read};
use std::sync::Arc;

use stowage_core_types::content::{SectionReader, Store};
use stowage_core_types::diff::{Applier, ApplyConfig, CompareOptions, Comparer};
use stowage_core_types::error::{Error, ErrorKind, Result};
use stowage_core_types::mediatype;
use stowage_core_types::mount::Mount;
use stowage_core_types::Descriptor;
use stowage_snapshots_storage::mount::with_temp_mount;

use crate::processor::{self, StreamProcessor};
use crate::{
    apply_layer, apply_layer_to_mounts, direct_target, ApplyOptions, ApplyResult, DirectTarget,
    LayerEncoding,
};

/// Applies layers from, and writes compared layers into, one content store.
#[derive(Clone)]
pub struct LocalDiffer {
    content: Arc<dyn Store>,
    apply_options: ApplyOptions,
    processors: Vec<StreamProcessor>,
}

impl std::fmt::Debug for LocalDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDiffer").finish_non_exhaustive()
    }
}

impl LocalDiffer {
    /// A differ over `content`, applying with the default [`ApplyOptions`] (privileged when
    /// running as root).
    pub fn new(content: Arc<dyn Store>) -> Self {
        LocalDiffer {
            content,
            apply_options: ApplyOptions::default(),
            processors: Vec::new(),
        }
    }

    /// Uses `options` for every apply (the whiteout mode and parents are still taken from the
    /// mounts).
    pub fn with_apply_options(mut self, options: ApplyOptions) -> Self {
        self.apply_options = options;
        self
    }

    /// Uses the stream processors `processors` (tried in this order, before the built-in
    /// decompressor) for the media types they accept.
    pub fn with_processors(mut self, processors: Vec<StreamProcessor>) -> Self {
        self.processors = processors;
        self
    }

    /// The content store layers are read from and written into.
    pub fn content(&self) -> &Arc<dyn Store> {
        &self.content
    }
}

/// True when every path of `target` is absolute.
fn absolute(target: &DirectTarget) -> bool {
    match target {
        DirectTarget::OverlayUpper { upper, lowers, .. } => {
            upper.is_absolute() && lowers.iter().all(|l| l.is_absolute())
        }
        DirectTarget::Directory(dir) => dir.is_absolute(),
    }
}

impl LocalDiffer {
    /// Applies a decompressible layer stream of `media_type` onto `mounts`.
    fn apply_stream<R: Read + Send>(
        &self,
        reader: R,
        media_type: &str,
        mounts: &[Mount],
    ) -> Result<ApplyResult> {
        let encoding = LayerEncoding::MediaType(media_type);
        match direct_target(mounts) {
            Ok(target) if absolute(&target) => {
                apply_layer_to_mounts(reader, encoding, mounts, &self.apply_options)
            }
            // Several mounts, a filesystem that is not a directory, or relative paths (which
            // only the mount's own working directory gives a meaning): write through a
            // temporary mount of them, as containerd always does.
            Ok(_) => self.apply_mounted(reader, encoding, mounts),
            Err(e) if e.is(ErrorKind::NotImplemented) => {
                self.apply_mounted(reader, encoding, mounts)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies through a temporary mount of `mounts`.
    fn apply_mounted<R: Read + Send>(
        &self,
        reader: R,
        encoding: LayerEncoding<'_>,
        mounts: &[Mount],
    ) -> Result<ApplyResult> {
        with_temp_mount(mounts, |root| {
            let mut options = self.apply_options.clone();
            options.whiteouts = crate::WhiteoutMode::Delete;
            options.parents = Vec::new();
            apply_layer(reader, encoding, root, &options)
        })
    }

    /// Runs the blob through `chain` (each processor's output feeding the next) and applies
    /// what the last one writes, as the layer type `layer_type`.
    fn apply_through(
        &self,
        chain: &[&StreamProcessor],
        blob: SectionReader<'_>,
        media_type: &str,
        layer_type: &str,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<ApplyResult> {
        std::thread::scope(|scope| {
            let mut stream: Box<dyn Read + Send + '_> = Box::new(blob);
            let mut running = Vec::new();
            let mut current = media_type.to_string();
            let mut started = Ok(());
            for p in chain {
                let run = match processor::start(p, &current, config.payloads.get(&p.id)) {
                    Ok(run) => run,
                    Err(e) => {
                        started = Err(e);
                        break;
                    }
                };
                let mut child = run.child;
                if let Some((w, data)) = run.payload {
                    scope.spawn(move || processor::feed_payload(w, &data));
                }
                let (Some(mut stdin), Some(stdout), Some(stderr)) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take())
                else {
                    let _ = child.kill();
                    let _ = child.wait();
                    started = Err(Error::unknown(format!(
                        "stream processor {} started without its pipes",
                        p.id
                    )));
                    break;
                };
                let mut input = stream;
                // A processor that stops reading makes this copy fail; its exit status
                // tells why.
                scope.spawn(move || {
                    let _ = io::copy(&mut input, &mut stdin);
                });
                let errors = scope.spawn(move || processor::collect(stderr));
                stream = Box::new(stdout);
                running.push((*p, child, errors));
                current = p.returns.clone();
            }
            let applied = started.and_then(|()| {
                let applied = self.apply_stream(&mut stream, layer_type, mounts)?;
                // Read what the layer did not need, as containerd does, so every processor
                // can write all it has and exit.
                io::copy(&mut stream, &mut io::sink())
                    .map_err(|e| Error::io("reading the rest of the processed stream", e))?;
                Ok(applied)
            });
            drop(stream);
            let mut failed = None;
            for (p, mut child, errors) in running {
                if applied.is_err() {
                    // Nothing reads their output any more; a processor that already failed
                    // on its own still reports its exit status below.
                    let _ = child.kill();
                }
                let stderr = errors.join().unwrap_or_default();
                if let Err(e) = processor::finish(p, child, stderr, applied.is_err()) {
                    failed.get_or_insert(e);
                }
            }
            match failed {
                // A processor's failure explains whatever the apply saw.
                Some(e) => Err(e),
                None => applied,
            }
        })
    }
}

impl Applier for LocalDiffer {
    fn apply(
        &self,
        desc: &Descriptor,
        mounts: &[Mount],
        config: &ApplyConfig,
    ) -> Result<Descriptor> {
        // Resolved before anything is read, so a type nothing takes fails at once.
        let (chain, layer_type) = processor::resolve(&self.processors, &desc.media_type)?;
        let ra = self
            .content
            .reader_at(desc)
            .map_err(|e| e.context("failed to get reader from content store"))?;
        let reader = SectionReader::new(&*ra, 0);
        let result = if chain.is_empty() {
            self.apply_stream(reader, &layer_type, mounts)?
        } else {
            self.apply_through(
                &chain,
                reader,
                &desc.media_type,
                &layer_type,
                mounts,
                config,
            )?
        };
        Ok(Descriptor::new(
            mediatype::OCI_LAYER,
            result.diff_id,
            result.size,
        ))
    }
}

impl Comparer for LocalDiffer {
    fn compare(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        options: &CompareOptions,
    ) -> Result<Descriptor> {
        crate::compare(lower, upper, &*self.content, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_targets_are_written_directly() {
        let upper = |u: &str, l: &str| DirectTarget::OverlayUpper {
            upper: u.into(),
            lowers: vec![l.into()],
            user_xattr: false,
        };
        assert!(absolute(&upper("/s/2/fs", "/s/1/fs")));
        assert!(!absolute(&upper("s/2/fs", "/s/1/fs")));
        assert!(!absolute(&upper("/s/2/fs", "1/fs")));
        assert!(absolute(&DirectTarget::Directory("/s/1".into())));
        assert!(!absolute(&DirectTarget::Directory("s/1".into())));
    }
}
