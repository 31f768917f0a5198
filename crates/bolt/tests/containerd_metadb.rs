//! A real containerd 1.6 meta.db: containerd (Debian's) imports a small image; while it runs
//! its flock makes our open fail fast; after it stops we read the file exactly as Go bbolt
//! does, rewrite every bucket with stowage-bolt, and containerd still serves the image.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stowage_bolt::{Db, Error, Options};

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One ustar entry (regular file).
fn tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An OCI image layout tar with one uncompressed layer, and the digests of its blobs.
fn image_tar(name: &str) -> (Vec<u8>, Vec<String>) {
    let mut layer = Vec::new();
    tar_entry(&mut layer, "hello.txt", b"hello from stowage-bolt\n");
    layer.extend_from_slice(&[0u8; 1024]);
    let ld = sha(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{ld}"]}},"config":{{}}}}"#
    );
    let cd = sha(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{ld}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let md = sha(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"annotations":{{"io.containerd.image.name":"{name}","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        manifest.len()
    );
    let mut t = Vec::new();
    tar_entry(&mut t, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    tar_entry(&mut t, "index.json", index.as_bytes());
    tar_entry(&mut t, &format!("blobs/sha256/{md}"), manifest.as_bytes());
    tar_entry(&mut t, &format!("blobs/sha256/{cd}"), config.as_bytes());
    tar_entry(&mut t, &format!("blobs/sha256/{ld}"), &layer);
    t.extend_from_slice(&[0u8; 1024]);
    (t, vec![md, cd, ld])
}

struct Containerd {
    child: Child,
    address: PathBuf,
}

impl Containerd {
    fn start(root: &Path, work: &Path) -> Containerd {
        let address = work.join("c.sock");
        let config = work.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
                root.display(),
                work.join("state").display(),
                address.display(),
                address.display(),
                work.join("opt").display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.join("containerd.log")).unwrap())
            .spawn()
            .expect("start containerd");
        let c = Containerd { child, address };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.ctr(&["version"]).is_err() {
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rewrites every value of every bucket (recursively) with the same bytes, so the whole tree
/// is re-encoded by stowage-bolt.
fn rewrite_all(db: &Db) {
    fn walk(b: &mut stowage_bolt::BucketMut<'_>) {
        let mut kvs = Vec::new();
        let mut subs = Vec::new();
        b.for_each::<Error>(|k, v| {
            match v {
                Some(v) => kvs.push((k.to_vec(), v.to_vec())),
                None => subs.push(k.to_vec()),
            }
            Ok(())
        })
        .unwrap();
        for (k, v) in kvs {
            b.put(&k, &v).unwrap();
        }
        for s in subs {
            walk(&mut b.bucket_mut(&s).unwrap().unwrap());
        }
    }
    let mut tx = db.begin_write().unwrap();
    let mut top = Vec::new();
    tx.root()
        .for_each::<Error>(|k, _| {
            top.push(k.to_vec());
            Ok(())
        })
        .unwrap();
    for t in top {
        walk(&mut tx.bucket_mut(&t).unwrap().unwrap());
    }
    tx.commit().unwrap();
}

#[test]
fn containerd_meta_db_round_trip() {
    let missing: Vec<&str> = ["containerd", "ctr"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!("skipping: {missing:?} missing");
            return;
        }
        panic!("this test needs {missing:?}: install Debian's containerd (1.6), or set STOWAGE_SKIP_EXTERNAL=1");
    }
    let Some(go) = common::gobolt() else { return };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let image = "docker.io/library/stowage-bolt-fixture:1";
    let tar = work.path().join("image.tar");
    let (tar_bytes, digests) = image_tar(image);
    fs::write(&tar, tar_bytes).unwrap();

    let c = Containerd::start(&root, work.path());
    let imported = c.ctr(&["images", "import", tar.to_str().unwrap()]);
    let listed = c.ctr(&["images", "ls", "-q"]);
    let db_path = root.join("io.containerd.metadata.v1.bolt/meta.db");
    // containerd holds meta.db with flock: we fail fast instead of hanging.
    let start = Instant::now();
    let locked = Db::open(
        &db_path,
        Options {
            lock_timeout: Some(Duration::from_millis(100)),
            ..Options::default()
        },
    );
    let waited = start.elapsed();
    c.stop();
    imported.expect("ctr images import");
    assert!(listed.unwrap().contains(image));
    assert!(matches!(locked, Err(Error::Locked { .. })), "{locked:?}");
    assert!(waited < Duration::from_secs(5));

    let go_view = common::go_dump(&go, &db_path);
    assert!(
        go_view.contains("B 7631/"),
        "v1 schema bucket present:\n{go_view}"
    );
    assert_eq!(common::dump_rust(&db_path), go_view);

    let db = Db::open(&db_path, Options::default()).unwrap();
    rewrite_all(&db);
    drop(db);
    assert_eq!(
        common::go_dump(&go, &db_path),
        go_view,
        "Go reads our rewrite identically"
    );

    let c = Containerd::start(&root, work.path());
    let listed = c.ctr(&["images", "ls", "-q"]);
    let content = c.ctr(&["content", "ls", "-q"]);
    c.stop();
    assert!(
        listed.unwrap().contains(image),
        "containerd lost the image after our rewrite"
    );
    let content = content.unwrap();
    for d in &digests {
        assert!(
            content.contains(d.as_str()),
            "blob {d} missing after our rewrite:\n{content}"
        );
    }
}
