//! `Object` against a reference model of DVV semantics (Preguiça, Baquero et al., "Dotted
//! Version Vectors"): every written version carries its full causal history, a set of write ids.
//!
//! - A write makes a fresh event; its history is the client's context (the union of the histories
//!   of what the client read) plus the event itself.
//! - A put at a replica removes the versions whose event is in the client's context and adds the
//!   new version.
//! - A sync keeps the maximal versions of both sides: those whose event is in the history of no
//!   other version held.
//!
//! Three replicas run random histories of reads (one replica, or two joined like an R=2 read),
//! puts with a context, blind puts, deletes, one-way and two-way syncs, on both sides. After every
//! operation each replica's siblings (as write ids, values and tombstones apart) and what it has
//! seen (its vector, as write ids) are compared with the model's.

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};

use common::{ModelReplica, NO_CAP, REPLICAS, Version, actor, value_of, write_of};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use shoal_causality::{CausalContext, Dot, Object, Sibling};

/// Clients that read and write; each remembers the context of its last read.
const CLIENTS: usize = 3;

/// Comparisons the model test must make at least.
const MIN_COMPARISONS: u64 = 10_000;

/// One operation of a history.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `client` reads replica `from` (and `also`, joining the contexts) and keeps the context.
    Read {
        client: usize,
        from: usize,
        also: Option<usize>,
    },
    /// `client` puts a fresh value at replica `at`, with its context or, if `blind`, none.
    Put {
        client: usize,
        at: usize,
        blind: bool,
    },
    /// `client` deletes at replica `at` with its context.
    Delete { client: usize, at: usize },
    /// Replica `to` merges replica `from`'s object.
    SyncOne { from: usize, to: usize },
    /// Replicas `a` and `b` exchange objects.
    SyncTwo { a: usize, b: usize },
}

/// A merge under test: `Object::merge`, or a deliberately broken one.
type Merge = fn(&Object, &Object) -> Object;

/// Counts of one or more histories.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    comparisons: u64,
    mismatches: u64,
}

/// Runs `ops` on three DVV replicas (merging with `merge`) and on the model, comparing every
/// replica after every operation. Returns the counts and a description of the first mismatch.
fn run_history(ops: &[Op], merge: Merge) -> (Tally, Option<String>) {
    let mut objects = vec![Object::new(); REPLICAS];
    let mut model = vec![ModelReplica::default(); REPLICAS];
    let mut contexts = vec![(CausalContext::empty(), BTreeSet::<u64>::new()); CLIENTS];
    // Which write each dot names (a tombstone carries no value to tell).
    let mut writes: BTreeMap<Dot, u64> = BTreeMap::new();
    let mut next_write = 0u64;
    let mut tally = Tally::default();
    let mut first = None;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Read { client, from, also } => {
                let mut vv = objects[from].version_vector().clone();
                let mut seen = model[from].seen();
                if let Some(j) = also {
                    vv = vv.join(objects[j].version_vector());
                    seen.extend(model[j].seen());
                }
                contexts[client] = (CausalContext::from(vv), seen);
            }
            Op::Put { client, at, .. } | Op::Delete { client, at } => {
                let tombstone = matches!(op, Op::Delete { .. });
                let blind = matches!(op, Op::Put { blind: true, .. });
                let (ctx, seen) = if blind {
                    (CausalContext::empty(), BTreeSet::new())
                } else {
                    contexts[client].clone()
                };
                let write = next_write;
                next_write += 1;
                let sibling = if tombstone {
                    Sibling::Tombstone
                } else {
                    Sibling::Value(value_of(write))
                };
                let a = actor(at);
                let after = match objects[at].update(&ctx, sibling, &a, NO_CAP) {
                    Ok(o) => o,
                    Err(e) => panic!("update refused under no cap: {e}"),
                };
                let dot = Dot {
                    actor: a.clone(),
                    counter: after.version_vector().get(&a),
                };
                writes.insert(dot, write);
                objects[at] = after;
                let mut history = seen.clone();
                history.insert(write);
                model[at].put(
                    &seen,
                    Version {
                        write,
                        tombstone,
                        history,
                    },
                );
            }
            Op::SyncOne { from, to } => {
                objects[to] = merge(&objects[to], &objects[from]);
                let src = model[from].clone();
                model[to].sync_from(&src);
            }
            Op::SyncTwo { a, b } => {
                let merged = merge(&objects[a], &objects[b]);
                objects[a] = merged.clone();
                objects[b] = merged;
                let (ma, mb) = (model[a].clone(), model[b].clone());
                model[a].sync_from(&mb);
                model[b].sync_from(&ma);
            }
        }
        for r in 0..REPLICAS {
            tally.comparisons += 1;
            let dvv_siblings = dvv_siblings(&objects[r], &writes);
            let dvv_seen = dvv_seen(&objects[r], &writes);
            let model_siblings = model[r].siblings();
            let model_seen = model[r].seen();
            if dvv_siblings.as_ref() != Some(&model_siblings)
                || dvv_seen.as_ref() != Some(&model_seen)
            {
                tally.mismatches += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "after op {step} {op:?}, replica {r}: dvv siblings {dvv_siblings:?} seen \
                         {dvv_seen:?}, model siblings {model_siblings:?} seen {model_seen:?}; \
                         object {:?}",
                        objects[r]
                    )
                });
            }
        }
    }
    (tally, first)
}

/// The object's siblings as `(write id, is tombstone)`, or `None` if a sibling names no write
/// or a value disagrees with its dot.
fn dvv_siblings(object: &Object, writes: &BTreeMap<Dot, u64>) -> Option<BTreeSet<(u64, bool)>> {
    object
        .siblings()
        .iter()
        .map(|(dot, sibling)| {
            let write = *writes.get(dot)?;
            match sibling {
                Sibling::Value(v) if write_of(v) == Some(write) => Some((write, false)),
                Sibling::Value(_) => None,
                Sibling::Tombstone => Some((write, true)),
            }
        })
        .collect()
}

/// The writes the object's vector covers, or `None` if it covers a dot nobody made.
fn dvv_seen(object: &Object, writes: &BTreeMap<Dot, u64>) -> Option<BTreeSet<u64>> {
    let mut seen = BTreeSet::new();
    for (a, n) in object.version_vector().entries() {
        for counter in 1..=*n {
            let dot = Dot {
                actor: a.clone(),
                counter,
            };
            seen.insert(*writes.get(&dot)?);
        }
    }
    Some(seen)
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..REPLICAS;
    let c = 0..CLIENTS;
    prop_oneof![
        3 => (c.clone(), r.clone(), prop::option::weighted(0.3, r.clone()))
            .prop_map(|(client, from, also)| Op::Read { client, from, also }),
        3 => (c.clone(), r.clone(), prop::bool::weighted(0.25))
            .prop_map(|(client, at, blind)| Op::Put { client, at, blind }),
        1 => (c, r.clone()).prop_map(|(client, at)| Op::Delete { client, at }),
        2 => (r.clone(), r.clone()).prop_map(|(from, to)| Op::SyncOne { from, to }),
        1 => (r.clone(), r).prop_map(|(a, b)| Op::SyncTwo { a, b }),
    ]
}

/// The seed: `SHOAL_SEED` if set, else a fresh random one.
fn seed() -> u64 {
    match std::env::var("SHOAL_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SHOAL_SEED={s} is not a u64")),
        Err(_) => RandomState::new().hash_one("shoal-causality model"),
    }
}

/// 32 bytes of ChaCha seed from a `u64` (splitmix64).
fn chacha_seed(mut x: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

#[test]
fn dvv_matches_the_causal_history_model() {
    let seed = seed();
    println!("dvv model seed: {seed} (rerun with SHOAL_SEED={seed})");
    let config = Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &chacha_seed(seed));
    let mut runner = TestRunner::new_with_rng(config, rng);
    let total = Cell::new(Tally::default());
    let result = runner.run(&prop::collection::vec(op(), 20..60), |ops| {
        let (tally, first) = run_history(&ops, Object::merge);
        let mut t = total.get();
        t.comparisons += tally.comparisons;
        t.mismatches += tally.mismatches;
        total.set(t);
        match first {
            None => Ok(()),
            Some(m) => Err(TestCaseError::fail(m)),
        }
    });
    let total = total.get();
    println!(
        "dvv model mismatches: {} of {}",
        total.mismatches, total.comparisons
    );
    if let Err(e) = result {
        panic!("the DVV object and the model disagree (seed {seed}): {e}");
    }
    assert_eq!(total.mismatches, 0);
    assert!(
        total.comparisons >= MIN_COMPARISONS,
        "only {} comparisons",
        total.comparisons
    );
}

/// A merge that forgets causality: the union of both sides' siblings.
fn union_merge(a: &Object, b: &Object) -> Object {
    let mut siblings: BTreeMap<Dot, Sibling> = a.siblings().iter().cloned().collect();
    siblings.extend(b.siblings().iter().cloned());
    Object::from_parts(
        a.version_vector().join(b.version_vector()),
        siblings.into_iter().collect(),
    )
    .unwrap()
}

/// A merge that keeps only what both sides hold, dropping concurrent writes.
fn intersection_merge(a: &Object, b: &Object) -> Object {
    let siblings = a
        .siblings()
        .iter()
        .filter(|s| b.siblings().contains(s))
        .cloned()
        .collect();
    Object::from_parts(a.version_vector().join(b.version_vector()), siblings).unwrap()
}

/// Replica 0 writes x; replica 1 receives it; a client reads replica 1 and overwrites x with y
/// there; a blind write z lands at replica 2; then everything syncs.
fn overwrite_then_sync() -> Vec<Op> {
    vec![
        Op::Put {
            client: 0,
            at: 0,
            blind: true,
        },
        Op::SyncOne { from: 0, to: 1 },
        Op::Read {
            client: 1,
            from: 1,
            also: None,
        },
        Op::Put {
            client: 1,
            at: 1,
            blind: false,
        },
        Op::Put {
            client: 2,
            at: 2,
            blind: true,
        },
        Op::SyncTwo { a: 0, b: 1 },
        Op::SyncOne { from: 2, to: 0 },
        Op::SyncOne { from: 0, to: 2 },
    ]
}

#[test]
fn the_model_catches_a_merge_that_resurrects_overwritten_values() {
    let (good, first) = run_history(&overwrite_then_sync(), Object::merge);
    assert_eq!(good.mismatches, 0, "{first:?}");
    let (bad, first) = run_history(&overwrite_then_sync(), union_merge);
    assert!(bad.mismatches > 0, "the union merge went unnoticed");
    println!("union merge caught: {}", first.unwrap_or_default());
}

#[test]
fn the_model_catches_a_merge_that_drops_concurrent_values() {
    let (bad, first) = run_history(&overwrite_then_sync(), intersection_merge);
    assert!(bad.mismatches > 0, "the intersection merge went unnoticed");
    println!("intersection merge caught: {}", first.unwrap_or_default());
}
