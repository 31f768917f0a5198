//! `content_sharing_policy` side by side: stowaged and containerd 1.6, both started with the
//! same bolt plugin policy ("isolated", then "shared"), get the same Write / Status / Info /
//! Read sequence in several namespaces through our gRPC client, and every step must give the
//! same answer or the same error code and message.

mod common;

use std::fs;
use std::path::Path;

use common::{require_ctr, Stowaged};
use stowage_daemon::api::containerd::services::content::v1 as cpb;
use stowage_daemon::api::containerd::services::leases::v1 as lpb;
use stowage_daemon::api::containerd::services::namespaces::v1 as npb;
use stowage_daemon::client;
use stowage_daemon::client::{connect, Headers};
use stowage_tests::containerd::Containerd;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// containerd 1.7's namespace label for sharing under "isolated"; 1.6 does not know it.
const SHAREABLE: &str = "containerd.io/namespace.shareable";

fn bolt_table(policy: &str) -> String {
    format!(
        "\n[plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"{policy}\"\n"
    )
}

fn sha(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    format!(
        "sha256:{}",
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

type Content = cpb::content_client::ContentClient<
    tonic::service::interceptor::InterceptedService<Channel, Headers>,
>;

/// A content client in namespace `ns`, working under lease `keep` there (created here), so no
/// collection can take what the sequence stored.
async fn content_in(ch: &Channel, ns: &str) -> Content {
    let mut leases = client!(
        lpb::leases_client::LeasesClient<_>,
        ch.clone(),
        Headers::new(Some(ns), None).unwrap()
    );
    leases
        .create(lpb::CreateRequest {
            id: "keep".into(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    client!(
        cpb::content_client::ContentClient<_>,
        ch.clone(),
        Headers::new(Some(ns), Some("keep")).unwrap()
    )
}

fn code(st: &tonic::Status) -> String {
    format!("err {:?}: {}", st.code(), st.message())
}

/// One Write session; each answer as `action offset total digest`, or the error ending it.
async fn write(c: &mut Content, reqs: Vec<cpb::WriteContentRequest>) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut out = Vec::new();
    let mut reqs = reqs.into_iter();
    tx.send(reqs.next().unwrap()).await.unwrap();
    match c
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(st) => out.push(code(&st)),
        Ok(s) => {
            let mut stream = s.into_inner();
            loop {
                match stream.next().await {
                    Some(Ok(m)) => {
                        out.push(format!(
                            "{} {} {} {}",
                            m.action, m.offset, m.total, m.digest
                        ));
                        match reqs.next() {
                            Some(r) => tx.send(r).await.unwrap(),
                            None => break,
                        }
                    }
                    Some(Err(st)) => {
                        out.push(code(&st));
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    out.join(" | ")
}

fn stat(r: &str, expected: &str, total: i64) -> cpb::WriteContentRequest {
    cpb::WriteContentRequest {
        action: cpb::WriteAction::Stat as i32,
        r#ref: r.into(),
        expected: expected.into(),
        total,
        ..Default::default()
    }
}

/// A commit message sending `data` at `offset`.
fn commit(
    r: &str,
    offset: i64,
    data: &[u8],
    expected: &str,
    total: i64,
) -> cpb::WriteContentRequest {
    cpb::WriteContentRequest {
        action: cpb::WriteAction::Commit as i32,
        r#ref: r.into(),
        offset,
        data: prost::bytes::Bytes::copy_from_slice(data),
        expected: expected.into(),
        total,
        ..Default::default()
    }
}

async fn info(c: &mut Content, d: &str) -> String {
    match c.info(cpb::InfoRequest { digest: d.into() }).await {
        Ok(r) => {
            let i = r.into_inner().info.unwrap_or_default();
            let labels: std::collections::BTreeMap<_, _> = i.labels.into_iter().collect();
            format!("ok {} {} {labels:?}", i.digest, i.size)
        }
        Err(st) => code(&st),
    }
}

async fn read(c: &mut Content, d: &str) -> String {
    let r = c
        .read(cpb::ReadContentRequest {
            digest: d.into(),
            offset: 0,
            size: 0,
        })
        .await;
    let mut stream = match r {
        Ok(s) => s.into_inner(),
        Err(st) => return code(&st),
    };
    let mut data = Vec::new();
    while let Some(m) = stream.next().await {
        match m {
            Ok(m) => data.extend(m.data),
            Err(st) => return code(&st),
        }
    }
    format!("ok {:?}", String::from_utf8_lossy(&data))
}

async fn status(c: &mut Content, r: &str) -> String {
    match c.status(cpb::StatusRequest { r#ref: r.into() }).await {
        Ok(s) => {
            let s = s.into_inner().status.unwrap_or_default();
            format!("ok {} {} {} {}", s.r#ref, s.offset, s.total, s.expected)
        }
        // Only the code: containerd's message is the stat error naming a path under its root.
        Err(st) => format!("err {:?}", st.code()),
    }
}

async fn statuses(c: &mut Content) -> String {
    match c.list_statuses(cpb::ListStatusesRequest::default()).await {
        Ok(s) => {
            let mut v: Vec<String> = s
                .into_inner()
                .statuses
                .into_iter()
                .map(|s| format!("{} {} {}", s.r#ref, s.offset, s.total))
                .collect();
            v.sort();
            format!("ok {v:?}")
        }
        Err(st) => code(&st),
    }
}

/// The sequence: a blob stored in namespace `a`, then what namespaces `b`, `c` and a pair
/// around a namespace labelled shareable see and can do with its digest.
async fn transcript(address: &Path) -> Vec<(String, String)> {
    let ch = connect(address).await.unwrap();
    let data = DATA;
    let (dg, n) = (sha(data), data.len() as i64);
    let mut t = Vec::new();
    let mut step = |what: &str, out: String| t.push((what.to_string(), out));

    let mut a = content_in(&ch, "share-a").await;
    step(
        "a: write",
        write(&mut a, vec![commit("a-1", 0, data, &dg, n)]).await,
    );
    step("a: info", info(&mut a, &dg).await);

    let mut b = content_in(&ch, "share-b").await;
    step("b: info before", info(&mut b, &dg).await);
    step("b: read before", read(&mut b, &dg).await);
    // A writer expecting a digest the backend holds: complete (shared) or empty (isolated).
    step(
        "b: stat expecting",
        write(&mut b, vec![stat("b-1", &dg, n)]).await,
    );
    step("b: status of it", status(&mut b, "b-1").await);
    step("b: statuses", statuses(&mut b).await);
    // A commit at offset 0 without bytes: the server truncates a shared writer first.
    step(
        "b: bare commit at 0",
        write(&mut b, vec![commit("b-2", 0, b"", &dg, n)]).await,
    );
    // A commit at the end without bytes: what a client does when Stat said it is complete.
    step(
        "b: bare commit at end",
        write(&mut b, vec![commit("b-3", n, b"", &dg, n)]).await,
    );
    step("b: info after bare commits", info(&mut b, &dg).await);
    // Every byte.
    step(
        "b: commit with data",
        write(&mut b, vec![commit("b-4", 0, data, &dg, n)]).await,
    );
    step("b: info after", info(&mut b, &dg).await);
    step("b: read after", read(&mut b, &dg).await);
    step("b: statuses after", statuses(&mut b).await);
    step("a: info after b", info(&mut a, &dg).await);

    // Other bytes of the same length claimed to be the blob.
    let mut c = content_in(&ch, "share-c").await;
    step(
        "c: forged",
        write(
            &mut c,
            vec![stat("c-1", &dg, n), commit("c-1", 0, FORGED, &dg, n)],
        )
        .await,
    );
    step("c: info", info(&mut c, &dg).await);

    // containerd 1.7's shareable label on the namespace holding a blob. (The header is needed
    // only for the event containerd publishes.)
    let mut ns = client!(
        npb::namespaces_client::NamespacesClient<_>,
        ch.clone(),
        Headers::new(Some("share-src"), None).unwrap()
    );
    let created = ns
        .create(npb::CreateNamespaceRequest {
            namespace: Some(npb::Namespace {
                name: "share-src".into(),
                labels: [(SHAREABLE.to_string(), "true".to_string())].into(),
            }),
        })
        .await
        .map(|_| "ok".to_string())
        .unwrap_or_else(|st| code(&st));
    step("src: create labelled", created);
    let (dg2, n2) = (sha(OTHER), OTHER.len() as i64);
    let mut src = content_in(&ch, "share-src").await;
    step(
        "src: write",
        write(&mut src, vec![commit("s-1", 0, OTHER, &dg2, n2)]).await,
    );
    let mut dst = content_in(&ch, "share-dst").await;
    step(
        "dst: stat expecting",
        write(&mut dst, vec![stat("d-1", &dg2, n2)]).await,
    );
    step(
        "dst: bare commit at end",
        write(&mut dst, vec![commit("d-2", n2, b"", &dg2, n2)]).await,
    );
    step("dst: info", info(&mut dst, &dg2).await);
    t
}

const DATA: &[u8] = b"one blob, several namespaces";
const FORGED: &[u8] = b"one blob, several nameSPACES";
const OTHER: &[u8] = b"a blob in a shareable namespace";

async fn side_by_side(policy: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stowaged.toml");
    fs::write(&cfg, format!("version = 2\n{}", bolt_table(policy))).unwrap();
    let d = Stowaged::start_with(
        &dir.path().join("root"),
        dir.path(),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start_with(&cdir.path().join("root"), cdir.path(), &bolt_table(policy))
        .expect("starting containerd");
    // containerd took the policy (it logs it when the option is set).
    let log = c.log();
    assert!(
        log.contains("metadata content store policy set") && log.contains(policy),
        "containerd did not report policy {policy}:\n{log}"
    );

    let ours = transcript(&d.address).await;
    let theirs = transcript(&c.address).await;
    let mut diffs = Vec::new();
    for (i, ((what, o), (_, t))) in ours.iter().zip(&theirs).enumerate() {
        if o != t {
            diffs.push(format!(
                "{policy} step {i} ({what}):\n  stowaged:   {o}\n  containerd: {t}"
            ));
        }
    }
    assert_eq!(ours.len(), theirs.len());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    drop(c);
    d.stop().unwrap();
    ours
}

fn at<'a>(t: &'a [(String, String)], what: &str) -> &'a str {
    &t.iter()
        .find(|(w, _)| w == what)
        .unwrap_or_else(|| panic!("no step {what}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_policies_match_containerd() {
    if !require_ctr(true) {
        return;
    }
    let isolated = side_by_side("isolated").await;
    let shared = side_by_side("shared").await;
    let (dg, n) = (sha(DATA), DATA.len());
    let empty = sha(b"");

    // The transcripts say what the policies mean, so agreeing is not agreeing on nothing.
    for t in [&isolated, &shared] {
        assert!(
            at(t, "b: info before").starts_with("err NotFound"),
            "{t:#?}"
        );
        assert!(
            at(t, "b: read before").starts_with("err NotFound"),
            "{t:#?}"
        );
        let e = at(t, "b: bare commit at 0");
        assert!(e.contains("failed size validation"), "{t:#?}");
        assert!(at(t, "b: info after").starts_with("ok "), "{t:#?}");
        assert_eq!(
            at(t, "b: read after"),
            format!("ok {:?}", "one blob, several namespaces")
        );
        // Forged bytes never get in.
        assert!(at(t, "c: forged").contains("FailedPrecondition"), "{t:#?}");
        assert!(at(t, "c: info").starts_with("err NotFound"), "{t:#?}");
    }
    // Isolated: an empty ingest the namespace's Status finds; committing it as complete fails;
    // the blob gets in only with its bytes.
    assert_eq!(
        at(&isolated, "b: stat expecting"),
        format!("0 0 {n} {empty}")
    );
    assert_eq!(at(&isolated, "b: status of it"), format!("ok b-1 0 {n} "));
    let e = at(&isolated, "b: bare commit at end");
    assert!(e.starts_with("err OutOfRange"), "{e}");
    assert!(at(&isolated, "b: info after bare commits").starts_with("err NotFound"));
    assert_eq!(
        at(&isolated, "b: commit with data"),
        format!("2 {n} 0 {dg}")
    );
    // Shared: complete at once, with no backend ingest for Status to find.
    assert_eq!(at(&shared, "b: stat expecting"), format!("0 {n} {n} {dg}"));
    assert_eq!(at(&shared, "b: status of it"), "err NotFound");
    assert_eq!(
        at(&shared, "b: bare commit at end"),
        format!("2 {n} 0 {dg}")
    );
    assert!(at(&shared, "b: info after bare commits").starts_with("ok "));
    assert!(at(&shared, "b: commit with data").starts_with("err AlreadyExists"));
    // 1.6 ignores the shareable label: under isolated the labelled namespace's blob stays
    // there.
    assert_eq!(at(&isolated, "src: create labelled"), "ok");
    let (dg2, n2) = (sha(OTHER), OTHER.len());
    assert_eq!(
        at(&isolated, "dst: stat expecting"),
        format!("0 0 {n2} {empty}")
    );
    assert!(at(&isolated, "dst: info").starts_with("err NotFound"));
    assert_eq!(
        at(&shared, "dst: stat expecting"),
        format!("0 {n2} {n2} {dg2}")
    );
    assert!(at(&shared, "dst: info").starts_with("ok "));
}

/// containerd logs the bolt plugin's failure and runs on without metadata; stowaged, which
/// cannot serve anything without it, refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_policy_is_refused_at_start() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stowaged.toml");
    fs::write(&cfg, format!("version = 2\n{}", bolt_table("open"))).unwrap();
    let e = Stowaged::start_with(
        &dir.path().join("root"),
        dir.path(),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown policy: open"), "{e}");
}

/// The content conformance suite through our gRPC client against stowaged started with
/// `content_sharing_policy = "isolated"`: every case on a fresh daemon and root.
mod isolated_conformance {
    use std::sync::Arc;

    use stowage_content::testsuite::TestStore;
    use stowage_daemon::remote::content::RemoteContentStore;

    use super::{bolt_table, fs, Stowaged};

    fn isolated_remote_store() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = dir.path().join("stowaged.toml");
        fs::write(&cfg, format!("version = 2\n{}", bolt_table("isolated"))).unwrap();
        let d = Stowaged::start_with(
            &dir.path().join("root"),
            dir.path(),
            &["--config", cfg.to_str().unwrap()],
        )
        .expect("starting stowaged");
        // Under a lease, so the collector leaves the blobs of a case alone.
        d.ok(&["-n", "conformance", "leases", "create", "--id", "suite"]);
        let store =
            RemoteContentStore::connect(&d.address, "conformance", Some("suite")).expect("connect");
        TestStore::new(Arc::new(store), (d, dir))
    }

    stowage_content::content_store_conformance!(isolated_remote_store);
}
