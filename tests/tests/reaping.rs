//! Tombstone reaping, whole-system (issue 15): three real `shoal server` processes with read
//! repair and hints switched off (`--no-read-repair --no-hints`), anti-entropy every 2 s.
//! 1,000 keys are written, then deleted while n3 is down; the tombstones are not reaped while
//! n3 still holds the old values. Once n3 is back, anti-entropy brings it the tombstones and
//! the reaper reaps them: `get --local` shows every key reaped on every replica, no deleted key
//! is readable anywhere, and none comes back over further anti-entropy rounds.
//!
//! How many keys: `SHOAL_REAP_KEYS` (default 1,000). How long tombstones lived (from the
//! delete's end at its coordinator, or the exchange that handed the key over, to the reap on
//! every primary) is printed from `/metrics`: a figure, not an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shoal_client::{CausalContext, Client, LocalRead};
use shoal_tests::{Cluster, ClusterConfig, eventually};

/// Generous: restarts, detection and anti-entropy on a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(90);

fn count() -> usize {
    std::env::var("SHOAL_REAP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn key(i: usize) -> String {
    format!("reaped-{i:06}")
}

/// Runs `op` over `0..count` in 8 lanes, collecting the results in key order.
async fn each_key<T, F, Fut>(client: &Client, count: usize, op: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let client = client.clone();
        let op = op.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (lane..count).step_by(8) {
                out.push((i, op(client.clone(), i).await));
            }
            out
        });
    }
    let mut all: Vec<(usize, T)> = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// How node `node` holds each key: `Some(true)` reaped (a record: no siblings), `Some(false)`
/// anything else; `None` for a key the node could not be asked about.
async fn local_states(
    client: &Client,
    cluster: &Cluster,
    node: usize,
    count: usize,
) -> Vec<Option<bool>> {
    let addr = cluster.addr(node);
    each_key(client, count, move |c, i| async move {
        match c.get_local(addr, key(i)).await {
            Ok(LocalRead::Found(o)) => Some(o.siblings().is_empty()),
            Ok(_) => Some(false),
            Err(_) => None,
        }
    })
    .await
}

async fn metric_sum(cluster: &Cluster, name: &str) -> f64 {
    let mut sum = 0.0;
    for i in 0..cluster.len() {
        if let Ok(m) = cluster.metrics(i).await {
            sum += m.value(name, &[]).unwrap_or(0.0);
        }
    }
    sum
}

async fn metric_max(cluster: &Cluster, name: &str) -> f64 {
    let mut max: f64 = 0.0;
    for i in 0..cluster.len() {
        if let Ok(m) = cluster.metrics(i).await {
            max = max.max(m.value(name, &[]).unwrap_or(0.0));
        }
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_made_while_a_replica_is_down_are_reaped_everywhere_after_anti_entropy() {
    let mut config = ClusterConfig::new(3);
    config.server_args = [
        "--no-read-repair",
        "--no-hints",
        "--anti-entropy-interval",
        "2s",
    ]
    .map(String::from)
    .to_vec();
    let mut cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let count = count();

    let contexts: Vec<CausalContext> = each_key(&client, count, |c, i| async move {
        c.put(key(i), "doomed", None).await.expect("a put failed")
    })
    .await;

    // n3 goes down with the old values; the deletes reach n1 and n2 only (W=2, no hints).
    cluster.kill(2).unwrap();
    let contexts = std::sync::Arc::new(contexts);
    let started = Instant::now();
    let ctxs = contexts.clone();
    each_key(&client, count, move |c, i| {
        let ctxs = ctxs.clone();
        async move { c.delete(key(i), &ctxs[i]).await.expect("a delete failed") }
    })
    .await;
    println!(
        "reaping: {count} deletes with n3 down in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Not reaped while a primary holds the old value: the tombstones stay on n1 and n2.
    for node in [0, 1] {
        let states = local_states(&client, &cluster, node, count).await;
        let reaped = states.iter().filter(|s| **s == Some(true)).count();
        assert_eq!(
            reaped,
            0,
            "n{} reaped {reaped} keys while n3 was down",
            node + 1
        );
    }

    cluster.restart(2).await.unwrap();
    let back = Instant::now();
    // Every replica ends with every key reaped (polled; each poll asks every node every key).
    let last = std::sync::Mutex::new([0usize; 3]);
    let all_reaped = eventually(SETTLE, || {
        let (client, cluster, last) = (&client, &cluster, &last);
        async move {
            let mut reaped = [0usize; 3];
            for (node, r) in reaped.iter_mut().enumerate() {
                let states = local_states(client, cluster, node, count).await;
                *r = states.iter().filter(|s| **s == Some(true)).count();
            }
            *last.lock().unwrap() = reaped;
            reaped.iter().all(|r| *r == count)
        }
    })
    .await;
    let last = *last.lock().unwrap();
    assert!(
        all_reaped,
        "not every key was reaped everywhere: {last:?} of {count} (n1, n2, n3)"
    );
    println!(
        "reaping: every tombstone reaped on all three replicas {:.1} s after n3 was back",
        back.elapsed().as_secs_f64()
    );

    // No deleted key is readable anywhere, now and after more anti-entropy rounds.
    let exchanges = metric_sum(&cluster, "shoal_exchanges_total").await;
    assert!(
        eventually(SETTLE, || async {
            metric_sum(&cluster, "shoal_exchanges_total").await >= exchanges + 30.0
        })
        .await,
        "anti-entropy stopped running"
    );
    let reads = each_key(&client, count, |c, i| async move { c.get(key(i)).await }).await;
    for (i, r) in reads.iter().enumerate() {
        let r = r.as_ref().expect("a get failed");
        assert!(r.values.is_empty(), "{} came back: {:?}", key(i), r.values);
    }
    for node in 0..3 {
        let states = local_states(&client, &cluster, node, count).await;
        assert!(
            states.iter().all(|s| *s == Some(true)),
            "n{}: a reaped key holds something again",
            node + 1
        );
    }
    let out = cluster.shoal(&["get", "--local", &key(0)]).await.unwrap();
    assert!(
        out.stdout.matches("reaped (context").count() == 3,
        "get --local does not show the key reaped on the three replicas:\n{}",
        out.stdout
    );

    let reaped = metric_sum(&cluster, "shoal_tombstones_reaped_total").await;
    let sum = metric_sum(&cluster, "shoal_tombstone_lifetime_seconds_sum").await;
    let max = metric_max(&cluster, "shoal_tombstone_lifetime_seconds_max").await;
    let refused = metric_sum(&cluster, "shoal_reaps_refused_total").await;
    assert!(reaped > 0.0, "no reap round completed");
    println!(
        "reaping: {reaped} reap rounds completed, {refused} refused; tombstone lifetime mean {:.1} s, max {:.1} s (n3 was down {:.1} s of it)",
        sum / reaped.max(1.0),
        max,
        back.duration_since(started).as_secs_f64()
    );
    cluster.stop_all().await.unwrap();
}
