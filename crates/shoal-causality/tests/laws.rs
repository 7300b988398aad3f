//! The algebra of `merge` and the contract of `update`, on objects built by random histories of
//! three replicas (see `common`). Equality is structural: objects are canonical (sorted vector,
//! siblings sorted by dot), so two objects that mean the same are `==`.

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{History, steps};
use proptest::prelude::*;
use proptest::sample::Index;
use shoal_causality::{Dot, Object};

/// Found by fuzzing (`fuzz/corpus/object_merge/regression-reused-dot`): two objects that hold
/// different siblings under the same dot, as when a node restored from an old backup reuses its
/// counters. Merge must still be commutative and associative, or replicas never converge.
#[test]
fn merge_of_different_siblings_under_one_dot_is_still_a_join() {
    use bytes::Bytes;
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_types::{Incarnation, NodeId};

    let actor = Actor::new(NodeId::new("a1").unwrap(), Incarnation::new(1));
    let write = |s: Sibling| {
        Object::new()
            .update(&CausalContext::empty(), s, &actor, 64)
            .unwrap()
    };
    let a = write(Sibling::Value(Bytes::from_static(b"v1")));
    let b = write(Sibling::Value(Bytes::from_static(b"v2")));
    let c = write(Sibling::Tombstone);
    assert_eq!(a.siblings()[0].0, b.siblings()[0].0, "one dot, two values");
    assert_eq!(a.merge(&b), b.merge(&a));
    assert_eq!(a.merge(&c), c.merge(&a));
    assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
    assert_eq!(a.merge(&b).merge(&c), c.merge(&b).merge(&a));
}

proptest! {
    #![proptest_config(common::config(1024))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        steps in steps(40),
        a in any::<Index>(),
        b in any::<Index>(),
        c in any::<Index>(),
    ) {
        let history = History::run(&steps);
        let (a, b, c) = (a.get(&history.pool), b.get(&history.pool), c.get(&history.pool));
        prop_assert_eq!(a.merge(b), b.merge(a));
        prop_assert_eq!(a.merge(b).merge(c), a.merge(&b.merge(c)));
        prop_assert_eq!(&a.merge(a), a);
        prop_assert_eq!(&a.merge(&Object::new()), a);
        // The merge is an upper bound of both sides, and `descends` agrees with it.
        let ab = a.merge(b);
        prop_assert!(ab.descends(a) && ab.descends(b));
        prop_assert_eq!(a.descends(b), &a.merge(b) == a);
        prop_assert!(ab.version_vector().descends(a.version_vector()));
    }

    #[test]
    fn replicas_that_exchanged_everything_are_equal(steps in steps(40)) {
        // Every replica merging every final state (in different orders) ends identical.
        let history = History::run(&steps);
        let r = &history.replicas;
        let forward = r[0].merge(&r[1]).merge(&r[2]);
        let backward = r[2].merge(&r[1]).merge(&r[0]);
        let middle = r[1].merge(&r[2].merge(&r[0]));
        prop_assert_eq!(&forward, &backward);
        prop_assert_eq!(&forward, &middle);
    }

    #[test]
    fn update_supersedes_exactly_what_its_context_covered(steps in steps(40)) {
        let history = History::run(&steps);
        for u in &history.updates {
            let ctx = u.ctx.vector();
            let old: BTreeSet<&Dot> = u.before.siblings().iter().map(|(d, _)| d).collect();
            let new: BTreeSet<&Dot> = u.after.siblings().iter().map(|(d, _)| d).collect();
            let added: Vec<&Dot> = new.difference(&old).copied().collect();
            prop_assert_eq!(added.len(), 1, "one new sibling: {:?}", u);
            let dot = added[0];
            prop_assert_eq!(&dot.actor, &u.actor);
            prop_assert!(!u.before.version_vector().covers(dot), "dot reused: {:?}", u);
            prop_assert!(!ctx.covers(dot), "dot inside the context: {:?}", u);
            // Kept: exactly the old siblings the context did not cover, unchanged.
            let expected: Vec<_> = u
                .before
                .siblings()
                .iter()
                .filter(|(d, _)| !ctx.covers(d))
                .cloned()
                .chain([(dot.clone(), u.sibling.clone())])
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect();
            prop_assert_eq!(u.after.siblings(), expected.as_slice());
            let vv = u.after.version_vector();
            prop_assert!(vv.descends(u.before.version_vector()));
            prop_assert!(vv.descends(ctx));
            prop_assert!(vv.covers(dot));
            // Nothing but the new dot was added to what the object and the client had seen.
            prop_assert_eq!(vv, &u.before.version_vector().join(ctx).join(&single(dot)));
        }
    }

    #[test]
    fn every_state_keeps_the_invariants(steps in steps(40)) {
        // What `from_parts` checks for decoded bytes holds for every state a history makes.
        let history = History::run(&steps);
        for o in &history.pool {
            let rebuilt = Object::from_parts(o.version_vector().clone(), o.siblings().to_vec());
            prop_assert_eq!(rebuilt.as_ref(), Ok(o));
        }
    }
}

/// The vector that has seen exactly `dot`'s actor up to `dot`.
fn single(dot: &Dot) -> shoal_causality::VersionVector {
    let mut vv = shoal_causality::VersionVector::new();
    vv.witness(&dot.actor, dot.counter);
    vv
}
