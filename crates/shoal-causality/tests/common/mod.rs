//! Shared by the causality test binaries: actors, unique values, and objects built by random
//! histories. Objects are never built from random field values: those would break the invariants
//! (two different values under one dot, a dot beyond its actor's counter) that every object a
//! real cluster makes holds. Instead three replicas, each its own actor, run random sequences of
//! updates-with-contexts and merges, and every state they pass through is kept in a pool.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_types::{Incarnation, NodeId};

/// Replicas (and actors) in a history.
pub(crate) const REPLICAS: usize = 3;

/// A sibling cap no history here reaches.
pub(crate) const NO_CAP: usize = 1 << 20;

/// Proptest's settings here: `cases` cases, failing cases kept beside the test file
/// (`tests/<name>.proptest-regressions`; integration tests have no `lib.rs` for the default).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// The actor of replica `i`: node `n{i}` in an incarnation that differs per node.
pub(crate) fn actor(i: usize) -> Actor {
    let node = NodeId::new(&format!("n{i}")).unwrap();
    Actor::new(
        node,
        Incarnation::new(0x9e37_79b9_7f4a_7c15 ^ ((i as u64) << 40)),
    )
}

/// The value of write number `n`: unique per write, so values name writes.
pub(crate) fn value_of(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// The write number a value made by [`value_of`] names.
pub(crate) fn write_of(value: &Bytes) -> Option<u64> {
    Some(u64::from_be_bytes(value.as_ref().try_into().ok()?))
}

/// Where a client's context comes from in a history step.
#[derive(Clone, Debug)]
pub(crate) enum Ctx {
    /// A blind write.
    Empty,
    /// A read of one state in the pool (possibly a stale one).
    One(Index),
    /// A read of two states, their contexts joined (an R=2 read).
    Two(Index, Index),
}

/// One step of a random history.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Replica `at` coordinates a write of a fresh value (or a tombstone) with a context.
    Update {
        /// The coordinating replica.
        at: usize,
        /// The client's context.
        ctx: Ctx,
        /// Whether the write is a delete.
        tombstone: bool,
    },
    /// Replica `at` merges a state from the pool: replication, read repair or a late message.
    Merge {
        /// The receiving replica.
        at: usize,
        /// The state it receives.
        from: Index,
    },
}

/// One update a history made, with what it was made from.
#[derive(Clone, Debug)]
pub(crate) struct UpdateRecord {
    /// The coordinator's object before the write.
    pub(crate) before: Object,
    /// The client's context.
    pub(crate) ctx: CausalContext,
    /// The coordinator's actor.
    pub(crate) actor: Actor,
    /// What was written.
    pub(crate) sibling: Sibling,
    /// The coordinator's object after the write.
    pub(crate) after: Object,
}

/// The outcome of running a history.
#[derive(Clone, Debug)]
pub(crate) struct History {
    /// Every state any replica passed through, the three empty starting states first.
    pub(crate) pool: Vec<Object>,
    /// Every update, in order.
    pub(crate) updates: Vec<UpdateRecord>,
    /// The replicas' final states.
    pub(crate) replicas: Vec<Object>,
}

impl History {
    /// Runs `steps` from three empty replicas.
    pub(crate) fn run(steps: &[Step]) -> History {
        let mut replicas = vec![Object::new(); REPLICAS];
        let mut pool = replicas.clone();
        let mut updates = Vec::new();
        for step in steps {
            match step {
                Step::Update { at, ctx, tombstone } => {
                    let ctx = match ctx {
                        Ctx::Empty => CausalContext::empty(),
                        Ctx::One(i) => i.get(&pool).context(),
                        Ctx::Two(i, j) => {
                            let joined = i
                                .get(&pool)
                                .version_vector()
                                .join(j.get(&pool).version_vector());
                            CausalContext::from(joined)
                        }
                    };
                    let sibling = if *tombstone {
                        Sibling::Tombstone
                    } else {
                        Sibling::Value(value_of(updates.len() as u64))
                    };
                    let actor = actor(*at);
                    let before = replicas[*at].clone();
                    let after = before
                        .update(&ctx, sibling.clone(), &actor, NO_CAP)
                        .unwrap();
                    updates.push(UpdateRecord {
                        before,
                        ctx,
                        actor,
                        sibling,
                        after: after.clone(),
                    });
                    replicas[*at] = after.clone();
                    pool.push(after);
                }
                Step::Merge { at, from } => {
                    let merged = replicas[*at].merge(from.get(&pool));
                    replicas[*at] = merged.clone();
                    pool.push(merged);
                }
            }
        }
        History {
            pool,
            updates,
            replicas,
        }
    }
}

/// A random step: updates (a fifth of them deletes) and merges, in about equal numbers.
pub(crate) fn step() -> impl Strategy<Value = Step> {
    let ctx = prop_oneof![
        1 => Just(Ctx::Empty),
        3 => any::<Index>().prop_map(Ctx::One),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Ctx::Two(i, j)),
    ];
    prop_oneof![
        (0..REPLICAS, ctx, prop::bool::weighted(0.2))
            .prop_map(|(at, ctx, tombstone)| Step::Update { at, ctx, tombstone }),
        (0..REPLICAS, any::<Index>()).prop_map(|(at, from)| Step::Merge { at, from }),
    ]
}

/// The steps of a random history of up to `max_steps` steps (run them with [`History::run`]; a
/// failing case then prints the steps, not every state).
pub(crate) fn steps(max_steps: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..max_steps)
}

// ---- the causal-history model ------------------------------------------------------------

/// A version in the model: a write and its full causal history (which includes itself).
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub(crate) write: u64,
    pub(crate) tombstone: bool,
    pub(crate) history: BTreeSet<u64>,
}

/// A replica in the model: the versions it holds, none in another's history.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModelReplica {
    pub(crate) versions: Vec<Version>,
}

impl ModelReplica {
    /// Everything the replica has seen: the union of the histories it holds.
    pub(crate) fn seen(&self) -> BTreeSet<u64> {
        self.versions
            .iter()
            .flat_map(|v| v.history.iter().copied())
            .collect()
    }

    pub(crate) fn put(&mut self, context: &BTreeSet<u64>, version: Version) {
        self.versions.retain(|v| !context.contains(&v.write));
        self.versions.push(version);
    }

    pub(crate) fn sync_from(&mut self, other: &ModelReplica) {
        let mut all: BTreeMap<u64, Version> = BTreeMap::new();
        for v in self.versions.iter().chain(&other.versions) {
            all.entry(v.write).or_insert_with(|| v.clone());
        }
        let maximal = all
            .values()
            .filter(|v| {
                !all.values()
                    .any(|u| u.write != v.write && u.history.contains(&v.write))
            })
            .cloned()
            .collect();
        self.versions = maximal;
    }

    /// The siblings as `(write id, is tombstone)`.
    pub(crate) fn siblings(&self) -> BTreeSet<(u64, bool)> {
        self.versions
            .iter()
            .map(|v| (v.write, v.tombstone))
            .collect()
    }
}
