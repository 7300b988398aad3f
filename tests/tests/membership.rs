//! The membership issue's whole-system tests: real `shoal server` processes gossiping over QUIC.
//! Every node comes to hold one membership document (the same hash) with every member's own
//! record, nodes started with `--join` included; a node frozen with SIGSTOP for 3 s is judged
//! down by no one (the detector's acceptable pause); a node killed with SIGKILL is judged down
//! by every other; a join with a foreign certificate, or gossip from a client certificate,
//! changes nothing. The detection
//! time is printed, measured from the kill to the first status poll (every 50 ms) that shows it:
//! a figure, not an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig, NodeStatus};
use shoal_protocol::{
    DecodeLimits, Delta, GossipMessage, MemberRecord, MemberStatus, PeerMessage, PeerRequest,
    Refusal, Request, Response, decode, encode,
};
use shoal_tests::hostile::{self, RawConnection, RawOutcome};
use shoal_tests::{CLIENT_NAME, Cluster, ClusterConfig, eventually, shoal_binary};
use shoal_transport::{IfExists, Role, certs};
use shoal_types::{Capacity, Incarnation, NodeId, RingEpoch, Zone};

/// Generous: gossip rounds are 1 s apart, and a loaded CI machine is slow.
const CONVERGE: Duration = Duration::from_secs(30);

/// Every node's status, or `None` if one did not answer.
async fn statuses(admin: &Client, cluster: &Cluster, nodes: &[usize]) -> Option<Vec<NodeStatus>> {
    let mut all = Vec::new();
    for &i in nodes {
        all.push(admin.status(cluster.addr(i)).await.ok()?);
    }
    Some(all)
}

/// Whether every status lists every other node, with its own record (not the seed), reachable,
/// and all of them hold the same membership document.
fn converged(all: &[NodeStatus], members: usize) -> bool {
    let hash = all[0].membership_hash;
    all.iter().all(|s| {
        s.membership_hash == hash
            && s.peers.len() == members - 1
            && s.peers
                .iter()
                .all(|p| p.reachable && p.record.generation > 0 && p.last_heard.is_some())
    })
}

/// Waits until the nodes `nodes` agree on a document of `members` members ([`converged`]);
/// returns whether they did, and their last statuses.
async fn agreement(
    admin: &Client,
    cluster: &Cluster,
    nodes: &[usize],
    members: usize,
) -> (bool, Option<Vec<NodeStatus>>) {
    let agreed = eventually(CONVERGE, || async {
        statuses(admin, cluster, nodes)
            .await
            .is_some_and(|s| converged(&s, members))
    })
    .await;
    (agreed, statuses(admin, cluster, nodes).await)
}

/// Whether node `observer`'s status judges the node named `who` reachable.
async fn judges_reachable(admin: &Client, cluster: &Cluster, observer: usize, who: usize) -> bool {
    let status = admin.status(cluster.addr(observer)).await.unwrap();
    status
        .peers
        .iter()
        .find(|p| p.node == *cluster.id(who))
        .expect("every member is listed")
        .reachable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_agree_on_the_membership_ride_out_a_pause_and_convict_a_killed_node() {
    let mut cluster = Cluster::start_plain(3).await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let all = [0, 1, 2];

    // One document everywhere, each member's own record in it.
    let started = Instant::now();
    let (agreed, last) = agreement(&admin, &cluster, &all, 3).await;
    assert!(agreed, "the nodes never agreed: {last:#?}");
    println!(
        "membership: 3 nodes agreed on one document {:.1} s after they all answered",
        started.elapsed().as_secs_f64()
    );
    let s = last.unwrap();
    let generations: Vec<u64> = s[0].peers.iter().map(|p| p.record.generation).collect();
    assert!(generations.iter().all(|g| *g > 1), "{generations:?}");

    // n2 frozen for 3 s: its sockets stay open and it answers nothing. Nobody convicts it.
    cluster.pause(1).unwrap();
    let frozen = Instant::now();
    let mut worst_phi: f64 = 0.0;
    while frozen.elapsed() < Duration::from_secs(3) {
        for observer in [0, 2] {
            let status = admin.status(cluster.addr(observer)).await.unwrap();
            let n2 = status
                .peers
                .iter()
                .find(|p| p.node == *cluster.id(1))
                .unwrap();
            assert!(
                n2.reachable,
                "n{} convicted a paused node: {n2:?}",
                observer + 1
            );
            worst_phi = worst_phi.max(n2.phi.unwrap_or(0.0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.resume(1).unwrap();
    println!("membership: n2 paused 3 s, highest phi seen {worst_phi:.2} (threshold 8)");
    // Once it is back, its heartbeats move again and it stays reachable.
    let (agreed, last) = agreement(&admin, &cluster, &all, 3).await;
    assert!(agreed, "n2 did not come back: {last:#?}");

    // n3 killed: every other node judges it down.
    cluster.kill(2).unwrap();
    let killed = Instant::now();
    let mut detected = [None, None];
    let deadline = killed + CONVERGE;
    while detected.iter().any(Option::is_none) && Instant::now() < deadline {
        for (slot, observer) in [0, 1].into_iter().enumerate() {
            if detected[slot].is_none() && !judges_reachable(&admin, &cluster, observer, 2).await {
                detected[slot] = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        detected.iter().all(Option::is_some),
        "a killed node was not convicted within {CONVERGE:?}: {detected:?}"
    );
    println!(
        "membership: n3 killed, judged down by n1 after {:.2} s and by n2 after {:.2} s",
        detected[0].unwrap().as_secs_f64(),
        detected[1].unwrap().as_secs_f64()
    );
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_with_join_become_members_that_every_node_lists() {
    let cluster = Cluster::start(ClusterConfig::new(5).joining(2))
        .await
        .unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let all = [0, 1, 2, 3, 4];
    let started = Instant::now();
    let (agreed, last) = agreement(&admin, &cluster, &all, 5).await;
    assert!(agreed, "the five never agreed: {last:#?}");
    println!(
        "membership: 2 nodes joined 3; all 5 agreed on one document {:.1} s after the joiners answered",
        started.elapsed().as_secs_f64()
    );
    let s = last.unwrap();
    for joiner in [3, 4] {
        let record = &s[0]
            .peers
            .iter()
            .find(|p| p.node == *cluster.id(joiner))
            .unwrap()
            .record;
        assert_eq!(record.status, MemberStatus::Joining, "{record:?}");
        assert_eq!(record.addr, cluster.addr(joiner));
    }
    // The command line shows the same from a founder: five members, the joiners joining.
    let out = cluster
        .shoal(&["cluster", "status", "--json"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stdout.matches(r#""status":"joining""#).count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.stdout.matches(r#""reachable":true"#).count(),
        4,
        "{out}"
    );
    // The metrics agree with the status: one document hash on all five, every peer reachable,
    // and what gossip cost each node by then.
    let mut hashes = BTreeSet::new();
    for i in all {
        let m = cluster.metrics(i).await.unwrap();
        let info =
            m.0.lines()
                .find(|l| l.starts_with("shoal_membership_info{"))
                .unwrap()
                .to_owned();
        hashes.insert(info);
        assert_eq!(m.value("shoal_membership_members", &[]), Some(5.0));
        assert_eq!(m.value("shoal_peer_reachable", &[]), Some(4.0), "node {i}");
        let sent = m
            .value("shoal_gossip_bytes_total", &["direction=\"sent\""])
            .unwrap();
        assert!(sent > 0.0);
        println!(
            "membership: {} sent {sent} bytes of gossip by then",
            cluster.id(i)
        );
    }
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    // A joiner serves requests like any node (it forwards writes to the key's primaries).
    let client = Client::connect(ClientConfig::new(
        vec![cluster.addr(3)],
        cluster.certs_dir(),
    ))
    .await
    .unwrap();
    client.put("joined", "yes", None).await.unwrap();
    assert_eq!(client.get("joined").await.unwrap().values.len(), 1);
    client.close().await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_a_foreign_certificate_or_a_client_certificate_changes_nothing() {
    let cluster = Cluster::start_plain(3).await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let (agreed, last) = agreement(&admin, &cluster, &[0, 1, 2], 3).await;
    assert!(agreed, "the nodes never agreed: {last:#?}");
    let before = admin.status(cluster.addr(0)).await.unwrap().membership_hash;

    // A node certificate of another CA: the join is refused at the handshake, and the process
    // says why and exits.
    let foreign = tempfile::tempdir().unwrap();
    certs::init_ca(foreign.path(), IfExists::Refuse).unwrap();
    certs::issue(foreign.path(), Role::Node, "n9", IfExists::Refuse).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        CONVERGE,
        tokio::process::Command::new(shoal_binary().unwrap())
            .args([
                "server",
                "--node-id",
                "n9",
                "--listen",
                "127.0.0.1:0",
                "--join",
            ])
            .arg(cluster.addr(0).to_string())
            .arg("--data-dir")
            .arg(data.path())
            .arg("--certs")
            .arg(foreign.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a refused join exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no seed of --join answered"), "{stderr}");

    // A client certificate sending gossip that names a new member: refused for its role.
    let ack = Request::Peer(PeerRequest {
        from: NodeId::new("app").unwrap(),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Gossip(GossipMessage::Ack {
            from: NodeId::new("app").unwrap(),
            delta: Delta {
                records: vec![MemberRecord {
                    generation: u64::MAX,
                    version: 0,
                    id: NodeId::new("n9").unwrap(),
                    incarnation: Incarnation::new(9),
                    addr: "127.0.0.1:9".parse().unwrap(),
                    zone: Zone::default_zone(),
                    capacity: Capacity::default(),
                    status: MemberStatus::Valid,
                }],
                heartbeats: Vec::new(),
            },
        }),
    });
    let raw = RawConnection::connect(
        cluster.certs_dir(),
        Role::Client,
        CLIENT_NAME,
        cluster.listen_addr(0),
        cluster.id(0),
    )
    .await
    .unwrap();
    let outcome = raw
        .exchange(&hostile::frame(&encode(&ack).unwrap()), true, CONVERGE)
        .await;
    let RawOutcome::Answer(frame) = outcome else {
        panic!("no answer: {outcome:?}");
    };
    let response: Response = decode(&frame[4..], &DecodeLimits::default()).unwrap();
    assert!(
        matches!(response, Response::Refused(Refusal::Unauthorized { .. })),
        "{response:?}"
    );
    raw.close().await;

    // Nothing changed: three members, the same document on every node.
    let s = statuses(&admin, &cluster, &[0, 1, 2]).await.unwrap();
    assert!(converged(&s, 3), "{s:#?}");
    assert!(s.iter().all(|s| s.membership_hash == before));
    admin.close().await;
}
