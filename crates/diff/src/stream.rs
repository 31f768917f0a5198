//! The uncompressed layer stream as a sequence of large chunks, each hashed into the DiffID
//! digester as it arrives.
//!
//! Decompression writes straight into a chunk buffer; the hasher and the tar applier then read
//! that same buffer (file data goes from it to `write(2)` directly), so the uncompressed bytes
//! are never copied in user space. With [`Pipeline::Threaded`] the decompressor runs on its own
//! thread and hands over chunks through a bounded channel, so inflating overlaps with hashing
//! and writing; memory stays at a few chunks whatever the layer size.

use std::io::{self, Read};
use std::sync::mpsc;

use stowage_core_types::error::{Error, Result};
use stowage_digest_identity::{Compression, Digest, Digester};

/// Size of one chunk of uncompressed data.
pub(crate) const CHUNK: usize = 1 << 20;
/// Size of the first chunk the decompressor thread hands over; each later one is twice the
/// one before, up to [`CHUNK`]. A small first chunk lets the applier start creating files
/// after a fraction of a millisecond instead of after a whole mebibyte has been inflated:
/// for a layer of about a mebibyte (common for small layers) a full first chunk would
/// serialise decompression and file creation.
const FIRST_CHUNK: usize = 64 << 10;
/// Chunks in flight between the decompressor thread and the applier.
const IN_FLIGHT: usize = 3;

/// Where chunks come from.
pub(crate) trait ChunkSource {
    /// The next chunk (never empty), or `None` at the end of the stream. `spare` is a buffer
    /// the consumer is done with, for reuse.
    fn next_chunk(&mut self, spare: Option<Vec<u8>>) -> io::Result<Option<Vec<u8>>>;
}

/// Reads the decompressor on the calling thread.
pub(crate) struct InlineSource<R> {
    pub(crate) reader: R,
}

/// Fills `buf` (resized to `size`) as far as the reader allows; returns the bytes read.
pub(crate) fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
    buf.resize(size, 0);
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(n)
}

impl<R: Read> ChunkSource for InlineSource<R> {
    fn next_chunk(&mut self, spare: Option<Vec<u8>>) -> io::Result<Option<Vec<u8>>> {
        let mut buf = spare.unwrap_or_default();
        if fill(&mut self.reader, &mut buf, CHUNK)? == 0 {
            return Ok(None);
        }
        Ok(Some(buf))
    }
}

/// Receives chunks from a decompressor thread (see [`run_producer`]).
pub(crate) struct ChannelSource {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    spares: mpsc::Sender<Vec<u8>>,
}

impl ChunkSource for ChannelSource {
    fn next_chunk(&mut self, spare: Option<Vec<u8>>) -> io::Result<Option<Vec<u8>>> {
        if let Some(buf) = spare {
            // The producer may have finished already; then the buffer is simply dropped.
            let _ = self.spares.send(buf);
        }
        match self.chunks.recv() {
            Ok(Ok(buf)) => Ok(Some(buf)),
            Ok(Err(e)) => Err(e),
            // The producer hung up: end of stream.
            Err(mpsc::RecvError) => Ok(None),
        }
    }
}

/// The producer half of a threaded pipeline: returns the source for the consumer and the
/// function the decompressor thread runs.
pub(crate) fn channel_pair() -> (ChannelSource, Producer) {
    let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
    let (spare_tx, spare_rx) = mpsc::channel();
    (
        ChannelSource {
            chunks: rx,
            spares: spare_tx,
        },
        Producer {
            chunks: tx,
            spares: spare_rx,
        },
    )
}

/// Runs on the decompressor thread.
pub(crate) struct Producer {
    chunks: mpsc::SyncSender<io::Result<Vec<u8>>>,
    spares: mpsc::Receiver<Vec<u8>>,
}

impl Producer {
    /// Reads `reader` to its end in chunks. Stops early, quietly, when the consumer has gone
    /// (it failed and no longer wants data).
    pub(crate) fn run(self, reader: &mut dyn Read) {
        let mut size = FIRST_CHUNK;
        loop {
            let mut buf = self.spares.try_recv().unwrap_or_default();
            let item = match fill(reader, &mut buf, size) {
                Ok(0) => return,
                Ok(_) => Ok(buf),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if self.chunks.send(item).is_err() || failed {
                return;
            }
            size = (size * 2).min(CHUNK);
        }
    }
}

/// The uncompressed stream, hashed chunk by chunk, with the reading primitives the tar parser
/// needs.
pub(crate) struct LayerStream<'s> {
    source: &'s mut dyn ChunkSource,
    compression: Compression,
    chunk: Vec<u8>,
    pos: usize,
    digester: Digester,
    done: bool,
}

impl<'s> LayerStream<'s> {
    pub(crate) fn new(source: &'s mut dyn ChunkSource, compression: Compression) -> Self {
        LayerStream {
            source,
            compression,
            chunk: Vec::new(),
            pos: 0,
            digester: Digester::sha256(),
            done: false,
        }
    }

    fn decode_error(&self, e: io::Error) -> Error {
        Error::from(e).context(format!("decompressing {} layer", self.compression))
    }

    /// Makes sure unread bytes are buffered; false at the end of the stream.
    fn ensure(&mut self) -> Result<bool> {
        if self.pos < self.chunk.len() {
            return Ok(true);
        }
        if self.done {
            return Ok(false);
        }
        let spare = std::mem::take(&mut self.chunk);
        match self.source.next_chunk(Some(spare)) {
            Ok(Some(buf)) => {
                self.digester.update(&buf);
                self.chunk = buf;
                self.pos = 0;
                Ok(true)
            }
            Ok(None) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => Err(self.decode_error(e)),
        }
    }

    /// Offset in the uncompressed stream of the next unread byte.
    pub(crate) fn position(&self) -> u64 {
        self.digester.len() - (self.chunk.len() - self.pos) as u64
    }

    /// Reads up to `out.len()` bytes, fewer only at the end of the stream.
    pub(crate) fn read_full(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < out.len() && self.ensure()? {
            let avail = &self.chunk[self.pos..];
            let k = avail.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&avail[..k]);
            self.pos += k;
            n += k;
        }
        Ok(n)
    }

    /// Hands the next `len` bytes to `sink` in slices borrowed from the chunk buffer. Fails with
    /// `OutOfRange` if the stream ends first.
    pub(crate) fn feed(
        &mut self,
        mut len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while len > 0 {
            if !self.ensure()? {
                return Err(Error::out_of_range(format!(
                    "layer stream ended {len} bytes before the end of an entry"
                )));
            }
            let avail = self.chunk.len() - self.pos;
            let k = avail.min(usize::try_from(len).unwrap_or(usize::MAX));
            sink(&self.chunk[self.pos..self.pos + k])?;
            self.pos += k;
            len -= k as u64;
        }
        Ok(())
    }

    /// Skips `len` bytes.
    pub(crate) fn skip(&mut self, len: u64) -> Result<()> {
        self.feed(len, &mut |_| Ok(()))
    }

    /// Reads the rest of the stream into the digester (data after the tar end marker still
    /// belongs to the DiffID) and returns the DiffID and the total uncompressed size.
    pub(crate) fn finish(mut self) -> Result<(Digest, u64)> {
        self.pos = self.chunk.len();
        while self.ensure()? {
            self.pos = self.chunk.len();
        }
        let size = self.digester.len();
        Ok((self.digester.finish(), size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decompressor thread starts with a small chunk and doubles it up to [`CHUNK`], and
    /// the chunks together are the whole stream in order.
    #[test]
    fn threaded_chunks_grow_from_small_to_full_size() {
        let data: Vec<u8> = (0..(5 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let (mut source, producer) = channel_pair();
        let mut reader = io::Cursor::new(data.clone());
        let sizes = std::thread::scope(|s| {
            s.spawn(move || producer.run(&mut reader));
            let mut sizes = Vec::new();
            let mut got = Vec::new();
            let mut spare = None;
            while let Some(chunk) = source.next_chunk(spare.take()).unwrap() {
                sizes.push(chunk.len());
                got.extend_from_slice(&chunk);
                spare = Some(chunk);
            }
            assert!(got == data, "the chunks are not the stream");
            sizes
        });
        let mut expected = Vec::new();
        let (mut left, mut size) = (data.len(), FIRST_CHUNK);
        while left > 0 {
            expected.push(size.min(left));
            left -= size.min(left);
            size = (size * 2).min(CHUNK);
        }
        assert_eq!(sizes, expected);
        assert_eq!(
            sizes[..5],
            [64 << 10, 128 << 10, 256 << 10, 512 << 10, CHUNK]
        );
    }
}
