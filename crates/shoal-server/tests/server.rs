//! Real servers on 127.0.0.1 over QUIC, with temp data directories and certificates. Each test
//! waits on conditions with deadlines and shuts down every server it starts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use common::*;
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, PeerMessage, PeerRequest,
    PeerResponse, Refusal, Request, RequestError, Response,
};
use shoal_server::{Server, ServerError};
use shoal_transport::Role;
use shoal_types::{RequestOptions, RingEpoch};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_one_node_is_read_through_another_and_lands_on_every_replica() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    let written = client
        .put(cluster.addr(0), "fish", "cod", RequestOptions::default())
        .await;
    assert!(
        matches!(written, ClientResponse::Written { .. }),
        "{written:?}"
    );
    let read = client
        .get(cluster.addr(1), "fish", RequestOptions::default())
        .await;
    assert_eq!(read_values(&read), ["cod"]);
    for i in 0..3 {
        let addr = cluster.addr(i);
        eventually(&format!("n{} holds the value", i + 1), || async {
            client.local_values(addr, "fish").await == ["cod"]
        })
        .await;
    }
    client.close().await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authorised_by_certificate_and_bad_frames_are_refused() {
    let certs = cluster_certs(3);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(single_node_config(certs.path(), data.path()))
        .await
        .unwrap();
    let addr = server.local_addr();
    let ping_from = |from: &str| {
        Request::Peer(PeerRequest {
            from: id(from),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Ping,
        })
    };

    let app = TestClient::new(certs.path(), Role::Client, "app");
    let refused = app.request(addr, &ping_from("n1")).await;
    assert!(
        matches!(refused, Response::Refused(Refusal::Unauthorized { .. })),
        "a client sending a replica message: {refused:?}"
    );
    let refused = app
        .request(addr, &Request::Admin(AdminRequest::Status))
        .await;
    assert!(
        matches!(refused, Response::Refused(Refusal::Unauthorized { .. })),
        "a client asking for admin status: {refused:?}"
    );

    let n2 = TestClient::new(certs.path(), Role::Node, "n2");
    let refused = n2.request(addr, &ping_from("n3")).await;
    match &refused {
        Response::Refused(Refusal::WrongSender { claimed, certified }) => {
            assert_eq!((claimed.as_str(), certified.as_str()), ("n3", "n2"));
        }
        other => panic!("a node claiming to be another: {other:?}"),
    }
    // n2's certificate is valid (the cluster's CA), but n2 is not a member of this one-node
    // ring: it may not send replica messages (it may ping and gossip: that is how a joining
    // node becomes known).
    let read = Request::Peer(PeerRequest {
        from: id("n2"),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Replica(shoal_protocol::ReplicaMessage::Read {
            partition: shoal_types::PartitionId::from_index_unchecked(0),
            key: shoal_types::Key::new("k").unwrap(),
        }),
    });
    let refused = n2.request(addr, &read).await;
    assert_eq!(
        refused,
        Response::Refused(Refusal::NotAMember { node: "n2".into() })
    );
    let pong = n2.request(addr, &ping_from("n2")).await;
    assert_eq!(pong, Response::Peer(PeerResponse::Pong));
    // A member may, in the ring's epoch only.
    let n1 = TestClient::new(certs.path(), Role::Node, "n1");
    let pong = n1.request(addr, &ping_from("n1")).await;
    assert_eq!(pong, Response::Peer(PeerResponse::Pong));
    let other_epoch = Request::Peer(PeerRequest {
        from: id("n1"),
        epoch: RingEpoch::INITIAL.next(),
        budget: None,
        message: PeerMessage::Ping,
    });
    let refused = n1.request(addr, &other_epoch).await;
    assert_eq!(
        refused,
        Response::Refused(Refusal::WrongEpoch {
            ours: RingEpoch::INITIAL,
            theirs: RingEpoch::INITIAL.next(),
        })
    );

    let ops = TestClient::new(certs.path(), Role::Admin, "ops");
    let status = ops
        .request(addr, &Request::Admin(AdminRequest::Status))
        .await;
    assert!(matches!(status, Response::Admin(AdminResponse::Status(_))));

    for garbage in [
        Bytes::from_static(b"\x01\xff\xfe not a message"),
        Bytes::new(),
        Bytes::from_static(b"\x63 wrong version"),
    ] {
        let answer = app.refusal(addr, garbage).await;
        assert!(
            matches!(answer, Refusal::BadRequest(_)),
            "garbage answered {answer:?}"
        );
    }
    let written = app
        .put(
            addr,
            "after-garbage",
            "still serving",
            RequestOptions::default(),
        )
        .await;
    assert!(matches!(written, ClientResponse::Written { .. }));

    for c in [app, n1, n2, ops] {
        c.close().await;
    }
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_every_acknowledged_write_and_the_incarnation() {
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let config = single_node_config(certs.path(), data.path());
    let server = Server::start(config.clone()).await.unwrap();
    let (addr, incarnation) = (server.local_addr(), server.incarnation());

    // Writers put unique keys back to back until the node stops answering `Written`.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let shutting_down = Arc::new(AtomicBool::new(false));
    let acked_after_shutdown = Arc::new(AtomicUsize::new(0));
    let mut writers = JoinSet::new();
    for w in 0..8 {
        let client = TestClient::new(certs.path(), Role::Client, "app");
        let (acked, acked_count) = (acked.clone(), acked_count.clone());
        let (shutting_down, after) = (shutting_down.clone(), acked_after_shutdown.clone());
        writers.spawn(async move {
            let mut refusals = 0;
            for i in 0.. {
                let k = format!("w{w}-{i}");
                let request = Request::Client(ClientRequest::Put {
                    key: key(&k),
                    value: Bytes::from(format!("value of {k}")),
                    context: Default::default(),
                    options: RequestOptions::default(),
                });
                match client.try_request(addr, &request).await {
                    Ok(Response::Client(ClientResponse::Written { .. })) => {
                        if shutting_down.load(Ordering::SeqCst) {
                            after.fetch_add(1, Ordering::SeqCst);
                        }
                        acked.lock().unwrap().push(k);
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Response::Refused(Refusal::ShuttingDown)) => refusals += 1,
                    Ok(other) => panic!("unexpected answer {other:?}"),
                    // The endpoint closed under us: the node is gone.
                    Err(_) => break,
                }
                if refusals > 0 && shutting_down.load(Ordering::SeqCst) {
                    break;
                }
            }
            client.close().await;
        });
    }
    eventually("writes are being acknowledged", || async {
        acked_count.load(Ordering::SeqCst) >= 200
    })
    .await;
    shutting_down.store(true, Ordering::SeqCst);
    within("shutdown", server.shutdown()).await.unwrap();
    within("writers", async {
        while let Some(w) = writers.join_next().await {
            w.unwrap();
        }
    })
    .await;

    let server = Server::start(config).await.unwrap();
    assert_eq!(server.incarnation(), incarnation, "the incarnation changed");
    let client = TestClient::new(certs.path(), Role::Client, "app");
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for k in &acked {
        if client.local_values(server.local_addr(), k).await != [format!("value of {k}")] {
            lost += 1;
        }
    }
    println!(
        "acknowledged writes lost across graceful restart: {lost} of {} ({} acknowledged after shutdown began)",
        acked.len(),
        acked_after_shutdown.load(Ordering::SeqCst)
    );
    assert_eq!(lost, 0);
    client.close().await;
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_node_of_three_down_quorums_of_two_succeed_and_three_fail_fast() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    // Connections to n3 exist before it goes, as in a running cluster.
    let written = client
        .put(cluster.addr(0), "before", "1", RequestOptions::default())
        .await;
    assert!(matches!(written, ClientResponse::Written { .. }));
    cluster.stop(2).await;

    let start = Instant::now();
    for i in 0..5 {
        let k = format!("k{i}");
        let written = client
            .put(cluster.addr(0), &k, "v", options(None, Some(2)))
            .await;
        assert!(
            matches!(written, ClientResponse::Written { .. }),
            "W=2 put of {k}: {written:?}"
        );
        let read = client
            .get(cluster.addr(1), &k, options(Some(2), None))
            .await;
        assert_eq!(read_values(&read), ["v"], "R=2 get of {k}");
    }
    println!(
        "5 W=2 puts and R=2 gets with a node down: {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let failed = client
        .get(cluster.addr(0), "k0", options(Some(3), None))
        .await;
    let elapsed = start.elapsed();
    println!("R=3 get with a node down answered in {elapsed:?}: {failed:?}");
    match failed {
        ClientResponse::Failed(RequestError::QuorumFailed { required, answered }) => {
            assert_eq!((required, answered), (3, 2));
        }
        ClientResponse::Failed(RequestError::Unavailable { required, alive }) => {
            assert_eq!((required, alive), (3, 2));
        }
        // Timeout would mean the node did not learn that n3 is down before the deadline.
        other => panic!("R=3 with a node down: {other:?}"),
    }

    // Back on the same port and data directory, the node is reached again and W=3 works.
    cluster.servers[2] = Some(Server::start(cluster.configs[2].clone()).await.unwrap());
    let start = Instant::now();
    eventually("a W=3 put succeeds once n3 is back", || async {
        let written = client
            .put(cluster.addr(0), "after", "3", options(None, Some(3)))
            .await;
        matches!(written, ClientResponse::Written { .. })
    })
    .await;
    println!("W=3 put succeeded {:?} after n3 restarted", start.elapsed());
    assert_eq!(
        client.local_values(cluster.addr(2), "after").await,
        ["3"],
        "the restarted node holds the W=3 write"
    );
    client.close().await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_exports_counts_that_move_with_requests() {
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let mut config = single_node_config(certs.path(), data.path());
    config.metrics = Some(localhost(0));
    let server = Server::start(config).await.unwrap();
    let metrics = server.metrics_addr().unwrap();
    let addr = server.local_addr();

    let (status, body) = http_get(metrics, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for name in [
        "shoal_node_info",
        "shoal_requests_total",
        "shoal_request_duration_seconds_bucket{op=\"get\",le=\"0.00005\"}",
        "shoal_request_duration_seconds_bucket{op=\"put\",le=\"+Inf\"}",
        "shoal_requests_refused_total{reason=\"bad_request\"}",
        "shoal_requests_in_flight",
        "shoal_quorum_failures_total",
        "shoal_timeouts_total",
        "shoal_unavailable_total",
        "shoal_read_repairs_total",
        "shoal_forwarded_total",
        "shoal_too_many_siblings_total",
        "shoal_overloaded_total",
        "shoal_storage_commits_total",
        "shoal_storage_writes_total",
        "shoal_storage_commit_writes_sum",
        "shoal_storage_commit_writes_max",
        "shoal_storage_commit_duration_seconds_sum",
        "shoal_storage_commit_duration_seconds_max",
        "shoal_storage_corrupt_objects_total",
        "shoal_transport_requests_received_total{endpoint=\"listen\"}",
        "shoal_transport_open_connections{endpoint=\"peers\"}",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    assert_eq!(
        sample(&body, "shoal_request_duration_seconds_count{op=\"put\"}"),
        Some(0.0)
    );

    let client = TestClient::new(certs.path(), Role::Client, "app");
    let written = client.put(addr, "m", "1", RequestOptions::default()).await;
    assert!(matches!(written, ClientResponse::Written { .. }));
    let read = client.get(addr, "m", RequestOptions::default()).await;
    assert_eq!(read_values(&read), ["1"]);
    let refusal = client.refusal(addr, Bytes::from_static(b"junk")).await;
    assert!(matches!(refusal, Refusal::BadRequest(_)));

    let (_, body) = http_get(metrics, "/metrics").await;
    for (series, expected) in [
        ("shoal_requests_total{op=\"put\",outcome=\"ok\"}", 1.0),
        ("shoal_requests_total{op=\"get\",outcome=\"ok\"}", 1.0),
        ("shoal_request_duration_seconds_count{op=\"put\"}", 1.0),
        (
            "shoal_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"}",
            1.0,
        ),
        ("shoal_requests_refused_total{reason=\"bad_request\"}", 1.0),
        ("shoal_puts_coordinated_total", 1.0),
        ("shoal_gets_coordinated_total", 1.0),
        ("shoal_storage_writes_total", 1.0),
        ("shoal_storage_commits_total", 1.0),
        ("shoal_requests_in_flight", 0.0),
    ] {
        assert_eq!(sample(&body, series), Some(expected), "{series} in\n{body}");
    }
    let received = sample(
        &body,
        "shoal_transport_requests_received_total{endpoint=\"listen\"}",
    );
    assert_eq!(received, Some(3.0));

    let (status, _) = http_get(metrics, "/other").await;
    assert!(status.contains("404"), "{status}");
    client.close().await;
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_names_what_it_could_not_open() {
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let config = single_node_config(certs.path(), data.path());
    let server = Server::start(config.clone()).await.unwrap();

    // The data directory is in use by the running server.
    let err = Server::start(config.clone()).await.unwrap_err();
    assert!(matches!(err, ServerError::Storage { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&config.data_dir.display().to_string()),
        "{err}"
    );

    // No certificate for n2.
    let mut other = config.clone();
    other.node_id = id("n2");
    other.data_dir = data.path().join("n2");
    let err = Server::start(other).await.unwrap_err();
    assert!(matches!(err, ServerError::Certificate { .. }), "{err}");

    // The QUIC port is taken.
    let mut clash = config;
    clash.data_dir = data.path().join("n1-copy");
    clash.listen = server.local_addr();
    let err = Server::start(clash).await.unwrap_err();
    assert!(matches!(err, ServerError::Bind { .. }), "{err}");

    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_server_down_gracefully() {
    use tokio::signal::unix::{SignalKind, signal};
    // A listener of our own replaces SIGTERM's default action (exit) for this test process
    // before the server installs its own, so the signal can never kill the test runner.
    let _ours = signal(SignalKind::terminate()).unwrap();
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let config = single_node_config(certs.path(), data.path());
    let server = Server::start(config.clone()).await.unwrap();
    let addr = server.local_addr();
    let client = TestClient::new(certs.path(), Role::Client, "app");
    let written = client
        .put(addr, "sig", "term", RequestOptions::default())
        .await;
    assert!(matches!(written, ClientResponse::Written { .. }));

    let running = tokio::spawn(server.run_until_signal());
    let pid = std::process::id().to_string();
    // The server installs its handler when it starts running: signal until it has stopped.
    eventually("the server stops on SIGTERM", || async {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        running.is_finished()
    })
    .await;
    running.await.unwrap().unwrap();
    client.close().await;

    // Starting again on the same data directory shows the storage was closed.
    let server = Server::start(config).await.unwrap();
    let client = TestClient::new(certs.path(), Role::Client, "app");
    assert_eq!(
        client.local_values(server.local_addr(), "sig").await,
        ["term"]
    );
    client.close().await;
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_stop_that_was_not_graceful_keeps_the_incarnation_and_the_data() {
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let config = single_node_config(certs.path(), data.path());
    let server = Server::start(config.clone()).await.unwrap();
    let (addr, incarnation) = (server.local_addr(), server.incarnation());
    let client = TestClient::new(certs.path(), Role::Client, "app");
    let written = client.put(addr, "k", "v", RequestOptions::default()).await;
    assert!(matches!(written, ClientResponse::Written { .. }));
    client.close().await;
    // Dropped without `shutdown`: nobody records a clean stop. The node drains on its own and
    // then lets go of the data directory.
    drop(server);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let server = loop {
        match Server::start(config.clone()).await {
            Ok(server) => break server,
            // Still held by the dropped node: polled, not slept on for an outcome.
            Err(ServerError::Storage { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    // Coordinators send only dots durable on their own disk, so the disk knows every dot this
    // node made that anyone holds: recovering under the same incarnation reuses none, and
    // version vectors gain no entry per crash.
    assert_eq!(server.incarnation(), incarnation);
    let client = TestClient::new(certs.path(), Role::Client, "app");
    assert_eq!(client.local_values(server.local_addr(), "k").await, ["v"]);
    client.close().await;
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_close_the_connection_that_keeps_sending_them() {
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(single_node_config(certs.path(), data.path()))
        .await
        .unwrap();
    let addr = server.local_addr();
    let app = TestClient::new(certs.path(), Role::Client, "app");
    let garbage = Bytes::from_static(b"\x01\xff\xfe not a message");
    // Up to the transport's limit (8 by default) each is answered as a bad request.
    for _ in 0..8 {
        let answer = app.refusal(addr, garbage.clone()).await;
        assert!(matches!(answer, Refusal::BadRequest(_)), "{answer:?}");
    }
    assert_eq!(app.endpoint.stats().open_connections, 1);
    // One more, and the node closes the connection.
    let _ = app.raw(addr, garbage).await;
    eventually("the node closes the connection", || async {
        app.endpoint.stats().open_connections == 0
    })
    .await;
    // A well-behaved request connects again and is served.
    let written = app.put(addr, "k", "v", RequestOptions::default()).await;
    assert!(
        matches!(written, ClientResponse::Written { .. }),
        "{written:?}"
    );
    app.close().await;
    within("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_connections_beyond_the_limit_are_turned_away_at_once() {
    use tokio::io::AsyncReadExt;
    let certs = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let mut config = single_node_config(certs.path(), data.path());
    config.metrics = Some(localhost(0));
    let server = Server::start(config).await.unwrap();
    let metrics = server.metrics_addr().unwrap();

    // More connections than are served at once (16), none sending a request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(metrics).await.unwrap());
    }
    // The next is answered 503 without waiting for its request.
    let mut turned_away = tokio::net::TcpStream::connect(metrics).await.unwrap();
    let mut answer = String::new();
    within("the busy answer", turned_away.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");

    // Once the idle connections go, scrapes are served, and the refusals are counted.
    drop(idle);
    eventually("a scrape is served again", || async {
        // Until the slots are free, a scrape may be turned away, or reset.
        try_http_get(metrics, "/metrics")
            .await
            .is_ok_and(|(status, _)| status.contains("200"))
    })
    .await;
    let (_, body) = http_get(metrics, "/metrics").await;
    let refused = sample(&body, "shoal_metrics_connections_refused_total").unwrap();
    assert!(refused >= 1.0, "{refused}");
    within("shutdown", server.shutdown()).await.unwrap();
}
