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

/// One change of a scripted transaction.
enum Change {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    /// Replace nested bucket `nest/<name>` by a fresh one holding `n` keys.
    NewBucket(Vec<u8>, u64),
    DropBucket(Vec<u8>),
}

/// The deterministic changes of transaction `i`: mostly small, every 10th one large
/// (thousands of puts, so commits take long enough to be killed in the middle), plus
/// nested buckets created and dropped.
fn tx_ops(i: u64) -> Vec<Change> {
    let mut r = Rng::new(i);
    let mut ops = Vec::new();
    let n = if i % 10 == 0 { 3000 } else { 1 + r.below(20) };
    for _ in 0..n {
        let k = r.below(5000).to_be_bytes().to_vec();
        if r.chance(25) {
            ops.push(Change::Del(k));
        } else {
            let len = if r.chance(3) {
                5000 + r.below(20000)
            } else {
                r.below(300)
            } as usize;
            ops.push(Change::Put(k, vec![i as u8; len]));
        }
    }
    if i % 3 == 0 {
        let name = format!("s{}", r.below(6)).into_bytes();
        if r.chance(50) {
            ops.push(Change::NewBucket(name, r.below(400)));
        } else {
            ops.push(Change::DropBucket(name));
        }
    }
    ops
}

type State = (
    BTreeMap<Vec<u8>, Vec<u8>>,
    BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
);

fn bucket_keys(n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..n)
        .map(|j| (j.to_be_bytes().to_vec(), vec![j as u8; 40]))
        .collect()
}

fn model(n: u64) -> State {
    let (mut data, mut nest) = (BTreeMap::new(), BTreeMap::new());
    for i in 1..=n {
        for c in tx_ops(i) {
            match c {
                Change::Put(k, v) => {
                    data.insert(k, v);
                }
                Change::Del(k) => {
                    data.remove(&k);
                }
                Change::NewBucket(name, n) => {
                    nest.insert(name, bucket_keys(n));
                }
                Change::DropBucket(name) => {
                    nest.remove(&name);
                }
            }
        }
    }
    (data, nest)
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
            let ops = tx_ops(n);
            let mut d = tx.create_bucket_if_not_exists(b"data")?;
            for c in &ops {
                match c {
                    Change::Put(k, v) => d.put(k, v)?,
                    Change::Del(k) => d.delete(k)?,
                    _ => {}
                }
            }
            let mut nest = tx.create_bucket_if_not_exists(b"nest")?;
            for c in &ops {
                match c {
                    Change::NewBucket(name, count) => {
                        if nest.bucket(name)?.is_some() {
                            nest.delete_bucket(name)?;
                        }
                        let mut b = nest.create_bucket(name)?;
                        for (k, v) in bucket_keys(*count) {
                            b.put(&k, &v)?;
                        }
                    }
                    Change::DropBucket(name) => match nest.delete_bucket(name) {
                        Ok(()) | Err(Error::BucketNotFound(_)) => {}
                        Err(e) => return Err(e),
                    },
                    _ => {}
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
        let (want_data, want_nest) = model(n);
        let collect = |b: &stowage_bolt::Bucket<'_>| {
            let mut got = BTreeMap::new();
            b.for_each::<Error>(|k, v| {
                got.insert(k.to_vec(), v.expect("plain value").to_vec());
                Ok(())
            })
            .unwrap();
            got
        };
        let data = collect(&tx.bucket(b"data").unwrap().unwrap());
        assert!(
            data == want_data,
            "round {round}: data differs from the state after {n} txs"
        );
        let nest = tx.bucket(b"nest").unwrap().unwrap();
        let mut got_nest = BTreeMap::new();
        let mut names = Vec::new();
        nest.for_each::<Error>(|k, v| {
            assert!(v.is_none(), "nest holds only buckets");
            names.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        for name in names {
            got_nest.insert(name.clone(), collect(&nest.bucket(&name).unwrap().unwrap()));
        }
        assert!(
            got_nest == want_nest,
            "round {round}: nested buckets differ after {n} txs"
        );
        last_acked = n;
    }
    assert!(
        last_acked > 25,
        "only {last_acked} transactions in {:?}",
        started.elapsed()
    );
}
