//! Hashing that keeps up with the disk: large ingests hash on a helper thread while the
//! writer's thread does the positional writes, so an ingest costs max(write, hash) rather
//! than their sum.
//!
//! Small ingests (manifests, configs) never leave the caller's thread: spawning costs more
//! than it saves below [`PIPE_THRESHOLD`].

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use stowage_core_types::digest::{Algorithm, Digest};
use stowage_core_types::error::{Error, Result};
use stowage_digest_identity::Digester;

/// Bytes hashed inline before a helper thread takes over.
const PIPE_THRESHOLD: u64 = 1 << 20;
/// Size of the buffers handed to the helper: large enough that handing one over (a channel
/// send and a wake-up) is noise next to hashing it, small because a pull writes every layer
/// at once and each writer holds [`MAX_BUFS`] of them.
const CHUNK: usize = 128 << 10;
/// Buffers per writer, the one being filled included: two let the writer fill one while the
/// helper hashes the other (SHA-256 keeps ahead of page-cache writes), so memory stays at
/// 256 KiB per concurrent ingest.
const MAX_BUFS: usize = 2;

enum Msg {
    Data(Vec<u8>),
    Snapshot(SyncSender<Digester>),
}

struct Pipe {
    tx: Option<SyncSender<Msg>>,
    free: Receiver<Vec<u8>>,
    allocated: usize,
    pending: Vec<u8>,
    handle: Option<JoinHandle<()>>,
}

enum State {
    Inline(Digester),
    Piped(Pipe),
}

/// A digest computed over a stream of writes, inline or on a helper thread.
pub(crate) struct StreamHasher {
    state: State,
    algorithm: Algorithm,
    len: u64,
}

impl std::fmt::Debug for StreamHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHasher")
            .field("algorithm", &self.algorithm)
            .field("len", &self.len)
            .field("piped", &matches!(self.state, State::Piped(_)))
            .finish()
    }
}

fn stopped() -> Error {
    Error::unknown("hashing thread stopped unexpectedly")
}

impl StreamHasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        StreamHasher {
            state: State::Inline(Digester::new(algorithm)),
            algorithm,
            len: 0,
        }
    }

    /// Starts over with `digester` (already fed with whatever the ingest holds).
    pub(crate) fn replace(&mut self, digester: Digester) {
        self.len = digester.len();
        self.state = State::Inline(digester);
    }

    /// A fresh digester of this hasher's algorithm, for re-hashing from disk.
    pub(crate) fn fresh(&self) -> Digester {
        Digester::new(self.algorithm)
    }

    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        if let State::Inline(d) = &mut self.state {
            if self.len <= PIPE_THRESHOLD {
                d.update(data);
                return Ok(());
            }
            let d = d.clone();
            match spawn_pipe(d) {
                Some(p) => self.state = State::Piped(p),
                None => {
                    // No thread to be had: keep hashing inline.
                    if let State::Inline(d) = &mut self.state {
                        d.update(data);
                    }
                    return Ok(());
                }
            }
        }
        let State::Piped(p) = &mut self.state else {
            return Ok(());
        };
        let mut rest = data;
        while !rest.is_empty() {
            let room = CHUNK - p.pending.len();
            let n = room.min(rest.len());
            p.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if p.pending.len() == CHUNK {
                p.send_pending()?;
            }
        }
        Ok(())
    }

    /// The digest of everything so far.
    pub(crate) fn digest(&mut self) -> Result<Digest> {
        match &mut self.state {
            State::Inline(d) => Ok(d.digest()),
            State::Piped(p) => {
                if !p.pending.is_empty() {
                    p.send_pending()?;
                }
                let (reply_tx, reply_rx) = sync_channel(1);
                p.tx.as_ref()
                    .ok_or_else(stopped)?
                    .send(Msg::Snapshot(reply_tx))
                    .map_err(|_| stopped())?;
                let d = reply_rx.recv().map_err(|_| stopped())?;
                Ok(d.finish())
            }
        }
    }
}

fn spawn_pipe(mut digester: Digester) -> Option<Pipe> {
    let (tx, rx) = sync_channel::<Msg>(MAX_BUFS);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(MAX_BUFS);
    let handle = std::thread::Builder::new()
        .name("content-hash".into())
        .spawn(move || {
            while let Ok(msg) = rx.recv() {
                match msg {
                    Msg::Data(mut buf) => {
                        digester.update(&buf);
                        buf.clear();
                        // The writer may be gone; then the buffer is simply freed.
                        let _ = free_tx.try_send(buf);
                    }
                    Msg::Snapshot(reply) => {
                        let _ = reply.send(digester.clone());
                    }
                }
            }
        })
        .ok()?;
    Some(Pipe {
        tx: Some(tx),
        free: free_rx,
        allocated: 1,
        pending: Vec::with_capacity(CHUNK),
        handle: Some(handle),
    })
}

impl Pipe {
    fn send_pending(&mut self) -> Result<()> {
        let next = match self.free.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.allocated < MAX_BUFS => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            // All buffers are queued: wait for the helper to hand one back.
            Err(_) => self.free.recv().map_err(|_| stopped())?,
        };
        let full = std::mem::replace(&mut self.pending, next);
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(Msg::Data(full))
            .map_err(|_| stopped())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Closing the channel ends the helper's loop.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_digest_identity::digest_of;

    #[test]
    fn inline_and_piped_agree_with_one_shot() {
        let data: Vec<u8> = (0..(3u32 << 20) + 12345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for chunk in [1000usize, 1 << 20] {
            let mut h = StreamHasher::new(Algorithm::Sha256);
            let mut done = 0;
            let mut checks = 0;
            for c in data.chunks(chunk) {
                h.update(c).unwrap();
                let before = done;
                done += c.len();
                // Mid-stream digests are exact too: checked where the stream crosses a few
                // points (inline, just piped, deep in the pipe) to keep the test quick.
                if [300_000, (1 << 20) + 1, 2 << 20]
                    .iter()
                    .any(|&p| before < p && done >= p)
                {
                    assert_eq!(h.digest().unwrap(), digest_of(&data[..done]));
                    checks += 1;
                }
            }
            assert!(checks >= 2, "chunk {chunk}: {checks} mid-stream checks");
            assert!(matches!(h.state, State::Piped(_)), "large streams go piped");
            assert_eq!(h.digest().unwrap(), digest_of(&data), "chunk {chunk}");
            // Still usable after a digest.
            h.update(b"tail").unwrap();
            let mut all = data.clone();
            all.extend_from_slice(b"tail");
            assert_eq!(h.digest().unwrap(), digest_of(&all));
        }
    }

    #[test]
    fn small_streams_stay_inline_and_replace_resets() {
        let mut h = StreamHasher::new(Algorithm::Sha512);
        h.update(b"abc").unwrap();
        assert!(matches!(h.state, State::Inline(_)));
        assert_eq!(
            h.digest().unwrap(),
            stowage_digest_identity::digest_of_with(Algorithm::Sha512, b"abc")
        );
        h.update(&vec![1u8; 2 << 20]).unwrap();
        assert!(matches!(h.state, State::Piped(_)));
        let mut d = h.fresh();
        d.update(b"x");
        h.replace(d);
        assert!(matches!(h.state, State::Inline(_)));
        assert_eq!(
            h.digest().unwrap(),
            stowage_digest_identity::digest_of_with(Algorithm::Sha512, b"x")
        );
    }
}
