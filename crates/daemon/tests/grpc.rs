//! Our own gRPC client against stowaged and containerd 1.6 side by side: the namespace
//! header, the content Write protocol (offsets, totals, commit, existing blobs), events and
//! health.

mod common;

use common::{require_ctr, Stowaged};
use prost::Message as _;
use stowage_daemon::api::containerd::services::content::v1 as cpb;
use stowage_daemon::api::containerd::services::events::v1 as epb;
use stowage_daemon::api::containerd::services::images::v1 as ipb;
use stowage_daemon::api::containerd::types::Descriptor;
use stowage_daemon::client;
use stowage_daemon::client::{connect, Headers};
use stowage_tests::containerd::Containerd;
use tokio_stream::StreamExt;
use tonic::Code;

type Content = cpb::content_client::ContentClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Headers>,
>;

async fn content(path: &std::path::Path) -> Content {
    let ch = connect(path).await.unwrap();
    client!(
        cpb::content_client::ContentClient<_>,
        ch,
        Headers::new(Some("default"), None).unwrap()
    )
}

/// One Write session: sends `reqs` one by one, collecting (action, offset, total, digest) of
/// each answer, or the error that ended the stream as (code, message).
async fn write_session(
    c: &mut Content,
    reqs: Vec<cpb::WriteContentRequest>,
) -> Vec<Result<(i32, i64, i64, String), (Code, String)>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut out = Vec::new();
    let mut reqs = reqs.into_iter();
    tx.send(reqs.next().unwrap()).await.unwrap();
    let resp = c
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let mut stream = match resp {
        Ok(s) => s.into_inner(),
        Err(st) => {
            out.push(Err((st.code(), st.message().to_string())));
            return out;
        }
    };
    loop {
        match stream.next().await {
            Some(Ok(m)) => {
                out.push(Ok((m.action, m.offset, m.total, m.digest)));
                match reqs.next() {
                    Some(r) => tx.send(r).await.unwrap(),
                    None => break,
                }
            }
            Some(Err(st)) => {
                out.push(Err((st.code(), st.message().to_string())));
                break;
            }
            None => break,
        }
    }
    out
}

fn req(action: cpb::WriteAction, r: &str, offset: i64, data: &[u8]) -> cpb::WriteContentRequest {
    cpb::WriteContentRequest {
        action: action as i32,
        r#ref: r.into(),
        offset,
        data: prost::bytes::Bytes::copy_from_slice(data),
        ..Default::default()
    }
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

async fn protocol_transcript(path: &std::path::Path) -> Vec<String> {
    use cpb::WriteAction::*;
    use stowage_daemon::api::containerd::services::leases::v1 as lpb;
    // Under a lease, so the collector cannot take the blob between commit and read.
    let ch = connect(path).await.unwrap();
    let mut leases = client!(
        lpb::leases_client::LeasesClient<_>,
        ch.clone(),
        Headers::new(Some("default"), None).unwrap()
    );
    leases
        .create(lpb::CreateRequest {
            id: "transcript".into(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let mut c = client!(
        cpb::content_client::ContentClient<_>,
        ch,
        Headers::new(Some("default"), Some("transcript")).unwrap()
    );
    let data = b"hello, stowage";
    let dg = sha(data);
    let mut t = Vec::new();
    // stat of a new ingest, two writes, commit with the expected digest and total.
    let mut first = req(Stat, "proto-1", 0, b"");
    first.total = data.len() as i64;
    let mut commit = req(Commit, "proto-1", 5, &data[5..]);
    commit.expected = dg.clone();
    commit.total = data.len() as i64;
    let r = write_session(
        &mut c,
        vec![first, req(Write, "proto-1", 0, &data[..5]), commit],
    )
    .await;
    t.push(format!("{r:?}"));
    // A write at the wrong offset.
    let r = write_session(
        &mut c,
        vec![
            req(Write, "proto-2", 0, b"abc"),
            req(Write, "proto-2", 7, b"def"),
        ],
    )
    .await;
    t.push(format!("{r:?}"));
    // Resume proto-2: stat says offset 3; writing at 0 restarts it.
    let r = write_session(
        &mut c,
        vec![
            req(Stat, "proto-2", 0, b""),
            req(Write, "proto-2", 0, b"xy"),
        ],
    )
    .await;
    t.push(format!("{r:?}"));
    // Commit with the wrong digest: FailedPrecondition, ingest kept.
    let mut bad = req(Commit, "proto-2", 2, b"z");
    bad.expected = dg.clone();
    let r = write_session(&mut c, vec![bad]).await;
    t.push(format!("{r:?}"));
    // An expected digest that is stored already.
    let mut exists = req(Stat, "proto-3", 0, b"");
    exists.expected = dg.clone();
    let r = write_session(&mut c, vec![exists]).await;
    t.push(format!("{r:?}"));
    // No reference.
    let r = write_session(&mut c, vec![req(Stat, "", 0, b"")]).await;
    t.push(format!("{r:?}"));
    // Read back a range.
    let mut rs = c
        .read(cpb::ReadContentRequest {
            digest: dg.clone(),
            offset: 7,
            size: 4,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = rs.next().await {
        let m = m.unwrap();
        got.push((m.offset, m.data));
    }
    t.push(format!("{got:?}"));
    let st = c
        .status(cpb::StatusRequest {
            r#ref: "proto-2".into(),
        })
        .await
        .map(|r| {
            let s = r.into_inner().status.unwrap();
            (s.r#ref, s.offset, s.total)
        })
        .map_err(|s| (s.code(), s.message().to_string()));
    t.push(format!("{st:?}"));
    c.abort(cpb::AbortRequest {
        r#ref: "proto-2".into(),
    })
    .await
    .unwrap();
    let st = c
        .abort(cpb::AbortRequest {
            r#ref: "proto-2".into(),
        })
        .await
        .map_err(|s| (s.code(), s.message().to_string()));
    t.push(format!("{st:?}"));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_protocol_and_headers_match_containerd() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&cdir.path().join("root"), cdir.path()).unwrap();

    let ours = protocol_transcript(&d.address).await;
    let theirs = protocol_transcript(&c.address).await;
    assert_eq!(ours.len(), theirs.len());
    for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            o, t,
            "step {i} differs:\n  stowaged:   {o}\n  containerd: {t}"
        );
    }

    // No namespace header: the same code and message as containerd.
    for addr in [&d.address, &c.address] {
        let ch = connect(addr).await.unwrap();
        let mut images = client!(
            ipb::images_client::ImagesClient<_>,
            ch,
            Headers::new(None, None).unwrap()
        );
        let err = images
            .list(ipb::ListImagesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{addr:?}: {err:?}");
        assert_eq!(err.message(), "namespace is required: failed precondition");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_subscribe_publish_forward() {
    if !require_ctr(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let ch = connect(&d.address).await.unwrap();
    let h = Headers::new(Some("ev"), None).unwrap();
    let mut events = client!(epb::events_client::EventsClient<_>, ch.clone(), h.clone());
    let mut sub = events
        .subscribe(epb::SubscribeRequest {
            filters: vec![
                "topic~=\"^/images/\"".into(),
                "topic==\"/custom/thing\"".into(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let mut images = client!(ipb::images_client::ImagesClient<_>, ch.clone(), h.clone());
    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: sha(b"x"),
        size: 1,
        annotations: Default::default(),
    };
    images
        .create(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "example.test/ev:1".into(),
                target: Some(target),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // Not matched by the filters: a namespace event.
    let mut content = client!(cpb::content_client::ContentClient<_>, ch.clone(), h.clone());
    let _ = content
        .abort(cpb::AbortRequest {
            r#ref: "none".into(),
        })
        .await;
    events
        .publish(epb::PublishRequest {
            topic: "/custom/thing".into(),
            event: Some(prost_types::Any {
                type_url: "example.Thing".into(),
                value: vec![1, 2, 3],
            }),
        })
        .await
        .unwrap();
    events
        .forward(epb::ForwardRequest {
            envelope: Some(epb::Envelope {
                timestamp: None,
                namespace: "other".into(),
                topic: "/images/delete".into(),
                event: None,
            }),
        })
        .await
        .unwrap();
    let err = events
        .publish(epb::PublishRequest {
            topic: "no-slash".into(),
            event: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut got = Vec::new();
    for _ in 0..3 {
        let env = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .expect("event within 5 s")
            .unwrap()
            .unwrap();
        got.push(env);
    }
    assert_eq!(got[0].topic, "/images/create");
    assert_eq!(got[0].namespace, "ev");
    let any = got[0].event.as_ref().unwrap();
    assert_eq!(any.type_url, "containerd.services.images.v1.ImageCreate");
    let ev = ipb::ImageCreate::decode(any.value.as_slice()).unwrap();
    assert_eq!(ev.name, "example.test/ev:1");
    assert_eq!(got[1].topic, "/custom/thing");
    assert_eq!(got[1].event.as_ref().unwrap().value, vec![1, 2, 3]);
    assert_eq!(
        (got[2].topic.as_str(), got[2].namespace.as_str()),
        ("/images/delete", "other")
    );

    // Health.
    use stowage_daemon::api::grpc::health::v1 as hpb;
    let mut health = hpb::health_client::HealthClient::new(ch);
    let r = health
        .check(hpb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        hpb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_16_mib_pass() {
    if !require_ctr(false) {
        return;
    }
    use cpb::WriteAction::*;
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let mut c = content(&d.address).await;
    // One 12 MiB Write message: above tonic's 4 MiB default, within containerd's 16 MiB.
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % 241) as u8).collect();
    let dg = sha(&data);
    let mut commit = req(Commit, "big-message", 0, &data);
    commit.expected = dg.clone();
    commit.total = data.len() as i64;
    let r = write_session(&mut c, vec![commit]).await;
    // containerd fills in the total only in stat answers, so a lone commit reports 0.
    assert_eq!(
        r,
        vec![Ok((Commit as i32, data.len() as i64, 0, dg.clone()))]
    );
    let info = c
        .info(cpb::InfoRequest { digest: dg })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.size, data.len() as i64);
}

/// The namespace events one client's namespace calls produce, as `(namespace, topic, type)`,
/// and what a create without the namespace header answers.
async fn namespace_events(path: &std::path::Path) -> (Vec<(String, String, String)>, String) {
    use stowage_daemon::api::containerd::services::namespaces::v1 as npb;
    let ch = connect(path).await.unwrap();
    let caller = Headers::new(Some("caller"), None).unwrap();
    // containerd sends a stream's headers with its first event, so the subscription resolves
    // only once something is published: publish markers until it does.
    let mut events = client!(
        epb::events_client::EventsClient<_>,
        ch.clone(),
        caller.clone()
    );
    let mut subscriber = events.clone();
    let sub = tokio::spawn(async move {
        subscriber
            .subscribe(epb::SubscribeRequest {
                filters: vec!["topic~=\"^/(namespaces|test)/\"".into()],
            })
            .await
            .unwrap()
            .into_inner()
    });
    while !sub.is_finished() {
        events
            .publish(epb::PublishRequest {
                topic: "/test/ready".into(),
                event: Some(prost_types::Any {
                    type_url: "example.Ready".into(),
                    value: Vec::new(),
                }),
            })
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut sub = sub.await.unwrap();
    let mut ns = client!(
        npb::namespaces_client::NamespacesClient<_>,
        ch.clone(),
        caller
    );
    let made = npb::Namespace {
        name: "made".into(),
        labels: [("k".to_string(), "v".to_string())].into(),
    };
    ns.create(npb::CreateNamespaceRequest {
        namespace: Some(made.clone()),
    })
    .await
    .unwrap();
    ns.update(npb::UpdateNamespaceRequest {
        namespace: Some(made),
        update_mask: None,
    })
    .await
    .unwrap();
    ns.delete(npb::DeleteNamespaceRequest {
        name: "made".into(),
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let env = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .expect("event within 5 s")
            .unwrap()
            .unwrap();
        if env.topic != "/test/ready" {
            let ty = env.event.map(|a| a.type_url).unwrap_or_default();
            got.push((env.namespace, env.topic, ty));
        }
    }
    // Without the header the namespace is still created, but publishing its event fails.
    let mut bare = client!(
        npb::namespaces_client::NamespacesClient<_>,
        ch,
        Headers::new(None, None).unwrap()
    );
    let err = bare
        .create(npb::CreateNamespaceRequest {
            namespace: Some(npb::Namespace {
                name: "bare".into(),
                labels: Default::default(),
            }),
        })
        .await
        .unwrap_err();
    let listed = ns
        .list(npb::ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .namespaces
        .iter()
        .any(|n| n.name == "bare");
    (
        got,
        format!("{:?}: {} (created: {listed})", err.code(), err.message()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_events_carry_the_callers_namespace_as_containerd() {
    if !require_ctr(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Stowaged::start(dir.path()).unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let c = Containerd::start(&cdir.path().join("root"), cdir.path()).unwrap();
    let theirs = namespace_events(&c.address).await;
    let ours = namespace_events(&d.address).await;
    assert_eq!(theirs.0[0].0, "caller", "containerd: {theirs:?}");
    assert_eq!(ours, theirs);
}
