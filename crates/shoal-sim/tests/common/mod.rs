//! Seed handling shared by the simulation tests: `SHOAL_SEED` replays one seed,
//! `SHOAL_SIM_SEEDS` sets how many seeds a campaign runs.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shoal_sim::checker::Summary;
use shoal_sim::sim::{self, FaultMix, RunResult, SimConfig};
use shoal_sim::workload::WorkloadKind;

/// The seeds a campaign runs: `SHOAL_SEED` alone if set, else `count` seeds from `base`
/// (`SHOAL_SIM_SEEDS` overrides `count`).
pub fn seeds(base: u64, count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SHOAL_SEED") {
        return vec![seed];
    }
    let count = env_u64("SHOAL_SIM_SEEDS").unwrap_or(count);
    (base..base + count).collect()
}

/// Runs `config` over the campaign's seeds, prints the summed figures, and fails with every
/// failing seed's schedule and report and the command that replays it.
pub fn campaign(test: &str, config: &SimConfig, base: u64, count: u64) -> Summary {
    campaign_with_repairs(test, config, base, count).0
}

/// Repairs made and tombstones reaped over a campaign, summed over its seeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Repairs {
    /// By reads.
    pub read: u64,
    /// By anti-entropy exchanges.
    pub exchange: u64,
    /// Tombstones reaped.
    pub reaped: u64,
    /// Reaping records held at the ends of the runs.
    pub records: u64,
}

/// [`campaign`], also returning the tombstones reaped over its seeds.
pub fn campaign_counting_reaps(
    test: &str,
    config: &SimConfig,
    base: u64,
    count: u64,
) -> (Summary, u64) {
    let (summary, repairs) = campaign_with_repairs(test, config, base, count);
    (summary, repairs.reaped)
}

/// [`campaign`], also returning the repairs the nodes made.
pub fn campaign_with_repairs(
    test: &str,
    config: &SimConfig,
    base: u64,
    count: u64,
) -> (Summary, Repairs) {
    // Wall time of the campaign, for its report only; the runs themselves never see it.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let seeds = seeds(base, count);
    let replay = seeds.len() == 1;
    let mut summary = Summary::new();
    let mut failures = Vec::new();
    let (mut events, mut operations, mut crashes, mut stops, mut expired) = (0, 0, 0, 0, 0);
    let mut repairs = Repairs::default();
    for seed in &seeds {
        let result = sim::run(config, *seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if replay {
            println!("{result}");
            if let Ok(key) = std::env::var("SHOAL_SIM_KEY") {
                println!("{}", story(&result, &key));
            }
        }
        events += result.stats.events;
        operations += result.stats.operations;
        crashes += result.stats.crashes;
        stops += result.stats.clean_stops;
        expired += result.stats.expired;
        repairs.read += result.stats.read_repairs;
        repairs.exchange += result.stats.exchange_repairs;
        repairs.reaped += result.stats.tombstones_reaped;
        repairs.records += result.stats.reaping_records;
        summary.add(&result.report);
        if !result.passed() {
            failures.push(describe(test, &result));
        }
    }
    println!(
        "{test}: {} seeds, {operations} operations, {events} events, {crashes} crashes, {stops} clean stops, {expired} expired unworked, {} read repairs, {} keys repaired by exchanges, {} tombstones reaped ({} reaping records held at the end), {:.1?} wall",
        seeds.len(),
        repairs.read,
        repairs.exchange,
        repairs.reaped,
        repairs.records,
        started.elapsed()
    );
    for line in summary.to_string().lines() {
        println!("{test}: {line}");
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} seeds failed:\n{}",
            failures.len(),
            seeds.len(),
            failures.join("\n")
        );
    }
    (summary, repairs)
}

/// Read repair and hinted handoff off: the final reads repair nothing and no fallback stands
/// in, so every replica that agrees at the end (I5, keys and trees) was converged by
/// anti-entropy, at its default settings, within `converge` of the drain.
pub fn anti_entropy_alone(anti_entropy: bool) -> SimConfig {
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    config.read_repair = false;
    config.hints.max_hint_bytes = 0;
    config.anti_entropy.enabled = anti_entropy;
    // Writes stop at the heal, and spread over more keys: a put ships its coordinator's whole
    // object to every replica, so later writes would heal what the faults left apart.
    config.keys = 96;
    // Majority PR and PW: a read may not answer from one stale primary and a fallback that
    // holds nothing, which with read repair off would make a single writer build on a stale
    // read (I3, `WorkloadConfig::primary_quorums`).
    config.primary_quorums = Some(true);
    config.settle = Duration::ZERO;
    config.liveness = Duration::ZERO;
    config.converge = Duration::from_secs(30);
    config
}

/// Put/delete on four hot keys with fast clients and short phases: writes to one key pile up
/// on its coordinator while earlier ones are still being made durable.
pub fn hot_keys(faults: FaultMix) -> SimConfig {
    let mut config = SimConfig::new(WorkloadKind::PutDelete, faults);
    config.keys = 4;
    config.clients = 4;
    config.safety = Duration::from_secs(4);
    config.settle = Duration::from_secs(1);
    config.liveness = Duration::from_secs(1);
    config.think_time = (Duration::from_micros(100), Duration::from_millis(2));
    config
}

/// A failed run, with how to replay it.
pub fn describe(test: &str, result: &RunResult) -> String {
    format!(
        "{result}replay: SHOAL_SEED={} cargo test -p shoal-sim {test} -- --nocapture\n",
        result.seed
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Everything the run did to one key: its operations and its replicas at the end
/// (`SHOAL_SIM_KEY=k3` with `SHOAL_SEED`).
pub fn story(result: &RunResult, key: &str) -> String {
    let mut out = String::new();
    for op in result
        .history
        .ops()
        .iter()
        .filter(|o| o.key.as_bytes() == key.as_bytes())
    {
        out.push_str(&format!(
            "{} client {} at {:?}..{:?}: {:?} -> {:?}\n",
            op.id, op.client.0, op.invoked, op.completed, op.kind, op.outcome
        ));
    }
    if let Ok(k) = shoal_types::Key::new(key.as_bytes().to_vec()) {
        for (node, object) in result.final_state.replicas(&k) {
            out.push_str(&format!("{node}: {object:?}\n"));
        }
    }
    out
}
