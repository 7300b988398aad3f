//! Long campaigns, ignored by default. Run them in release:
//!
//! `SHOAL_SIM_SEEDS=2000 cargo test --release -p shoal-sim --test long -- --ignored --nocapture`
//!
//! Each test runs `SHOAL_SIM_SEEDS` seeds (default 1000) of one workload under every fault.
//! Their seeds start at 1,000,000 and do not overlap the smoke tests'.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use shoal_sim::sim::{FaultMix, SimConfig, StorageKind};
use shoal_sim::workload::WorkloadKind;

const SEEDS: u64 = 1000;

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_set_adds() {
    let config = SimConfig::new(WorkloadKind::SetAdd, FaultMix::ALL);
    common::campaign("long_set_adds", &config, 1_000_000, SEEDS);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_blind_writes() {
    let config = SimConfig::new(WorkloadKind::BlindWrites, FaultMix::ALL);
    common::campaign("long_blind_writes", &config, 2_000_000, SEEDS);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_single_writers() {
    let config = SimConfig::new(WorkloadKind::SingleWriter, FaultMix::ALL);
    common::campaign("long_single_writers", &config, 3_000_000, SEEDS);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_puts_and_deletes() {
    let config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    let (_, reaped) =
        common::campaign_counting_reaps("long_puts_and_deletes", &config, 4_000_000, SEEDS);
    assert!(reaped > 0, "no tombstone was reaped over the campaign");
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_anti_entropy_alone() {
    let config = common::anti_entropy_alone(true);
    let (_, repairs) =
        common::campaign_with_repairs("long_anti_entropy_alone", &config, 4_500_000, SEEDS);
    assert_eq!(repairs.read, 0, "read repair was to be off");
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_hot_keys() {
    let config = common::hot_keys(FaultMix::ALL);
    common::campaign("long_hot_keys", &config, 5_000_000, SEEDS);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_redb_storage() {
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    config.storage = StorageKind::Redb;
    common::campaign("long_redb_storage", &config, 6_000_000, SEEDS / 10);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn long_with_a_node_down_in_the_liveness_phase() {
    let mut config = SimConfig::new(WorkloadKind::SetAdd, FaultMix::ALL);
    config.down_in_liveness = 1;
    common::campaign(
        "long_with_a_node_down_in_the_liveness_phase",
        &config,
        7_000_000,
        SEEDS,
    );
}
