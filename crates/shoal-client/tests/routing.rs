//! The client against fake nodes: real QUIC endpoints with node certificates that answer with
//! canned responses and count what they receive. Checks where requests go and, above all, that
//! a write is sent to a second node only when the first surely never received it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_causality::CausalContext;
use shoal_client::{Client, ClientConfig, ClientError, LocalRead, Role};
use shoal_protocol::{
    AdminRequest, ClientRequest, ClientResponse, DecodeLimits, Refusal, Request, Response, decode,
    encode,
};
use shoal_ring::{Member, Ring};
use shoal_transport::certs::{self, IfExists};
use shoal_transport::{Endpoint, Identity, TransportConfig};
use shoal_types::{Key, NodeId, PartitionCount, ReplicationFactor};
use tempfile::TempDir;

/// What a fake node does with key requests (ring and status requests are always answered).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers every request well.
    Serve,
    /// Takes the request and drops it unanswered: it may have been applied.
    Swallow,
    /// Takes the request and never answers (keeps the stream open), like a node that froze.
    Stall,
}

struct FakeNode {
    id: NodeId,
    addr: SocketAddr,
    /// Get, put and delete requests received.
    keyed: Arc<AtomicUsize>,
    _endpoint: Endpoint,
}

struct Cluster {
    certs: TempDir,
    nodes: Vec<FakeNode>,
    ring: Ring,
}

fn certificates() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), IfExists::Refuse).unwrap();
    for n in ["n1", "n2", "n3"] {
        certs::issue(dir.path(), shoal_transport::Role::Node, n, IfExists::Refuse).unwrap();
    }
    certs::issue(
        dir.path(),
        shoal_transport::Role::Client,
        "app",
        IfExists::Refuse,
    )
    .unwrap();
    certs::issue(
        dir.path(),
        shoal_transport::Role::Admin,
        "ops",
        IfExists::Refuse,
    )
    .unwrap();
    dir
}

/// A free UDP port where nothing listens.
fn dead_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Starts fake nodes with the given behaviours (`None`: a member nobody runs), all sharing a
/// ring with N = `n`.
async fn cluster(behaviours: &[Option<Behaviour>], n: u8) -> Cluster {
    let certs = certificates();
    let mut endpoints = Vec::new();
    let mut members = Vec::new();
    for (i, behaviour) in behaviours.iter().enumerate() {
        let id = NodeId::new(&format!("n{}", i + 1)).unwrap();
        match behaviour {
            Some(b) => {
                let identity =
                    Identity::load(certs.path(), shoal_transport::Role::Node, Some(id.as_str()))
                        .unwrap();
                let (endpoint, incoming) = Endpoint::server(
                    "127.0.0.1:0".parse().unwrap(),
                    identity,
                    TransportConfig::default(),
                )
                .unwrap();
                members.push(Member::new(id.clone(), endpoint.local_addr()));
                endpoints.push((id, Some((endpoint, incoming, *b))));
            }
            None => {
                members.push(Member::new(id.clone(), dead_addr()));
                endpoints.push((id, None));
            }
        }
    }
    let ring = Ring::new(
        members,
        PartitionCount::new(8).unwrap(),
        ReplicationFactor::new(n).unwrap(),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for (id, served) in endpoints {
        let Some((endpoint, mut incoming, behaviour)) = served else {
            continue;
        };
        let keyed = Arc::new(AtomicUsize::new(0));
        let addr = endpoint.local_addr();
        let (ring, counter) = (ring.clone(), keyed.clone());
        tokio::spawn(async move {
            let mut stalled = Vec::new();
            while let Some(request) = incoming.next().await {
                let (peer, _, frame, responder) = request.into_parts();
                let request: Request = decode(&frame, &DecodeLimits::default()).unwrap();
                let response = match request {
                    Request::Client(ClientRequest::Ring) => {
                        Response::Client(ClientResponse::Ring(ring.clone()))
                    }
                    Request::Admin(AdminRequest::Status)
                        if peer.role != shoal_transport::Role::Admin =>
                    {
                        Response::Refused(Refusal::Unauthorized {
                            required: "admin".into(),
                            role: shoal_protocol::Role::Client,
                        })
                    }
                    Request::Client(c) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        match behaviour {
                            Behaviour::Swallow => {
                                drop(responder);
                                continue;
                            }
                            Behaviour::Stall => {
                                stalled.push(responder);
                                continue;
                            }
                            Behaviour::Serve => {}
                        }
                        Response::Client(match c {
                            ClientRequest::Get { .. } => ClientResponse::Read {
                                values: vec!["v".into()],
                                context: CausalContext::empty(),
                            },
                            ClientRequest::GetLocal { .. } => {
                                ClientResponse::Local(LocalRead::NotFound)
                            }
                            _ => ClientResponse::Written {
                                context: CausalContext::empty(),
                            },
                        })
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                responder.respond(encode(&response).unwrap());
            }
        });
        nodes.push(FakeNode {
            id,
            addr,
            keyed,
            _endpoint: endpoint,
        });
    }
    Cluster { certs, nodes, ring }
}

impl Cluster {
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.nodes.iter().map(|n| n.addr).collect(),
            self.certs.path(),
        );
        // A dead member is given up as fast as QUIC allows (3 initial PTOs, about 3 s).
        config.transport.idle_timeout = Duration::from_millis(600);
        config.transport.keep_alive_interval = Duration::from_millis(200);
        config.timeout = Duration::from_secs(5);
        config
    }

    fn node(&self, id: &NodeId) -> &FakeNode {
        self.nodes.iter().find(|n| &n.id == id).unwrap()
    }

    /// A key whose only primary (N = 1) is `owner`.
    fn key_owned_by(&self, owner: &str) -> String {
        (0..10_000)
            .map(|i| format!("key-{i}"))
            .find(|k| {
                let key = Key::new(k.clone().into_bytes()).unwrap();
                self.ring.primaries(self.ring.partition_for_key(&key))[0].as_str() == owner
            })
            .unwrap()
    }
}

#[tokio::test]
async fn writes_and_reads_go_to_a_primary_of_the_key() {
    let cluster = cluster(&[Some(Behaviour::Serve); 3], 1).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    assert_eq!(client.ring().members().len(), 3);
    for owner in ["n1", "n2", "n3"] {
        let key = cluster.key_owned_by(owner);
        client.put(&key, "x", None).await.unwrap();
        client.get(&key).await.unwrap();
        let owner = NodeId::new(owner).unwrap();
        assert_eq!(cluster.node(&owner).keyed.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_write_fails_over_when_its_primary_cannot_be_reached() {
    let cluster = cluster(&[None, Some(Behaviour::Serve), Some(Behaviour::Serve)], 1).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let key = cluster.key_owned_by("n1");
    client.put(&key, "x", None).await.unwrap();
    let served: usize = cluster
        .nodes
        .iter()
        .map(|n| n.keyed.load(Ordering::SeqCst))
        .sum();
    assert_eq!(served, 1, "exactly one other node took the write");
}

#[tokio::test]
async fn a_write_that_may_have_arrived_is_not_sent_again() {
    let cluster = cluster(&[Some(Behaviour::Swallow), Some(Behaviour::Serve)], 1).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let key = cluster.key_owned_by("n1");
    let error = client.put(&key, "x", None).await.unwrap_err();
    assert!(error.is_indeterminate(), "{error}");
    assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    let n2 = NodeId::new("n2").unwrap();
    assert_eq!(
        cluster.node(&n2).keyed.load(Ordering::SeqCst),
        0,
        "the write was not retried elsewhere"
    );
    let delete = client.delete(&key, &CausalContext::empty()).await;
    assert!(delete.unwrap_err().is_indeterminate());
    assert_eq!(cluster.node(&n2).keyed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_read_is_retried_elsewhere_after_any_failure() {
    let cluster = cluster(&[Some(Behaviour::Swallow), Some(Behaviour::Serve)], 1).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let key = cluster.key_owned_by("n1");
    let read = client.get(&key).await.unwrap();
    assert!(read.is_found());
    let n2 = NodeId::new("n2").unwrap();
    assert_eq!(cluster.node(&n2).keyed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_read_is_also_sent_to_the_next_node_when_the_first_does_not_answer() {
    // Every node holds every key (N = 3) and n1 never answers: without hedging, each read that
    // starts at n1 would wait out its whole deadline and fail.
    let behaviours = [
        Some(Behaviour::Stall),
        Some(Behaviour::Serve),
        Some(Behaviour::Serve),
    ];
    let cluster = cluster(&behaviours, 3).await;
    let mut config = cluster.config();
    config.timeout = Duration::from_secs(2);
    let client = Client::connect(config).await.unwrap();
    for _ in 0..6 {
        let read = client.get("k").await.unwrap();
        assert!(read.is_found());
    }
    let n1 = NodeId::new("n1").unwrap();
    assert!(
        cluster.node(&n1).keyed.load(Ordering::SeqCst) >= 1,
        "some reads went to n1 first"
    );
}

#[tokio::test]
async fn a_write_to_a_node_that_does_not_answer_is_never_sent_to_a_second() {
    let cluster = cluster(&[Some(Behaviour::Stall), Some(Behaviour::Serve)], 1).await;
    let mut config = cluster.config();
    config.timeout = Duration::from_millis(500);
    let client = Client::connect(config).await.unwrap();
    let key = cluster.key_owned_by("n1");
    let error = client.put(&key, "x", None).await.unwrap_err();
    assert!(error.is_indeterminate(), "{error}");
    let n2 = NodeId::new("n2").unwrap();
    assert_eq!(
        cluster.node(&n2).keyed.load(Ordering::SeqCst),
        0,
        "a write is not hedged"
    );
}

#[tokio::test]
async fn connect_fails_over_to_the_next_seed_and_reports_when_none_answers() {
    let cluster = cluster(&[Some(Behaviour::Serve)], 1).await;
    let mut config = cluster.config();
    config.nodes.insert(0, dead_addr());
    let client = Client::connect(config.clone()).await.unwrap();
    assert_eq!(client.ring().members().len(), 1);

    config.nodes = vec![dead_addr()];
    match Client::connect(config).await {
        Err(ClientError::NoNodeReachable { tried, .. }) => assert_eq!(tried.len(), 1),
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
}

#[tokio::test]
async fn status_needs_an_admin_certificate() {
    let cluster = cluster(&[Some(Behaviour::Serve)], 1).await;
    let addr = cluster.nodes[0].addr;
    let client = Client::connect(cluster.config()).await.unwrap();
    assert!(matches!(
        client.status(addr).await,
        Err(ClientError::Unauthorized(_))
    ));
    let mut config = cluster.config();
    config.role = Role::Admin;
    let admin = Client::connect(config).await.unwrap();
    // The fake answers the admin's status with nothing it knows; what matters is that the
    // request was not refused.
    let local = admin.get_local(addr, "k").await.unwrap();
    assert_eq!(local, LocalRead::NotFound);
}

#[tokio::test]
async fn keys_are_checked_before_anything_is_sent() {
    let cluster = cluster(&[Some(Behaviour::Serve)], 1).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    assert!(matches!(
        client.get("").await,
        Err(ClientError::InvalidKey(_))
    ));
    assert_eq!(cluster.nodes[0].keyed.load(Ordering::SeqCst), 0);
}
