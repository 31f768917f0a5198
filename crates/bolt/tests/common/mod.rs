//! Shared helpers for the integration tests: a small PRNG, the operation script model,
//! applying scripts with stowage-bolt, dumping a database, and the Go bbolt helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use stowage_bolt::{Bucket, Db, Options, ReadTx};

pub use stowage_bolt::testscript::Rng;

/// One scripted operation; paths are lists of bucket names from the root.
#[derive(Clone, Debug)]
pub enum Op {
    Begin,
    Commit,
    Rollback,
    Create(Vec<Vec<u8>>),
    CreateX(Vec<Vec<u8>>),
    DelBucket(Vec<Vec<u8>>),
    Put(Vec<Vec<u8>>, Vec<u8>, Vec<u8>),
    Del(Vec<Vec<u8>>, Vec<u8>),
    SetSeq(Vec<Vec<u8>>, u64),
    NextSeq(Vec<Vec<u8>>),
}

fn hx(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn path_str(p: &[Vec<u8>]) -> String {
    p.iter().map(|n| hx(n)).collect::<Vec<_>>().join("/")
}

/// Renders operations in gobolt's script syntax.
pub fn to_script(ops: &[Op]) -> String {
    let mut s = String::new();
    for op in ops {
        let _ = match op {
            Op::Begin => writeln!(s, "begin"),
            Op::Commit => writeln!(s, "commit"),
            Op::Rollback => writeln!(s, "rollback"),
            Op::Create(p) => writeln!(s, "create {}", path_str(p)),
            Op::CreateX(p) => writeln!(s, "createx {}", path_str(p)),
            Op::DelBucket(p) => writeln!(s, "delb {}", path_str(p)),
            Op::Put(p, k, v) => writeln!(s, "put {} {} {}", path_str(p), hx(k), hx(v)),
            Op::Del(p, k) => writeln!(s, "del {} {}", path_str(p), hx(k)),
            Op::SetSeq(p, n) => writeln!(s, "setseq {} {n}", path_str(p)),
            Op::NextSeq(p) => writeln!(s, "nextseq {}", path_str(p)),
        };
    }
    s
}

fn bucket_at<'t>(
    tx: &'t mut stowage_bolt::WriteTx,
    p: &[Vec<u8>],
) -> stowage_bolt::Result<stowage_bolt::BucketMut<'t>> {
    let mut b = tx
        .bucket_mut(&p[0])?
        .unwrap_or_else(|| panic!("bucket {:?} missing", p));
    for n in &p[1..] {
        b = b
            .into_bucket_mut(n)?
            .unwrap_or_else(|| panic!("bucket {:?} missing", p));
    }
    Ok(b)
}

fn parent_of(
    tx: &mut stowage_bolt::WriteTx,
    p: &[Vec<u8>],
    f: impl FnOnce(&mut dyn FnMut(&[u8], u8) -> stowage_bolt::Result<()>) -> stowage_bolt::Result<()>,
) -> stowage_bolt::Result<()> {
    // op codes: 0 create, 1 createx, 2 delete
    if p.len() == 1 {
        let mut g = |name: &[u8], op: u8| -> stowage_bolt::Result<()> {
            match op {
                0 => tx.create_bucket(name).map(|_| ()),
                1 => tx.create_bucket_if_not_exists(name).map(|_| ()),
                _ => tx.delete_bucket(name),
            }
        };
        f(&mut g)
    } else {
        let mut b = bucket_at(tx, &p[..p.len() - 1])?;
        let mut g = |name: &[u8], op: u8| -> stowage_bolt::Result<()> {
            match op {
                0 => b.create_bucket(name).map(|_| ()),
                1 => b.create_bucket_if_not_exists(name).map(|_| ()),
                _ => b.delete_bucket(name),
            }
        };
        f(&mut g)
    }
}

/// Applies a script with stowage-bolt.
pub fn apply_rust(db: &Db, ops: &[Op]) -> stowage_bolt::Result<()> {
    let mut tx = None;
    for op in ops {
        match op {
            Op::Begin => tx = Some(db.begin_write()?),
            Op::Commit => tx.take().expect("commit without begin").commit()?,
            Op::Rollback => tx.take().expect("rollback without begin").rollback(),
            other => {
                let t = tx.as_mut().expect("op outside a transaction");
                match other {
                    Op::Create(p) => {
                        let last = p[p.len() - 1].clone();
                        parent_of(t, p, |g| g(&last, 0))?
                    }
                    Op::CreateX(p) => {
                        let last = p[p.len() - 1].clone();
                        parent_of(t, p, |g| g(&last, 1))?
                    }
                    Op::DelBucket(p) => {
                        let last = p[p.len() - 1].clone();
                        parent_of(t, p, |g| g(&last, 2))?
                    }
                    Op::Put(p, k, v) => bucket_at(t, p)?.put(k, v)?,
                    Op::Del(p, k) => bucket_at(t, p)?.delete(k)?,
                    Op::SetSeq(p, n) => bucket_at(t, p)?.set_sequence(*n)?,
                    Op::NextSeq(p) => {
                        bucket_at(t, p)?.next_sequence()?;
                    }
                    _ => unreachable!(),
                }
            }
        }
    }
    Ok(())
}

fn dump_bucket(out: &mut String, path: &str, b: &Bucket<'_>) {
    let _ = writeln!(out, "B {path} seq={}", b.sequence());
    let mut c = b.cursor();
    let mut e = c.first().expect("cursor first");
    while let Some((k, v)) = e {
        match v {
            None => {
                let child = b.bucket(k).expect("bucket").expect("bucket exists");
                let hexk: String = k.iter().map(|x| format!("{x:02x}")).collect();
                dump_bucket(out, &format!("{path}/{hexk}"), &child);
            }
            Some(v) => {
                let hk: String = k.iter().map(|x| format!("{x:02x}")).collect();
                let hv: String = v.iter().map(|x| format!("{x:02x}")).collect();
                let _ = writeln!(out, "K {path} {hk}={hv}");
            }
        }
        e = c.next().expect("cursor next");
    }
}

/// Dumps a snapshot in gobolt's dump format.
pub fn dump_tx(tx: &ReadTx) -> String {
    let mut out = String::new();
    let root = tx.root();
    let mut c = root.cursor();
    let mut e = c.first().expect("root cursor");
    while let Some((k, _)) = e {
        let b = root.bucket(k).expect("bucket").expect("top-level bucket");
        let hk: String = k.iter().map(|x| format!("{x:02x}")).collect();
        dump_bucket(&mut out, &hk, &b);
        e = c.next().expect("root next");
    }
    out
}

/// Opens `path` read-only, checks it and dumps it.
pub fn dump_rust(path: &Path) -> String {
    let db = Db::open(
        path,
        Options {
            read_only: true,
            // A child forked by a parallel test may briefly share the just-closed lock.
            lock_timeout: Some(std::time::Duration::from_secs(5)),
            ..Options::default()
        },
    )
    .expect("open read-only");
    let tx = db.begin_read().expect("begin read");
    tx.check().expect("stowage-bolt check");
    dump_tx(&tx)
}

/// Options for fast tests.
pub fn nosync() -> Options {
    Options {
        no_sync: true,
        // A child spawned by another test thread briefly holds copies of every open file
        // description between fork and exec, flock included; a file closed and reopened in
        // that window would look locked. Wait that window out instead of failing at once.
        lock_timeout: Some(std::time::Duration::from_secs(5)),
        ..Options::default()
    }
}

fn external_missing(what: &str) -> Option<PathBuf> {
    if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: {what} (STOWAGE_SKIP_EXTERNAL=1)");
        return None;
    }
    panic!(
        "{what}; install the Debian packages golang-go and golang-github-coreos-bbolt-dev \
         (or set STOWAGE_SKIP_EXTERNAL=1 to skip)"
    );
}

/// Builds tests/gobolt once per test binary; `None` only when skipping is allowed.
pub fn gobolt() -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let gopath = "/usr/share/gocode";
        if !Path::new(gopath)
            .join("src/go.etcd.io/bbolt/db.go")
            .exists()
        {
            return Err(format!(
                "Go bbolt source missing under {gopath}/src/go.etcd.io/bbolt"
            ));
        }
        // Under the target directory, one per test binary: rebuilt in place by each run instead
        // of leaving a directory per process in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stowage-gobolt-{}", env!("CARGO_CRATE_NAME")));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bin = dir.join("gobolt");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gobolt/main.go");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOFLAGS", "")
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run `go`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "go build of gobolt failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(bin)
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => external_missing(e),
    }
}

/// Runs gobolt; returns (exit ok, stdout, stderr).
pub fn run_go(bin: &Path, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(bin).args(args).output().expect("run gobolt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Go's dump of `path`, asserting Go's tx.Check() passes.
pub fn go_dump(bin: &Path, path: &Path) -> String {
    let (ok, out, err) = run_go(bin, &["dump".as_ref(), path.as_os_str()]);
    assert!(
        ok,
        "Go bbolt dump/check failed on {}: {err}",
        path.display()
    );
    out
}

/// Applies a script with Go bbolt.
pub fn go_apply(bin: &Path, path: &Path, ops: &[Op]) {
    go_apply_with(bin, path, ops, false)
}

/// Applies a script with Go bbolt, optionally with `NoFreelistSync`.
pub fn go_apply_with(bin: &Path, path: &Path, ops: &[Op], no_freelist_sync: bool) {
    let script = path.with_extension("script");
    std::fs::write(&script, to_script(ops)).expect("write script");
    let out = Command::new(bin)
        .args(["apply".as_ref(), path.as_os_str(), script.as_os_str()])
        .env(
            "GOBOLT_NO_FREELIST_SYNC",
            if no_freelist_sync { "1" } else { "0" },
        )
        .output()
        .expect("run gobolt");
    assert!(
        out.status.success(),
        "Go bbolt apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Default)]
struct MB {
    keys: BTreeMap<Vec<u8>, ()>,
    kids: BTreeMap<Vec<u8>, MB>,
}

impl MB {
    fn paths(&self, prefix: &mut Vec<Vec<u8>>, out: &mut Vec<Vec<Vec<u8>>>) {
        for (n, c) in &self.kids {
            prefix.push(n.clone());
            out.push(prefix.clone());
            c.paths(prefix, out);
            prefix.pop();
        }
    }
    fn at(&mut self, p: &[Vec<u8>]) -> &mut MB {
        let mut m = self;
        for n in p {
            m = m.kids.get_mut(n).expect("model path");
        }
        m
    }
}

/// Generates `txs` random write transactions that are valid for both engines: puts of
/// small and overflow-sized values, deletes, every-other-key deletes, nested bucket
/// creation and deletion (including every-other-bucket), sequences and rollbacks.
///
/// A bucket is never deleted in the transaction that changed something inside it: Go
/// bbolt 1.3.6 itself can leak pages then (its own tx.Check reports "unreachable unfreed"
/// on its own file), which would make the Go-writes direction fail for Go's reasons.
/// `modify_then_delete_buckets` tests that pattern one way only.
pub fn random_script(seed: u64, txs: usize, ops_per_tx: usize) -> Vec<Op> {
    let mut r = Rng::new(seed);
    let mut model = MB::default();
    let mut ops = Vec::new();
    for _ in 0..txs {
        let saved = model.clone();
        let mut touched: Vec<Vec<Vec<u8>>> = Vec::new();
        let clean = |touched: &Vec<Vec<Vec<u8>>>, p: &Vec<Vec<u8>>| {
            !touched.iter().any(|t| t.starts_with(p))
        };
        ops.push(Op::Begin);
        let n = 1 + r.below(ops_per_tx as u64) as usize;
        for _ in 0..n {
            let mut paths = Vec::new();
            model.paths(&mut Vec::new(), &mut paths);
            let roll = r.below(100);
            if paths.is_empty() || roll < 8 {
                // create a bucket under the root or an existing bucket (depth <= 4)
                let mut parent: Vec<Vec<u8>> = if paths.is_empty() || r.chance(30) {
                    Vec::new()
                } else {
                    paths[r.below(paths.len() as u64) as usize].clone()
                };
                if parent.len() >= 4 {
                    parent.truncate(1);
                }
                let mut name = b"b".to_vec();
                let len = 1 + r.below(6) as usize;
                name.extend(r.bytes(len));
                let m = model.at(&parent);
                let exists = m.kids.contains_key(&name);
                let mut p = parent.clone();
                p.push(name.clone());
                touched.push(p.clone());
                if exists {
                    ops.push(Op::CreateX(p));
                } else {
                    m.kids.insert(name, MB::default());
                    ops.push(if r.chance(50) {
                        Op::Create(p)
                    } else {
                        Op::CreateX(p)
                    });
                }
                continue;
            }
            let p = paths[r.below(paths.len() as u64) as usize].clone();
            if roll > 11 {
                touched.push(p.clone());
            }
            match roll {
                8..=10 if clean(&touched, &p) => {
                    model.at(&p[..p.len() - 1]).kids.remove(&p[p.len() - 1]);
                    ops.push(Op::DelBucket(p));
                }
                8..=11 => {
                    // every other sub-bucket of a bucket
                    let m = model.at(&p);
                    let names: Vec<_> = m.kids.keys().cloned().collect();
                    for name in names.into_iter().step_by(2) {
                        let mut q = p.clone();
                        q.push(name.clone());
                        if clean(&touched, &q) {
                            m.kids.remove(&name);
                            ops.push(Op::DelBucket(q));
                        }
                    }
                    touched.push(p.clone());
                }
                12..=13 => {
                    // every other key of a bucket
                    let m = model.at(&p);
                    let keys: Vec<_> = m.keys.keys().cloned().collect();
                    for k in keys.into_iter().step_by(2) {
                        m.keys.remove(&k);
                        ops.push(Op::Del(p.clone(), k));
                    }
                }
                14..=16 => ops.push(Op::SetSeq(p, r.next() >> 8)),
                17..=19 => ops.push(Op::NextSeq(p)),
                20..=34 => {
                    let m = model.at(&p);
                    let k = if !m.keys.is_empty() && r.chance(80) {
                        let i = r.below(m.keys.len() as u64) as usize;
                        m.keys.keys().nth(i).cloned().unwrap_or_default()
                    } else {
                        let mut k = b"k".to_vec();
                        k.extend(r.bytes(2));
                        k
                    };
                    m.keys.remove(&k);
                    ops.push(Op::Del(p, k));
                }
                35..=44 => {
                    // a batch of sequential keys, large enough to split pages
                    let m = model.at(&p);
                    let base = r.below(1 << 20);
                    let count = 50 + r.below(400);
                    for i in 0..count {
                        let k = format!("k{:08}", base + i).into_bytes();
                        m.keys.insert(k.clone(), ());
                        let vlen = r.below(64) as usize;
                        ops.push(Op::Put(p.clone(), k, r.bytes(vlen)));
                    }
                }
                _ => {
                    let m = model.at(&p);
                    let mut k = b"k".to_vec();
                    let len = 1 + r.below(3) as usize;
                    k.extend(r.bytes(len));
                    m.keys.insert(k.clone(), ());
                    let vlen = if r.chance(4) {
                        1000 + r.below(20000) as usize
                    } else {
                        r.below(200) as usize
                    };
                    ops.push(Op::Put(p, k, r.bytes(vlen)));
                }
            }
        }
        if r.chance(10) {
            model = saved;
            ops.push(Op::Rollback);
        } else {
            ops.push(Op::Commit);
        }
    }
    ops
}
