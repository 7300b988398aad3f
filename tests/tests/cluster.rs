//! The cluster issue's whole-system tests: real `shoal server` processes of the built binary on
//! 127.0.0.1, used through the client crate, the `shoal` command line and raw QUIC. Every wait
//! is for a condition with a deadline; every process and directory is cleaned up by `Cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_client::{Client, ClientConfig, ClientError, LocalRead, RequestError, RequestOptions};
use shoal_protocol::{
    ClientRequest, ClientResponse, DecodeLimits, PeerMessage, PeerRequest, Refusal, ReplicaMessage,
    Request, Response, decode, encode,
};
use shoal_tests::hostile::{self, RawConnection, RawOutcome};
use shoal_tests::{Cluster, NodeState, eventually};
use shoal_transport::{Endpoint, ExpectedPeer, Identity, IfExists, Role, TransportConfig, certs};
use shoal_types::{Incarnation, Key, NodeId, RingEpoch};

/// Long enough for a request that first tries a killed node (a QUIC handshake gives up after
/// about 3 s) and then another.
const SLOW: Duration = Duration::from_secs(20);

/// A client certificate's raw requests to one chosen node: the client crate routes by the
/// ring, this goes exactly where it is told.
struct Direct {
    endpoint: Endpoint,
}

impl Direct {
    fn new(cluster: &Cluster, role: Role, name: &str) -> Direct {
        let identity = Identity::load(cluster.certs_dir(), role, Some(name)).unwrap();
        Direct {
            endpoint: Endpoint::client(identity, TransportConfig::default()).unwrap(),
        }
    }

    async fn request(&self, addr: SocketAddr, node: &NodeId, request: &Request) -> Response {
        let frame = encode(request).unwrap();
        let answer = self
            .endpoint
            .request(addr, ExpectedPeer::Node(node.clone()), frame, SLOW)
            .await
            .unwrap();
        decode::<Response>(&answer, &DecodeLimits::default()).unwrap()
    }

    async fn client(&self, cluster: &Cluster, i: usize, request: ClientRequest) -> ClientResponse {
        match self
            .request(cluster.addr(i), cluster.id(i), &Request::Client(request))
            .await
        {
            Response::Client(answer) => answer,
            other => panic!("{} answered {other:?}", cluster.id(i)),
        }
    }
}

fn key(k: &str) -> Key {
    Key::new(Bytes::copy_from_slice(k.as_bytes())).unwrap()
}

fn strings(values: &[Bytes]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    v.sort();
    v
}

/// The values node `i` holds itself for `k` (tombstones excluded), sorted.
async fn local_values(client: &Client, cluster: &Cluster, i: usize, k: &str) -> Vec<String> {
    match client.get_local(cluster.addr(i), k).await {
        Ok(LocalRead::Found(object)) => strings(&object.values()),
        _ => Vec::new(),
    }
}

fn options_r(r: u8) -> RequestOptions {
    RequestOptions {
        r: Some(r),
        timeout: Some(Duration::from_secs(5)),
        ..RequestOptions::default()
    }
}

fn options_w(w: u8) -> RequestOptions {
    RequestOptions {
        w: Some(w),
        timeout: Some(Duration::from_secs(5)),
        ..RequestOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_gets_and_deletes_work_through_every_node_by_client_crate_and_cli() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();

    // Client crate: it spreads requests over the primaries; every node serves some.
    for i in 0..30 {
        let k = format!("crate-{i}");
        client.put(&k, format!("v{i}"), None).await.unwrap();
    }
    for i in 0..30 {
        let read = client.get(format!("crate-{i}")).await.unwrap();
        assert_eq!(strings(&read.values), [format!("v{i}")]);
    }
    let read = client.get("crate-0").await.unwrap();
    client.delete("crate-0", &read.context).await.unwrap();
    assert!(!client.get("crate-0").await.unwrap().is_found());

    // Exactly through each node: written via n1, read via n2 and n3, deleted via n3, gone via n1.
    let direct = Direct::new(&cluster, Role::Client, "app");
    let put = ClientRequest::Put {
        key: key("direct"),
        value: Bytes::from_static(b"through n1"),
        context: CausalContext::empty(),
        options: RequestOptions::default(),
    };
    let written = direct.client(&cluster, 0, put).await;
    assert!(
        matches!(written, ClientResponse::Written { .. }),
        "{written:?}"
    );
    let mut context = CausalContext::empty();
    for i in [1, 2] {
        let get = ClientRequest::Get {
            key: key("direct"),
            options: RequestOptions::default(),
        };
        match direct.client(&cluster, i, get).await {
            ClientResponse::Read { values, context: c } => {
                assert_eq!(strings(&values), ["through n1"], "via {}", cluster.id(i));
                context = c;
            }
            other => panic!("get via {}: {other:?}", cluster.id(i)),
        }
    }
    let delete = ClientRequest::Delete {
        key: key("direct"),
        context,
        options: RequestOptions::default(),
    };
    let deleted = direct.client(&cluster, 2, delete).await;
    assert!(
        matches!(deleted, ClientResponse::Written { .. }),
        "{deleted:?}"
    );
    let get = ClientRequest::Get {
        key: key("direct"),
        options: RequestOptions::default(),
    };
    match direct.client(&cluster, 0, get).await {
        ClientResponse::Read { values, .. } => assert!(values.is_empty(), "{values:?}"),
        other => panic!("{other:?}"),
    }

    // The command line, contacting a different node for each step.
    let node = |i: usize| cluster.addr(i).to_string();
    let out = cluster
        .shoal(&["put", "cli", "hello", "--json", "--node", &node(0)])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.json_string("context").is_some(), "{out}");
    let out = cluster
        .shoal(&["get", "cli", "--json", "--node", &node(1)])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains(r#""values":["hello"]"#), "{out}");
    let context = out.json_string("context").unwrap();
    let out = cluster
        .shoal(&[
            "delete",
            "cli",
            "--context",
            &context,
            "--json",
            "--node",
            &node(2),
        ])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains(r#""deleted":true"#), "{out}");
    let out = cluster
        .shoal(&["get", "cli", "--json", "--node", &node(0)])
        .await
        .unwrap();
    assert_eq!(out.code, Some(1), "not found is exit 1: {out}");
    assert!(out.stdout.contains(r#""found":false"#), "{out}");
    // The delete reached every replica, and once all three held its tombstone it was reaped
    // on each (`docs/anti-entropy.md`, "Deletes"): polled, since the reap follows the acks.
    let all = cluster
        .addrs()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let last = std::sync::Mutex::new(String::new());
    let reaped = eventually(Duration::from_secs(30), || {
        let (cluster, all, last) = (&cluster, &all, &last);
        async move {
            let out = cluster
                .shoal(&["get", "--local", "cli", "--json", "--node", all])
                .await
                .unwrap();
            let done =
                out.code == Some(0) && out.stdout.matches(r#""state":"reaped""#).count() == 3;
            *last.lock().unwrap() = out.to_string();
            done
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(
        reaped,
        "the tombstone was not reaped on the three replicas: {last}"
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_blind_puts_become_siblings_and_a_put_with_their_context_resolves_them() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.put("fish", "cod", None).await.unwrap();
    client.put("fish", "hake", None).await.unwrap();
    let read = client.get("fish").await.unwrap();
    assert_eq!(strings(&read.values), ["cod", "hake"]);
    assert!(read.has_siblings());

    let out = cluster.shoal(&["get", "fish", "--json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json_number("siblings"), Some(2), "{out}");

    client
        .put("fish", "cod+hake", Some(&read.context))
        .await
        .unwrap();
    let read = client.get("fish").await.unwrap();
    assert_eq!(strings(&read.values), ["cod+hake"]);
    let out = cluster.shoal(&["get", "fish", "--json"]).await.unwrap();
    assert!(out.stdout.contains(r#""values":["cod+hake"]"#), "{out}");
    // Once every replica has the resolution, no replica keeps the old siblings.
    for i in 0..3 {
        let resolved = eventually(SLOW, || async {
            local_values(&client, &cluster, i, "fish").await == ["cod+hake"]
        })
        .await;
        assert!(resolved, "{} still holds siblings", cluster.id(i));
    }
    client.close().await;
}

/// Issue 11 item 1, as reproduced on `shoal dev`: X puts a, Y puts b blind, Y puts c with the
/// token its put printed. X's acknowledged a must survive: the token covers b only (it covered
/// the whole stored object before). And contexts that cannot be honest are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_the_token_its_own_put_printed_keeps_the_concurrent_write_it_never_saw() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let out = cluster.shoal(&["put", "k", "a", "--json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    let out = cluster.shoal(&["put", "k", "b", "--json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    let token = out.json_string("context").unwrap();
    let out = cluster
        .shoal(&["put", "k", "c", "--context", &token, "--json"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    let out = cluster.shoal(&["get", "k", "--json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json_number("siblings"), Some(2), "a and c: {out}");
    assert!(
        out.stdout.contains(r#""a""#) && out.stdout.contains(r#""c""#),
        "{out}"
    );

    // A context no client can have seen: refused, definitely, nothing applied (exit 4).
    let mut vv = shoal_causality::VersionVector::new();
    vv.witness(
        &Actor::new(cluster.id(0).clone(), Incarnation::new(1)),
        u64::MAX,
    );
    let hostile = shoal_client::context_to_token(&CausalContext::from(vv));
    let out = cluster
        .shoal(&["put", "k", "evil", "--context", &hostile, "--json"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(4), "{out}");
    assert_eq!(
        out.json_string("kind").as_deref(),
        Some("invalid_context"),
        "{out}"
    );
    // A version-1 token (a bare vector) is refused by the client as outdated (exit 2).
    let old = {
        use base64::Engine;
        let mut bytes = vec![1u8];
        bytes.extend(rmp_serde::to_vec(&Vec::<(Actor, u64)>::new()).unwrap());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let out = cluster
        .shoal(&["put", "k", "old", "--context", &old, "--json"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("outdated"), "{out}");
    let out = cluster.shoal(&["get", "k", "--json"]).await.unwrap();
    assert_eq!(
        out.json_number("siblings"),
        Some(2),
        "nothing applied: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_quorums_of_two_working_and_is_read_repaired_after_restart() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.put("before", "all three", None).await.unwrap();
    client.close().await;

    cluster.kill(2).unwrap();
    assert_eq!(cluster.state(2), NodeState::Down);
    // A fresh client: its handshake with the dead node fails (nothing sent), so it moves on.
    let mut config = cluster.client_config();
    config.timeout = SLOW;
    let client = Client::connect(config).await.unwrap();

    client
        .put_with("during", "n3 is down", None, options_w(2))
        .await
        .unwrap();
    let read = client.get_with("during", options_r(2)).await.unwrap();
    assert_eq!(strings(&read.values), ["n3 is down"]);
    let read = client.get_with("before", options_r(2)).await.unwrap();
    assert_eq!(strings(&read.values), ["all three"]);

    // R = 3 cannot be met: the error says how many replicas were needed and how many answered.
    let error = client.get_with("before", options_r(3)).await.unwrap_err();
    let (required, answered) = match &error {
        ClientError::Request(
            RequestError::QuorumFailed { required, answered }
            | RequestError::Timeout { required, answered },
        ) => (*required, *answered),
        ClientError::Request(RequestError::Unavailable { required, alive }) => (*required, *alive),
        other => panic!("R=3 with a node down: {other:?}"),
    };
    assert_eq!((required, answered), (3, 2), "{error}");
    println!("R=3 with n3 down: {error}");
    let error = client
        .put_with("w3", "cannot", None, options_w(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Request(
                RequestError::QuorumFailed {
                    required: 3,
                    answered: 2
                } | RequestError::Timeout {
                    required: 3,
                    answered: 2
                } | RequestError::Unavailable {
                    required: 3,
                    alive: 2
                }
            )
        ),
        "W=3 with a node down: {error:?}"
    );

    // The same through the command line: exit 3, and the message has the numbers.
    let live = format!("{},{}", cluster.addr(0), cluster.addr(1));
    let out = cluster
        .shoal(&[
            "get",
            "before",
            "--r",
            "3",
            "--json",
            "--timeout",
            "20s",
            "--node",
            &live,
        ])
        .await
        .unwrap();
    assert_eq!(out.code, Some(3), "{out}");
    assert!(out.stdout.contains(r#""exit_code":3"#), "{out}");
    assert!(out.stderr.contains("3 replicas required"), "{out}");
    assert!(
        out.stderr.contains("2 answered") || out.stderr.contains("only 2 reachable"),
        "{out}"
    );
    let out = cluster
        .shoal(&[
            "get",
            "before",
            "--r",
            "2",
            "--timeout",
            "20s",
            "--node",
            &live,
        ])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "all three\n", "{out}");
    let out = cluster
        .shoal(&[
            "put",
            "cli-during",
            "x",
            "--w",
            "2",
            "--timeout",
            "20s",
            "--node",
            &live,
        ])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");

    // Restarted on the same data directory, n3 lacks what was written while it was down...
    cluster.restart(2).await.unwrap();
    let n3 = cluster.addr(2).to_string();
    let out = cluster
        .shoal(&["get", "--local", "during", "--json", "--node", &n3])
        .await
        .unwrap();
    assert_eq!(out.code, Some(1), "nothing on n3 yet: {out}");
    assert!(out.stdout.contains(r#""state":"not_found""#), "{out}");
    // ...but keeps what it had before.
    assert_eq!(
        local_values(&client, &cluster, 2, "before").await,
        ["all three"]
    );

    // A normal read repairs it (read repair reaches every replica that answered older, also
    // those that answer after the client got its reply).
    let repaired = eventually(SLOW, || async {
        client.get("during").await.is_ok()
            && local_values(&client, &cluster, 2, "during").await == ["n3 is down"]
    })
    .await;
    assert!(repaired, "n3 was not read-repaired");
    let out = cluster
        .shoal(&["get", "--local", "during", "--json", "--node", &n3])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains(r#""value":"n3 is down""#), "{out}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_started_after_a_killed_node_is_gone_fails() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    // Every node coordinates some of these, so the client holds a connection to each.
    for i in 0..30 {
        client.put(format!("warm{i}"), "x", None).await.unwrap();
    }
    // SIGKILL and reap: the process and its socket are gone; nothing told the client.
    cluster.kill(2).unwrap();
    // A write sent on the dead connection would wait out the idle timeout and fail as "may
    // have been applied". The client's transport finds the silent node's port closed before it
    // sends, so each write that picks n3 first goes to another node instead.
    for i in 0..60 {
        client
            .put_with(format!("after{i}"), format!("v{i}"), None, options_w(2))
            .await
            .unwrap_or_else(|e| panic!("write {i} after the kill: {e}"));
    }
    for i in 0..60 {
        let read = client
            .get_with(format!("after{i}"), options_r(2))
            .await
            .unwrap();
        assert_eq!(strings(&read.values), [format!("v{i}")]);
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restarting_the_whole_cluster() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..40 {
        client
            .put(format!("k{i}"), format!("value {i}"), None)
            .await
            .unwrap();
    }
    client.put("pair", "left", None).await.unwrap();
    client.put("pair", "right", None).await.unwrap();
    let read = client.put("gone", "soon", None).await.unwrap();
    client.delete("gone", &read).await.unwrap();
    client.close().await;

    let statuses = cluster.stop_all().await.unwrap();
    assert_eq!(statuses.len(), 3);
    for status in &statuses {
        assert!(
            status.success(),
            "a node exited with {status} after SIGTERM"
        );
    }
    cluster.start_all().await.unwrap();

    let client = cluster.client().await.unwrap();
    for i in 0..40 {
        let read = client.get(format!("k{i}")).await.unwrap();
        assert_eq!(strings(&read.values), [format!("value {i}")]);
    }
    assert_eq!(
        strings(&client.get("pair").await.unwrap().values),
        ["left", "right"]
    );
    assert!(!client.get("gone").await.unwrap().is_found());
    // Every replica, not just a quorum, kept its data.
    for i in 0..3 {
        assert_eq!(local_values(&client, &cluster, i, "k7").await, ["value 7"]);
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_and_the_nodes_keep_serving() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let foreign = tempfile::tempdir().unwrap();
    certs::init_ca(foreign.path(), IfExists::Refuse).unwrap();
    certs::issue(foreign.path(), Role::Client, "app", IfExists::Refuse).unwrap();

    // The client crate: refused at the handshake, and it says so.
    let mut config = ClientConfig::new(cluster.addrs(), foreign.path());
    config.timeout = Duration::from_secs(5);
    let error = Client::connect(config).await.unwrap_err();
    let message = error.to_string().to_lowercase();
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "unclear refusal: {error}"
    );

    // The command line: "refused" (exit 4), not an availability failure, and a message that
    // names the certificate.
    let foreign_dir = foreign.path().to_str().unwrap();
    let out = cluster
        .shoal(&["get", "k", "--certs", foreign_dir, "--json"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(4), "{out}");
    assert!(out.stderr.contains("refused the certificate"), "{out}");
    assert!(
        out.stdout.contains(r#""kind":"handshake_refused""#),
        "{out}"
    );
    assert!(out.stdout.contains(r#""indeterminate":false"#), "{out}");

    // A peer that trusts the cluster's CA but presents a foreign certificate: the node refuses
    // it, and nothing it sends is answered.
    let mixed = tempfile::tempdir().unwrap();
    for file in ["client-app.pem", "client-app.key"] {
        std::fs::copy(foreign.path().join(file), mixed.path().join(file)).unwrap();
    }
    std::fs::copy(
        cluster.certs_dir().join("ca.pem"),
        mixed.path().join("ca.pem"),
    )
    .unwrap();
    let ring = hostile::frame(&encode(&Request::Client(ClientRequest::Ring)).unwrap());
    match RawConnection::connect(
        mixed.path(),
        Role::Client,
        "app",
        cluster.listen_addr(0),
        cluster.id(0),
    )
    .await
    {
        // TLS 1.3: the client may finish before the server has checked its certificate.
        Ok(raw) => {
            let outcome = raw.exchange(&ring, true, SLOW).await;
            assert!(
                matches!(outcome, RawOutcome::ConnectionLost(_)),
                "a foreign certificate got {outcome:?}"
            );
        }
        Err(e) => assert!(e.to_string().contains("failed"), "{e}"),
    }

    // The nodes keep serving the cluster's own clients.
    let client = cluster.client().await.unwrap();
    client.put("still", "serving", None).await.unwrap();
    assert_eq!(
        strings(&client.get("still").await.unwrap().values),
        ["serving"]
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_send_replica_messages() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let ring = cluster.client().await.unwrap().ring();
    let k = key("forged");
    let actor = Actor::new(cluster.id(0).clone(), Incarnation::new(1));
    let object = Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::from_static(b"forged")),
            &actor,
            64,
        )
        .unwrap();
    let replicate = Request::Peer(PeerRequest {
        from: cluster.id(0).clone(),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Replica(ReplicaMessage::Replicate {
            partition: ring.partition_for_key(&k),
            key: k.clone(),
            object,
        }),
    });
    for (role, name) in [(Role::Client, "app"), (Role::Admin, "admin")] {
        let direct = Direct::new(&cluster, role, name);
        for i in 0..3 {
            let answer = direct
                .request(cluster.addr(i), cluster.id(i), &replicate)
                .await;
            let expected_role = if role == Role::Client {
                Role::Client
            } else {
                Role::Admin
            };
            match answer {
                Response::Refused(Refusal::Unauthorized { role: r, .. }) if r == expected_role => {}
                other => panic!("{role:?} certificate sending Replicate: {other:?}"),
            }
        }
    }
    // Nothing was stored anywhere.
    let client = cluster.client().await.unwrap();
    for i in 0..3 {
        let local = client.get_local(cluster.addr(i), "forged").await.unwrap();
        assert_eq!(local, LocalRead::NotFound, "on {}", cluster.id(i));
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_limit_is_refused_with_its_size_and_nothing_is_stored() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    const MAX: usize = 8 * 1024 * 1024;
    let big = Bytes::from(vec![b'x'; MAX + 1]);
    let error = client.put("big", big.clone(), None).await.unwrap_err();
    match &error {
        ClientError::Request(RequestError::ValueTooLarge { size, max }) => {
            assert_eq!((*size, *max), (MAX + 1, MAX))
        }
        other => panic!("an oversized value: {other:?}"),
    }
    assert!(!error.is_indeterminate(), "a definite refusal");
    assert!(error.to_string().contains("8388609 bytes"), "{error}");

    let out = cluster
        .shoal_with_stdin(&["put", "big-cli", "-", "--json"], Some(&big))
        .await
        .unwrap();
    assert_eq!(out.code, Some(4), "{out}");
    assert_eq!(
        out.json_string("kind").as_deref(),
        Some("value_too_large"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("value too large: 8388609 bytes, the limit is 8388608"),
        "{out}"
    );

    // At the limit it is accepted.
    let at_limit = Bytes::from(vec![b'y'; MAX]);
    client.put("at-limit", at_limit, None).await.unwrap();

    for k in ["big", "big-cli"] {
        assert!(!client.get(k).await.unwrap().is_found(), "{k}");
        for i in 0..3 {
            let local = client.get_local(cluster.addr(i), k).await.unwrap();
            assert_eq!(local, LocalRead::NotFound, "{k} on {}", cluster.id(i));
        }
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_leaves_the_node_serving() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let target = cluster.listen_addr(0);
    let sent = hostile::udp_garbage(target, 2_000, 9).await.unwrap();
    assert_eq!(sent, 2_000);

    let raw = RawConnection::connect(
        cluster.certs_dir(),
        Role::Client,
        "app",
        target,
        cluster.id(0),
    )
    .await
    .unwrap();
    let timeout = Duration::from_secs(15);
    let mut rng = StdRng::seed_from_u64(9);

    // A well-framed body of random bytes: refused as a bad request, with an answer.
    let garbage = hostile::frame(&hostile::random_bytes(&mut rng, 300));
    match raw.exchange(&garbage, true, timeout).await {
        RawOutcome::Answer(answer) => {
            let response = decode::<Response>(&answer[4..], &DecodeLimits::default()).unwrap();
            assert!(
                matches!(response, Response::Refused(Refusal::BadRequest(_))),
                "{response:?}"
            );
        }
        other => panic!("a garbage body: {other:?}"),
    }
    // Deep nesting: the decoder's depth limit refuses it.
    let mut deep = vec![shoal_protocol::PROTOCOL_VERSION];
    deep.extend(std::iter::repeat_n(0x91u8, 100_000));
    match raw.exchange(&hostile::frame(&deep), true, timeout).await {
        RawOutcome::Answer(answer) => {
            let response = decode::<Response>(&answer[4..], &DecodeLimits::default()).unwrap();
            assert!(
                matches!(response, Response::Refused(Refusal::BadRequest(_))),
                "{response:?}"
            );
        }
        other => panic!("a deeply nested body: {other:?}"),
    }
    // A length prefix of 4 GiB: the stream is reset on the prefix alone (BadFrame, 0x10).
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 1024]);
    assert_eq!(
        raw.exchange(&huge, false, timeout).await,
        RawOutcome::Reset(0x10)
    );
    // A truncated frame, and a frame followed by more bytes: reset too.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1u8; 10]);
    assert_eq!(
        raw.exchange(&truncated, true, timeout).await,
        RawOutcome::Reset(0x10)
    );
    let mut trailing = hostile::frame(&encode(&Request::Client(ClientRequest::Ring)).unwrap());
    trailing.extend_from_slice(b"more");
    assert_eq!(
        raw.exchange(&trailing, true, timeout).await,
        RawOutcome::Reset(0x10)
    );
    // A connection that keeps sending bad frames is closed (0x20).
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(raw.exchange(&truncated, true, timeout).await);
    }
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, RawOutcome::ConnectionLost(_))),
        "{outcomes:?}"
    );
    let reason = raw.close_reason().unwrap();
    assert!(reason.contains("32") || reason.contains("0x20"), "{reason}");
    raw.close().await;

    // More garbage after all that, then the node still serves, with every replica.
    hostile::udp_garbage(target, 500, 10).await.unwrap();
    assert_eq!(cluster.state(0), NodeState::Running);
    let client = cluster.client().await.unwrap();
    client.put("after", "garbage", None).await.unwrap();
    let read = client.get_with("after", options_r(3)).await.unwrap();
    assert_eq!(strings(&read.values), ["garbage"]);
    let local = client.get_local(cluster.addr(0), "after").await.unwrap();
    assert!(matches!(local, LocalRead::Found(_)), "{local:?}");
    client.close().await;
}

/// The proxies' own test: with every node behind a proxy, partitions and one-way cuts cut
/// exactly the links they name (nodes are told apart from clients by their peer endpoints),
/// and heal restores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_cut_exactly_the_links_they_are_told_to_and_heal() {
    use shoal_tests::{ClusterConfig, Peer};
    let cluster = Cluster::start(ClusterConfig::new(3).proxied(5))
        .await
        .unwrap();
    let network = cluster.network().unwrap();
    assert_ne!(
        cluster.addr(0),
        cluster.listen_addr(0),
        "the ring names the proxy"
    );
    let direct = Direct::new(&cluster, Role::Client, "app");
    let put = |k: &str, w: u8| ClientRequest::Put {
        key: key(k),
        value: Bytes::from_static(b"v"),
        context: CausalContext::empty(),
        options: RequestOptions {
            w: Some(w),
            timeout: Some(Duration::from_secs(3)),
            ..RequestOptions::default()
        },
    };
    let written = |answer: &ClientResponse| matches!(answer, ClientResponse::Written { .. });

    // Healthy: W = 3 through the proxies works from every coordinator.
    for i in 0..3 {
        let answer = direct
            .client(&cluster, i, put(&format!("healthy-{i}"), 3))
            .await;
        assert!(written(&answer), "via {}: {answer:?}", cluster.id(i));
    }

    // n3 cut off from n1 and n2, both ways; clients still reach everyone.
    network.partition(&[vec![2], vec![0, 1]]);
    let answer = direct.client(&cluster, 0, put("split-a", 2)).await;
    assert!(written(&answer), "n1 + n2 make W = 2: {answer:?}");
    let answer = direct.client(&cluster, 0, put("split-b", 3)).await;
    assert!(!written(&answer), "n1 cannot reach n3: {answer:?}");
    let answer = direct.client(&cluster, 2, put("split-c", 2)).await;
    assert!(!written(&answer), "n3 alone cannot make W = 2: {answer:?}");
    network.heal();

    // One way: n1's datagrams to n3 are lost. QUIC needs both directions, so n1 and n3 cannot
    // talk at all, while n2 still reaches both.
    network.block(Peer::Node(0), Peer::Node(2));
    let recovered = eventually(SLOW, || async {
        written(&direct.client(&cluster, 1, put("one-way-n2", 3)).await)
    })
    .await;
    assert!(recovered, "n2 reaches n1 and n3 after the heal");
    let answer = direct.client(&cluster, 0, put("one-way-n1", 3)).await;
    assert!(!written(&answer), "n1 -> n3 is cut: {answer:?}");
    let answer = direct.client(&cluster, 2, put("one-way-n3", 3)).await;
    assert!(
        !written(&answer),
        "n3's requests reach n1, the answers do not: {answer:?}"
    );
    assert!(network.stats().blocked > 0);

    network.heal();
    for i in 0..3 {
        let healed = eventually(SLOW, || async {
            written(
                &direct
                    .client(&cluster, i, put(&format!("healed-{i}"), 3))
                    .await,
            )
        })
        .await;
        assert!(healed, "W = 3 via {} after heal", cluster.id(i));
    }
}

/// Issue 10: a client that gives up on its requests (drops them, as a load generator whose
/// attempt timed out does) stops costing the node: the node cancels the work in progress, long
/// before the requests' own deadlines, and its counters say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_client_drops_mid_flight_are_abandoned_by_the_node() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let direct = Direct::new(&cluster, Role::Client, "app");
    let put = ClientRequest::Put {
        key: key("k"),
        value: Bytes::from_static(b"v"),
        context: CausalContext::empty(),
        options: RequestOptions::default(),
    };
    assert!(matches!(
        direct.client(&cluster, 0, put).await,
        ClientResponse::Written { .. }
    ));
    // Two replicas stop answering: a get needing all three waits at node 0.
    cluster.pause(1).unwrap();
    cluster.pause(2).unwrap();
    const DROPPED: usize = 8;
    let get = Request::Client(ClientRequest::Get {
        key: key("k"),
        options: RequestOptions {
            r: Some(3),
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    });
    let (addr, id) = (cluster.addr(0), cluster.id(0).clone());
    let mut requests = Vec::new();
    for _ in 0..DROPPED {
        let (endpoint, get, id) = (direct.endpoint.clone(), encode(&get).unwrap(), id.clone());
        requests.push(tokio::spawn(async move {
            endpoint
                .request(addr, ExpectedPeer::Node(id), get, SLOW)
                .await
        }));
    }
    assert!(
        eventually(SLOW, || async {
            let m = cluster.metrics(0).await.unwrap();
            m.value("shoal_requests_in_flight", &[]).unwrap_or(0.0) >= DROPPED as f64
        })
        .await,
        "node 0 works on every get"
    );
    let before = cluster.metrics(0).await.unwrap();
    let cancelled_before = before
        .value("shoal_requests_cancelled_total", &[])
        .expect("the node counts cancelled requests");
    // The gets, and perhaps the put's last replica ack, which a paused node never sent.
    let in_flight_before = before.value("shoal_requests_in_flight", &[]).unwrap();
    for request in &requests {
        request.abort();
    }
    // The node notices within its sweep; the gets' own deadline is 30 s away, and the silent
    // replicas' connections would not be given up for seconds.
    let noticed = eventually(Duration::from_secs(10), || async {
        let m = cluster.metrics(0).await.unwrap();
        let cancelled = m
            .value("shoal_requests_cancelled_total", &[])
            .unwrap_or(0.0);
        cancelled - cancelled_before >= DROPPED as f64
    })
    .await;
    let after = cluster.metrics(0).await.unwrap();
    let cancelled = after
        .value("shoal_requests_cancelled_total", &[])
        .unwrap_or(0.0);
    let in_flight = after.value("shoal_requests_in_flight", &[]).unwrap_or(-1.0);
    println!(
        "dropped requests cancelled: {} of {DROPPED}; in flight after: {in_flight}",
        cancelled - cancelled_before
    );
    assert!(noticed, "node 0 did not notice its client gave up");
    assert!(
        in_flight <= in_flight_before - DROPPED as f64,
        "the node stopped working on them when it noticed: {in_flight_before} in flight before, {in_flight} after"
    );
    cluster.resume(1).unwrap();
    cluster.resume(2).unwrap();
}
