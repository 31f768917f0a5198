//! Eager unpack: stowaged unpacks an image itself as soon as a client holding a lease creates
//! it (or points an existing name at a new target), the way containerd 2.0's transfer service
//! and the CRI plugin unpack inside the daemon.
//!
//! Why: `ctr` 1.6 fetches, creates the image record, waits for its progress ticker and only
//! then unpacks, one layer after the other, each step a round trip. The daemon is idle in
//! between. Started at Images.Create, the unpack is done (or under way) when the client gets to
//! it; the client's unpack Stats each ChainID first and skips the layers it finds.
//!
//! How:
//! - Trigger: Images.Create, or an Images.Update that sets the target, carrying a
//!   `containerd-lease` header. Without a lease nothing happens (`ctr images tag`, bulk
//!   record creation).
//! - Snapshotter: the one this namespace last unpacked into (a Snapshots.Prepare of an
//!   `extract-…` key since the daemon started), else the configured default.
//! - Plan, before the RPC returns: the manifest for the host's default platform, its config's
//!   DiffIDs and ChainIDs; nothing to do when the top ChainID exists. Otherwise every ChainID
//!   not yet committed is registered as pending ([`pending`]), and one job per (namespace,
//!   snapshotter, top ChainID) runs on a thread of its own.
//! - The job: `stowage_images::unpack` through the namespace's metadata-wrapped snapshotter and
//!   content store under the client's lease, with the local applier, as the Snapshots and Diff
//!   services would do it; snapshot events are published as they would be; each committed
//!   layer gets `containerd.io/uncompressed` on its blob and releases its waiters. The config's
//!   `containerd.io/gc.ref.snapshot.<name>` label is left to the client: keeping the unpack is
//!   its decision, and without that label the snapshots live only as long as the lease.
//! - Waiting: a Snapshots.Stat of a pending ChainID, or a Prepare of an `extract-… <chainID>`
//!   key for one, waits (on a blocking thread, at most [`WAIT_LIMIT`]) until the job has
//!   committed it or given up, then proceeds as usual.
//! - A wrong guess: when a client of the namespace prepares an `extract-…` snapshot for one
//!   of a job's layers in another snapshotter, it wants the image there. The job is told to
//!   stop before its next layer, and the snapshots it committed are removed again (top
//!   first) unless the image config already names them in a `gc.ref.snapshot` label, so
//!   they are not left for a later client to find while the collector is about to take them.
//!   Never once a client has asked for one of them in that snapshotter (a Stat or an
//!   extraction Prepare: a second pull of the same image relies on them); a request that
//!   comes while they are being removed waits until they are gone.
//! - At most [`MAX_JOBS`] jobs run at once; an image created beyond that is left to the
//!   client. A deleted lease lets go of its jobs' promises at once (they can commit nothing
//!   more), and so does shutdown.
//! - Failure (missing blob, lease deleted, bad layer, shutdown between layers): the unpacker
//!   removes its active snapshot, the job logs and ends; what it committed belongs to the
//!   lease and goes with it.
//!
//! The cost: the work is done whether or not the client wanted an unpack (`ctr images import
//! --no-unpack` and `ctr content fetch`-then-create look the same to the daemon), and into the
//! namespace's last snapshotter even when the client is about to ask for another one. Such an
//! unpack is disk and CPU spent for nothing, and its snapshots stay until the client's lease
//! ends (its expiry, 24 h for ctr, if the client dies). `enabled = false` turns it off.
//!
//! `ctr images pull` holds one lease from fetch to unpack, so it gets the whole benefit.
//! `ctr images import` creates the image under a lease it deletes before unpacking under a
//! new one: there the job's promises go with that lease, the job fails at its next Prepare or
//! Commit, and ctr unpacks as before. A
//! layer the job managed to commit before that deletion is found (and skipped) by ctr, with
//! nothing but ctr's next Prepare on top of it keeping it from the collector: a collection
//! in that window makes ctr's Prepare fail, the race containerd has between any two unpacks
//! sharing an unreferenced layer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use stowage_core_types::content::Provider;
use stowage_core_types::platform::Matcher;
use stowage_core_types::snapshot::Snapshotter;
use stowage_core_types::{Descriptor, Error, ErrorKind, Result};
use stowage_diff::LocalDiffer;
use stowage_digest_identity::chain_ids;
use stowage_images::unpack::{unpack, UnpackOptions, UNPACK_KEY_PREFIX};
use stowage_images::{read_config, resolve_manifest};

use crate::config::EagerConfig;
use crate::server::State;

mod job;
pub mod pending;

use job::{JobSnapshotter, Layer};
use pending::Pending;

/// The longest a client request waits for a job's layer: a job stuck on a dead disk must not
/// hang its clients for ever.
pub const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// One job at a time per namespace, snapshotter and top ChainID.
type JobKey = (String, String, String);

/// Jobs remembered for taking a wrong guess back: beyond this many, the oldest are forgotten
/// (and their snapshots left to the collector).
const GUESSES_KEPT: usize = 64;

/// What one job unpacked, or is unpacking, in the snapshotter it guessed.
#[derive(Debug)]
pub struct Guess {
    ns: String,
    snapshotter: String,
    lease: String,
    config: stowage_core_types::Digest,
    chains: Vec<String>,
    /// ChainIDs this job committed, in order.
    committed: Mutex<Vec<String>>,
    /// The job's promises, while it runs: let go of when its lease is deleted.
    registration: std::sync::Weak<pending::Registration>,
    /// Decided under one lock, so that exactly one of the job and the client's request takes
    /// the snapshots back, and never once another client has seen them.
    state: Mutex<GuessState>,
}

#[derive(Debug, Default)]
struct GuessState {
    running: bool,
    /// A client unpacks this image into another snapshotter.
    unwanted: bool,
    /// The job's lease was deleted: it can commit nothing more.
    orphaned: bool,
    /// A client asked for one of its snapshots in its snapshotter (a Stat or an extraction
    /// Prepare): someone may build on them, so they are never taken back, only left to the
    /// lease.
    observed: bool,
    /// Being taken back: its snapshots are pending (clients wait) until they are gone.
    withdrawing: bool,
}

impl Guess {
    fn state(&self) -> std::sync::MutexGuard<'_, GuessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the job should not go on, if it should not.
    fn stop_reason(&self) -> Option<&'static str> {
        let st = self.state();
        if st.orphaned {
            Some("the client's lease was deleted")
        } else if st.unwanted {
            Some("the client unpacks into another snapshotter")
        } else {
            None
        }
    }
}

/// The most jobs that run at once: each is an applier with threads of its own, and an import
/// of many images under one lease must not start one per image. A create beyond it is left to
/// the client's own unpack (nothing is promised, so nobody waits).
const MAX_JOBS: usize = 2;

/// Eager unpack's shared state: configuration, each namespace's last snapshotter, the running
/// jobs and their pending layers.
#[derive(Debug)]
pub struct Eager {
    config: EagerConfig,
    /// Namespace → snapshotter of its last client unpack. In memory only.
    last: Mutex<HashMap<String, String>>,
    pending: Arc<Pending>,
    jobs: Arc<Jobs>,
    stop: AtomicBool,
    guesses: Mutex<std::collections::VecDeque<Arc<Guess>>>,
}

#[derive(Debug, Default)]
struct Jobs {
    running: Mutex<HashSet<JobKey>>,
    ended: Condvar,
}

/// A running job's place in [`Jobs`], given up on drop.
struct Running {
    jobs: Arc<Jobs>,
    key: JobKey,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.jobs.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
        drop(running);
        self.jobs.ended.notify_all();
    }
}

impl Jobs {
    fn begin(self: &Arc<Self>, key: JobKey) -> Option<Running> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.len() >= MAX_JOBS || !running.insert(key.clone()) {
            return None;
        }
        Some(Running {
            jobs: self.clone(),
            key,
        })
    }
}

/// The unpack key shape `extract-<unique> <chainID>`: the ChainID, if `key` has it.
pub fn extract_chain(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(UNPACK_KEY_PREFIX)?.strip_prefix('-')?;
    let (_, chain) = rest.rsplit_once(' ')?;
    Some(chain).filter(|c| !c.is_empty())
}

impl Eager {
    /// Eager unpack with `config`, no job running.
    pub fn new(config: EagerConfig) -> Eager {
        Eager {
            config,
            last: Mutex::new(HashMap::new()),
            pending: Arc::new(Pending::default()),
            jobs: Arc::new(Jobs::default()),
            stop: AtomicBool::new(false),
            guesses: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EagerConfig {
        &self.config
    }

    /// The pending layers of running jobs.
    pub fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// Notes that a client of namespace `ns` unpacks into snapshotter `sn` (it prepared an
    /// `extract-…` snapshot there): the next eager unpack in `ns` goes there too.
    pub fn record_unpack(&self, ns: &str, sn: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(ns).map(String::as_str) != Some(sn) {
            last.insert(ns.to_string(), sn.to_string());
        }
    }

    /// The snapshotter an eager unpack in `ns` uses.
    pub fn snapshotter_for(&self, ns: &str) -> String {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(ns)
            .cloned()
            .unwrap_or_else(|| self.config.snapshotter.clone())
    }

    /// The jobs that unpacked `chain` of namespace `ns` into a snapshotter other than `sn`,
    /// taken out of the remembered ones.
    fn wrong_guesses(&self, ns: &str, sn: &str, chain: &str) -> Vec<Arc<Guess>> {
        let mut guesses = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        guesses.retain(|g| {
            let wrong = g.ns == ns && g.snapshotter != sn && g.chains.iter().any(|c| c == chain);
            if wrong {
                out.push(g.clone());
            }
            !wrong
        });
        out
    }

    fn remember(&self, g: Arc<Guess>) {
        let mut guesses = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        if guesses.len() >= GUESSES_KEPT {
            guesses.pop_front();
        }
        guesses.push_back(g);
    }

    /// Makes running jobs stop before their next layer, new ones not start, and requests
    /// waiting for a job's layer go on without it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.pending.stop();
    }

    /// A client asks for `chain` in snapshotter `sn` of namespace `ns` (Snapshots.Stat, or an
    /// extraction Prepare): the job that committed or promised it may no longer take it back.
    /// Called before the request waits for pending layers, so a withdrawal already under way
    /// (its layers pending) is waited for instead.
    pub fn observe(&self, ns: &str, sn: &str, chain: &str) {
        let guesses = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        for g in guesses.iter() {
            if g.ns == ns && g.snapshotter == sn && g.chains.iter().any(|c| c == chain) {
                let mut st = g.state();
                if !st.withdrawing {
                    st.observed = true;
                }
            }
        }
    }

    /// Lease `lease` of namespace `ns` was deleted: its running jobs can commit nothing more
    /// (the metadata store refuses a lease that is gone), so their promises are let go of at
    /// once, and clients unpack those layers themselves instead of waiting for a failure.
    /// `ctr images import` deletes its lease right after creating the images.
    pub fn lease_deleted(&self, ns: &str, lease: &str) {
        let guesses = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        for g in guesses.iter().filter(|g| g.ns == ns && g.lease == lease) {
            g.state().orphaned = true;
            // Gone with the job once it has ended.
            if let Some(r) = g.registration.upgrade() {
                r.release_all();
            }
        }
    }

    /// Waits until no job runs, at most `limit`; true when none does.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut running = self.jobs.running.lock().unwrap_or_else(|p| p.into_inner());
        while !running.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            running = match self.jobs.ended.wait_timeout(running, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// Called on a blocking thread after image `target` was written in namespace `ns` by a
/// request under `lease`: plans the unpack and, when there is something to do, registers its
/// layers as pending and starts the job. Never fails the request: a plan that cannot be made
/// (content missing, unknown platform, unloaded snapshotter) is logged and dropped.
pub fn start(state: &Arc<State>, ns: &str, lease: &str, target: &Descriptor) {
    let eager = &state.eager;
    if !eager.config.enabled || eager.stop.load(Ordering::Acquire) {
        return;
    }
    let sn = eager.snapshotter_for(ns);
    let planned = if matches!(state.snapshotters.get(&sn), Some(Ok(()))) {
        plan(state, ns, lease, &sn, target)
    } else {
        Err(Error::invalid_argument(format!(
            "snapshotter {sn:?} is not loaded"
        )))
    };
    let job = match planned {
        Ok(Some(job)) => job,
        Ok(None) => {
            tracing::debug!(namespace = %ns, snapshotter = %sn, target = %target.digest, "eager unpack: nothing to do");
            return;
        }
        Err(e) => {
            tracing::debug!(namespace = %ns, snapshotter = %sn, target = %target.digest, error = %e, "eager unpack: not started");
            return;
        }
    };
    let st = state.clone();
    let spawned = std::thread::Builder::new()
        .name("stowage-unpack".into())
        .spawn(move || job.run(&st));
    // A job that did not start is dropped with the closure: its pending layers are released.
    if let Err(e) = spawned {
        tracing::info!(namespace = %ns, error = %e, "eager unpack: no thread");
    }
}

/// Called when a client of namespace `ns` prepared an extraction snapshot for `chain` in
/// snapshotter `sn`: the jobs that put that layer into another snapshotter guessed wrong. A
/// running one stops before its next layer and takes its snapshots back as it ends; the
/// finished ones are returned, for [`withdraw`] to take theirs back (on a blocking thread).
/// Cheap when there is nothing to do.
pub fn client_unpacks(eager: &Eager, ns: &str, sn: &str, chain: &str) -> Vec<Arc<Guess>> {
    let mut finished = Vec::new();
    for g in eager.wrong_guesses(ns, sn, chain) {
        let done = {
            let mut st = g.state();
            st.unwanted = true;
            !st.running
        };
        tracing::debug!(namespace = %ns, guessed = %g.snapshotter, wanted = %sn, done,
            "eager unpack: the client unpacks elsewhere; taking the guess back");
        if done {
            finished.push(g);
        }
    }
    finished
}

/// Removes what job `g` committed, top first, unless the image config claims the
/// snapshotter's chain (`containerd.io/gc.ref.snapshot.<name>`). Stops at the first snapshot
/// that cannot go (another one was built on it, or someone removed it already).
pub fn withdraw(state: &State, g: &Guess) {
    let committed: Vec<String> =
        std::mem::take(&mut *g.committed.lock().unwrap_or_else(|p| p.into_inner()));
    if committed.is_empty() {
        return;
    }
    // Decided under the guess's lock, which `Eager::observe` takes too: either a client has
    // already asked for one of these snapshots (they stay, for the lease to hold), or every
    // later request for them waits, as they are pending until removed.
    let _removing = {
        let mut st = g.state();
        if st.observed {
            tracing::debug!(namespace = %g.ns, snapshotter = %g.snapshotter,
                "eager unpack: a wrong guess another client uses stays for its lease");
            return;
        }
        st.withdrawing = true;
        state
            .eager
            .pending
            .register(&g.ns, &g.snapshotter, &committed)
    };
    let claimed = state
        .db
        .content_store(&g.ns, None)
        .and_then(|cs| stowage_core_types::content::Manager::info(&cs, &g.config))
        .map(|i| {
            i.labels.contains_key(&format!(
                "{}{}",
                stowage_images::unpack::GC_REF_SNAPSHOT_PREFIX,
                g.snapshotter
            ))
        })
        .unwrap_or(false);
    if claimed {
        g.state().withdrawing = false;
        return;
    }
    let Ok(sn) = state.db.snapshotter(&g.snapshotter, &g.ns, Some(&g.lease)) else {
        return;
    };
    for c in committed.iter().rev() {
        if let Err(e) = sn.remove(c) {
            tracing::debug!(namespace = %g.ns, snapshotter = %g.snapshotter, chain = %c, error = %e,
                "eager unpack: a wrong guess stays for the collector");
            return;
        }
        let (topic, ty) = crate::events::topics::SNAPSHOT_REMOVE;
        state.exchange.publish(
            &g.ns,
            topic,
            ty,
            &crate::api::containerd::events::SnapshotRemove { key: c.clone() },
        );
    }
}

/// An unpack ready to run: its layers registered as pending, its place among running jobs.
struct Job {
    ns: String,
    lease: String,
    snapshotter: String,
    target: Descriptor,
    layers: HashMap<String, Layer>,
    guess: Arc<Guess>,
    registration: Arc<pending::Registration>,
    _running: Running,
}

fn plan(
    state: &Arc<State>,
    ns: &str,
    lease: &str,
    sn_name: &str,
    target: &Descriptor,
) -> Result<Option<Job>> {
    let cs = state.db.content_store(ns, Some(lease))?;
    let provider: &dyn Provider = &cs;
    let (_, manifest) = resolve_manifest(provider, target, &Matcher::host())?;
    let config = read_config(provider, &manifest.config)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.is_empty() || diff_ids.len() != manifest.layers.len() {
        return Err(Error::invalid_argument(format!(
            "{} layers and {} diff_ids in config {}",
            manifest.layers.len(),
            diff_ids.len(),
            manifest.config.digest
        )));
    }
    let chains: Vec<String> = chain_ids(diff_ids)
        .iter()
        .map(ToString::to_string)
        .collect();
    let Some(top) = chains.last().cloned() else {
        return Ok(None);
    };
    let sn = state.db.snapshotter(sn_name, ns, Some(lease))?;
    if exists(&sn, &top)? {
        return Ok(None);
    }
    let Some(running) = state.eager.jobs.begin((ns.into(), sn_name.into(), top)) else {
        // The same unpack is already under way; its pending layers make clients wait.
        return Ok(None);
    };
    let mut missing = Vec::with_capacity(chains.len());
    for c in &chains {
        if !exists(&sn, c)? {
            missing.push(c.clone());
        }
    }
    let registration = Arc::new(state.eager.pending.register(ns, sn_name, &missing));
    let guess = Arc::new(Guess {
        ns: ns.into(),
        snapshotter: sn_name.into(),
        lease: lease.into(),
        config: manifest.config.digest.clone(),
        chains: chains.clone(),
        committed: Mutex::new(Vec::new()),
        registration: Arc::downgrade(&registration),
        state: Mutex::new(GuessState {
            running: true,
            ..GuessState::default()
        }),
    });
    state.eager.remember(guess.clone());
    let layers = chains
        .into_iter()
        .zip(manifest.layers.iter().zip(diff_ids))
        .map(|(c, (l, d))| {
            (
                c,
                Layer {
                    blob: l.digest.clone(),
                    diff_id: d.clone(),
                },
            )
        })
        .collect();
    Ok(Some(Job {
        ns: ns.into(),
        lease: lease.into(),
        snapshotter: sn_name.into(),
        target: target.clone(),
        layers,
        guess,
        registration,
        _running: running,
    }))
}

fn exists(sn: &dyn Snapshotter, key: &str) -> Result<bool> {
    match sn.stat(key) {
        Ok(_) => Ok(true),
        Err(e) if e.is(ErrorKind::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Job {
    fn run(self, state: &State) {
        let started = Instant::now();
        let outcome = self.unpack(state);
        let millis = started.elapsed().as_millis();
        match outcome {
            Ok((chain, applied)) => tracing::debug!(
                namespace = %self.ns, snapshotter = %self.snapshotter, target = %self.target.digest,
                chain = %chain, applied, millis, "eager unpack: done"
            ),
            Err(e) => tracing::info!(
                namespace = %self.ns, snapshotter = %self.snapshotter, target = %self.target.digest,
                millis, error = %e, "eager unpack: stopped"
            ),
        }
        let unwanted = {
            let mut st = self.guess.state();
            st.running = false;
            st.unwanted
        };
        if unwanted {
            withdraw(state, &self.guess);
        }
        // Dropping `self` releases what is still pending and the job's place.
    }

    fn unpack(&self, state: &State) -> Result<(String, usize)> {
        let cs = Arc::new(state.db.content_store(&self.ns, Some(&self.lease))?);
        let sn = state
            .db
            .snapshotter(&self.snapshotter, &self.ns, Some(&self.lease))?;
        let differ = LocalDiffer::new(cs.clone()).with_processors(state.stream_processors.clone());
        let through = JobSnapshotter {
            inner: &sn,
            content: cs.as_ref(),
            exchange: &state.exchange,
            ns: &self.ns,
            registration: &self.registration,
            stop: &state.eager.stop,
            guess: &self.guess,
            layers: self.layers.clone(),
        };
        let done = unpack(
            cs.as_ref(),
            &through,
            &differ,
            &self.target,
            &Matcher::host(),
            // With the unpacker's syncfs before each commit, which a client's unpack through
            // the services does not do: measured side by side, skipping it gained nothing
            // visible on a small pull (the job is done before ctr asks), so the layers the
            // daemon commits are as durable as the design asks.
            &UnpackOptions::default(),
        )?;
        let applied = done.layers.iter().filter(|l| l.applied).count();
        Ok((done.chain_id.to_string(), applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_keys() {
        let c = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            extract_chain(&format!("extract-123-AbC_ {c}")),
            Some(c.as_str())
        );
        assert_eq!(extract_chain(&format!("extract- {c}")), Some(c.as_str()));
        assert_eq!(extract_chain(&format!("unpack-1 {c}")), None);
        assert_eq!(extract_chain("extract-1"), None);
        assert_eq!(extract_chain("extract-1 "), None);
        assert_eq!(extract_chain(&format!("extractx {c}")), None);
    }

    #[test]
    fn namespaces_remember_their_last_snapshotter() {
        let e = Eager::new(EagerConfig::default());
        assert_eq!(e.snapshotter_for("a"), "overlayfs");
        e.record_unpack("a", "native");
        assert_eq!(e.snapshotter_for("a"), "native");
        assert_eq!(e.snapshotter_for("b"), "overlayfs");
        e.record_unpack("a", "overlayfs");
        assert_eq!(e.snapshotter_for("a"), "overlayfs");
    }

    fn guess(e: &Eager, reg: &Arc<pending::Registration>, chains: &[&str]) -> Arc<Guess> {
        let g = Arc::new(Guess {
            ns: "ns".into(),
            snapshotter: "overlayfs".into(),
            lease: "pull-1".into(),
            config: format!("sha256:{}", "cd".repeat(32)).parse().unwrap(),
            chains: chains.iter().map(|c| c.to_string()).collect(),
            committed: Mutex::new(Vec::new()),
            registration: Arc::downgrade(reg),
            state: Mutex::new(GuessState {
                running: true,
                ..GuessState::default()
            }),
        });
        e.remember(g.clone());
        g
    }

    #[test]
    fn a_guess_a_client_has_asked_for_is_never_taken_back() {
        let e = Eager::new(EagerConfig::default());
        let reg = Arc::new(
            e.pending
                .register("ns", "overlayfs", &["a".into(), "b".into()]),
        );
        let g = guess(&e, &reg, &["a", "b"]);
        // Another namespace, another snapshotter, another layer: not this guess.
        e.observe("other", "overlayfs", "a");
        e.observe("ns", "native", "a");
        e.observe("ns", "overlayfs", "zzz");
        assert!(!g.state().observed);
        e.observe("ns", "overlayfs", "b");
        assert!(g.state().observed);

        // Once a withdrawal is under way, a request waits for it instead of claiming the
        // snapshots.
        let h = guess(&e, &reg, &["c"]);
        h.state().withdrawing = true;
        e.observe("ns", "overlayfs", "c");
        assert!(!h.state().observed);
    }

    #[test]
    fn a_deleted_lease_lets_go_of_its_jobs_promises() {
        let e = Eager::new(EagerConfig::default());
        let reg = Arc::new(
            e.pending
                .register("ns", "overlayfs", &["a".into(), "b".into()]),
        );
        let g = guess(&e, &reg, &["a", "b"]);
        assert!(g.stop_reason().is_none());
        e.lease_deleted("ns", "another-lease");
        e.lease_deleted("other-ns", "pull-1");
        assert!(e.pending.is_pending("ns", "overlayfs", "a"));
        e.lease_deleted("ns", "pull-1");
        assert!(!e.pending.is_pending("ns", "overlayfs", "a"));
        assert!(!e.pending.is_pending("ns", "overlayfs", "b"));
        assert!(g.stop_reason().is_some());
    }

    #[test]
    fn at_most_max_jobs_run_at_once() {
        let e = Eager::new(EagerConfig::default());
        let key = |i: usize| ("ns".to_string(), "overlayfs".to_string(), format!("c{i}"));
        let running: Vec<Running> = (0..MAX_JOBS)
            .map(|i| e.jobs.begin(key(i)).expect("under the limit"))
            .collect();
        assert!(e.jobs.begin(key(MAX_JOBS)).is_none());
        drop(running);
        assert!(e.jobs.begin(key(MAX_JOBS)).is_some());
    }

    #[test]
    fn one_job_per_key_and_idle_waits() {
        let e = Eager::new(EagerConfig::default());
        assert!(e.wait_idle(Duration::ZERO));
        let key = || ("ns".to_string(), "native".to_string(), "c".to_string());
        let r = e.jobs.begin(key()).expect("first job");
        assert!(e.jobs.begin(key()).is_none());
        assert!(!e.wait_idle(Duration::from_millis(1)));
        let t = std::thread::spawn(move || drop(r));
        assert!(e.wait_idle(Duration::from_secs(600)));
        t.join().unwrap();
        assert!(e.jobs.begin(key()).is_some());
    }
}
