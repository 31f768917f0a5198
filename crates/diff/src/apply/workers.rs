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
//! The applier waits for all handed-over files ([`Pool::wait`]) before anything that could
//! observe or change such an inode by name (a hard link to it) and before it returns, so a
//! successful apply has every file complete and closed, and a failure on a worker fails the
//! apply.

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
/// Files handed over but not finished yet, at most (bounds memory and open descriptors).
const QUEUE: usize = 64;

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
    jobs: Mutex<Receiver<Job>>,
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
    jobs: Option<SyncSender<Job>>,
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

/// Marks one job finished even if finishing it panicked, so [`Pool::wait`] cannot hang.
struct Done<'a> {
    shared: &'a Shared,
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
        state.pending -= 1;
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

fn work(shared: Arc<Shared>) {
    loop {
        let job = {
            let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.recv() {
                Ok(job) => job,
                // The applier is done and hung up.
                Err(_) => return,
            }
        };
        let mut done = Done {
            shared: &shared,
            result: None,
        };
        let failed = shared.state().error.is_some();
        let name = job.name.clone();
        done.result = Some(if failed {
            Ok(())
        } else {
            finish(job).map_err(|e| e.context(format!("layer entry {name:?}")))
        });
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

    /// Hands `job` to a worker; blocks while the queue is full.
    pub(super) fn submit(&self, job: Job) -> Result<()> {
        self.shared.state().pending += 1;
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            // All workers are gone (only after a panic): the job was not taken.
            let mut state = self.shared.state();
            state.pending -= 1;
            return Err(Error::unknown("layer apply worker threads are gone"));
        }
        Ok(())
    }

    /// Waits until every submitted file is finished; returns the first worker error.
    pub(super) fn wait(&self) -> Result<()> {
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
        // Hanging up ends the workers once the queue is empty.
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
