//! The real-cluster nemesis (DESIGN §12): three real nodes behind fault proxies, the
//! simulator's workloads run by real clients, a seeded schedule of partitions, link faults,
//! kills and pauses, then heal, final R=3 reads, replica comparison and the history checker.
//!
//! - CI smoke (about 2 minutes): `cargo test -p shoal-tests --test nemesis -- --nocapture`
//! - Long run: `SHOAL_NEMESIS_MINUTES=20 cargo test --release -p shoal-tests --test nemesis
//!   -- --ignored --nocapture`
//!
//! Both print the schedule, then one `name: value of total` line per figure. The long run is
//! rounds of 4 minutes of faults, each on a fresh cluster (round r uses seed + r). Replay a
//! schedule with `SHOAL_SEED=<seed>` (the interleaving of real processes is not replayable).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shoal_sim::checker::Summary;
use shoal_tests::nemesis::{self, NemesisConfig, NemesisResult};

fn seed() -> u64 {
    match std::env::var("SHOAL_SEED") {
        Ok(s) => s.parse().expect("SHOAL_SEED must be a number"),
        Err(_) => rand::random(),
    }
}

fn judge(name: &str, result: &NemesisResult) {
    println!("{name} (seed {}):\n{}", result.seed, result.figures());
    assert!(
        result.passed(),
        "{name} failed; replay the schedule with SHOAL_SEED={}\n{}{}",
        result.seed,
        result.figures(),
        result.examples()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_smoke_one_partition_one_kill_one_pause() {
    let seed = seed();
    println!("nemesis smoke: seed {seed} (replay the schedule with SHOAL_SEED={seed})");
    let config = NemesisConfig::smoke(seed);
    let result = nemesis::run(&config).await.unwrap();
    judge("nemesis smoke", &result);
    assert!(
        result.operations >= 10_000,
        "the smoke run needs at least 10,000 operations, it did {}",
        result.operations
    );
    let (ok, failed, _) = result.outcomes;
    assert!(ok > result.operations / 2, "most operations must succeed");
    assert!(failed > 0, "poisoned writes must fail definitely");
}

/// Minutes of faults per round of the long run; each round runs on a fresh cluster.
const ROUND_MINUTES: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: SHOAL_NEMESIS_MINUTES=20 cargo test --release -p shoal-tests --test nemesis -- --ignored --nocapture"]
async fn nemesis_long_random_faults() {
    let minutes: u64 = std::env::var("SHOAL_NEMESIS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    let rounds = minutes.div_ceil(ROUND_MINUTES).max(1);
    println!("nemesis long: {minutes} minutes of faults in {rounds} rounds, seed {seed}");
    let mut summary = Summary::new();
    let mut operations = 0;
    for round in 0..rounds {
        let round_seed = seed.wrapping_add(round);
        let length = ROUND_MINUTES.min(minutes - round * ROUND_MINUTES).max(1);
        let config = NemesisConfig::long(round_seed, length);
        let result = nemesis::run(&config).await.unwrap();
        judge(&format!("nemesis long, round {}", round + 1), &result);
        operations += result.operations;
        for (_, report) in &result.reports {
            summary.add(report);
        }
    }
    println!("nemesis long, all {rounds} rounds ({operations} operations):");
    for figure in &summary.figures {
        println!("{figure}");
    }
    assert!(summary.passed());
}
