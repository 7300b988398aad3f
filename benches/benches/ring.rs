//! Placement hot paths: the partitioner on a 16-byte key; preference lists (owned and borrowed)
//! and sloppy preference lists with one unreachable node, on 5- and 64-node rings at Q = 256 and
//! 1024; and claim adding one node to a 16-node ring. Nodes are spread over three zones. Lookups
//! cycle through every partition, so each figure is an average over the ring. DESIGN's goal: a
//! preference-list lookup well under a microsecond.

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shoal_ring::{Member, Ring, partition_for};
use shoal_types::{NodeId, PartitionCount, PartitionId, ReplicationFactor, Zone};

const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];

fn members(count: usize) -> Vec<Member> {
    (0..count)
        .map(|i| {
            let id = NodeId::new(&format!("node-{i:03}")).unwrap();
            let addr = SocketAddr::from(([10, 0, 0, (i % 250) as u8 + 1], 7000));
            Member::new(id, addr).in_zone(Zone::new(ZONES[i % ZONES.len()]).unwrap())
        })
        .collect()
}

fn ring(nodes: usize, q: u32) -> Ring {
    Ring::new(
        members(nodes),
        PartitionCount::new(q).unwrap(),
        ReplicationFactor::DEFAULT,
    )
    .unwrap()
}

/// An endless walk over every partition of the ring.
fn partitions(ring: &Ring) -> impl Iterator<Item = PartitionId> + use<> {
    (0..ring.q().get())
        .cycle()
        .map(PartitionId::from_index_unchecked)
}

fn partitioner(c: &mut Criterion) {
    let q = PartitionCount::DEFAULT;
    let key = *b"user:0000012345!";
    c.bench_function("partition_for/16B", |b| {
        b.iter(|| partition_for(black_box(&key), q))
    });
}

fn preference_lists(c: &mut Criterion) {
    let mut group = c.benchmark_group("preference_list");
    for nodes in [5, 64] {
        for q in [256, 1024] {
            let ring = ring(nodes, q);
            let name = format!("{nodes}n/Q{q}");
            let mut ps = partitions(&ring);
            group.bench_function(BenchmarkId::new("owned", &name), |b| {
                b.iter(|| ring.preference_list(black_box(ps.next().unwrap())))
            });
            let mut ps = partitions(&ring);
            group.bench_function(BenchmarkId::new("borrowed", &name), |b| {
                b.iter(|| ring.primaries(black_box(ps.next().unwrap())).len())
            });
        }
    }
    group.finish();
}

fn sloppy_preference_lists(c: &mut Criterion) {
    let mut group = c.benchmark_group("sloppy_preference_list");
    for nodes in [5, 64] {
        for q in [256, 1024] {
            let ring = ring(nodes, q);
            // One node down: it is a primary of about N/S of the partitions, so those lookups
            // walk on to a fallback.
            let down = ring.members()[0].id.clone();
            let mut ps = partitions(&ring);
            group.bench_function(BenchmarkId::new("1-down", format!("{nodes}n/Q{q}")), |b| {
                b.iter(|| {
                    ring.sloppy_preference_list(black_box(ps.next().unwrap()), |n| *n == down)
                })
            });
        }
    }
    group.finish();
}

fn claim(c: &mut Criterion) {
    let mut group = c.benchmark_group("claim");
    group.sample_size(20);
    for q in [256, 1024] {
        let ring = ring(16, q);
        let grown = members(17);
        group.bench_function(BenchmarkId::new("join-16n", format!("Q{q}")), |b| {
            b.iter(|| ring.claim(black_box(grown.clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    partitioner,
    preference_lists,
    sloppy_preference_lists,
    claim
);
criterion_main!(benches);
