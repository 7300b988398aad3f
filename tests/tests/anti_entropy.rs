//! The anti-entropy issue's whole-system tests: three real `shoal server` processes (N=3) over
//! QUIC, with read repair off (`--no-read-repair`) and hinted handoff off (`--max-hint-bytes 0`;
//! with three nodes and N=3 no fallback exists anyway), so that only anti-entropy can bring a
//! replica up to date. Nothing reads the keys through a quorum: the checks are `get --local`.
//!
//! - A node SIGKILLed while keys are written, started again: anti-entropy alone brings it to
//!   every key (`SHOAL_AE_KEYS`, default 20,000 — the figure).
//! - A node whose data directory is wiped, started again with the same id (a new incarnation):
//!   refilled by anti-entropy alone (`SHOAL_AE_WIPED_KEYS`, default 5,000 in CI; the issue's
//!   goal is 60,000 refilled within 60 s).
//!
//! The anti-entropy settings are the defaults: a node compares its pairs 10 s after it starts
//! and after a peer is back. The times printed (from the restart to the first poll, every
//! 100 ms, at which some exchange has found keys that differ, and at which the restarted node
//! has matched every other primary of every partition, then every key checked) are figures,
//! not assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_client::{Client, LocalRead};
use shoal_tests::{Cluster, ClusterConfig, eventually};

/// Generous: the catch-up delay (10 s), then the exchanges and their repair on a loaded CI
/// machine.
const SETTLE: Duration = Duration::from_secs(180);

const LANES: usize = 8;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> String {
    format!("ae-{i:06}")
}

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(100))
}

async fn cluster() -> Cluster {
    let mut config = ClusterConfig::new(3);
    config.server_args = vec![
        "--no-read-repair".into(),
        "--max-hint-bytes".into(),
        "0".into(),
    ];
    Cluster::start(config).await.unwrap()
}

/// Writes keys `0..count` at W=2, `LANES` at a time; every write must succeed.
async fn write_all(client: &Client, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let client = client.clone();
        tasks.spawn(async move {
            for i in (lane..count).step_by(LANES) {
                if let Err(e) = client.put(key(i), value(i), None).await {
                    return Err(format!("{}: {e}", key(i)));
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
}

/// Keys of `0..count` that node `n` does not hold with their value, by `get --local`.
async fn missing_on(client: &Client, cluster: &Cluster, n: usize, keys: &[usize]) -> Vec<usize> {
    let addr = cluster.addr(n);
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let client = client.clone();
        let keys: Vec<usize> = keys.iter().copied().skip(lane).step_by(LANES).collect();
        tasks.spawn(async move {
            let mut missing = Vec::new();
            for i in keys {
                match client.get_local(addr, key(i)).await.unwrap() {
                    LocalRead::Found(o) if o.values() == vec![Bytes::from(value(i))] => {}
                    _ => missing.push(i),
                }
            }
            missing
        });
    }
    let mut missing = Vec::new();
    while let Some(done) = tasks.join_next().await {
        missing.extend(done.unwrap());
    }
    missing.sort_unstable();
    missing
}

/// Whether node `n` has matched every other primary of every partition since it started.
async fn matched_everywhere(admin: &Client, cluster: &Cluster, n: usize, q: usize) -> bool {
    let Ok(status) = admin.status(cluster.addr(n)).await else {
        return false;
    };
    status.divergence.len() == q
        && status
            .divergence
            .iter()
            .all(|p| p.matched_all_ago.is_some())
}

/// Sums a counter over every node.
async fn total(cluster: &Cluster, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for i in 0..cluster.len() {
        let m = cluster.metrics(i).await.unwrap();
        sum += m.value(name, labels).unwrap_or(0.0);
    }
    sum
}

/// After node `n` was started again (at `restarted`) missing keys: waits until anti-entropy
/// has matched it with its peers everywhere, checks that it holds every key, and that no read
/// repaired anything.
async fn refilled_by_anti_entropy(
    test: &str,
    client: &Client,
    admin: &Client,
    cluster: &Cluster,
    n: usize,
    keys: usize,
    restarted: Instant,
) {
    let q = client.ring().q().get() as usize;
    let differing = "shoal_exchange_keys_differing_total";
    let before = total(cluster, differing, &[]).await;
    let detected = eventually(SETTLE, || async {
        total(cluster, differing, &[]).await > before
    })
    .await;
    let found = restarted.elapsed();
    assert!(detected, "no exchange found the keys that differ");
    let matched = eventually(SETTLE, || matched_everywhere(admin, cluster, n, q)).await;
    let took = restarted.elapsed();
    assert!(
        matched,
        "{} never matched its peers everywhere: {:?}",
        cluster.id(n),
        admin.status(cluster.addr(n)).await.map(|s| s.divergence)
    );
    let all: Vec<usize> = (0..keys).collect();
    let missing = missing_on(client, cluster, n, &all).await;
    let checked = restarted.elapsed();
    assert!(
        missing.is_empty(),
        "{} of {keys} keys still missing on {} after anti-entropy matched it, e.g. {:?}",
        missing.len(),
        cluster.id(n),
        missing.iter().take(5).map(|&i| key(i)).collect::<Vec<_>>()
    );
    let repaired = total(cluster, "shoal_exchange_keys_repaired_total", &[]).await;
    let read_repairs = total(cluster, "shoal_read_repairs_total", &[]).await;
    println!(
        "{test}: {keys} keys on {} by anti-entropy alone: differing keys found {:.1} s after the restart, matched everywhere {:.1} s after, every key checked {:.1} s after; {repaired} keys repaired by exchanges, {read_repairs} read repairs",
        cluster.id(n),
        found.as_secs_f64(),
        took.as_secs_f64(),
        checked.as_secs_f64()
    );
    assert_eq!(read_repairs, 0.0, "read repair was to be off");
    assert!(
        repaired >= keys as f64,
        "exchanges repaired {repaired} keys of {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_keys_are_written_gets_every_key_from_anti_entropy_alone() {
    let test = "stopped node";
    let mut cluster = cluster().await;
    let client = cluster.client().await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let keys = count("SHOAL_AE_KEYS", 20_000);

    cluster.kill(2).unwrap();
    let started = Instant::now();
    write_all(&client, keys).await;
    println!(
        "{test}: {keys} writes at W=2 with n3 killed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cluster.restart(2).await.unwrap();
    let restarted = Instant::now();
    // Before anti-entropy's first round (10 s after the start) n3 lacks what it missed: the
    // check below can fail.
    let sample: Vec<usize> = (0..keys).step_by((keys / 20).max(1)).collect();
    let absent = missing_on(&client, &cluster, 2, &sample).await;
    assert_eq!(absent, sample, "n3 held keys written while it was down");

    refilled_by_anti_entropy(test, &client, &admin, &cluster, 2, keys, restarted).await;
    client.close().await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refilled_by_anti_entropy_alone() {
    let test = "wiped node";
    let mut cluster = cluster().await;
    let client = cluster.client().await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let keys = count("SHOAL_AE_WIPED_KEYS", 5_000);

    write_all(&client, keys).await;
    let before = admin.status(cluster.addr(2)).await.unwrap().incarnation;
    cluster.stop(2).await.unwrap();
    std::fs::remove_dir_all(cluster.data_dir(2)).unwrap();
    cluster.restart(2).await.unwrap();
    let restarted = Instant::now();
    let after = admin.status(cluster.addr(2)).await.unwrap().incarnation;
    assert_ne!(before, after, "a wiped node must take a new incarnation");
    let sample: Vec<usize> = (0..keys).step_by((keys / 20).max(1)).collect();
    let absent = missing_on(&client, &cluster, 2, &sample).await;
    assert_eq!(
        absent, sample,
        "the wiped node held keys before anti-entropy"
    );

    refilled_by_anti_entropy(test, &client, &admin, &cluster, 2, keys, restarted).await;
    client.close().await;
    admin.close().await;
}
