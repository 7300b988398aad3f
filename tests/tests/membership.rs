//! The membership issue's whole-system tests: real `shoal server` processes gossiping over QUIC.
//! Every node comes to hold one membership document (the same hash) with every member's own
//! record; a node frozen with SIGSTOP for 3 s is judged down by no one (the detector's
//! acceptable pause); a node killed with SIGKILL is judged down by every other. The detection
//! time is printed, measured from the kill to the first status poll (every 50 ms) that shows it:
//! a figure, not an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shoal_client::{Client, NodeStatus};
use shoal_tests::{Cluster, eventually};

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
    let agreed = eventually(CONVERGE, || async {
        statuses(&admin, &cluster, &all)
            .await
            .is_some_and(|s| converged(&s, 3))
    })
    .await;
    let last = statuses(&admin, &cluster, &all).await;
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
    assert!(
        eventually(CONVERGE, || async {
            statuses(&admin, &cluster, &all)
                .await
                .is_some_and(|s| converged(&s, 3))
        })
        .await,
        "n2 did not come back"
    );

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
