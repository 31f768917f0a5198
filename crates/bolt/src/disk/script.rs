//! Scripted random transactions for the fault tests: the power-cut and I/O-error tests over
//! the simulated disk (unit tests) and the SIGKILL test (`tests/crash.rs`) commit the same
//! kind of scripts and check a reopened file against the same model.
//!
//! A script is a sequence of transactions, each a deterministic list of [`Change`]s to the
//! `data` bucket and to nested buckets under `nest`, plus a commit counter in `meta`. The
//! file holds the state after a prefix of the script exactly when [`read_state`] equals
//! [`model`] of that prefix.
//!
//! Built for this crate's tests and, with the `testscript` feature, for its integration
//! tests; not part of the engine.

use std::collections::BTreeMap;

use crate::{Bucket, Db, Error, ReadTx, Result};

/// xorshift64*: deterministic, dependency-free randomness for reproducible test cases.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One change of a scripted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Put a value into `data`.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key from `data` (present or not).
    Del(Vec<u8>),
    /// Replace nested bucket `nest/<name>` with a fresh one of `n` keys ([`bucket_keys`]).
    NewBucket(Vec<u8>, u64),
    /// Drop nested bucket `nest/<name>` if it exists.
    DropBucket(Vec<u8>),
}

/// How large a script's transactions are. Every transaction also puts small and
/// overflow-sized values, deletes keys, and now and then creates or drops a nested bucket.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Every `big_every`-th transaction is large (grows the file, writes multi-page runs).
    pub big_every: u64,
    /// A large transaction makes `big..2*big` changes.
    pub big: u64,
    /// The other transactions make `1..=small` changes.
    pub small: u64,
    /// Keys are drawn from `0..keys` (8-byte big-endian).
    pub keys: u64,
}

impl Shape {
    /// The changes of transaction `id` of script `seed`.
    pub fn changes(&self, seed: u64, id: u64) -> Vec<Change> {
        let mut r = Rng::new(seed.wrapping_mul(1000).wrapping_add(id));
        let n = if id % self.big_every == 0 {
            self.big + r.below(self.big)
        } else {
            1 + r.below(self.small)
        };
        let mut out = Vec::new();
        for _ in 0..n {
            let k = r.below(self.keys).to_be_bytes().to_vec();
            if r.chance(25) {
                out.push(Change::Del(k));
            } else {
                let len = if r.chance(4) {
                    4000 + r.below(9000)
                } else {
                    r.below(200)
                } as usize;
                out.push(Change::Put(k, vec![id as u8; len]));
            }
        }
        if r.chance(40) {
            let name = format!("s{}", r.below(4)).into_bytes();
            if r.chance(60) {
                out.push(Change::NewBucket(name, r.below(300)));
            } else {
                out.push(Change::DropBucket(name));
            }
        }
        out
    }

    /// The state after committing the transactions `ids` of script `seed`, in order.
    pub fn model(&self, seed: u64, ids: &[u64]) -> State {
        let mut s = State::default();
        for &id in ids {
            s.count += 1;
            for c in self.changes(seed, id) {
                match c {
                    Change::Put(k, v) => {
                        s.data.insert(k, v);
                    }
                    Change::Del(k) => {
                        s.data.remove(&k);
                    }
                    Change::NewBucket(name, n) => {
                        s.nest.insert(name, bucket_keys(n));
                    }
                    Change::DropBucket(name) => {
                        s.nest.remove(&name);
                    }
                }
            }
        }
        s
    }

    /// Commits transaction `id` of script `seed` to `db`, recording `count` as the number
    /// of transactions the file then holds.
    pub fn commit(&self, db: &Db, seed: u64, id: u64, count: u64) -> Result<()> {
        let changes = self.changes(seed, id);
        db.update::<_, Error>(|tx| {
            tx.create_bucket_if_not_exists(b"meta")?
                .put(b"count", &count.to_be_bytes())?;
            let mut d = tx.create_bucket_if_not_exists(b"data")?;
            for c in &changes {
                match c {
                    Change::Put(k, v) => d.put(k, v)?,
                    Change::Del(k) => d.delete(k)?,
                    _ => {}
                }
            }
            let mut nest = tx.create_bucket_if_not_exists(b"nest")?;
            for c in &changes {
                match c {
                    Change::NewBucket(name, n) => {
                        if nest.bucket(name)?.is_some() {
                            nest.delete_bucket(name)?;
                        }
                        let mut b = nest.create_bucket(name)?;
                        for (k, v) in bucket_keys(*n) {
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
    }
}

/// A bucket's plain key/value pairs.
pub type Flat = BTreeMap<Vec<u8>, Vec<u8>>;

/// What a script database holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The commit counter in `meta`.
    pub count: u64,
    /// The `data` bucket.
    pub data: Flat,
    /// The buckets under `nest`, by name.
    pub nest: BTreeMap<Vec<u8>, Flat>,
}

/// The keys of a nested bucket created with `n` keys.
pub fn bucket_keys(n: u64) -> Flat {
    (0..n)
        .map(|j| (j.to_be_bytes().to_vec(), vec![j as u8; 40]))
        .collect()
}

/// The commit counter `db` holds (0 before the first commit).
pub fn count(db: &Db) -> Result<u64> {
    let tx = db.begin_read()?;
    match tx.bucket(b"meta")? {
        Some(meta) => read_count(&meta),
        None => Ok(0),
    }
}

fn read_count(meta: &Bucket<'_>) -> Result<u64> {
    let v = meta
        .get(b"count")?
        .ok_or_else(|| Error::Corrupt("script database: meta has no count".into()))?;
    let bytes = v
        .try_into()
        .map_err(|_| Error::Corrupt(format!("script database: count is {} bytes", v.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn flat(b: &Bucket<'_>) -> Result<Flat> {
    let mut out = Flat::new();
    b.for_each::<Error>(|k, v| {
        let v = v.ok_or_else(|| {
            Error::Corrupt(format!(
                "script database: a bucket at key {k:?} in a flat bucket"
            ))
        })?;
        out.insert(k.to_vec(), v.to_vec());
        Ok(())
    })?;
    Ok(out)
}

fn required<'t>(tx: &'t ReadTx, name: &str) -> Result<Bucket<'t>> {
    tx.bucket(name.as_bytes())?
        .ok_or_else(|| Error::Corrupt(format!("script database: no {name} bucket")))
}

/// Checks the consistency of `db` and reads the state it holds.
pub fn read_state(db: &Db) -> Result<State> {
    let tx = db.begin_read()?;
    tx.check()?;
    let Some(meta) = tx.bucket(b"meta")? else {
        return Ok(State::default());
    };
    let count = read_count(&meta)?;
    let data = flat(&required(&tx, "data")?)?;
    let nest_b = required(&tx, "nest")?;
    let mut names = Vec::new();
    nest_b.for_each::<Error>(|k, v| {
        if v.is_some() {
            return Err(Error::Corrupt(format!(
                "script database: a plain value at key {k:?} in nest"
            )));
        }
        names.push(k.to_vec());
        Ok(())
    })?;
    let mut nest = BTreeMap::new();
    for n in names {
        let b = nest_b
            .bucket(&n)?
            .ok_or_else(|| Error::Corrupt(format!("script database: nest lists {n:?}")))?;
        nest.insert(n, flat(&b)?);
    }
    Ok(State { count, data, nest })
}
