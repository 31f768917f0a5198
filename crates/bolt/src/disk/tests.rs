//! Power-loss and I/O-error tests over the simulated disk.
//!
//! A script of random transactions (puts and deletes of small and overflow-sized values,
//! nested buckets created and dropped) runs against a database whose write path goes
//! through [`SimDisk`]. A dry run records the operations a script issues; then the same
//! script is rerun with a fault at chosen operations: at every meta-page write (the power
//! goes off during it, so it may land whole, torn or not at all), at the data sync right
//! before it, and at random others. The file a reboot would find is then opened with the
//! ordinary code and must pass the consistency check and hold exactly the state after a
//! committed prefix, no shorter than what the engine acknowledged.
//!
//! `STOWAGE_BOLT_FAULT_SCRIPTS` raises the number of scripts (default 6 per test) and
//! `STOWAGE_BOLT_FAULT_SEED` shifts the seeds (default 0), to fuzz longer or elsewhere.

use std::path::Path;
use std::sync::Arc;

use super::script::{read_state, Rng, Shape, State};
use super::sim::{Fault, OpKind, SimDisk, TraceOp};
use crate::{Db, Error, Options};

/// Transactions per script.
const TXS: u64 = 8;

/// Mostly small transactions, every fourth one large enough to grow the file and write
/// multi-page runs; small enough overall that each script can be rerun at every cut point.
const SHAPE: Shape = Shape {
    big_every: 4,
    big: 300,
    small: 25,
    keys: 1500,
};

/// Reads the state held by `db` after checking its consistency.
fn checked_state(db: &Db, what: &str) -> State {
    read_state(db).unwrap_or_else(|e| panic!("{what}: reading the database failed: {e}"))
}

/// Opens `image` as a file with the ordinary code and checks it holds the state after the
/// first `count` of `candidates` for some `count` in `min..=candidates.len()`; returns it.
fn reopen_and_verify(
    dir: &Path,
    image: &[u8],
    seed: u64,
    candidates: &[u64],
    min: usize,
    what: &str,
) -> u64 {
    let path = dir.join("reboot.db");
    std::fs::write(&path, image).expect("write the rebooted image");
    let db = Db::open(&path, Options::default())
        .unwrap_or_else(|e| panic!("{what}: reopen after the fault failed: {e}"));
    let got = checked_state(&db, what);
    let c = got.count as usize;
    assert!(
        (min..=candidates.len()).contains(&c),
        "{what}: file holds {c} commits, expected {min}..={}",
        candidates.len()
    );
    assert!(
        got == SHAPE.model(seed, &candidates[..c]),
        "{what}: content differs from the state after {c} commits"
    );
    drop(db);
    std::fs::remove_file(&path).expect("remove image");
    got.count
}

/// A fresh database file, created and synced by the ordinary code; returns its bytes.
/// The page size script `seed` runs with: mostly the usual 4096, also a small and a large
/// one (the sector size used never exceeds it; see FORMAT.md).
fn page_size(seed: u64) -> usize {
    [4096, 1024, 8192][(seed % 3) as usize]
}

/// Every fourth script runs without a freelist page (bbolt's `NoFreelistSync`).
fn options(seed: u64) -> Options {
    Options {
        page_size: page_size(seed),
        no_freelist_sync: seed % 4 == 3,
        ..Options::default()
    }
}

fn fresh(dir: &Path, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("sim.db");
    let _ = std::fs::remove_file(&path);
    drop(Db::open(&path, options(seed)).expect("create"));
    let image = std::fs::read(&path).expect("read fresh file");
    (path, image)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The script seeds a test runs, starting at `first` (plus the configured shift).
fn seeds(first: u64) -> std::ops::Range<u64> {
    let start = first + env_u64("STOWAGE_BOLT_FAULT_SEED", 0);
    start..start + env_u64("STOWAGE_BOLT_FAULT_SCRIPTS", 6)
}

/// Runs script `seed` with no fault and returns the operations it issued.
fn dry_run(dir: &Path, seed: u64) -> Vec<TraceOp> {
    let (path, image) = fresh(dir, seed);
    let sim = Arc::new(SimDisk::new(image, 512, seed, Fault::None));
    let db = Db::open_sim(&path, options(seed), sim.clone()).expect("open");
    for id in 1..=TXS {
        SHAPE.commit(&db, seed, id, id).expect("dry-run commit");
    }
    sim.trace()
}

/// Operations worth cutting at: each meta-page write, the sync before it, and random ones.
fn interesting(trace: &[TraceOp], r: &mut Rng, page_size: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, op) in trace.iter().enumerate() {
        if op.kind == OpKind::Write && op.off < 2 * page_size {
            out.push(i as u64);
            out.push(i as u64 - 1);
        }
    }
    for _ in 0..6 {
        out.push(r.below(trace.len() as u64 + 1));
    }
    out
}

#[test]
fn power_cut_leaves_a_committed_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut survived, mut lost, mut runs) = (0u64, 0u64, 0u64);
    for seed in seeds(1) {
        let trace = dry_run(dir.path(), seed);
        let mut r = Rng::new(seed);
        for at in interesting(&trace, &mut r, page_size(seed) as u64) {
            let sector = if page_size(seed) >= 4096 && r.chance(50) {
                4096
            } else {
                512
            };
            let (path, image) = fresh(dir.path(), seed);
            let sim = Arc::new(SimDisk::new(
                image,
                sector,
                seed * 7919 + at,
                Fault::Cut { n: at },
            ));
            let db = Db::open_sim(&path, options(seed), sim.clone()).expect("open");
            let mut acked = 0u64;
            for id in 1..=TXS {
                match SHAPE.commit(&db, seed, id, id) {
                    Ok(()) => {
                        assert!(
                            !sim.is_cut(),
                            "a commit reported success after the power cut"
                        );
                        acked = id;
                    }
                    Err(_) => {
                        assert!(sim.is_cut(), "commit {id} failed without a fault");
                        break;
                    }
                }
            }
            let image = sim.power_cut();
            drop(db);
            let ids: Vec<u64> = (1..=(acked + 1).min(TXS)).collect();
            let what = format!(
                "script {seed}, page size {}, cut at op {at} ({sector}-byte sectors)",
                page_size(seed)
            );
            let c = reopen_and_verify(dir.path(), &image, seed, &ids, acked as usize, &what);
            runs += 1;
            if c > acked {
                survived += 1;
            } else if acked < TXS {
                lost += 1;
            }
        }
    }
    eprintln!("{runs} power cuts: in-flight commit survived {survived}, lost {lost}");
    // Both outcomes of a commit cut in flight must occur, or the cuts missed the commits.
    assert!(
        survived > 0 && lost > 0,
        "{runs} runs: in-flight commit survived {survived} times, lost {lost} times"
    );
}

#[test]
fn io_errors_fail_the_commit_and_keep_a_committed_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut continued, mut poisoned) = (0u64, 0u64);
    for seed in seeds(1_000_000) {
        let trace = dry_run(dir.path(), seed);
        let mut r = Rng::new(seed);
        let mut points: Vec<u64> = (0..trace.len() as u64).filter(|_| r.chance(12)).collect();
        points.extend(interesting(&trace, &mut r, page_size(seed) as u64));
        // A fault past the last operation would hit nothing.
        points.retain(|&p| p < trace.len() as u64);
        for at in points {
            let errno = if r.chance(50) {
                libc::EIO
            } else {
                libc::ENOSPC
            };
            let (path, image) = fresh(dir.path(), seed);
            // Half the runs also lose power a little later, so that what a failed commit
            // left behind meets later commits and a crash.
            let fault = if r.chance(50) {
                let cut = at + 1 + r.below(40);
                Fault::FailThenCut { n: at, errno, cut }
            } else {
                Fault::Fail { n: at, errno }
            };
            let sim = Arc::new(SimDisk::new(image, 512, seed * 104_729 + at, fault));
            let what = format!(
                "script {seed}, page size {}, errno {errno} at op {at}",
                page_size(seed)
            );
            let db = Db::open_sim(&path, options(seed), sim.clone()).expect("open");
            let mut ok: Vec<u64> = Vec::new();
            let mut failed: Option<u64> = None;
            let mut is_poisoned = false;
            let mut in_flight: Option<u64> = None;
            for id in 1..=TXS {
                let count = ok.len() as u64 + 1;
                match SHAPE.commit(&db, seed, id, count) {
                    Ok(()) => {
                        assert!(!is_poisoned, "{what}: a poisoned handle committed");
                        assert!(!sim.is_cut(), "{what}: a commit succeeded after the cut");
                        ok.push(id);
                    }
                    Err(_) if sim.is_cut() => {
                        in_flight = Some(id);
                        break;
                    }
                    Err(Error::Poisoned) => {
                        assert!(failed.is_some(), "{what}: poisoned without a failure");
                        is_poisoned = true;
                    }
                    Err(e) => {
                        let Error::Io { source, .. } = &e else {
                            panic!("{what}: commit {id} failed with a non-I/O error: {e}");
                        };
                        assert_eq!(
                            source.raw_os_error(),
                            Some(errno),
                            "{what}: commit {id} failed with another error: {e}"
                        );
                        assert!(failed.is_none(), "{what}: a second commit failed: {e}");
                        failed = Some(id);
                        // The handle still shows the last committed state.
                        let live = checked_state(&db, &what);
                        assert!(
                            live == SHAPE.model(seed, &ok),
                            "{what}: after the failed commit the handle shows other data"
                        );
                    }
                }
            }
            assert!(failed.is_some(), "{what}: the fault never hit a commit");
            // A failure in the last commit shows only at the next begin_write.
            if in_flight.is_none() {
                match db.begin_write() {
                    Ok(tx) => {
                        assert!(!is_poisoned, "{what}: a poisoned handle began a write");
                        tx.rollback();
                    }
                    Err(Error::Poisoned) => is_poisoned = true,
                    Err(e) => panic!("{what}: begin_write failed: {e}"),
                }
            }
            if is_poisoned {
                poisoned += 1;
            } else {
                continued += 1;
                if in_flight.is_none() {
                    assert_eq!(
                        ok.len() as u64,
                        TXS - 1,
                        "{what}: commits after the failure"
                    );
                }
            }
            // Only a failure that poisons the handle (meta write or sync) may have committed,
            // and so may the commit in flight at the power cut.
            let mut candidates = ok.clone();
            if is_poisoned {
                candidates.extend(failed);
            }
            candidates.extend(in_flight);
            let live = std::fs::read(&path).expect("read the file");
            let image = sim.power_cut();
            drop(db);
            reopen_and_verify(
                dir.path(),
                &live,
                seed,
                &candidates,
                ok.len(),
                &format!("{what}, file as left"),
            );
            reopen_and_verify(
                dir.path(),
                &image,
                seed,
                &candidates,
                ok.len(),
                &format!("{what}, after a power cut"),
            );
        }
    }
    eprintln!(
        "{} faults: handle kept working {continued}, poisoned {poisoned}",
        continued + poisoned
    );
    assert!(
        continued > 0 && poisoned > 0,
        "faults kept the handle working {continued} times and poisoned it {poisoned} times"
    );
}
