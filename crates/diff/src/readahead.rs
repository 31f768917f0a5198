//! The layer blob read on a thread of its own, ahead of the decompressor.
//!
//! Copying a compressed layer out of the page cache costs about a fifth of what inflating
//! it costs (more when the blob has to come from the disk). On the decompressor's thread that
//! time adds to the one job of an apply that cannot be split up; on a thread of its own it
//! overlaps with inflating. The decompressor reads the filled buffers through `BufRead`, so
//! the bytes are not copied again on its side.

use std::io::{self, BufRead, Read};
use std::sync::mpsc;

use crate::stream::fill;

/// Bytes per read-ahead buffer.
const BUFFER: usize = 256 << 10;
/// Filled buffers waiting for the decompressor, at most.
const AHEAD: usize = 4;

/// The decompressor's side: a `BufRead` over the buffers the [`Feeder`] fills.
pub(crate) struct ReadAhead {
    buffers: mpsc::Receiver<io::Result<Vec<u8>>>,
    spares: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    state: State,
}

#[derive(PartialEq)]
enum State {
    Reading,
    Ended,
    Failed,
}

/// The reading thread's side.
pub(crate) struct Feeder {
    buffers: mpsc::SyncSender<io::Result<Vec<u8>>>,
    spares: mpsc::Receiver<Vec<u8>>,
}

/// A connected pair: run [`Feeder::run`] on a thread of its own and read from the
/// [`ReadAhead`].
pub(crate) fn pair() -> (ReadAhead, Feeder) {
    let (tx, rx) = mpsc::sync_channel(AHEAD);
    let (spare_tx, spare_rx) = mpsc::channel();
    (
        ReadAhead {
            buffers: rx,
            spares: spare_tx,
            current: Vec::new(),
            pos: 0,
            state: State::Reading,
        },
        Feeder {
            buffers: tx,
            spares: spare_rx,
        },
    )
}

impl Feeder {
    /// Reads `reader` to its end, a buffer at a time. Stops early, quietly, when the
    /// [`ReadAhead`] is gone (the apply failed or finished without reading everything), so
    /// the thread never outlives its reader.
    pub(crate) fn run(self, reader: &mut dyn Read) {
        loop {
            let mut buf = self.spares.try_recv().unwrap_or_default();
            let item = match fill(reader, &mut buf, BUFFER) {
                Ok(0) => return,
                Ok(_) => Ok(buf),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if self.buffers.send(item).is_err() || failed {
                return;
            }
        }
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.current.len() {
            match self.state {
                State::Ended => return Ok(&[]),
                // An error is reported once by the feeder; a caller that reads on must not
                // see the end of a stream that was never read to its end.
                State::Failed => {
                    return Err(io::Error::other("reading the layer failed earlier"));
                }
                State::Reading => {}
            }
            match self.buffers.recv() {
                Ok(Ok(buf)) => {
                    let done = std::mem::replace(&mut self.current, buf);
                    if done.capacity() > 0 {
                        // The feeder may have finished; then the buffer is simply dropped.
                        let _ = self.spares.send(done);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.state = State::Failed;
                    return Err(e);
                }
                // The feeder hung up: the end of the blob.
                Err(mpsc::RecvError) => {
                    self.state = State::Ended;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.current.len());
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a feeder over `reader` and reads everything through the other side in pieces of
    /// `step` bytes.
    fn through(mut reader: impl Read + Send, step: usize) -> io::Result<Vec<u8>> {
        let (mut ahead, feeder) = pair();
        std::thread::scope(|s| {
            s.spawn(move || feeder.run(&mut reader));
            let mut out = Vec::new();
            let mut piece = vec![0u8; step];
            loop {
                let n = ahead.read(&mut piece)?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&piece[..n]);
            }
        })
    }

    #[test]
    fn hands_over_the_whole_stream_in_order() {
        let data: Vec<u8> = (0..(3 * BUFFER + 777)).map(|i| (i % 253) as u8).collect();
        for step in [1, 4096, BUFFER, 5 * BUFFER] {
            assert!(through(&data[..], step).unwrap() == data, "step {step}");
        }
        assert!(through(&b""[..], 10).unwrap().is_empty());
    }

    #[test]
    fn a_read_error_is_reported_and_not_turned_into_an_end() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let (mut ahead, feeder) = pair();
        std::thread::scope(|s| {
            s.spawn(move || feeder.run(&mut Failing(BUFFER + 10)));
            let mut sink = Vec::new();
            let err = ahead.read_to_end(&mut sink).unwrap_err();
            assert!(err.to_string().contains("disk on fire"), "{err}");
            let again = ahead.read(&mut [0u8; 16]).unwrap_err();
            assert!(again.to_string().contains("failed earlier"), "{again}");
        });
    }

    #[test]
    fn a_reader_that_stops_early_lets_the_feeder_finish() {
        // An endless source: the scope can only end if dropping the ReadAhead stops the feeder.
        let endless = io::repeat(1);
        let (mut ahead, feeder) = pair();
        std::thread::scope(|s| {
            s.spawn(move || feeder.run(&mut { endless }));
            let mut first = [0u8; 100];
            ahead.read_exact(&mut first).unwrap();
            drop(ahead);
        });
    }
}
