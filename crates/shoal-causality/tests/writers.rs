//! Who gets siblings: a single writer that reads before it writes never does (DESIGN I3, no false
//! concurrency); writers that write blind concurrently always do, until a write with the merged
//! context resolves them.

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NO_CAP, REPLICAS, actor, value_of};
use proptest::prelude::*;
use shoal_causality::{CausalContext, Object, Sibling};

/// One step of a single writer's life among three replicas.
#[derive(Clone, Copy, Debug)]
enum WriterOp {
    /// Replica `to` merges replica `from` (replication, read repair, anti-entropy).
    Sync { from: usize, to: usize },
    /// The writer reads replica `from` (after it has received the writer's last write), then
    /// writes through coordinator `at` with the context it read.
    ReadWrite {
        from: usize,
        at: usize,
        delete: bool,
    },
}

fn writer_op() -> impl Strategy<Value = WriterOp> {
    prop_oneof![
        (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| WriterOp::Sync { from, to }),
        (0..REPLICAS, 0..REPLICAS, prop::bool::weighted(0.1))
            .prop_map(|(from, at, delete)| WriterOp::ReadWrite { from, at, delete }),
    ]
}

proptest! {
    #![proptest_config(common::config(1024))]

    #[test]
    fn a_single_writer_that_reads_its_last_write_never_gets_siblings(
        ops in prop::collection::vec(writer_op(), 1..60),
    ) {
        let mut replicas = vec![Object::new(); REPLICAS];
        // The replica holding the writer's last write, and that write.
        let mut last: Option<(usize, Sibling)> = None;
        for (n, op) in ops.iter().enumerate() {
            match *op {
                WriterOp::Sync { from, to } => {
                    replicas[to] = replicas[to].merge(&replicas[from]);
                }
                WriterOp::ReadWrite { from, at, delete } => {
                    if let Some((held, _)) = &last
                        && *held != from
                    {
                        replicas[from] = replicas[from].merge(&replicas[*held]);
                    }
                    let read = &replicas[from];
                    if let Some((_, written)) = &last {
                        // The read sees exactly the last write.
                        let live: Vec<&Sibling> = read.siblings().iter().map(|(_, s)| s).collect();
                        prop_assert_eq!(live, vec![written]);
                    }
                    let context = read.context();
                    let sibling = if delete {
                        Sibling::Tombstone
                    } else {
                        Sibling::Value(value_of(n as u64))
                    };
                    let after = replicas[at]
                        .update(&context, sibling.clone(), &actor(at), NO_CAP)
                        .unwrap();
                    prop_assert_eq!(after.siblings().len(), 1, "siblings after {:?}: {:?}", op, after);
                    replicas[at] = after;
                    last = Some((at, sibling));
                }
            }
            for r in &replicas {
                prop_assert!(r.siblings().len() <= 1, "siblings after {:?}: {:?}", op, r);
            }
        }
    }
}

#[test]
fn concurrent_blind_writes_become_siblings_that_a_merged_context_resolves() {
    let mut replicas = vec![Object::new(); REPLICAS];
    // Two writers write blind through different coordinators.
    replicas[0] = replicas[0]
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(1)),
            &actor(0),
            NO_CAP,
        )
        .unwrap();
    replicas[1] = replicas[1]
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(2)),
            &actor(1),
            NO_CAP,
        )
        .unwrap();
    let both = replicas[0].merge(&replicas[1]);
    replicas[0] = both.clone();
    replicas[1] = both;
    assert_eq!(replicas[0].values(), vec![value_of(1), value_of(2)]);
    // Two blind writes at the same coordinator are concurrent too.
    let twice = Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(3)),
            &actor(2),
            NO_CAP,
        )
        .unwrap()
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(4)),
            &actor(2),
            NO_CAP,
        )
        .unwrap();
    assert_eq!(twice.values(), vec![value_of(3), value_of(4)]);

    // An R=2 read of replicas 0 and 2 (which has nothing) and a write through replica 2 with the
    // merged context resolves both siblings.
    let context = CausalContext::from(
        replicas[0]
            .version_vector()
            .join(replicas[2].version_vector()),
    );
    replicas[2] = replicas[2]
        .update(&context, Sibling::Value(value_of(5)), &actor(2), NO_CAP)
        .unwrap();
    assert_eq!(replicas[2].values(), vec![value_of(5)]);
    // The resolution wins everywhere once it replicates, in either direction.
    let resolved = replicas[2].clone();
    for r in &mut replicas {
        *r = r.merge(&resolved);
        assert_eq!(r.values(), vec![value_of(5)]);
        assert_eq!(resolved.merge(r), *r);
    }
}

#[test]
fn a_context_from_one_replica_resolves_only_what_that_replica_had_seen() {
    // Replica 1 has seen write 1 only; write 2 at replica 0 is concurrent with the client's read.
    let r0 = Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(1)),
            &actor(0),
            NO_CAP,
        )
        .unwrap();
    let r1 = Object::new().merge(&r0);
    let r0 = r0
        .update(
            &CausalContext::empty(),
            Sibling::Value(value_of(2)),
            &actor(0),
            NO_CAP,
        )
        .unwrap();
    let r1 = r1
        .update(
            &r1.context(),
            Sibling::Value(value_of(3)),
            &actor(1),
            NO_CAP,
        )
        .unwrap();
    assert_eq!(r1.values(), vec![value_of(3)]);
    let merged = r0.merge(&r1);
    assert_eq!(merged.values(), vec![value_of(2), value_of(3)]);
}
