//! Finishing small regular files on worker threads.
//!
//! Applying a layer of many small files is bound by system calls, not by data. The applier
//! keeps every step that touches names on its own thread, in archive order (resolving
//! parents, creating the file with `O_EXCL`, replacing, whiteouts, links, directories), so
//! the outcome does not depend on timing. What it hands over is an already-open, freshly
//! created file together with its contents and final metadata: writing the data, `fchown`,
//! `fchmod`, `futimens` and `close` act on that inode only, through its descriptor, and run
//! here while the applier creates the next files.
//!
//! Files are handed over in batches ([`BATCH_FILES`] files or [`BATCH_BYTES`] of data,
//! whichever comes first): a worker that keeps up with the applier would otherwise sleep and be
//! woken once per file, two futex calls and a context switch each, a measurable share of a
//! small-file layer on two cores.
//!
//! The applier waits for all handed-over files ([`Pool::wait`], which also sends the open
//! batch) before anything that could observe or change such an inode by name (a hard link to
//! it) and before it returns, so a successful apply has every file complete and closed, and a
//! failure on a worker fails the apply.
//!
//! Memory stays bounded: at most [`QUEUE`] batches wait in the channel, each worker holds one,
//! and the applier fills one, each under `BATCH_BYTES + MAX_SIZE` (768 KiB) of data: 4.5 MiB
//! with one worker, 6.75 MiB with the most (four). Open descriptors are bounded the same way,
//! by `BATCH_FILES` per batch.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use stowage_core_types::error::{Error, Result};

use crate::sys::{self, Time};

/// Files larger than this are written by the applier itself, straight from the stream.
pub(super) const MAX_SIZE: u64 = 256 << 10;
/// A batch is sent once it holds this many files...
const BATCH_FILES: usize = 32;
/// ... or this much file data.
const BATCH_BYTES: usize = 512 << 10;
/// Batches sent but not taken by a worker yet, at most (bounds memory and open descriptors).
const QUEUE: usize = 4;

/// A created file and what remains to do to it.
pub(super) struct Job {
    pub(super) file: File,
    pub(super) data: Vec<u8>,
    /// `fchown` to this owner first (it clears setuid/setgid, so it precedes the mode).
    pub(super) owner: Option<(u32, u32)>,
    /// `fchmod` to these permission bits.
    pub(super) mode: Option<u32>,
    pub(super) atime: Time,
    pub(super) mtime: Time,
    /// The entry's name, for errors.
    pub(super) name: String,
}

#[derive(Default)]
struct State {
    /// Jobs submitted and not finished.
    pending: usize,
    /// The first failure; later jobs are dropped unfinished once there is one.
    error: Option<Error>,
}

struct Shared {
    jobs: Mutex<Receiver<Vec<Job>>>,
    state: Mutex<State>,
    idle: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a worker panicked; the counters stay meaningful because
        // every update is a single assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Worker threads finishing files.
pub(super) struct Pool {
    jobs: Option<SyncSender<Vec<Job>>>,
    /// Files not sent yet.
    batch: Vec<Job>,
    /// Data bytes in `batch`.
    batch_bytes: usize,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// Marks a batch finished even if finishing it panicked, so [`Pool::wait`] cannot hang.
struct Done<'a> {
    shared: &'a Shared,
    /// Files in the batch.
    files: usize,
    result: Option<Result<()>>,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(Error::unknown("layer apply worker thread panicked")));
        if let Err(e) = result {
            state.error.get_or_insert(e);
        }
        state.pending -= self.files;
        if state.pending == 0 {
            self.shared.idle.notify_all();
        }
    }
}

fn finish(mut job: Job) -> Result<()> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| Error::io(what, e)
    };
    job.file
        .write_all(&job.data)
        .map_err(io("writing file data"))?;
    let fd = job.file.as_fd();
    if let Some((uid, gid)) = job.owner {
        sys::fchown(fd, uid, gid).map_err(io(&format!("changing owner to {uid}:{gid}")))?;
    }
    if let Some(mode) = job.mode {
        sys::fchmod(fd, mode).map_err(io(&format!("changing mode to {mode:o}")))?;
    }
    sys::futimens(fd, job.atime, job.mtime).map_err(io("setting times"))?;
    // Close explicitly so that an error from it is reported (the data may be lost).
    let raw = std::os::fd::IntoRawFd::into_raw_fd(job.file);
    // SAFETY: `raw` was just released by the `File`, so nothing else owns or closes it.
    if unsafe { libc::close(raw) } != 0 {
        return Err(Error::io("closing file", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Finishes the files of a batch in order; after the first failure (here or on another
/// worker) the rest are only closed.
fn finish_batch(shared: &Shared, batch: Vec<Job>) -> Result<()> {
    for job in batch {
        if shared.state().error.is_some() {
            return Ok(());
        }
        let name = job.name.clone();
        finish(job).map_err(|e| e.context(format!("layer entry {name:?}")))?;
    }
    Ok(())
}

fn work(shared: Arc<Shared>) {
    loop {
        let batch = {
            let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.recv() {
                Ok(batch) => batch,
                // The applier is done and hung up.
                Err(_) => return,
            }
        };
        let mut done = Done {
            shared: &shared,
            files: batch.len(),
            result: None,
        };
        done.result = Some(finish_batch(&shared, batch));
    }
}

impl Pool {
    /// Starts `threads` workers; `None` if the system refuses to start any (the applier then
    /// does all the work itself).
    pub(super) fn start(threads: usize) -> Option<Pool> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            jobs: Mutex::new(rx),
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..threads {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("layer-apply-{i}"))
                .spawn(move || work(s))
            {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        if handles.is_empty() {
            return None;
        }
        Some(Pool {
            jobs: Some(tx),
            batch: Vec::with_capacity(BATCH_FILES),
            batch_bytes: 0,
            shared,
            threads: handles,
        })
    }

    /// The first worker error so far, if any, so the apply can stop early.
    pub(super) fn check(&self) -> Result<()> {
        match self.shared.state().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands `job` to the workers: it joins the open batch, which is sent once full; sending
    /// blocks while the queue is full.
    pub(super) fn submit(&mut self, job: Job) -> Result<()> {
        self.batch_bytes += job.data.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Sends the open batch, if any.
    fn send(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        let files = batch.len();
        self.batch_bytes = 0;
        self.shared.state().pending += files;
        let sent = self.jobs.as_ref().map(|tx| tx.send(batch));
        if !matches!(sent, Some(Ok(()))) {
            // All workers are gone (only after a panic): the batch was not taken.
            let mut state = self.shared.state();
            state.pending -= files;
            return Err(Error::unknown("layer apply worker threads are gone"));
        }
        Ok(())
    }

    /// Sends the open batch and waits until every submitted file is finished; returns the
    /// first worker error.
    pub(super) fn wait(&mut self) -> Result<()> {
        self.send()?;
        let mut state = self.shared.state();
        while state.pending > 0 {
            state = self
                .shared
                .idle
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        match state.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // An apply that failed on a later entry still leaves the files before it complete, as
        // without batching. Hanging up ends the workers once the queue is empty.
        let _ = self.send();
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
