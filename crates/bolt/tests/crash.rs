//! Crash safety: a writer process is killed with SIGKILL at random moments, many times; each
//! reopen must pass the check and hold exactly the state after some prefix of the
//! transactions, no shorter than what the writer reported as committed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Rng;
use stowage_bolt::{Db, Error, Options};

const CHILD_ENV: &str = "STOWAGE_BOLT_CRASH_CHILD";

/// The deterministic changes of transaction `i` (puts with `Some`, deletes with `None`).
fn tx_ops(i: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut r = Rng::new(i);
    let mut ops = Vec::new();
    for _ in 0..1 + r.below(20) {
        let k = r.below(3000).to_be_bytes().to_vec();
        if r.chance(25) {
            ops.push((k, None));
        } else {
            let len = if r.chance(5) {
                5000 + r.below(20000)
            } else {
                r.below(300)
            } as usize;
            ops.push((k, Some(vec![i as u8; len])));
        }
    }
    ops
}

fn model(n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 1..=n {
        for (k, v) in tx_ops(i) {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
    }
    m
}

/// Runs as the killed writer when the test binary is re-executed with CHILD_ENV set.
#[test]
fn crash_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Db::open(&path, Options::default()).expect("child open");
    let mut n = {
        let tx = db.begin_read().unwrap();
        tx.bucket(b"meta")
            .unwrap()
            .and_then(|b| {
                b.get(b"n")
                    .unwrap()
                    .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
            })
            .unwrap_or(0)
    };
    loop {
        n += 1;
        db.update::<_, Error>(|tx| {
            tx.create_bucket_if_not_exists(b"meta")?
                .put(b"n", &n.to_be_bytes())?;
            let mut d = tx.create_bucket_if_not_exists(b"data")?;
            for (k, v) in tx_ops(n) {
                match v {
                    Some(v) => d.put(&k, &v)?,
                    None => d.delete(&k)?,
                }
            }
            Ok(())
        })
        .expect("child commit");
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
    for round in 0..25 {
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
        std::thread::sleep(Duration::from_millis(r.below(60)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(n) = rx.try_recv() {
            last_acked = last_acked.max(n);
        }

        let db = Db::open(&path, Options::default()).expect("reopen after SIGKILL");
        let tx = db.begin_read().unwrap();
        tx.check()
            .unwrap_or_else(|e| panic!("round {round}: check failed: {e}"));
        let n = u64::from_be_bytes(
            tx.bucket(b"meta")
                .unwrap()
                .unwrap()
                .get(b"n")
                .unwrap()
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert!(
            n == last_acked || n == last_acked + 1,
            "round {round}: file holds {n} transactions, writer acknowledged {last_acked}"
        );
        let want = model(n);
        let data = tx.bucket(b"data").unwrap().unwrap();
        let mut got = BTreeMap::new();
        data.for_each::<Error>(|k, v| {
            got.insert(k.to_vec(), v.unwrap().to_vec());
            Ok(())
        })
        .unwrap();
        assert!(
            got == want,
            "round {round}: contents differ from the state after {n} transactions"
        );
        last_acked = n;
    }
    assert!(
        last_acked > 25,
        "only {last_acked} transactions in {:?}",
        started.elapsed()
    );
}
