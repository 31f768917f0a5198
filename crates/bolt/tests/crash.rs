//! Crash safety: a writer process is killed with SIGKILL at random moments, many times; each
//! reopen must pass the check and hold exactly the state after some prefix of the
//! transactions, no shorter than what the writer reported as committed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Rng;
use stowage_bolt::testscript::{count, read_state, Shape};
use stowage_bolt::{Db, Options};

const CHILD_ENV: &str = "STOWAGE_BOLT_CRASH_CHILD";

/// The writer's script: every 10th transaction large (thousands of changes, so commits take
/// long enough to be killed in the middle), the others small.
const SHAPE: Shape = Shape {
    big_every: 10,
    big: 2000,
    small: 20,
    keys: 5000,
};

/// The writer's one script.
const SEED: u64 = 0;

/// Runs as the killed writer when the test binary is re-executed with CHILD_ENV set.
#[test]
fn crash_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Db::open(&path, Options::default()).expect("child open");
    let mut n = count(&db).expect("child reads its commit count");
    loop {
        n += 1;
        SHAPE.commit(&db, SEED, n, n).expect("child commit");
        println!("committed {n}");
    }
}

#[test]
fn sigkill_at_random_points_leaves_a_committed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut r = Rng::new(42);
    let mut last_acked = 0u64;
    let started = Instant::now();
    for round in 0..30 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    let _ = tx.send(n.trim().parse::<u64>().unwrap());
                }
            }
        });
        // Let it commit at least one transaction this round, then kill it at a random time.
        if let Ok(n) = rx.recv_timeout(Duration::from_secs(30)) {
            last_acked = last_acked.max(n);
        }
        std::thread::sleep(Duration::from_millis(r.below(80)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(n) = rx.try_recv() {
            last_acked = last_acked.max(n);
        }

        let db = Db::open(&path, Options::default()).expect("reopen after SIGKILL");
        let got = read_state(&db).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let n = got.count;
        assert!(
            n == last_acked || n == last_acked + 1,
            "round {round}: file holds {n} transactions, writer acknowledged {last_acked}"
        );
        let ids: Vec<u64> = (1..=n).collect();
        assert!(
            got == SHAPE.model(SEED, &ids),
            "round {round}: content differs from the state after {n} txs"
        );
        last_acked = n;
    }
    assert!(
        last_acked > 25,
        "only {last_acked} transactions in {:?}",
        started.elapsed()
    );
}
