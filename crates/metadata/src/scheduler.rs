//! The garbage collection scheduler, with containerd 1.6's knobs and policy
//! (`io.containerd.gc.v1.scheduler`): collect when a deletion, enough mutations or an explicit
//! request asks for it, but spend at most `pause_threshold` of the time collecting.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stowage_core_types::{Error, Result};

use crate::db::Db;
use crate::gc::GcStats;

/// containerd's scheduler configuration (`[plugins."io.containerd.gc.v1.scheduler"]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcConfig {
    /// Largest share of time spent collecting (0 < p ≤ 0.5); sets the gap between
    /// collections to `avg / p - avg`. Default 0.02.
    pub pause_threshold: f64,
    /// Deletions that force a collection sooner; 0 means any deletion is collected at the next
    /// scheduled time. Default 0.
    pub deletion_threshold: usize,
    /// Mutations that make a collection worth running. Default 100.
    pub mutation_threshold: usize,
    /// Delay between a trigger and the collection it causes. Default 0.
    pub schedule_delay: Duration,
    /// Delay of the first collection after start. Default 100 ms. That collection also
    /// sweeps every backend for objects no record names (a crash between commits leaves
    /// them), so with 0 it runs at once instead of being skipped as containerd skips it.
    pub startup_delay: Duration,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay: Duration::from_millis(100),
        }
    }
}

/// The longest gap between collections the pause threshold may ask for.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

type Waiter = mpsc::Sender<std::result::Result<GcStats, Error>>;

#[derive(Default)]
struct State {
    triggered: bool,
    deletions: usize,
    mutations: usize,
    next: Option<Instant>,
    last: Option<Instant>,
    waiters: Vec<Waiter>,
    stop: bool,
    collections: u64,
}

/// What the scheduler thread and the database's callbacks share.
pub(crate) struct Shared {
    cfg: GcConfig,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one event: a committed write (`mutation`, with `dirty` when deletions wait) or
    /// an explicit request.
    fn event(&self, mutation: bool, dirty: bool) {
        let mut st = self.lock();
        if dirty {
            st.deletions += 1;
        }
        if mutation {
            st.mutations += 1;
        } else {
            st.triggered = true;
        }
        let c = &self.cfg;
        let due = st.triggered
            || (c.deletion_threshold > 0 && st.deletions >= c.deletion_threshold)
            || (st.next.is_none()
                && ((c.deletion_threshold == 0 && st.deletions > 0)
                    || (c.mutation_threshold > 0 && st.mutations >= c.mutation_threshold)));
        if due {
            let when = Instant::now() + c.schedule_delay;
            if st.next.is_none_or(|n| n > when) {
                st.next = Some(when);
            }
        }
        drop(st);
        self.cv.notify_all();
    }
}

/// A running scheduler. Stopped (and its thread joined) by [`Scheduler::stop`] or on drop.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.cfg)
            .finish()
    }
}

impl Scheduler {
    /// Starts collecting `db` in the background with `cfg`.
    pub fn start(db: &Db, cfg: GcConfig) -> Result<Scheduler> {
        if !(cfg.pause_threshold >= 0.0 && cfg.pause_threshold <= 0.5) {
            return Err(Error::invalid_argument(format!(
                "gc pause_threshold {} must be between 0 and 0.5",
                cfg.pause_threshold
            )));
        }
        for (name, d) in [
            ("schedule_delay", cfg.schedule_delay),
            ("startup_delay", cfg.startup_delay),
        ] {
            if d > MAX_INTERVAL {
                return Err(Error::invalid_argument(format!(
                    "gc {name} {d:?} is longer than the {MAX_INTERVAL:?} allowed"
                )));
            }
        }
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                next: (!cfg.startup_delay.is_zero() || db.backends_dirty())
                    .then(|| Instant::now() + cfg.startup_delay),
                ..State::default()
            }),
            cv: Condvar::new(),
        });
        let weak = Arc::downgrade(&shared);
        db.on_mutation(Box::new(move |dirty| {
            if let Some(s) = weak.upgrade() {
                s.event(true, dirty);
            }
        }));
        *db.inner.scheduler.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::downgrade(&shared));
        let db = db.clone();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stowage-gc".into())
            .spawn(move || run(db, s2))
            .map_err(|e| Error::io("starting the gc scheduler thread", e))?;
        Ok(Scheduler {
            shared,
            thread: Some(thread),
        })
    }

    /// Requests a collection now and waits for it (containerd's `ScheduleAndWait`).
    pub fn schedule_and_wait(&self) -> Result<GcStats> {
        schedule_and_wait(&self.shared)
    }

    /// Collections run so far.
    pub fn collections(&self) -> u64 {
        self.shared.lock().collections
    }

    /// Stops the scheduler thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

pub(crate) fn schedule_and_wait(shared: &Shared) -> Result<GcStats> {
    let (tx, rx) = mpsc::channel();
    {
        let mut st = shared.lock();
        if st.stop {
            return Err(Error::unavailable("gc scheduler is stopped"));
        }
        st.waiters.push(tx);
    }
    shared.event(false, false);
    rx.recv()
        .map_err(|_| Error::unavailable("gc scheduler stopped before collecting"))?
}

fn run(db: Db, shared: Arc<Shared>) {
    let cfg = shared.cfg;
    let mut interval = Duration::from_secs(1);
    let mut gc_time = Duration::ZERO;
    let mut collections: u32 = 0;
    let mut st = shared.lock();
    loop {
        if st.stop {
            for w in st.waiters.drain(..) {
                let _ = w.send(Err(Error::unavailable("gc scheduler stopped")));
            }
            return;
        }
        let Some(next) = st.next else {
            st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < next {
            st = shared
                .cv
                .wait_timeout(st, next - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        // Nothing worth collecting yet: look again after the interval.
        if !st.triggered
            && st.last.is_some()
            && st.deletions == 0
            && (cfg.mutation_threshold == 0 || st.mutations < cfg.mutation_threshold)
        {
            st.next = Some(now + interval);
            continue;
        }
        drop(st);
        let result = db.collect();
        st = shared.lock();
        let done = Instant::now();
        match result {
            Ok(stats) => {
                gc_time += stats.duration;
                collections += 1;
                st.collections += 1;
                st.triggered = false;
                st.deletions = 0;
                st.mutations = 0;
                if cfg.pause_threshold > 0.0 {
                    let avg = gc_time.as_secs_f64() / f64::from(collections);
                    // A tiny threshold would ask for an absurd gap; a day is plenty.
                    interval = Duration::try_from_secs_f64(avg / cfg.pause_threshold - avg)
                        .unwrap_or(MAX_INTERVAL)
                        .min(MAX_INTERVAL);
                }
                st.last = Some(done);
                st.next = Some(done + interval);
                for w in st.waiters.drain(..) {
                    let _ = w.send(Ok(stats.clone()));
                }
            }
            Err(e) => {
                // Back off past the previous gap, as containerd does.
                let gap = st.last.map(|l| next.saturating_duration_since(l));
                let gap = gap.unwrap_or(interval).min(MAX_INTERVAL);
                st.next = Some(done + gap + Duration::from_secs(1));
                st.last = Some(done);
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(Error::new(e.kind(), e.message().to_string())));
                }
            }
        }
    }
}

impl Db {
    /// Collects garbage now and waits: through the running [`Scheduler`] if one was started
    /// for this database (so its accounting stays right), otherwise directly.
    pub fn collect_sync(&self) -> Result<GcStats> {
        let shared = self
            .inner
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        match shared {
            Some(s) => schedule_and_wait(&s),
            None => self.collect(),
        }
    }
}
