//! The layers eager unpack jobs have promised but not yet committed, and waiting for them.
//!
//! A job registers every ChainID it is going to commit before the RPC that started it returns,
//! so a client that asks for one of them afterwards (Snapshots.Stat, or Prepare of an
//! `extract-… <chainID>` key) can wait for the job instead of unpacking the layer a second
//! time. Each ChainID is released as soon as it is committed; whatever is still held when the
//! job ends, by success, error, early return or panic, is released by the [`Registration`]'s
//! drop, so no waiter can be left behind by a job that is gone.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One promised snapshot: namespace, snapshotter, ChainID.
type Key = (String, String, String);

/// The promised snapshots of every running job.
#[derive(Debug, Default)]
pub struct Pending {
    /// How many jobs hold each key (two images sharing a base layer may both promise it).
    held: Mutex<HashMap<Key, usize>>,
    released: Condvar,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, usize>> {
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
        while held.contains_key(&key) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            held = match self.released.wait_timeout(held, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    /// Promises `chains` of snapshotter `sn` in namespace `ns` until each is released through
    /// the returned registration or the registration is dropped.
    pub fn register(self: &Arc<Self>, ns: &str, sn: &str, chains: &[String]) -> Registration {
        let keys: Vec<Key> = chains
            .iter()
            .map(|c| (ns.to_string(), sn.to_string(), c.clone()))
            .collect();
        let mut held = self.lock();
        for k in &keys {
            *held.entry(k.clone()).or_insert(0) += 1;
        }
        Registration {
            pending: self.clone(),
            keys: Mutex::new(keys),
        }
    }

    fn release(&self, keys: impl IntoIterator<Item = Key>) {
        let mut held = self.lock();
        let mut any = false;
        for k in keys {
            if let Some(n) = held.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
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
    pending: Arc<Pending>,
    keys: Mutex<Vec<Key>>,
}

impl Registration {
    /// Releases `chain` (committed, by this job or another); a ChainID this registration does
    /// not hold is ignored.
    pub fn release(&self, chain: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = keys.iter().position(|(_, _, c)| c == chain) else {
            return;
        };
        let k = keys.swap_remove(i);
        drop(keys);
        self.pending.release([k]);
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
        self.pending.release(keys);
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
