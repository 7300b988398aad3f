//! Smoke campaigns: each workload under every fault, and each kind of fault alone, over a few
//! hundred seeds in all. Replay a failing seed with
//! `SHOAL_SEED=<seed> cargo test -p shoal-sim <test name> -- --nocapture`; run more seeds with
//! `SHOAL_SIM_SEEDS=<count>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use shoal_sim::sim::{self, FaultAction, FaultMix, SimConfig, StorageKind};
use shoal_sim::workload::WorkloadKind;

#[test]
fn set_adds_survive_every_fault() {
    let config = SimConfig::new(WorkloadKind::SetAdd, FaultMix::ALL);
    common::campaign("set_adds_survive_every_fault", &config, 1_000, 60);
}

#[test]
fn blind_writes_survive_every_fault() {
    let config = SimConfig::new(WorkloadKind::BlindWrites, FaultMix::ALL);
    common::campaign("blind_writes_survive_every_fault", &config, 2_000, 50);
}

#[test]
fn single_writers_never_see_siblings_under_every_fault() {
    let config = SimConfig::new(WorkloadKind::SingleWriter, FaultMix::ALL);
    let summary = common::campaign(
        "single_writers_never_see_siblings_under_every_fault",
        &config,
        3_000,
        50,
    );
    let keys = summary.figure("siblings from single writers").unwrap();
    assert!(
        keys.total > 0,
        "no key qualified for the single-writer check"
    );
}

#[test]
fn put_chains_survive_every_fault() {
    // Writers write again with the context their own put returned: a put's answer that covered
    // more than its writer saw would drop the other chains' acknowledged values here.
    let config = SimConfig::new(WorkloadKind::PutChains, FaultMix::ALL);
    let summary = common::campaign("put_chains_survive_every_fault", &config, 4_500, 40);
    assert!(summary.figure("acknowledged writes lost").unwrap().total > 0);
}

#[test]
fn puts_and_deletes_survive_every_fault() {
    let config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    let (summary, reaped) =
        common::campaign_counting_reaps("puts_and_deletes_survive_every_fault", &config, 4_000, 60);
    assert!(summary.figure("deletes undone").unwrap().total > 0);
    // I4 held with reaping on: and tombstones were reaped, so the check saw reaped keys.
    assert!(reaped > 0, "no tombstone was reaped over the campaign");
}

#[test]
fn anti_entropy_alone_converges_every_replica() {
    let config = common::anti_entropy_alone(true);
    let (summary, repairs) = common::campaign_with_repairs(
        "anti_entropy_alone_converges_every_replica",
        &config,
        4_500,
        40,
    );
    assert_eq!(repairs.read, 0, "read repair was to be off");
    assert!(repairs.exchange > 0, "no exchange repaired anything");
    assert!(summary.figure("deletes undone").unwrap().total > 0);
}

#[test]
fn without_anti_entropy_or_read_repair_replicas_stay_apart() {
    // The check above can fail: the same faults, with nobody comparing trees, leave replicas
    // apart (writes lost on cut links and in crashes, with no read to repair them).
    let config = common::anti_entropy_alone(false);
    let mut apart = 0;
    for seed in common::seeds(4_500, 40) {
        let result = sim::run(&config, seed).unwrap();
        assert_eq!(result.stats.exchange_repairs, 0, "{result}");
        apart += result.report.unconverged_keys.value;
    }
    println!("without anti-entropy: {apart} keys apart at the end");
    assert!(apart > 0, "the faults left no replica behind");
}

#[test]
fn partitions_alone() {
    let faults = FaultMix {
        partitions: true,
        ..FaultMix::NONE
    };
    let config = SimConfig::new(WorkloadKind::PutDelete, faults);
    let (_, reaped) = common::campaign_counting_reaps("partitions_alone", &config, 5_000, 40);
    assert!(reaped > 0, "no delete under partitions was reaped");
}

#[test]
fn crashes_and_failed_fsyncs_alone() {
    let faults = FaultMix {
        crashes: true,
        disk_errors: true,
        ..FaultMix::NONE
    };
    let config = SimConfig::new(WorkloadKind::SetAdd, faults);
    common::campaign("crashes_and_failed_fsyncs_alone", &config, 6_000, 40);
}

#[test]
fn pauses_and_clock_skew_alone() {
    let faults = FaultMix {
        pauses: true,
        clock_skew: true,
        ..FaultMix::NONE
    };
    let config = SimConfig::new(WorkloadKind::SingleWriter, faults);
    common::campaign("pauses_and_clock_skew_alone", &config, 7_000, 40);
}

#[test]
fn a_lossy_network_alone() {
    let faults = FaultMix {
        lossy_network: true,
        ..FaultMix::NONE
    };
    let config = SimConfig::new(WorkloadKind::BlindWrites, faults);
    common::campaign("a_lossy_network_alone", &config, 8_000, 40);
}

#[test]
fn redb_storage_survives_every_fault() {
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    config.storage = StorageKind::Redb;
    common::campaign("redb_storage_survives_every_fault", &config, 9_000, 15);
}

#[test]
fn without_faults_every_operation_succeeds() {
    let mut config = SimConfig::new(WorkloadKind::SetAdd, FaultMix::NONE);
    config.poison_fraction = 0.0;
    for seed in common::seeds(10_000, 5) {
        let result = sim::run(&config, seed).unwrap();
        assert!(
            result.passed(),
            "{}",
            common::describe("without_faults_every_operation_succeeds", &result)
        );
        assert!(result.stats.operations > 100);
        assert_eq!(result.stats.dropped, 0);
        assert_eq!(result.report.indeterminate_applied.total, 0, "{result}");
        assert_eq!(result.report.stale_reads.value, 0, "{result}");
    }
}

#[test]
fn a_run_replays_exactly_from_its_seed() {
    for (workload, seed) in [
        (WorkloadKind::SetAdd, 11_000),
        (WorkloadKind::PutDelete, 11_001),
        (WorkloadKind::SingleWriter, 11_002),
        (WorkloadKind::BlindWrites, 11_003),
    ] {
        let mut config = SimConfig::new(workload, FaultMix::ALL);
        if workload == WorkloadKind::BlindWrites {
            config.storage = StorageKind::Redb;
        }
        let a = sim::run(&config, seed).unwrap();
        let b = sim::run(&config, seed).unwrap();
        println!(
            "seed {seed}: trace {:016x} and {:016x}",
            a.trace_hash, b.trace_hash
        );
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a.report, b.report);
        assert_eq!(a.stats, b.stats);
        let other = sim::run(&config, seed + 100).unwrap();
        assert_ne!(a.trace_hash, other.trace_hash, "the hash ignores the run");
    }
}

#[test]
fn lying_disks_are_caught_as_lost_writes() {
    let mut config = SimConfig::new(WorkloadKind::BlindWrites, FaultMix::NONE);
    config.lying_disks = true;
    let result = sim::run(&config, 12_000).unwrap();
    println!("{result}");
    assert!(result.report.acknowledged_writes_lost.value > 0, "{result}");
    assert!(!result.passed());
}

#[test]
fn hot_keys_survive_every_fault() {
    let config = common::hot_keys(FaultMix::ALL);
    common::campaign("hot_keys_survive_every_fault", &config, 13_000, 30);
}

#[test]
fn the_nemesis_really_injects_every_fault() {
    // Hot keys: writes are pending on some disk most of the time, so crashes lose some.
    let config = common::hot_keys(FaultMix::ALL);
    let mut total = sim::SimStats::default();
    for seed in 14_000..14_010 {
        let s = sim::run(&config, seed).unwrap().stats;
        total.crashes += s.crashes;
        total.clean_stops += s.clean_stops;
        total.batches_lost += s.batches_lost;
        total.dropped += s.dropped;
        total.duplicated += s.duplicated;
        total.unreachable += s.unreachable;
        total.forwarded += s.forwarded;
        total.read_repairs += s.read_repairs;
    }
    println!("{total:?}");
    assert!(total.crashes > 0 && total.batches_lost > 0, "{total:?}");
    assert!(total.clean_stops > 0, "{total:?}");
    assert!(
        total.dropped > 0 && total.duplicated > 0 && total.unreachable > 0,
        "{total:?}"
    );
    assert!(total.forwarded > 0 && total.read_repairs > 0, "{total:?}");
}

#[test]
fn lost_records_never_make_a_node_reuse_a_dot() {
    // Riak's kv679: a corrupted record replaced by an older copy must not let its node make
    // the lost record's dots again. Hot keys, so the nodes keep coordinating the keys whose
    // records they lost; no crashes, so every new incarnation comes from a lost record. A lost
    // copy breaks R + W > N, so stale reads are possible and not checked; what must hold: no
    // dot names two values, no acknowledged write is lost (each key loses one copy at most),
    // nothing unwritten or undeleted appears, and the replicas converge.
    let faults = FaultMix {
        lost_records: true,
        lossy_network: true,
        partitions: true,
        ..FaultMix::NONE
    };
    let mut config = common::hot_keys(faults);
    config.safety = Duration::from_secs(8);
    let mut failures = Vec::new();
    let mut total = sim::SimStats::default();
    for seed in common::seeds(17_000, 30) {
        let result = sim::run(&config, seed).unwrap();
        let s = &result.stats;
        total.corrupted_records += s.corrupted_records;
        total.failed_reads += s.failed_reads;
        total.incarnation_renewals += s.incarnation_renewals;
        total.longest_vector = total.longest_vector.max(s.longest_vector);
        let r = &result.report;
        let held = result.reused_dots.is_empty()
            && result.anomalies.is_empty()
            && r.acknowledged_writes_lost.value == 0
            && r.values_never_written.value == 0
            && r.deletes_undone.value == 0
            && r.unconverged_keys.value == 0;
        if !held {
            failures.push(common::describe(
                "lost_records_never_make_a_node_reuse_a_dot",
                &result,
            ));
        }
    }
    println!(
        "lost_records: {} records corrupted, {} reads failed, {} incarnations renewed, longest vector {}",
        total.corrupted_records,
        total.failed_reads,
        total.incarnation_renewals,
        total.longest_vector
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        total.corrupted_records > 0 && total.failed_reads > 0,
        "{total:?}"
    );
    assert!(total.incarnation_renewals > 0, "{total:?}");
}

#[test]
fn three_hundred_unclean_restarts_of_a_hot_keys_coordinator_leave_its_vectors_small() {
    // Issue 11, item 3: if every unclean restart took a new incarnation, each would add a
    // vector entry to every key the node coordinates afterwards, and a hot key would pass the
    // decoders' 256 entries. A node that sends only durable dots keeps its incarnation instead.
    let mut config = common::hot_keys(FaultMix::NONE);
    config.keys = 2;
    (config.min_nodes, config.max_nodes) = (3, 3);
    config.safety = Duration::from_secs(16);
    // Clients that give up on the crashed node quickly, so that every life of it coordinates.
    config.client_timeout = Duration::from_millis(200);
    config.request_timeout = Duration::from_millis(150);
    config.transport_timeout = Duration::from_millis(100);
    config.liveness_deadline = Duration::from_millis(500);
    for i in 0..300u32 {
        let at = Duration::from_millis(100) + Duration::from_millis(50) * i;
        config.extra_faults.push((at, FaultAction::Crash(0)));
        let restart = at + Duration::from_millis(20);
        config.extra_faults.push((restart, FaultAction::Restart(0)));
    }
    for seed in common::seeds(18_000, 2) {
        let result = sim::run(&config, seed).unwrap();
        let s = &result.stats;
        println!(
            "seed {seed}: {} crashes, {} batches lost, {} operations, longest vector {}",
            s.crashes, s.batches_lost, s.operations, s.longest_vector
        );
        assert!(s.crashes >= 300, "{s:?}");
        assert!(
            result.passed(),
            "{}",
            common::describe(
                "three_hundred_unclean_restarts_of_a_hot_keys_coordinator_leave_its_vectors_small",
                &result
            )
        );
        // One entry per node that coordinated: the restarts added none.
        assert!(s.longest_vector <= result.nodes, "{s:?}");
    }
}

#[test]
fn liveness_holds_with_a_node_down() {
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::ALL);
    config.down_in_liveness = 1;
    common::campaign("liveness_holds_with_a_node_down", &config, 15_000, 30);
}

#[test]
fn liveness_holds_with_two_of_four_nodes_down_through_fallbacks() {
    // N − max(R, W) = 1, but with sloppy quorums a key that lost two primaries is served by
    // its one primary left and a fallback standing in (R = W = 2 distinct nodes).
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::NONE);
    config.down_in_liveness = 2;
    config.min_nodes = 4;
    config.max_nodes = 4;
    let result = sim::run(&config, 16_000).unwrap();
    assert_eq!(result.report.stuck_requests.value, 0, "{result}");
    assert!(result.report.stuck_requests.total > 0, "{result}");
    assert_eq!(result.report.unconverged_keys.value, 0, "{result}");
}

#[test]
fn liveness_is_not_promised_with_three_of_four_nodes_down() {
    // One node left: fewer than W = 2 distinct nodes can be tried, and the keys it is no
    // primary of have no primary to make their dots. Requests must fail: this proves the
    // liveness figure can fail.
    let mut config = SimConfig::new(WorkloadKind::PutDelete, FaultMix::NONE);
    config.down_in_liveness = 3;
    config.min_nodes = 4;
    config.max_nodes = 4;
    let result = sim::run(&config, 16_000).unwrap();
    assert!(result.report.stuck_requests.value > 0, "{result}");
}

#[test]
fn single_writers_on_sloppy_quorums_can_see_siblings() {
    // The trade Dynamo makes for availability: with PR = PW = 0 a read can miss a write held
    // only by fallbacks, and the single writer's next write is then concurrent with it. This is
    // why the single-writer campaign asks majorities of primaries, and it proves that campaign's
    // check can fail.
    let mut config = SimConfig::new(WorkloadKind::SingleWriter, FaultMix::ALL);
    config.primary_quorums = Some(false);
    let mut siblings = 0;
    let mut keys = 0;
    for seed in 3_000..3_020 {
        let result = sim::run(&config, seed).unwrap();
        siblings += result.report.single_writer_siblings.value;
        keys += result.report.single_writer_siblings.total;
        assert_eq!(result.report.acknowledged_writes_lost.value, 0, "{result}");
    }
    println!(
        "single writers on sloppy quorums: siblings on {siblings} of {keys} keys over 20 seeds"
    );
    assert!(siblings > 0, "no stale read made a sibling in 20 seeds");
}
