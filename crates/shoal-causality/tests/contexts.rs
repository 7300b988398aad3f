//! Dotted contexts and what a put returns: `CausalContext::with_dot` adds exactly one event (or,
//! past the dot cap, covers less, never more), a put's returned context never covers a sibling
//! the writer had not seen, and writers that keep writing with the contexts their puts returned
//! never make a concurrent write disappear (checked against the causal-history model).

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{History, ModelReplica, NO_CAP, REPLICAS, Version, actor, steps, value_of, write_of};
use proptest::prelude::*;
use proptest::sample::Index;
use shoal_causality::{
    CausalContext, CausalityError, Dot, MAX_CONTEXT_DOTS, Object, Sibling, VersionVector,
};

fn dot(i: usize, counter: u64) -> Dot {
    Dot {
        actor: actor(i),
        counter,
    }
}

fn vv(entries: &[(usize, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for &(i, n) in entries {
        v.witness(&actor(i), n);
    }
    v
}

/// Every dot of actors 0..3 up to counter 40: the domain coverage is compared on.
fn domain() -> Vec<Dot> {
    (0..REPLICAS)
        .flat_map(|i| (1..=40).map(move |c| dot(i, c)))
        .collect()
}

fn covered(c: &CausalContext) -> BTreeSet<Dot> {
    domain().into_iter().filter(|d| c.covers(d)).collect()
}

/// Checks `c` is in canonical form: rebuilding it through the decoder's checks gives it back.
fn assert_canonical(c: &CausalContext) {
    let rebuilt = CausalContext::from_parts(c.vector().clone(), c.dots().to_vec());
    assert_eq!(rebuilt.as_ref(), Ok(c));
}

#[test]
fn with_dot_folds_contiguous_dots_and_lists_the_others() {
    let c = CausalContext::from(vv(&[(0, 2)]));
    // Contiguous: into the vector.
    let c3 = c.with_dot(&dot(0, 3));
    assert_eq!(c3, CausalContext::from(vv(&[(0, 3)])));
    // Over a gap: listed, the vector unchanged.
    let c5 = c.with_dot(&dot(0, 5));
    assert_eq!(c5.vector(), &vv(&[(0, 2)]));
    assert_eq!(c5.dots(), &[dot(0, 5)]);
    assert!(!c5.covers(&dot(0, 3)) && !c5.covers(&dot(0, 4)) && c5.covers(&dot(0, 5)));
    // Closing the gap folds the listed dots that became contiguous.
    let closed = c5.with_dot(&dot(0, 4)).with_dot(&dot(0, 3));
    assert_eq!(closed, CausalContext::from(vv(&[(0, 5)])));
    // A dot already covered changes nothing.
    assert_eq!(c5.with_dot(&dot(0, 1)), c5);
    assert_eq!(c5.with_dot(&dot(0, 5)), c5);
}

#[test]
fn past_the_dot_cap_the_oldest_dot_is_dropped_and_the_new_one_kept() {
    let mut c = CausalContext::empty();
    // Actor 0's dots 2, 4, 6, …: never contiguous with an empty vector, so all listed.
    for k in 1..=MAX_CONTEXT_DOTS as u64 {
        c = c.with_dot(&dot(0, 2 * k));
    }
    assert_eq!(c.dots().len(), MAX_CONTEXT_DOTS);
    let newest = dot(1, 1_000);
    let capped = c.with_dot(&newest);
    assert_eq!(capped.dots().len(), MAX_CONTEXT_DOTS);
    assert!(capped.covers(&newest), "the write just made stays covered");
    assert!(!capped.covers(&dot(0, 2)), "the lowest counter is dropped");
    assert!(covered(&capped).is_subset(&covered(&c).union(&[newest].into()).cloned().collect()));
    assert_canonical(&capped);
}

#[test]
fn contexts_that_break_an_invariant_are_refused() {
    let refused = |what: &str, v: VersionVector, dots: Vec<Dot>| {
        assert!(
            CausalContext::from_parts(v, dots).is_err(),
            "{what} accepted"
        );
    };
    refused("unsorted dots", vv(&[]), vec![dot(0, 5), dot(0, 3)]);
    refused("a repeated dot", vv(&[]), vec![dot(0, 3), dot(0, 3)]);
    refused("a dot of counter 0", vv(&[]), vec![dot(0, 0)]);
    refused("a covered dot", vv(&[(0, 4)]), vec![dot(0, 2)]);
    refused("a contiguous dot", vv(&[(0, 4)]), vec![dot(0, 5)]);
    refused("a dot starting an actor", vv(&[]), vec![dot(1, 1)]);
    refused(
        "too many dots",
        vv(&[]),
        (0..=MAX_CONTEXT_DOTS as u64)
            .map(|k| dot(0, 2 * k + 2))
            .collect(),
    );
    let ok = CausalContext::from_parts(vv(&[(0, 4)]), vec![dot(0, 6), dot(1, 2)]).unwrap();
    let bytes = rmp_serde::to_vec(&ok).unwrap();
    assert_eq!(rmp_serde::from_slice::<CausalContext>(&bytes).unwrap(), ok);
    // The same checks hold on decoding.
    #[derive(serde::Serialize)]
    struct Raw {
        vv: VersionVector,
        dots: Vec<Dot>,
    }
    let raw = Raw {
        vv: vv(&[(0, 4)]),
        dots: vec![dot(0, 5)],
    };
    let bytes = rmp_serde::to_vec(&raw).unwrap();
    assert!(rmp_serde::from_slice::<CausalContext>(&bytes).is_err());
}

/// The reproduction, on one coordinator: X puts a, Y puts b blind, Y puts c with the
/// context its put of b returned. Both a and c must remain.
#[test]
fn a_put_with_a_put_returned_context_keeps_the_concurrent_write_it_never_saw() {
    let n1 = actor(0);
    let (o, a) = Object::new()
        .update_with_dot(&CausalContext::empty(), val(1), &n1, NO_CAP)
        .unwrap();
    let _x = CausalContext::empty().with_dot(&a);
    let (o, b) = o
        .update_with_dot(&CausalContext::empty(), val(2), &n1, NO_CAP)
        .unwrap();
    let y = CausalContext::empty().with_dot(&b);
    assert!(!y.covers(&a), "Y never saw a: {y:?}");
    let (o, _c) = o.update_with_dot(&y, val(3), &n1, NO_CAP).unwrap();
    assert_eq!(o.values(), vec![value_of(1), value_of(3)]);
    // The whole object's context (what a put answered before) would have dropped a.
    let (bad, _) = Object::new()
        .update_with_dot(&CausalContext::empty(), val(1), &n1, NO_CAP)
        .unwrap();
    let (bad, _) = bad
        .update_with_dot(&CausalContext::empty(), val(2), &n1, NO_CAP)
        .unwrap();
    let whole = bad.context();
    let (bad, _) = bad.update_with_dot(&whole, val(3), &n1, NO_CAP).unwrap();
    assert_eq!(bad.values(), vec![value_of(3)], "the old answer lost a");
}

#[test]
fn a_listed_dot_is_folded_only_when_exact() {
    // The coordinator has seen actor 0 up to 1; the context lists (0, 3) over a gap at 2.
    let base = Object::new()
        .update(&CausalContext::empty(), val(1), &actor(0), NO_CAP)
        .unwrap();
    let ctx = CausalContext::empty().with_dot(&dot(0, 3));
    let (after, _) = base
        .update_with_dot(&ctx, val(9), &actor(1), NO_CAP)
        .unwrap();
    assert_eq!(
        after.version_vector().get(&actor(0)),
        1,
        "no widening over (0, 2)"
    );
    // Contiguous: folded.
    let ctx = CausalContext::empty().with_dot(&dot(0, 2));
    let (after, _) = base
        .update_with_dot(&ctx, val(9), &actor(1), NO_CAP)
        .unwrap();
    assert_eq!(after.version_vector().get(&actor(0)), 2);
}

#[test]
fn a_context_naming_the_last_counter_is_refused_not_saturated() {
    let ctx = CausalContext::from(vv(&[(0, u64::MAX)]));
    let refused = Object::new().update_with_dot(&ctx, val(1), &actor(0), NO_CAP);
    assert_eq!(refused, Err(CausalityError::CountersExhausted));
}

fn val(n: u64) -> Sibling {
    Sibling::Value(value_of(n))
}

/// A random context: a vector over actors 0..3 with counters up to 12, then random dots added.
fn context() -> impl Strategy<Value = CausalContext> {
    (
        prop::collection::vec(0..12u64, REPLICAS),
        prop::collection::vec((0..REPLICAS, 1..40u64), 0..24),
    )
        .prop_map(|(counters, dots)| {
            let entries: Vec<(usize, u64)> = counters.into_iter().enumerate().collect();
            let mut c = CausalContext::from(vv(&entries));
            for (i, n) in dots {
                c = c.with_dot(&dot(i, n));
            }
            c
        })
}

proptest! {
    #![proptest_config(common::config(1024))]

    #[test]
    fn with_dot_adds_exactly_its_dot_or_covers_less_past_the_cap(
        c in context(),
        (i, n) in (0..REPLICAS, 1..40u64),
    ) {
        let d = dot(i, n);
        let out = c.with_dot(&d);
        assert_canonical(&out);
        prop_assert!(out.covers(&d));
        prop_assert!(out.dots().len() <= MAX_CONTEXT_DOTS);
        let mut expected = covered(&c);
        expected.insert(d.clone());
        let got = covered(&out);
        prop_assert!(got.is_subset(&expected), "{:?} + {:?} = {:?}", c, d, out);
        if c.dots().len() < MAX_CONTEXT_DOTS {
            prop_assert_eq!(got, expected, "{:?} + {:?} = {:?}", c, d, out);
        }
        // Idempotent.
        prop_assert_eq!(out.with_dot(&d), out.clone());
    }

    #[test]
    fn with_dot_commutes_below_the_cap(
        c in context(),
        (i, n) in (0..REPLICAS, 1..40u64),
        (j, m) in (0..REPLICAS, 1..40u64),
    ) {
        prop_assume!(c.dots().len() + 2 <= MAX_CONTEXT_DOTS);
        let (d, e) = (dot(i, n), dot(j, m));
        prop_assert_eq!(c.with_dot(&d).with_dot(&e), c.with_dot(&e).with_dot(&d));
    }

    #[test]
    fn a_run_of_dots_in_any_order_compacts_into_the_vector(
        order in Just((1..=MAX_CONTEXT_DOTS as u64).collect::<Vec<u64>>()).prop_shuffle(),
    ) {
        let mut c = CausalContext::empty();
        for n in &order {
            c = c.with_dot(&dot(0, *n));
        }
        prop_assert_eq!(c, CausalContext::from(vv(&[(0, MAX_CONTEXT_DOTS as u64)])));
    }

    #[test]
    fn a_put_returned_context_covers_only_what_the_writer_saw_and_its_write(
        steps in steps(40),
        pick in any::<Index>(),
    ) {
        let history = History::run(&steps);
        let all: BTreeSet<Dot> = history
            .pool
            .iter()
            .flat_map(|o| o.siblings().iter().map(|(d, _)| d.clone()))
            .collect();
        for u in &history.updates {
            let (after, made) = u
                .before
                .update_with_dot(&u.ctx, u.sibling.clone(), &u.actor, NO_CAP)
                .unwrap();
            prop_assert_eq!(&after, &u.after);
            let returned = u.ctx.with_dot(&made);
            prop_assert!(returned.covers(&made));
            for d in &all {
                prop_assert!(
                    !returned.covers(d) || u.ctx.covers(d) || *d == made,
                    "{:?} returned for {:?} covers {:?}", returned, u, d
                );
            }
        }
        // And with a dotted context picked from a put's answer, update still keeps the invariants.
        if let Some(u) = history.updates.get(pick.index(history.updates.len().max(1))) {
            let (_, made) = u.before.update_with_dot(&u.ctx, u.sibling.clone(), &u.actor, NO_CAP).unwrap();
            let returned = u.ctx.with_dot(&made);
            for o in &history.pool {
                let next = o.update(&returned, val(1_000_000), &actor(0), NO_CAP).unwrap();
                let rebuilt = Object::from_parts(next.version_vector().clone(), next.siblings().to_vec());
                prop_assert_eq!(rebuilt.as_ref(), Ok(&next));
            }
        }
    }

    #[test]
    fn writers_chaining_put_returned_contexts_never_lose_a_concurrent_write(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        if let Err(m) = run_chained(&ops, put_answer) {
            return Err(TestCaseError::fail(m));
        }
    }
}

/// Clients that keep a context: from their last read, then from each put's answer.
const CLIENTS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `client` reads replica `from` and keeps its context.
    Read { client: usize, from: usize },
    /// `client` writes at replica `at` with its context (or blind) and keeps what the put
    /// returned.
    Put {
        client: usize,
        at: usize,
        blind: bool,
        tombstone: bool,
    },
    /// Replica `to` merges replica `from`.
    Sync { from: usize, to: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let (r, c) = (0..REPLICAS, 0..CLIENTS);
    prop_oneof![
        1 => (c.clone(), r.clone()).prop_map(|(client, from)| Op::Read { client, from }),
        4 => (c, r.clone(), prop::bool::weighted(0.2), prop::bool::weighted(0.1))
            .prop_map(|(client, at, blind, tombstone)| Op::Put { client, at, blind, tombstone }),
        2 => (r.clone(), r).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// What a put answers, from the writer's context, the dot made and the object stored.
type Answer = fn(&CausalContext, &Dot, &Object) -> CausalContext;

/// Shoal's answer: the writer's context plus its write.
fn put_answer(context: &CausalContext, made: &Dot, _: &Object) -> CausalContext {
    context.with_dot(made)
}

/// The answer before issue 11: the stored object's whole context.
fn whole_object_answer(_: &CausalContext, _: &Dot, stored: &Object) -> CausalContext {
    stored.context()
}

/// Runs `ops` on three replicas and on the model (each write's history is what its writer's
/// context had seen, plus itself; a put drops the versions its context saw; a sync keeps the
/// versions no other held version has seen). A DVV replica may keep more than the model (a
/// listed dot not folded into a vector can bring a superseded sibling back: a false sibling,
/// safe), but never less (a lost write), and its vector never covers a write the model's
/// replica has not seen (a widened vector).
fn run_chained(ops: &[Op], answer: Answer) -> Result<(), String> {
    let mut objects = vec![Object::new(); REPLICAS];
    let mut model = vec![ModelReplica::default(); REPLICAS];
    let mut clients = vec![(CausalContext::empty(), BTreeSet::<u64>::new()); CLIENTS];
    let mut writes: BTreeMap<Dot, u64> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Read { client, from } => {
                clients[client] = (objects[from].context(), model[from].seen());
            }
            Op::Put {
                client,
                at,
                blind,
                tombstone,
            } => {
                let (ctx, saw) = if blind {
                    (CausalContext::empty(), BTreeSet::new())
                } else {
                    clients[client].clone()
                };
                // The DVV context never covers more than the model's.
                for (d, w) in &writes {
                    if ctx.covers(d) && !saw.contains(w) {
                        return Err(format!(
                            "step {step}: context {ctx:?} covers write {w} unseen"
                        ));
                    }
                }
                let write = writes.len() as u64;
                let sibling = if tombstone {
                    Sibling::Tombstone
                } else {
                    Sibling::Value(value_of(write))
                };
                let (after, made) = objects[at]
                    .update_with_dot(&ctx, sibling, &actor(at), NO_CAP)
                    .map_err(|e| format!("step {step}: {e}"))?;
                writes.insert(made.clone(), write);
                let returned = answer(&ctx, &made, &after);
                objects[at] = after;
                let mut history = saw.clone();
                history.insert(write);
                model[at].put(
                    &saw,
                    Version {
                        write,
                        tombstone,
                        history: history.clone(),
                    },
                );
                clients[client] = (returned, history);
            }
            Op::Sync { from, to } => {
                objects[to] = objects[to].merge(&objects[from]);
                let other = model[from].clone();
                model[to].sync_from(&other);
            }
        }
        for r in 0..REPLICAS {
            let held: BTreeSet<u64> = objects[r]
                .siblings()
                .iter()
                .map(|(d, s)| {
                    let w = writes[d];
                    if let Sibling::Value(v) = s {
                        assert_eq!(write_of(v), Some(w), "a value under another write's dot");
                    }
                    w
                })
                .collect();
            let expected: BTreeSet<u64> = model[r].versions.iter().map(|v| v.write).collect();
            if !expected.is_subset(&held) {
                return Err(format!(
                    "after step {step} {op:?}, replica {r} lost {:?}: holds {held:?}, the model {expected:?}; {:?}",
                    expected.difference(&held).collect::<Vec<_>>(),
                    objects[r]
                ));
            }
            let model_seen = model[r].seen();
            for (d, w) in &writes {
                if objects[r].version_vector().covers(d) && !model_seen.contains(w) {
                    return Err(format!(
                        "after step {step} {op:?}, replica {r}'s vector covers write {w} it never saw: {:?}",
                        objects[r]
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_chained_model_catches_the_whole_object_context() {
    // X puts a at replica 0, Y puts b blind at replica 0, then Y puts c with what its put returned:
    // with the whole object's context as the answer, a would be lost.
    let ops = [
        Op::Put {
            client: 0,
            at: 0,
            blind: true,
            tombstone: false,
        },
        Op::Put {
            client: 1,
            at: 0,
            blind: true,
            tombstone: false,
        },
        Op::Put {
            client: 1,
            at: 0,
            blind: false,
            tombstone: false,
        },
    ];
    assert_eq!(run_chained(&ops, put_answer), Ok(()));
    let caught = run_chained(&ops, whole_object_answer);
    assert!(caught.is_err(), "the whole-object answer went unnoticed");
    println!("whole-object answer caught: {}", caught.unwrap_err());
}
