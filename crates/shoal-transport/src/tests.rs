//! Endpoint tests over real quinn on 127.0.0.1, port 0. They wait on conditions with deadlines,
//! never on fixed sleeps, and close every endpoint they open.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::ReadError;
use shoal_types::NodeId;
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::certs::{self, IfExists};
use crate::endpoint::State;
use crate::*;

const LOCALHOST: &str = "127.0.0.1:0";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(10);

/// A certificate directory with a CA, nodes n1 and n2, client `app` and admin `ops`.
fn cluster_certs() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), IfExists::Refuse).unwrap();
    for (role, name) in [
        (Role::Node, "n1"),
        (Role::Node, "n2"),
        (Role::Client, "app"),
        (Role::Admin, "ops"),
    ] {
        certs::issue(dir.path(), role, name, IfExists::Refuse).unwrap();
    }
    dir
}

fn identity(dir: &Path, role: Role, name: &str) -> Identity {
    Identity::load(dir, role, Some(name)).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn localhost() -> SocketAddr {
    LOCALHOST.parse().unwrap()
}

/// The address to reach a server endpoint bound to 127.0.0.1.
fn addr_of(endpoint: &Endpoint) -> SocketAddr {
    endpoint.local_addr()
}

/// Answers every request with `<role>:<name>:<request>`, until the endpoint closes.
fn echo(mut incoming: Incoming) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            let mut answer = format!("{}:{}:", request.peer.role, request.peer.name).into_bytes();
            answer.extend_from_slice(&request.frame);
            request.respond(Bytes::from(answer));
        }
    })
}

fn server(dir: &Path, name: &str, config: TransportConfig) -> (Endpoint, Incoming) {
    Endpoint::server(localhost(), identity(dir, Role::Node, name), config).unwrap()
}

fn client(dir: &Path, role: Role, name: &str) -> Endpoint {
    Endpoint::client(identity(dir, role, name), TransportConfig::default()).unwrap()
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// Polls `condition` until it holds, failing the test after the deadline.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not happen within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A small seeded generator (SplitMix64): a failing run prints its seed, `SHOAL_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("SHOAL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("SHOAL_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn request_and_response_carry_both_identities() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let ops = client(dir.path(), Role::Admin, "ops");

    // The client asked for n1 by id: the handshake proved the server is n1.
    let answer = app
        .request(
            addr_of(&n1),
            ExpectedPeer::Node(node("n1")),
            Bytes::from_static(b"hi"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:hi");
    let answer = ops
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"admin:ops:");
    assert_eq!(app.identity().name, node("app"));

    app.close().await;
    ops.close().await;
    n1.close().await;
}

#[tokio::test]
async fn nodes_talk_to_each_other_as_nodes() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let (n2, _incoming2) = server(dir.path(), "n2", TransportConfig::default());
    let answer = n2
        .request(
            addr_of(&n1),
            ExpectedPeer::Node(node("n1")),
            Bytes::from_static(b"gossip"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"node:n2:gossip");
    n2.close().await;
    n1.close().await;
}

#[tokio::test]
async fn concurrent_requests_share_one_connection() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);

    let mut requests = JoinSet::new();
    for i in 0..200u32 {
        let app = app.clone();
        requests.spawn(async move {
            let frame = Bytes::from(i.to_be_bytes().to_vec());
            let answer = app
                .request(
                    addr,
                    ExpectedPeer::Node(node("n1")),
                    frame.clone(),
                    REQUEST_TIMEOUT,
                )
                .await
                .unwrap();
            assert_eq!(&answer[answer.len() - 4..], &frame[..]);
        });
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
    let stats = app.stats();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(stats.requests_sent, 200);
    assert_eq!(n1.stats().connections_accepted, 1);
    assert_eq!(n1.stats().requests_received, 200);

    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_large_frame_within_the_limit_arrives_whole() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let answer = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from(body.clone()),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[b"client:app:".len()..], &body[..]);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_client_of_another_ca_is_refused_and_the_server_keeps_serving() {
    let dir = cluster_certs();
    let foreign = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);

    // The stranger trusts our CA, but its own certificate comes from another one.
    let ours = identity(dir.path(), Role::Client, "app");
    let stranger = identity(foreign.path(), Role::Client, "app").trusting_ca_of(&ours);
    let stranger = Endpoint::client(stranger, TransportConfig::default()).unwrap();
    let err = stranger
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"x"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::RejectedByPeer {
                tls_alert: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());
    eventually("the refusal is counted", || {
        n1.stats().incoming_handshakes_failed >= 1
    })
    .await;
    assert_eq!(n1.stats().requests_received, 0);

    let app = client(dir.path(), Role::Client, "app");
    let answer = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"ok"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:ok");

    stranger.close().await;
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused_by_the_client() {
    let dir = cluster_certs();
    let foreign = cluster_certs();
    let (impostor, incoming) = server(foreign.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let err = app
        .request(
            addr_of(&impostor),
            ExpectedPeer::Node(node("n1")),
            Bytes::from_static(b"x"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::PeerRejected { .. }),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());
    assert_eq!(impostor.stats().requests_received, 0);
    assert_eq!(app.stats().outgoing_handshakes_failed, 1);
    app.close().await;
    impostor.close().await;
}

#[tokio::test]
async fn a_node_is_refused_when_another_node_was_expected() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let err = app
        .request(
            addr_of(&n1),
            ExpectedPeer::Node(node("n2")),
            Bytes::from_static(b"x"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::PeerRejected { .. }),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());

    let answer = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"x"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:x");
    assert_eq!(n1.stats().requests_received, 1);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_client_certificate_cannot_pose_as_a_node() {
    let dir = cluster_certs();
    // A client named like the node it impersonates.
    certs::issue(dir.path(), Role::Client, "n1", IfExists::Refuse).unwrap();
    let err = Endpoint::server(
        localhost(),
        identity(dir.path(), Role::Client, "n1"),
        TransportConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::WrongRole {
                role: Role::Client,
                ..
            }
        ),
        "{err:?}"
    );

    // Even when listening anyway, every expectation of a node refuses it.
    let (impostor, incoming) = Endpoint::listen(
        localhost(),
        identity(dir.path(), Role::Client, "n1"),
        TransportConfig::default(),
    )
    .unwrap();
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    for expect in [ExpectedPeer::Node(node("n1")), ExpectedPeer::AnyNode] {
        let err = app
            .request(
                addr_of(&impostor),
                expect.clone(),
                Bytes::from_static(b"x"),
                REQUEST_TIMEOUT,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::PeerRejected { .. }),
            "{expect}: {err:?}"
        );
    }
    assert_eq!(impostor.stats().requests_received, 0);
    app.close().await;
    impostor.close().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let dir = cluster_certs();
    let config = TransportConfig {
        max_frame_bytes: 1024,
        max_pending_request_bytes: 1024,
        max_pending_request_bytes_per_peer: 1024,
        ..TransportConfig::default()
    };
    let (n1, incoming) = server(dir.path(), "n1", config.clone());
    echo(incoming);
    let app = Endpoint::client(identity(dir.path(), Role::Client, "app"), config).unwrap();
    let addr = addr_of(&n1);

    // The sender's own check: nothing is sent.
    let err = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from(vec![0u8; 1025]),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());

    // A peer that announces 4 GiB and sends nothing more: refused on the prefix alone.
    let (mut send, mut recv) = app
        .open_raw_stream(addr, ExpectedPeer::AnyNode)
        .await
        .unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let read = within("the reset", recv.read_chunk(16, true)).await;
    match read {
        Err(ReadError::Reset(code)) => {
            assert_eq!(ResetCode::from_u64(code.into_inner()), ResetCode::BadFrame)
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(n1.stats().bad_frames, 1);

    let answer = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"still"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:still");
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_response_over_the_limit_says_the_request_was_handled() {
    let dir = cluster_certs();
    let config = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::default()
    };
    let (n1, incoming) = server(dir.path(), "n1", config);
    // The echo adds `client:app:` to the request: over the server's limit.
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let err = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from(vec![7u8; 1020]),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Reset {
                code: ResetCode::ResponseTooLarge,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.may_have_reached_peer(), "the request was handled");
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn truncated_and_overlong_frames_are_bad_frames() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);

    for (bytes, what) in [
        (&[0u8, 0, 0, 10, 1, 2, 3][..], "truncated body"),
        (&[0u8, 0][..], "truncated prefix"),
        (&[0u8, 0, 0, 1, 7, 8][..], "trailing bytes"),
    ] {
        let (mut send, mut recv) = app
            .open_raw_stream(addr, ExpectedPeer::AnyNode)
            .await
            .unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let read = within(what, recv.read_chunk(16, true)).await;
        assert!(
            matches!(read, Err(ReadError::Reset(code)) if ResetCode::from_u64(code.into_inner()) == ResetCode::BadFrame),
            "{what}: {read:?}"
        );
    }
    assert_eq!(n1.stats().bad_frames, 3);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_connection_that_keeps_sending_bad_frames_is_closed() {
    let dir = cluster_certs();
    let config = TransportConfig {
        max_bad_frames_per_connection: 2,
        ..TransportConfig::default()
    };
    let (n1, incoming) = server(dir.path(), "n1", config);
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);

    for _ in 0..3 {
        let (mut send, mut recv) = app
            .open_raw_stream(addr, ExpectedPeer::AnyNode)
            .await
            .unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let _ = within("the reset", recv.read_chunk(16, true)).await;
    }
    eventually("the connection is closed", || {
        n1.stats().connections_closed_for_bad_frames == 1 && app.stats().open_connections == 0
    })
    .await;
    // The next request connects again.
    let answer = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"again"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:again");
    assert_eq!(app.stats().connections_opened, 2);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn random_streams_and_datagrams_leave_the_endpoint_serving() {
    let mut rng = Rng::from_env();
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);

    for _ in 0..40 {
        let len = rng.below(64) as usize;
        let mut bytes = rng.bytes(len);
        // Half of them announce a small length, so bodies are read (and cut short or overrun).
        if rng.below(2) == 0 && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&(rng.below(80) as u32).to_be_bytes());
        }
        let Ok((mut send, mut recv)) = app.open_raw_stream(addr, ExpectedPeer::AnyNode).await
        else {
            continue; // the server closed the connection for bad frames; the next one reconnects
        };
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let _ = within("an answer or a reset", recv.read_to_end(1 << 20)).await;
    }

    let socket = UdpSocket::bind(LOCALHOST).unwrap();
    for _ in 0..200 {
        let len = rng.below(1500) as usize;
        socket.send_to(&rng.bytes(len), addr).unwrap();
    }

    let answer = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"alive"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:alive");
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_dropped_request_resets_the_stream_as_unanswered() {
    let dir = cluster_certs();
    let (n1, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            drop(request);
        }
    });
    let app = client(dir.path(), Role::Client, "app");
    let err = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"x"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Reset {
                code: ResetCode::NoResponse,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.may_have_reached_peer());
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_split_request_is_answered_through_its_responder() {
    let dir = cluster_certs();
    let (n1, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            let (peer, _remote, frame, responder) = request.into_parts();
            let answer = format!("{}:{}", peer.dns_name(), frame.len());
            // Answered from another task, as a server loop answers from its node task.
            tokio::spawn(async move { responder.respond(Bytes::from(answer)) });
        }
    });
    let app = client(dir.path(), Role::Client, "app");
    let answer = app
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"abc"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"app.client.shoal:3");
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let dir = cluster_certs();
    let config = TransportConfig {
        max_incoming_connections: 1,
        ..TransportConfig::default()
    };
    let (n1, incoming) = server(dir.path(), "n1", config);
    echo(incoming);
    let first = client(dir.path(), Role::Client, "app");
    let second = client(dir.path(), Role::Admin, "ops");
    first
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    let err = second
        .request(
            addr_of(&n1),
            ExpectedPeer::AnyNode,
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::RejectedByPeer {
                tls_alert: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());
    assert_eq!(n1.stats().connections_refused, 1);
    first.close().await;
    second.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_to() {
    let dir = cluster_certs();
    let (n1, incoming) = server(dir.path(), "n1", TransportConfig::default());
    echo(incoming);
    let addr = addr_of(&n1);
    let app = client(dir.path(), Role::Client, "app");
    for _ in 0..10 {
        app.request(
            addr,
            ExpectedPeer::Node(node("n1")),
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    }
    assert_eq!(app.stats().connections_opened, 1);

    within("close", n1.close()).await;
    drop(n1);
    eventually("the client sees the close", || {
        app.stats().open_connections == 0
    })
    .await;

    // The old socket is released once quinn's driver has finished; bind again until it is.
    let start = Instant::now();
    let (n1, incoming) = loop {
        match Endpoint::server(
            addr,
            identity(dir.path(), Role::Node, "n1"),
            TransportConfig::default(),
        ) {
            Ok(server) => break server,
            Err(TransportError::Bind { .. }) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    echo(incoming);
    let answer = app
        .request(
            addr,
            ExpectedPeer::Node(node("n1")),
            Bytes::from_static(b"back"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"client:app:back");
    assert_eq!(app.stats().connections_opened, 2);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn close_waits_for_the_request_in_flight() {
    let dir = cluster_certs();
    let (n1, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);
    let pending = tokio::spawn({
        let app = app.clone();
        async move {
            app.request(
                addr,
                ExpectedPeer::AnyNode,
                Bytes::from_static(b"slow"),
                REQUEST_TIMEOUT,
            )
            .await
        }
    });
    let request = within("the request", incoming.next()).await.unwrap();

    let closing = tokio::spawn({
        let n1 = n1.clone();
        async move { n1.close().await }
    });
    let mut state = n1.state_watch();
    within("draining", state.wait_for(|s| *s == State::Draining))
        .await
        .unwrap();
    assert!(
        !closing.is_finished(),
        "close returned with a request unanswered"
    );

    request.respond(Bytes::from_static(b"done"));
    let answer = within("the answer", pending).await.unwrap().unwrap();
    assert_eq!(&answer[..], b"done");
    within("close", closing).await.unwrap();
    assert!(
        within("the end of requests", incoming.next())
            .await
            .is_none()
    );

    let err = app
        .request(addr, ExpectedPeer::AnyNode, Bytes::new(), REQUEST_TIMEOUT)
        .await
        .unwrap_err();
    assert!(!err.may_have_reached_peer(), "{err:?}");
    app.close().await;
}

#[tokio::test]
async fn close_does_not_hang_on_an_unanswered_request() {
    let dir = cluster_certs();
    let config = TransportConfig {
        close_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let (n1, mut incoming) = server(dir.path(), "n1", config);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);
    let pending = tokio::spawn({
        let app = app.clone();
        async move {
            app.request(addr, ExpectedPeer::AnyNode, Bytes::new(), REQUEST_TIMEOUT)
                .await
        }
    });
    let held = within("the request", incoming.next()).await.unwrap();
    within("close", n1.close()).await;
    let err = within("the failure", pending).await.unwrap().unwrap_err();
    assert!(err.may_have_reached_peer(), "{err:?}");
    drop(held);
    app.close().await;
}

#[tokio::test]
async fn a_closed_endpoint_refuses_requests() {
    let dir = cluster_certs();
    let app = client(dir.path(), Role::Client, "app");
    app.close().await;
    let err = app
        .request(
            localhost(),
            ExpectedPeer::AnyNode,
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Closed), "{err:?}");
}

#[tokio::test]
async fn an_unanswered_address_times_out_without_sending() {
    let dir = cluster_certs();
    let app = client(dir.path(), Role::Client, "app");
    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind(LOCALHOST).unwrap();
    let err = app
        .request(
            silent.local_addr().unwrap(),
            ExpectedPeer::AnyNode,
            Bytes::new(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { sent: false, .. }),
        "{err:?}"
    );
    assert!(!err.may_have_reached_peer());
    app.close().await;
}

/// A UDP relay on its own port in front of a server: the peer's address as the client sees it.
/// Stopping it closes that port, as the death of the peer's process would.
struct Relay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// While set, datagrams from the server to the client are dropped.
    hold: Arc<AtomicBool>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let front = tokio::net::UdpSocket::bind(LOCALHOST).await.unwrap();
        let back = tokio::net::UdpSocket::bind(LOCALHOST).await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let hold = Arc::new(AtomicBool::new(false));
        let held = hold.clone();
        let task = tokio::spawn(async move {
            let mut client = None;
            let mut up = vec![0u8; 65_536];
            let mut down = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    received = front.recv_from(&mut up) => {
                        let Ok((len, from)) = received else { continue };
                        // The client's port checks come from sockets of their own, one byte
                        // each: answers go to its QUIC socket.
                        if len > 1 {
                            client = Some(from);
                        }
                        let _ = back.send(&up[..len]).await;
                    }
                    received = back.recv(&mut down) => {
                        let (Ok(len), Some(to)) = (received, client) else { continue };
                        if !held.load(Ordering::SeqCst) {
                            let _ = front.send_to(&down[..len], to).await;
                        }
                    }
                }
            }
        });
        Relay { addr, task, hold }
    }

    /// Drops (`true`) or passes (`false`) what the server sends from now on.
    fn hold_responses(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Closes the relay's port without a word to the client.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A client whose connections would otherwise wait a minute to notice a dead peer.
fn patient_client(dir: &Path) -> Endpoint {
    let config = TransportConfig {
        idle_timeout: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    Endpoint::client(identity(dir, Role::Client, "app"), config).unwrap()
}

#[tokio::test]
async fn a_request_to_a_peer_whose_process_died_fails_at_once_and_the_next_is_not_sent() {
    let dir = cluster_certs();
    let (n1, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    let relay = Relay::start(addr_of(&n1)).await;
    let peer = relay.addr;
    let app = patient_client(dir.path());
    let answered = app.request(
        peer,
        ExpectedPeer::AnyNode,
        Bytes::from_static(b"a"),
        REQUEST_TIMEOUT,
    );
    let serve_one = async {
        let request = incoming.next().await.unwrap();
        request.respond(Bytes::from_static(b"ok"));
    };
    let (answer, ()) = within("the first exchange", async {
        tokio::join!(answered, serve_one)
    })
    .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"ok"));

    // A request the server takes and never answers, then the peer's port closes.
    let app2 = app.clone();
    let pending = tokio::spawn(async move {
        app2.request(
            peer,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"held"),
            Duration::from_secs(60),
        )
        .await
    });
    let held = within("the held request to arrive", incoming.next())
        .await
        .unwrap();
    relay.kill().await;

    let err = within("the request on the dead connection to fail", pending)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::ConnectionLost { reason, .. } if reason.contains("process is gone")),
        "{err:?}"
    );
    assert!(err.may_have_reached_peer(), "it was sent: {err:?}");

    // Nothing listens there now: the next request fails without being sent.
    let err = within(
        "a request to the dead address to fail",
        app.request(
            peer,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"b"),
            Duration::from_secs(60),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    assert!(!err.may_have_reached_peer(), "{err:?}");
    drop(held);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_slow_live_peer_is_checked_and_keeps_its_connection() {
    let dir = cluster_certs();
    let (n1, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    let app = patient_client(dir.path());
    let peer = addr_of(&n1);
    let request = app.request(
        peer,
        ExpectedPeer::AnyNode,
        Bytes::from_static(b"slow"),
        REQUEST_TIMEOUT,
    );
    let app2 = app.clone();
    let serve = async {
        let request = incoming.next().await.unwrap();
        // Answer only once the client has checked the silent peer's port a few times.
        eventually("the client to check the port", || {
            app2.peer_checks(peer) >= 3
        })
        .await;
        request.respond(Bytes::from_static(b"late"));
    };
    let (answer, ()) = within("the slow exchange", async { tokio::join!(request, serve) }).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"late"));
    // The probes did not disturb the server, and the connection is the same one.
    let again = within("a second exchange", async {
        tokio::join!(
            app.request(
                peer,
                ExpectedPeer::AnyNode,
                Bytes::from_static(b"x"),
                REQUEST_TIMEOUT
            ),
            async {
                let request = incoming.next().await.unwrap();
                request.respond(Bytes::from_static(b"y"));
            }
        )
    })
    .await;
    assert_eq!(again.0.unwrap(), Bytes::from_static(b"y"));
    assert_eq!(app.stats().connections_opened, 1);
    assert_eq!(n1.stats().bad_frames, 0);
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_server_sees_that_a_requester_gave_up_before_it_answered() {
    let dir = cluster_certs();
    let (server, mut incoming) = server(dir.path(), "n1", TransportConfig::default());
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&server);
    let request = {
        let app = app.clone();
        tokio::spawn(async move {
            app.request(
                addr,
                ExpectedPeer::Node(node("n1")),
                Bytes::from("wait"),
                REQUEST_TIMEOUT,
            )
            .await
        })
    };
    let incoming_request = within("the request arrives", incoming.next())
        .await
        .unwrap();
    let (_, _, _, responder) = incoming_request.into_parts();
    assert!(!responder.is_cancelled(), "the requester still waits");
    // The requester drops its request (as a client whose attempt timed out does).
    request.abort();
    let _ = request.await;
    eventually("the server to see the request abandoned", || {
        responder.is_cancelled()
    })
    .await;
    drop(responder);
    app.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_peer_stalling_large_frames_does_not_hold_up_another_peers_requests() {
    let dir = cluster_certs();
    // A frame timeout far beyond the test: only the progress deadline and the per-peer budget
    // can free what the stalled frames hold.
    let config = TransportConfig {
        frame_timeout: Duration::from_secs(60),
        frame_progress_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let full = usize::try_from(config.max_pending_request_bytes).unwrap();
    let per_peer = usize::try_from(config.max_pending_request_bytes_per_peer).unwrap();
    let max_frame = config.max_frame_bytes;
    let (n1, incoming) = server(dir.path(), "n1", config);
    echo(incoming);
    let addr = addr_of(&n1);
    let app = client(dir.path(), Role::Client, "app");

    // Twenty streams announce the largest frame (twenty of them exceed the whole budget), send
    // one byte of it, and stop.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let (mut send, recv) = app
            .open_raw_stream(addr, ExpectedPeer::AnyNode)
            .await
            .unwrap();
        send.write_all(&max_frame.to_be_bytes()).await.unwrap();
        send.write_all(&[0]).await.unwrap();
        stalled.push((send, recv));
    }
    eventually("the stalled frames to hold the budget", || {
        n1.pending_budget_available() <= full - per_peer
    })
    .await;

    // Another peer's small request is served, long before the stalled frames' own timeout.
    let n2 = client(dir.path(), Role::Node, "n2");
    let answer = n2
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"replicate"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"node:n2:replicate");

    // The stalled frames are reset and counted until their connection is closed, and the
    // budget is whole again.
    eventually("the stalling connection to be closed", || {
        let stats = n1.stats();
        stats.slow_frames > 8 && stats.connections_closed_for_bad_frames == 1
    })
    .await;
    eventually("the budget to be freed", || {
        n1.pending_budget_available() == full
    })
    .await;
    drop(stalled);
    for endpoint in [app, n2, n1] {
        endpoint.close().await;
    }
}

#[tokio::test]
async fn requests_reported_malformed_count_toward_closing_the_connection() {
    let dir = cluster_certs();
    let config = TransportConfig {
        max_bad_frames_per_connection: 2,
        ..TransportConfig::default()
    };
    let (n1, mut incoming) = server(dir.path(), "n1", config);
    // Undecodable to this application: every request but "ok".
    tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            let (_, _, frame, responder) = request.into_parts();
            if &frame[..] != b"ok" {
                responder.report_malformed();
            }
            responder.respond(Bytes::from_static(b"answer"));
        }
    });
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);
    for _ in 0..2 {
        let answer = app
            .request(
                addr,
                ExpectedPeer::AnyNode,
                Bytes::from_static(b"?"),
                REQUEST_TIMEOUT,
            )
            .await
            .unwrap();
        assert_eq!(&answer[..], b"answer");
    }
    assert_eq!(n1.stats().connections_closed_for_bad_frames, 0);
    // The third is one too many: the connection goes.
    let _ = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"?"),
            REQUEST_TIMEOUT,
        )
        .await;
    eventually("the connection is closed", || {
        n1.stats().connections_closed_for_bad_frames == 1 && app.stats().open_connections == 0
    })
    .await;
    assert_eq!(n1.stats().malformed_requests, 3);
    // A well-formed request connects again.
    let answer = app
        .request(
            addr,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"ok"),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"answer");
    app.close().await;
    n1.close().await;
}

#[tokio::test]
async fn a_handled_request_whose_response_was_not_delivered_may_have_reached_the_peer() {
    let dir = cluster_certs();
    let config = TransportConfig {
        frame_timeout: Duration::from_millis(300),
        frame_progress_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (n1, mut incoming) = server(dir.path(), "n1", config);
    let relay = Relay::start(addr_of(&n1)).await;
    let peer = relay.addr;
    let app = patient_client(dir.path());
    let app2 = app.clone();
    let request = tokio::spawn(async move {
        app2.request(
            peer,
            ExpectedPeer::AnyNode,
            Bytes::from_static(b"write"),
            Duration::from_secs(30),
        )
        .await
    });
    // The server takes the request (a write would be applied now); its answer is lost on the
    // way until the server gives up delivering it.
    let handled = within("the request to arrive", incoming.next())
        .await
        .unwrap();
    relay.hold_responses(true);
    handled.respond(Bytes::from_static(b"written"));
    eventually("the server to give up delivering", || {
        n1.stats().responses_undelivered == 1
    })
    .await;
    relay.hold_responses(false);

    let err = within("the reset to arrive", request)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Reset {
                code: ResetCode::Undelivered,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.may_have_reached_peer(), "it was handled: {err:?}");
    app.close().await;
    relay.kill().await;
    n1.close().await;
}

#[tokio::test]
async fn requests_never_handled_are_reset_as_not_reaching_the_peer() {
    let dir = cluster_certs();
    let config = TransportConfig {
        frame_progress_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (n1, incoming) = server(dir.path(), "n1", config);
    echo(incoming);
    let app = client(dir.path(), Role::Client, "app");
    let addr = addr_of(&n1);

    // A frame that stops arriving: reset when its progress deadline passes.
    let (mut send, mut recv) = app
        .open_raw_stream(addr, ExpectedPeer::AnyNode)
        .await
        .unwrap();
    send.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
    let code = within("the stalled frame's reset", recv.received_reset()).await;
    assert_eq!(
        code.unwrap().map(|c| ResetCode::from_u64(c.into_inner())),
        Some(ResetCode::ReadTimeout)
    );

    // A request abandoned by its sender halfway: the server resets its answer as cancelled.
    let (mut send, mut recv) = app
        .open_raw_stream(addr, ExpectedPeer::AnyNode)
        .await
        .unwrap();
    send.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
    send.reset(quinn::VarInt::from_u32(0x99)).unwrap();
    let code = within("the abandoned request's reset", recv.received_reset()).await;
    assert_eq!(
        code.unwrap().map(|c| ResetCode::from_u64(c.into_inner())),
        Some(ResetCode::Cancelled)
    );

    // What a requester makes of each: nothing was handled, so it may go elsewhere.
    for code in [ResetCode::ReadTimeout, ResetCode::Cancelled] {
        let read = ReadError::Reset(quinn::VarInt::from_u64(code.to_u64()).unwrap());
        let err = crate::endpoint::read_error(addr, crate::frame::ReadFrameError::Read(read));
        assert!(!err.may_have_reached_peer(), "{code}: {err:?}");
    }
    assert_eq!(n1.stats().requests_received, 0);
    assert_eq!(n1.stats().slow_frames, 1);
    app.close().await;
    n1.close().await;
}
