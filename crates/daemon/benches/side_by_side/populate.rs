//! Fills a daemon with many images or blobs through its gRPC API (the same calls work on
//! containerd and stowaged), which takes seconds where one `ctr` run per object would take
//! minutes.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use stowage_daemon::api::containerd::services::content::v1::{
    content_client::ContentClient, WriteAction, WriteContentRequest,
};
use stowage_daemon::api::containerd::services::images::v1::{
    images_client::ImagesClient, CreateImageRequest, Image,
};
use stowage_daemon::api::containerd::services::leases::v1::{
    leases_client::LeasesClient, CreateRequest,
};
use stowage_daemon::api::containerd::services::snapshots::v1::{self as pb, snapshots_client};
use stowage_daemon::api::containerd::types::Descriptor;
use stowage_daemon::client::{connect, Headers};
use tokio::task::JoinSet;

use crate::images::Rng;

/// Requests in flight at once: commits sync to disk, and many in flight share the syncs.
const PARALLEL: usize = 64;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

/// Creates images `bench/many-<i>:latest` for `i` in `0..n`, all pointing at `target`
/// (media type, digest, size) in namespace `default`.
pub fn images(address: &Path, n: usize, target: &(String, String, i64)) -> Result<()> {
    runtime()?.block_on(async {
        let ch = connect(address).await?;
        let headers = Headers::new(Some("default"), None)?;
        let client = stowage_daemon::client!(ImagesClient<_>, ch, headers);
        let mut set = JoinSet::new();
        for i in 0..n {
            if set.len() >= PARALLEL {
                set.join_next().await.context("join")???;
            }
            let mut c = client.clone();
            let image = Image {
                name: format!("bench/many-{i:05}:latest"),
                target: Some(Descriptor {
                    media_type: target.0.clone(),
                    digest: target.1.clone(),
                    size: target.2,
                    ..Default::default()
                }),
                ..Default::default()
            };
            set.spawn(async move {
                c.create(CreateImageRequest { image: Some(image) })
                    .await
                    .map(|_| ())
                    .context("Images.Create")
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
}

/// Writes `n` distinct deterministic blobs of `size` bytes into the content store under a
/// lease that never expires (so garbage collection leaves them), each in one Write call that
/// writes and commits.
pub fn blobs(address: &Path, n: usize, size: usize) -> Result<()> {
    use sha2::{Digest as _, Sha256};
    runtime()?.block_on(async {
        let ch = connect(address).await?;
        let lease = "stowage-bench-blobs";
        let mut leases = stowage_daemon::client!(
            LeasesClient<_>,
            ch.clone(),
            Headers::new(Some("default"), None)?
        );
        leases
            .create(CreateRequest {
                id: lease.into(),
                ..Default::default()
            })
            .await
            .context("Leases.Create")?;
        let headers = Headers::new(Some("default"), Some(lease))?;
        let client = stowage_daemon::client!(ContentClient<_>, ch, headers);
        let mut set = JoinSet::new();
        for i in 0..n {
            if set.len() >= PARALLEL {
                set.join_next().await.context("join")???;
            }
            let mut data = vec![0u8; size];
            Rng::new(0xb10b_0000 + i as u64).fill(&mut data);
            let digest: String = Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let req = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: format!("bench-blob-{i}"),
                total: size as i64,
                expected: format!("sha256:{digest}"),
                offset: 0,
                data: data.into(),
                ..Default::default()
            };
            let mut c = client.clone();
            set.spawn(async move {
                let mut resp = c
                    .write(tokio_stream::iter(vec![req]))
                    .await
                    .context("Content.Write")?
                    .into_inner();
                let msg = resp.message().await.context("Content.Write response")?;
                anyhow::ensure!(msg.is_some(), "Content.Write: no response to commit");
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
}

/// Chunks per daemon in [`snapshot_rpc_latency`]: its calls run in this many turns, the two
/// daemons alternating turn by turn.
const SNAPSHOT_RPC_CHUNKS: usize = 10;

/// A Snapshots client as `client!` builds it.
type SnapshotsClient = snapshots_client::SnapshotsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Headers>,
>;

/// Latency of `n` Snapshots Prepare, Commit and Remove calls on `snapshotter` in each of the
/// two daemons at `addresses`, one call at a time over one connection per daemon: the
/// daemon's share of what `ctr snapshots prepare|commit|rm` times, without ctr's process start
/// (about 13 ms each, most of a ctr-timed snapshot operation). Returns every call's time, per
/// daemon (in `addresses` order) and per operation.
///
/// The `n` rounds (prepare, commit, remove of one key) run in chunks of about n/10, the
/// daemons taking turns chunk by chunk and alternating which goes first, so both are timed
/// across the same stretch of the machine's (drifting) speed rather than one after the
/// other. The caller takes the median over all `n` calls of a daemon, pooled across chunks,
/// not a median of chunk medians: each chunk is too short for its own median to mean much.
pub fn snapshot_rpc_latency(
    addresses: [&Path; 2],
    snapshotter: &str,
    n: usize,
) -> Result<[[Vec<Duration>; 3]; 2]> {
    runtime()?.block_on(async {
        let mut clients = Vec::with_capacity(2);
        for address in addresses {
            let ch = connect(address)
                .await
                .with_context(|| format!("connecting to {}", address.display()))?;
            let headers = Headers::new(Some("default"), None)?;
            let c: SnapshotsClient =
                stowage_daemon::client!(snapshots_client::SnapshotsClient<_>, ch, headers);
            clients.push(c);
        }
        let root = gc_root_label();
        let mut times: [[Vec<Duration>; 3]; 2] = Default::default();
        for chunk in 0..SNAPSHOT_RPC_CHUNKS {
            let keys = chunk * n / SNAPSHOT_RPC_CHUNKS..(chunk + 1) * n / SNAPSHOT_RPC_CHUNKS;
            for i in crate::Bench::order(chunk) {
                for k in keys.clone() {
                    snapshot_round(&mut clients[i], snapshotter, k, &root, &mut times[i])
                        .await
                        .with_context(|| format!("on {}", addresses[i].display()))?;
                }
            }
        }
        Ok(times)
    })
}

/// The `containerd.io/gc.root` label `ctr snapshots prepare` and `commit` put on what they
/// make, valued with the current time in RFC 3339 as ctr does. Without it containerd's garbage
/// collector may remove a committed snapshot between its Commit and Remove (it did, once the
/// ctr-timed rows had left it enough mutations to start a collection), and each call carries
/// the same label write as ctr's.
fn gc_root_label() -> HashMap<String, String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the era-based proleptic Gregorian conversion).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let stamp = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    );
    HashMap::from([("containerd.io/gc.root".to_owned(), stamp)])
}

/// Prepares, commits and removes snapshot `k` (the first two labelled `root`), pushing each
/// call's time to `times`.
async fn snapshot_round(
    c: &mut SnapshotsClient,
    snapshotter: &str,
    k: usize,
    root: &HashMap<String, String>,
    times: &mut [Vec<Duration>; 3],
) -> Result<()> {
    let (key, name) = (format!("rpc-active-{k}"), format!("rpc-committed-{k}"));
    let t = Instant::now();
    c.prepare(pb::PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.clone(),
        parent: String::new(),
        labels: root.clone(),
    })
    .await
    .context("Snapshots.Prepare")?;
    times[0].push(t.elapsed());
    let t = Instant::now();
    c.commit(pb::CommitSnapshotRequest {
        snapshotter: snapshotter.into(),
        name: name.clone(),
        key,
        labels: root.clone(),
    })
    .await
    .context("Snapshots.Commit")?;
    times[1].push(t.elapsed());
    let t = Instant::now();
    c.remove(pb::RemoveSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: name,
    })
    .await
    .context("Snapshots.Remove")?;
    times[2].push(t.elapsed());
    Ok(())
}

/// Latency of single gRPC calls, one at a time: per-call medians of `Version`, `Content.Info`
/// and `Content.Read` (whole blob) of `digest`, over `n` calls each. `ctr images ls` and the
/// bookkeeping of a pull are chains of such calls, so this tells framework overhead apart from
/// the work behind them.
pub fn rpc_latency(address: &Path, digest: &str, n: usize) -> Result<[Duration; 3]> {
    use stowage_daemon::api::containerd::services::content::v1::{InfoRequest, ReadContentRequest};
    use stowage_daemon::api::containerd::services::version::v1::version_client::VersionClient;
    runtime()?.block_on(async {
        let ch = connect(address).await?;
        let headers = Headers::new(Some("default"), None)?;
        let mut version = stowage_daemon::client!(VersionClient<_>, ch.clone(), headers.clone());
        let mut content = stowage_daemon::client!(ContentClient<_>, ch, headers);
        let mut times: [Vec<Duration>; 3] = Default::default();
        for _ in 0..n {
            let t = Instant::now();
            version.version(()).await.context("Version")?;
            times[0].push(t.elapsed());
            let t = Instant::now();
            content
                .info(InfoRequest {
                    digest: digest.into(),
                })
                .await
                .context("Content.Info")?;
            times[1].push(t.elapsed());
            let t = Instant::now();
            let mut s = content
                .read(ReadContentRequest {
                    digest: digest.into(),
                    offset: 0,
                    size: 0,
                })
                .await
                .context("Content.Read")?
                .into_inner();
            while s.message().await.context("Content.Read stream")?.is_some() {}
            times[2].push(t.elapsed());
        }
        Ok(times.map(crate::median))
    })
}
