//! Seeds that once found a bug, kept as tests. Each names the bug; the fix is in the commit
//! that added the test. Replay one with `cargo test -p shoal-sim <test name> -- --nocapture`.
//!
//! A change to the simulator can turn a seed into another run that no longer reaches the bug.
//! Each test says what the bug was: to check a seed still reaches it, revert the fix and watch
//! the test fail; if it does not, search a few hundred seeds of the same configuration for one
//! that does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use shoal_sim::sim::{self, FaultMix, SimConfig};
use shoal_sim::workload::WorkloadKind;

/// Runs `seed` with `config` as it was when the bug was found: 3–5 nodes (the default became
/// 3–7 later, which would make the seed another run).
fn replay(test: &str, config: &SimConfig, seed: u64) {
    let mut config = config.clone();
    config.min_nodes = 3;
    config.max_nodes = 5;
    let result = sim::run(&config, seed).unwrap();
    println!("{result}");
    assert!(result.passed(), "{}", common::describe(test, &result));
}

/// A forwarded write whose first primary did not answer (it was paused) was tried on the next
/// primary. Both applied it, under two dots: a single writer saw siblings (I3), and when the
/// second primary refused definitely (`Unavailable`), an applied write was reported as a
/// definite failure (I6). Now the forwarder tries another primary only when the first surely
/// did not apply the write.
#[test]
fn a_forwarded_write_is_not_retried_on_another_primary_after_a_lost_answer() {
    let config = SimConfig::new(WorkloadKind::SetAdd, FaultMix::ALL);
    replay(
        "a_forwarded_write_is_not_retried_on_another_primary_after_a_lost_answer",
        &config,
        1_139,
    );
    let faults = FaultMix {
        pauses: true,
        clock_skew: true,
        ..FaultMix::NONE
    };
    let config = SimConfig::new(WorkloadKind::SingleWriter, faults);
    replay(
        "a_forwarded_write_is_not_retried_on_another_primary_after_a_lost_answer",
        &config,
        7_007,
    );
}

/// A write whose local fsync failed was answered `NodeFailed` (definite), but the next write
/// to the same key had been built on it while it was pending and made it durable (I6). Now a
/// failed local write is answered `QuorumFailed` (indeterminate).
#[test]
fn a_failed_local_fsync_is_indeterminate() {
    replay(
        "a_failed_local_fsync_is_indeterminate",
        &common::hot_keys(FaultMix {
            disk_errors: true,
            ..FaultMix::NONE
        }),
        30_016,
    );
}
