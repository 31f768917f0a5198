//! The layers eager unpack jobs have promised but not yet committed, and waiting for them.
//!
//! A job registers every ChainID it is going to commit before the RPC that started it returns,
//! so a client that asks for one of them afterwards (Snapshots.Stat, or Prepare of an
//! `extract-… <chainID>` key) can wait for the job instead of unpacking the layer a second
//! time. Each ChainID is released as soon as it is committed; whatever is still held when the
//! job ends, by success, error, early return or panic, is released by the [`Registration`]'s
//! drop, so no waiter can be left behind by a job that is gone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One promised snapshot: namespace, snapshotter, ChainID.
type Key = (String, String, String);

/// The promised snapshots of every running job.
#[derive(Debug, Default)]
pub struct Pending {
    /// The registrations holding each key (two images sharing a base layer may both promise
    /// it), by id: a registration lets go of its own hold only, never of a later promise.
    held: Mutex<HashMap<Key, HashSet<u64>>>,
    next_id: AtomicU64,
    released: Condvar,
    /// Set at shutdown: waiters stop waiting, so draining requests does not wait for a layer.
    stopping: AtomicBool,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, HashSet<u64>>> {
        // The map stays consistent whatever a panicking holder was doing: every change is a
        // single insert or removal.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a job has promised `chain` in snapshotter `sn` of namespace `ns` and has
    /// neither committed it nor given up. Cheap: one uncontended lock.
    pub fn is_pending(&self, ns: &str, sn: &str, chain: &str) -> bool {
        let held = self.lock();
        !held.is_empty() && held.contains_key(&(ns.to_string(), sn.to_string(), chain.to_string()))
    }

    /// Blocks until `chain` is no longer pending or `limit` has passed; true when it was
    /// released in time. Call on a blocking thread.
    pub fn wait(&self, ns: &str, sn: &str, chain: &str, limit: Duration) -> bool {
        let key = (ns.to_string(), sn.to_string(), chain.to_string());
        let deadline = Instant::now() + limit;
        let mut held = self.lock();
        while held.contains_key(&key) && !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            held = match self.released.wait_timeout(held, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        !held.contains_key(&key)
    }

    /// Promises `chains` of snapshotter `sn` in namespace `ns` until each is released through
    /// the returned registration or the registration is dropped.
    pub fn register(self: &Arc<Self>, ns: &str, sn: &str, chains: &[String]) -> Registration {
        let keys: Vec<Key> = chains
            .iter()
            .map(|c| (ns.to_string(), sn.to_string(), c.clone()))
            .collect();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut held = self.lock();
        for k in &keys {
            held.entry(k.clone()).or_default().insert(id);
        }
        Registration {
            id,
            pending: self.clone(),
            keys: Mutex::new(keys),
        }
    }

    /// Wakes every waiter and makes later waits return at once: the daemon is stopping.
    pub fn stop(&self) {
        // Under the lock, so a waiter between its check and its wait cannot miss the wake-up.
        let held = self.lock();
        self.stopping.store(true, Ordering::Release);
        drop(held);
        self.released.notify_all();
    }

    /// `chain` is committed: nobody needs to wait for it any more, whichever jobs promised it
    /// (two images sharing a base both do; the one that did not commit it would otherwise keep
    /// clients waiting until it finds the snapshot there).
    fn settle(&self, key: Key) {
        let removed = self.lock().remove(&key).is_some();
        if removed {
            self.released.notify_all();
        }
    }

    fn release(&self, id: u64, keys: impl IntoIterator<Item = Key>) {
        let mut held = self.lock();
        let mut any = false;
        for k in keys {
            if let Some(holders) = held.get_mut(&k) {
                holders.remove(&id);
                if holders.is_empty() {
                    held.remove(&k);
                }
                any = true;
            }
        }
        drop(held);
        if any {
            self.released.notify_all();
        }
    }
}

/// The snapshots one job promised and has not released yet; dropping it releases them all.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    pending: Arc<Pending>,
    keys: Mutex<Vec<Key>>,
}

impl Registration {
    /// Lets go of this registration's hold on `chain`; a ChainID it does not hold is ignored.
    pub fn release(&self, chain: &str) {
        if let Some(k) = self.take(chain) {
            self.pending.release(self.id, [k]);
        }
    }

    /// `chain` is committed (by this job or another): released for every job that promised it.
    pub fn settle(&self, chain: &str) {
        if let Some(k) = self.take(chain) {
            self.pending.settle(k);
        }
    }

    fn take(&self, chain: &str) -> Option<Key> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let i = keys.iter().position(|(_, _, c)| c == chain)?;
        Some(keys.swap_remove(i))
    }

    /// Releases everything still held: the job can no longer keep its promises (its lease is
    /// gone), so clients should not wait for it.
    pub fn release_all(&self) {
        let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(|p| p.into_inner()));
        self.pending.release(self.id, keys);
    }

    /// True while this registration still holds `chain`.
    pub fn holds(&self, chain: &str) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().any(|(_, _, c)| c == chain)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let keys = std::mem::take(self.keys.get_mut().unwrap_or_else(|p| p.into_inner()));
        self.pending.release(self.id, keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn released_one_by_one_and_all_on_drop() {
        let p = Arc::new(Pending::default());
        let r = p.register("ns", "overlayfs", &chains(&["a", "b", "c"]));
        assert!(p.is_pending("ns", "overlayfs", "a"));
        assert!(!p.is_pending("ns", "native", "a"));
        assert!(!p.is_pending("other", "overlayfs", "a"));
        r.release("a");
        r.release("zzz");
        assert!(!p.is_pending("ns", "overlayfs", "a"));
        assert!(p.is_pending("ns", "overlayfs", "b") && r.holds("b") && !r.holds("a"));
        drop(r);
        assert!(!p.is_pending("ns", "overlayfs", "b"));
        assert!(!p.is_pending("ns", "overlayfs", "c"));
        assert!(p.lock().is_empty());
    }

    #[test]
    fn a_shared_layer_stays_pending_until_both_jobs_let_go() {
        let p = Arc::new(Pending::default());
        let a = p.register("ns", "native", &chains(&["base", "a"]));
        let b = p.register("ns", "native", &chains(&["base", "b"]));
        a.release("base");
        assert!(p.is_pending("ns", "native", "base"));
        drop(b);
        assert!(!p.is_pending("ns", "native", "base"));
        assert!(p.is_pending("ns", "native", "a"));
        drop(a);
        assert!(p.lock().is_empty());
    }

    #[test]
    fn a_committed_layer_is_settled_for_every_job_that_promised_it() {
        let p = Arc::new(Pending::default());
        let a = p.register("ns", "native", &chains(&["base", "a"]));
        let b = p.register("ns", "native", &chains(&["base", "b"]));
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait("ns", "native", "base", Duration::from_secs(600)))
        };
        a.settle("base");
        assert!(!p.is_pending("ns", "native", "base"));
        assert!(waiter.join().unwrap());
        // The other job finding it committed later changes nothing, nor does a new promise
        // of the same layer lose its count to the old one.
        let c = p.register("ns", "native", &chains(&["base"]));
        b.release("base");
        assert!(p.is_pending("ns", "native", "base"));
        drop(c);
        assert!(!p.is_pending("ns", "native", "base"));
        b.release_all();
        assert!(!p.is_pending("ns", "native", "b") && !b.holds("b"));
        assert!(p.is_pending("ns", "native", "a"));
        drop((a, b));
        assert!(p.lock().is_empty());
    }

    #[test]
    fn stopping_wakes_waiters_and_ends_later_waits() {
        let p = Arc::new(Pending::default());
        let r = p.register("ns", "overlayfs", &chains(&["x"]));
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait("ns", "overlayfs", "x", Duration::from_secs(600)))
        };
        p.stop();
        // Still held: the waiter returns without the layer.
        assert!(!waiter.join().unwrap());
        assert!(!p.wait("ns", "overlayfs", "x", Duration::from_secs(600)));
        drop(r);
    }

    #[test]
    fn waiters_wake_on_release_and_on_a_panicking_job() {
        let p = Arc::new(Pending::default());
        // Nothing pending: no wait at all.
        assert!(p.wait("ns", "overlayfs", "x", Duration::ZERO));
        let r = p.register("ns", "overlayfs", &chains(&["x", "y"]));
        // A bounded wait gives up while the job holds the key.
        assert!(!p.wait("ns", "overlayfs", "x", Duration::from_millis(1)));
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait("ns", "overlayfs", "x", Duration::from_secs(600)))
        };
        r.release("x");
        assert!(waiter.join().unwrap());

        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait("ns", "overlayfs", "y", Duration::from_secs(600)))
        };
        let job = std::thread::spawn(move || {
            let _r = r;
            panic!("job died");
        });
        assert!(job.join().is_err());
        assert!(waiter.join().unwrap());
        assert!(p.lock().is_empty());
    }
}
