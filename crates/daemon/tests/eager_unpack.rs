//! Eager unpack through the real stowaged and ctr: an image created under a lease is unpacked
//! by the daemon (clients asking for its layers wait for them), nothing happens without a
//! lease or when disabled, ctr's own imports find the layers and leave exactly what they would
//! have left, and a failed or unwanted unpack leaves nothing outside its lease.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{ctr_at, require_ctr, tree, Stowaged};
use prost::Message as _;
use stowage_core_types::Descriptor;
use stowage_daemon::api::containerd::events::SnapshotCommit;
use stowage_daemon::api::containerd::services::events::v1 as epb;
use stowage_daemon::api::containerd::services::images::v1 as ipb;
use stowage_daemon::api::containerd::services::leases::v1 as lpb;
use stowage_daemon::client;
use stowage_daemon::client::{connect, Headers};
use stowage_daemon::convert::descriptor_pb;
use stowage_digest_identity::chain_ids;
use stowage_images::{ImageConfig, Index, Manifest};
use stowage_tests::fixtures::Generated;
use stowage_tests::registry::Registry;
use tokio_stream::StreamExt;

/// A fixture image as the test sees it.
struct Image {
    /// The manifest descriptor (the image target).
    target: Descriptor,
    /// Per layer, base first: (layer blob digest, DiffID, ChainID).
    layers: Vec<(String, String, String)>,
    config: String,
}

impl Image {
    fn top(&self) -> &str {
        &self.layers.last().expect("a layer").2
    }

    fn chains(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.2.clone()).collect()
    }
}

fn fixture(name: &str) -> &'static Generated {
    common::fixtures()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("reading a layout blob")
}

fn image_of(f: &Generated) -> Image {
    let index = Index::parse(
        &std::fs::read(f.layout.join("index.json")).unwrap(),
        "application/vnd.oci.image.index.v1+json",
    )
    .unwrap();
    let target = index.manifests[0].clone();
    let manifest =
        Manifest::parse(&blob(&f.layout, target.digest.as_str()), &target.media_type).unwrap();
    let config = ImageConfig::parse(&blob(&f.layout, manifest.config.digest.as_str())).unwrap();
    let chains = chain_ids(&config.rootfs.diff_ids);
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(chains)
        .map(|((l, d), c)| (l.digest.to_string(), d.to_string(), c.to_string()))
        .collect();
    Image {
        target,
        layers,
        config: manifest.config.digest.to_string(),
    }
}

/// A stowaged whose collector runs only when asked (so content ingested without a lease stays
/// until the test is done with it), with eager unpack `enabled` or not.
fn start(dir: &Path, enabled: bool) -> Stowaged {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n  startup_delay = \"1h\"\n  \
             mutation_threshold = 100000\n[plugins.\"io.stowage.unpack.v1.eager\"]\n  enabled = {enabled}\n"
        ),
    )
    .unwrap();
    Stowaged::start_with(&dir.join("root"), dir, &["--config", cfg.to_str().unwrap()])
        .expect("starting stowaged")
}

/// Stores every blob of the fixture's layout with `ctr content ingest` (no lease, no image),
/// except `skip`.
fn ingest(d: &Stowaged, f: &Generated, skip: Option<&str>) {
    for e in std::fs::read_dir(f.layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let digest = format!("sha256:{}", e.file_name().to_string_lossy());
        if Some(digest.as_str()) == skip {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        let size = data.len().to_string();
        let r = ctr_at(
            &d.address,
            &[
                "content",
                "ingest",
                "--expected-size",
                &size,
                "--expected-digest",
                &digest,
                &format!("ingest-{digest}"),
            ],
            Some(&data),
        )
        .unwrap();
        assert!(r.ok, "ingesting {digest}: {}", r.stderr);
    }
}

/// (name, parent, kind) of every snapshot of `sn`, sorted.
fn snapshots(d: &Stowaged, sn: &str) -> Vec<(String, String, String)> {
    let out = d.ok(&["snapshots", "--snapshotter", sn, "ls"]);
    let mut v: Vec<(String, String, String)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [k, kind] => (k.to_string(), String::new(), kind.to_string()),
                [k, p, kind] => (k.to_string(), p.to_string(), kind.to_string()),
                _ => panic!("unexpected snapshots ls line {l:?}"),
            }
        })
        .collect();
    v.sort();
    v
}

/// The committed chain `image` leaves in a snapshotter: one snapshot per layer, each on the
/// one below.
fn committed_chain(image: &Image) -> Vec<(String, String, String)> {
    let chains = image.chains();
    let mut v: Vec<(String, String, String)> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            (c.clone(), parent, "Committed".to_string())
        })
        .collect();
    v.sort();
    v
}

/// `ctr snapshots info` of `key` as JSON, or `None` when it is not found. A Stat: waits for a
/// pending eager unpack of `key`.
fn info(d: &Stowaged, sn: &str, key: &str) -> Option<serde_json::Value> {
    let r = d
        .ctr(&["snapshots", "--snapshotter", sn, "info", key])
        .unwrap();
    if r.ok {
        return Some(serde_json::from_str(&r.stdout).unwrap());
    }
    assert!(r.stderr.contains("not found"), "info {key}: {}", r.stderr);
    None
}

/// Content labels by digest, from `ctr content ls`.
fn content_labels(d: &Stowaged) -> BTreeMap<String, String> {
    d.ok(&["content", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            // DIGEST SIZE AGE LABELS; the age has a space in it, the labels none.
            let w: Vec<&str> = l.split_whitespace().collect();
            let labels = w.last().filter(|l| l.contains('=')).unwrap_or(&"");
            Some((w.first()?.to_string(), labels.to_string()))
        })
        .collect()
}

fn has_label(labels: &str, kv: &str) -> bool {
    labels.split(',').any(|l| l == kv)
}

async fn create(d: &Stowaged, name: &str, target: &Descriptor, lease: Option<&str>) {
    let ch = connect(&d.address).await.unwrap();
    let mut images = client!(
        ipb::images_client::ImagesClient<_>,
        ch,
        Headers::new(Some("default"), lease).unwrap()
    );
    images
        .create(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: name.into(),
                target: Some(descriptor_pb(target)),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|s| panic!("creating {name}: {s:?}\n{}", d.log()));
}

async fn update(d: &Stowaged, name: &str, target: &Descriptor, lease: &str, paths: &[&str]) {
    let ch = connect(&d.address).await.unwrap();
    let mut images = client!(
        ipb::images_client::ImagesClient<_>,
        ch,
        Headers::new(Some("default"), Some(lease)).unwrap()
    );
    images
        .update(ipb::UpdateImageRequest {
            image: Some(ipb::Image {
                name: name.into(),
                target: Some(descriptor_pb(target)),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .unwrap_or_else(|s| panic!("updating {name}: {s:?}\n{}", d.log()));
}

async fn leases(
    d: &Stowaged,
) -> lpb::leases_client::LeasesClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Headers>,
> {
    let ch = connect(&d.address).await.unwrap();
    client!(
        lpb::leases_client::LeasesClient<_>,
        ch,
        Headers::new(Some("default"), None).unwrap()
    )
}

async fn create_lease(d: &Stowaged, id: &str) {
    leases(d)
        .await
        .create(lpb::CreateRequest {
            id: id.into(),
            labels: Default::default(),
        })
        .await
        .unwrap();
}

/// The snapshots of snapshotter `sn` lease `id` holds, sorted.
async fn leased_snapshots(d: &Stowaged, id: &str, sn: &str) -> Vec<String> {
    let r = leases(d)
        .await
        .list_resources(lpb::ListResourcesRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut v: Vec<String> = r
        .resources
        .into_iter()
        .filter(|r| r.r#type == format!("snapshots/{sn}"))
        .map(|r| r.id)
        .collect();
    v.sort();
    v
}

fn mounted_tree(d: &Stowaged, sn: &str, image: &str, target: &Path) -> Vec<String> {
    std::fs::create_dir_all(target).unwrap();
    let t = target.to_str().unwrap();
    d.ok(&["images", "mount", "--snapshotter", sn, image, t]);
    let listing = tree(target);
    d.ok(&["images", "unmount", "--rm", t]);
    listing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_under_a_lease_unpacks_and_clients_wait_for_it() {
    if !require_ctr(false) {
        return;
    }
    let f = fixture("whiteouts");
    let img = image_of(f);
    assert!(img.layers.len() >= 3, "the test wants several layers");

    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    ingest(&d, f, None);
    // Events the job publishes, seen from a subscription made before the image exists.
    let mut events = {
        let ch = connect(&d.address).await.unwrap();
        let mut c = client!(
            epb::events_client::EventsClient<_>,
            ch,
            Headers::new(None, None).unwrap()
        );
        c.subscribe(epb::SubscribeRequest {
            filters: vec!["topic~=\"/snapshot/\"".into()],
        })
        .await
        .unwrap()
        .into_inner()
    };

    // Without a lease: a record only, nothing unpacked (had a job been planned, this Stat
    // would wait for it and find the snapshot).
    create(&d, "example.test/eager:nolease", &img.target, None).await;
    assert_eq!(info(&d, "overlayfs", img.top()), None);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert_eq!(snapshots(&d, "native"), vec![]);

    // Under a lease: the daemon unpacks into the default snapshotter, and a Stat of the top
    // layer waits for it.
    create_lease(&d, "pull-1").await;
    create(&d, "example.test/eager:leased", &img.target, Some("pull-1")).await;
    let top = info(&d, "overlayfs", img.top()).expect("the top layer, unpacked by the daemon");
    assert_eq!(top["Kind"], "Committed", "{top}");
    assert_eq!(snapshots(&d, "overlayfs"), committed_chain(&img));
    assert_eq!(snapshots(&d, "native"), vec![]);
    // Labelled as containerd's unpacker labels them, and all held by the client's lease.
    for c in img.chains() {
        let i = info(&d, "overlayfs", &c).unwrap();
        assert_eq!(i["Labels"]["containerd.io/snapshot.ref"], c.as_str(), "{i}");
    }
    let mut chains = img.chains();
    chains.sort();
    assert_eq!(leased_snapshots(&d, "pull-1", "overlayfs").await, chains);
    // Each layer blob carries its DiffID; the config is left for the client to label.
    let labels = content_labels(&d);
    for (blob, diff_id, _) in &img.layers {
        let l = labels.get(blob).map(String::as_str).unwrap_or("");
        assert!(
            has_label(l, &format!("containerd.io/uncompressed={diff_id}")),
            "{blob}: {l}"
        );
    }
    let l = labels.get(&img.config).map(String::as_str).unwrap_or("");
    assert!(!l.contains("containerd.io/gc.ref.snapshot."), "{l}");

    // One /snapshot/commit per layer, as a client unpack through the Snapshots service gives.
    let mut committed = Vec::new();
    while committed.len() < img.layers.len() {
        let e = tokio::time::timeout(std::time::Duration::from_secs(60), events.next())
            .await
            .expect("the job's commit events")
            .expect("an event")
            .unwrap();
        if e.topic == "/snapshot/commit" {
            committed.push(
                SnapshotCommit::decode(e.event.unwrap().value.as_slice())
                    .unwrap()
                    .name,
            );
        }
    }
    assert_eq!(committed, img.chains());

    // The rootfs is the one ctr's own unpack gives, in a daemon with eager unpack off, where
    // an image created under a lease stays a record.
    let ours = mounted_tree(
        &d,
        "overlayfs",
        "example.test/eager:leased",
        &dir.path().join("m"),
    );
    assert!(!ours.is_empty());
    let dir2 = tempfile::tempdir().unwrap();
    let off = start(dir2.path(), false);
    ingest(&off, f, None);
    create_lease(&off, "pull-1").await;
    create(
        &off,
        "example.test/eager:leased",
        &img.target,
        Some("pull-1"),
    )
    .await;
    assert_eq!(info(&off, "overlayfs", img.top()), None);
    assert_eq!(snapshots(&off, "overlayfs"), vec![]);
    off.ok(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        f.archive.to_str().unwrap(),
    ]);
    let theirs = mounted_tree(&off, "overlayfs", &f.reference, &dir2.path().join("m"));
    assert_eq!(ours, theirs);
    // An open subscription would hold the server's drain.
    drop(events);
    assert!(d.stop().unwrap(), "stowaged did not stop cleanly");
}

/// True when ctr, docker-registry and skopeo are installed; otherwise panics naming the
/// missing Debian packages, unless STOWAGE_SKIP_EXTERNAL=1.
fn require_registry_tools() -> bool {
    require_ctr(false)
        && stowage_tests::containerd::require(
            &["docker-registry", "skopeo"],
            "apt-get install docker-registry skopeo",
        )
}

#[test]
fn ctr_pulls_find_the_layers_and_leave_what_they_would_have() {
    if !require_registry_tools() {
        return;
    }
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e:#}"));
    let push = |f: &Generated| {
        reg.push(&f.layout, &format!("fixtures/{}", f.name))
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let pull = |d: &Stowaged, sn: &str, r: &str| {
        d.ok(&["images", "pull", "--plain-http", "--snapshotter", sn, r]);
    };
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    let a = fixture("compressions");
    let ia = image_of(a);
    let ra = push(a);

    // ctr's unpack Stats each layer, waits for the daemon's, and skips it: one committed
    // snapshot per layer, labelled by the daemon's unpacker (ctr's own sets no labels), and
    // ctr's gc reference on the config.
    pull(&d, "overlayfs", &ra);
    assert_eq!(snapshots(&d, "overlayfs"), committed_chain(&ia));
    assert_eq!(snapshots(&d, "native"), vec![]);
    for c in ia.chains() {
        let i = info(&d, "overlayfs", &c).unwrap();
        assert_eq!(i["Labels"]["containerd.io/snapshot.ref"], c.as_str(), "{i}");
    }
    let labels = content_labels(&d);
    let l = labels.get(&ia.config).map(String::as_str).unwrap_or("");
    assert!(
        has_label(
            l,
            &format!("containerd.io/gc.ref.snapshot.overlayfs={}", ia.top())
        ),
        "{l}"
    );
    for (blob, diff_id, _) in &ia.layers {
        let l = labels.get(blob).map(String::as_str).unwrap_or("");
        assert!(
            has_label(l, &format!("containerd.io/uncompressed={diff_id}")),
            "{blob}: {l}"
        );
    }
    d.ok(&["images", "rm", "--sync", &ra]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert_eq!(snapshots(&d, "native"), vec![]);

    // A native pull in a namespace that has unpacked only through the daemon: the daemon
    // guesses overlayfs (the default) and unpacks there for nothing, while ctr unpacks into
    // native.
    let b = fixture("base");
    let ib = image_of(b);
    let rb = push(b);
    pull(&d, "native", &rb);
    assert_eq!(snapshots(&d, "native"), committed_chain(&ib));
    // Waits for the daemon's job to have committed its top layer or given up. ctr's first
    // native extraction snapshot told the daemon its guess was wrong: it took it back.
    let _ = info(&d, "overlayfs", ib.top());
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert!(d.log().contains("taking the guess back"), "{}", d.log());
    // Whatever was left, nothing but ctr's (deleted) lease held it: a collection takes it.
    d.ok(&["images", "tag", &rb, "example.test/other:1"]);
    d.ok(&["images", "rm", "--sync", "example.test/other:1"]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert_eq!(snapshots(&d, "native"), committed_chain(&ib));

    // ctr prepared its extraction snapshots in native: the namespace's next eager unpack goes
    // there, and ctr finds it.
    let c = fixture("whiteouts");
    let ic = image_of(c);
    let rc = push(c);
    pull(&d, "native", &rc);
    for ch in ic.chains() {
        let i = info(&d, "native", &ch).unwrap();
        assert_eq!(
            i["Labels"]["containerd.io/snapshot.ref"],
            ch.as_str(),
            "{i}"
        );
    }
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    d.ok(&["images", "rm", "--sync", &rb, &rc]);
    assert_eq!(snapshots(&d, "native"), vec![]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
}

#[test]
fn ctr_import_unpacks_itself_after_its_import_lease_is_gone() {
    if !require_ctr(false) {
        return;
    }
    // `ctr images import` creates the image under a lease it deletes before it unpacks under
    // another one: the daemon's job finds its lease gone and stops; ctr unpacks as before.
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    let a = fixture("compressions");
    let ia = image_of(a);
    d.ok(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        a.archive.to_str().unwrap(),
    ]);
    assert_eq!(snapshots(&d, "overlayfs"), committed_chain(&ia));
    assert_eq!(snapshots(&d, "native"), vec![]);
    d.ok(&["images", "rm", "--sync", &a.reference]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert_eq!(snapshots(&d, "native"), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_unpack_leaves_nothing_outside_its_lease() {
    if !require_ctr(false) {
        return;
    }
    let f = fixture("whiteouts");
    let img = image_of(f);
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    // The top layer's blob is missing: the lower layers unpack, the top one cannot.
    let missing = img.layers.last().unwrap().0.clone();
    ingest(&d, f, Some(&missing));
    create_lease(&d, "partial").await;
    create(
        &d,
        "example.test/eager:partial",
        &img.target,
        Some("partial"),
    )
    .await;
    assert_eq!(info(&d, "overlayfs", img.top()), None);
    let lower: Vec<(String, String, String)> = committed_chain(&img)
        .into_iter()
        .filter(|s| s.0 != img.top())
        .collect();
    // No active extraction snapshot is left, and what was committed is the lease's.
    assert_eq!(snapshots(&d, "overlayfs"), lower);
    let mut held: Vec<String> = lower.iter().map(|s| s.0.clone()).collect();
    held.sort();
    assert_eq!(leased_snapshots(&d, "partial", "overlayfs").await, held);
    d.ok(&["leases", "rm", "--sync", "partial"]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);

    // The content complete again: an update that only relabels the image leaves it be, one
    // that sets its target (ctr pull of a name that exists) unpacks it.
    ingest(&d, f, None);
    create_lease(&d, "retry").await;
    update(
        &d,
        "example.test/eager:partial",
        &img.target,
        "retry",
        &["labels"],
    )
    .await;
    assert_eq!(info(&d, "overlayfs", img.top()), None);
    update(&d, "example.test/eager:partial", &img.target, "retry", &[]).await;
    assert!(info(&d, "overlayfs", img.top()).is_some());
    assert_eq!(snapshots(&d, "overlayfs"), committed_chain(&img));
    d.ok(&["leases", "rm", "--sync", "retry"]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);

    // A lease that does not exist: nothing can be prepared under it.
    ingest(&d, f, None);
    create(&d, "example.test/eager:ghost", &img.target, Some("ghost")).await;
    assert_eq!(info(&d, "overlayfs", img.top()), None);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
    assert!(
        d.log().contains("eager unpack: stopped"),
        "no failure logged:\n{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_unpack_stops_cleanly_and_leaves_only_what_the_lease_holds() {
    if !require_ctr(false) {
        return;
    }
    let f = fixture("whiteouts");
    let img = image_of(f);
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    ingest(&d, f, None);
    create_lease(&d, "pull-1").await;
    create(
        &d,
        "example.test/eager:stopped",
        &img.target,
        Some("pull-1"),
    )
    .await;
    // At once: the job is planned and may be anywhere in its layers. The daemon stops it
    // at its next layer and exits by itself.
    assert!(d.stop().unwrap(), "stowaged did not stop cleanly");
    let d = start(dir.path(), true);
    let left = snapshots(&d, "overlayfs");
    assert!(
        left.iter().all(|s| s.2 == "Committed"),
        "an extraction snapshot outlived the stop: {left:?}"
    );
    let mut committed: Vec<String> = left.into_iter().map(|s| s.0).collect();
    committed.sort();
    assert_eq!(leased_snapshots(&d, "pull-1", "overlayfs").await, committed);
    d.ok(&["leases", "rm", "--sync", "pull-1"]);
    assert_eq!(snapshots(&d, "overlayfs"), vec![]);
}

/// Two pulls of one image at once, one into overlayfs (the namespace's guess) and one into
/// native: the native one's extraction tells the job it guessed wrong, but the overlayfs pull
/// has already found the job's base layer and builds on it, so nothing the job committed may
/// be taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_guess_another_client_relies_on_stays() {
    if !require_ctr(false) {
        return;
    }
    let f = fixture("whiteouts");
    let img = image_of(f);
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), true);
    ingest(&d, f, None);
    create_lease(&d, "pull-b").await;
    create(&d, "example.test/eager:shared", &img.target, Some("pull-b")).await;
    // Client B's unpack Stats the base layer: it waits for the job and finds it.
    let base = img.layers[0].2.clone();
    assert!(info(&d, "overlayfs", &base).is_some());
    // Client A unpacks the same image into native.
    d.ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "prepare",
        &format!("extract-a {base}"),
    ]);
    // The job stops or finishes; whatever it committed is still there, B's base included.
    let _ = info(&d, "overlayfs", img.top());
    let left = snapshots(&d, "overlayfs");
    let chain = committed_chain(&img);
    assert!(
        left.iter().any(|s| s.0 == base),
        "the base layer B found was taken back: {left:?}\n{}",
        d.log()
    );
    assert!(
        left.iter().all(|s| chain.contains(s)),
        "{left:?} is not part of {chain:?}"
    );
    let mut held: Vec<String> = left.iter().map(|s| s.0.clone()).collect();
    held.sort();
    assert_eq!(leased_snapshots(&d, "pull-b", "overlayfs").await, held);
}
