//! What a put answers (the writer's context plus its write, never the stored object's context)
//! and which contexts a coordinator refuses (issue 11, items 1 and 3), on the in-memory harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::{Cluster, context, key, node, values};
use proptest::prelude::*;
use shoal_causality::{
    Actor, CausalContext, Dot, MAX_CONTEXT_ENTRIES, MAX_ENTRIES_FROM_CONTEXTS,
    MAX_PLAUSIBLE_COUNTER, Object, VersionVector,
};
use shoal_protocol::{ClientRequest, ClientResponse, ContextError, RequestError};
use shoal_storage::{ReadOutcome, Storage};
use shoal_types::{Incarnation, NodeId};

/// The actor node `n{i}` of the harness writes as (incarnation 1000 + i − 1).
fn actor_of(n: &NodeId) -> Actor {
    let i: u64 = n.as_str()[1..].parse().unwrap();
    Actor::new(n.clone(), Incarnation::new(1000 + i - 1))
}

/// What every node holds durably for `k`.
fn stored(c: &Cluster, k: &str) -> Vec<Option<Object>> {
    c.nodes
        .values()
        .map(|n| {
            let ring = n.ring();
            match n.storage().object(ring.partition_for_key(&key(k)), &key(k)) {
                Ok(ReadOutcome::Found(o)) => Some(o),
                _ => None,
            }
        })
        .collect()
}

fn put_ctx(c: &mut Cluster, at: &NodeId, k: &str, v: &str, ctx: CausalContext) -> ClientResponse {
    c.request(
        at,
        ClientRequest::Put {
            key: key(k),
            value: Bytes::from(v.to_owned()),
            context: ctx,
            options: Default::default(),
        },
    )
}

/// The reproduction: X puts a, Y puts b blind, Y puts c with the context its put of b
/// returned; X's acknowledged a must survive (it was lost when a put answered with the whole
/// stored object's context).
#[test]
fn a_put_with_a_put_returned_context_keeps_a_concurrent_write_it_never_saw() {
    for second in [0, 1] {
        let mut c = Cluster::new(3);
        let p = c.primaries("k");
        let x = c.put(p[0].as_str(), "k", "a", None);
        assert!(matches!(x, ClientResponse::Written { .. }), "{x:?}");
        let y = c.put(p[0].as_str(), "k", "b", None);
        let token = context(&y);
        // Y's second put through the same coordinator, or another primary.
        let z = c.put(p[second].as_str(), "k", "c", Some(&token));
        assert!(matches!(z, ClientResponse::Written { .. }), "{z:?}");
        c.settle();
        for at in ["n1", "n2", "n3"] {
            assert_eq!(
                values(&c.get(at, "k")),
                vec!["a", "c"],
                "via {at}, Y's second put at {}",
                p[second]
            );
        }
    }
}

#[test]
fn a_put_answers_the_writers_context_plus_its_own_write() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[0].as_str(), "k", "a", None);
    let read = context(&c.get(p[1].as_str(), "k"));
    // A concurrent write the reader has not seen.
    c.put(p[1].as_str(), "k", "b", None);
    let w = c.put(p[2].as_str(), "k", "c", Some(&read));
    let answered = context(&w);
    let actor = actor_of(&p[2]);
    let made = Dot {
        actor: actor.clone(),
        counter: answered.counter_of(&actor),
    };
    assert_eq!(
        answered,
        read.with_dot(&made),
        "exactly the read plus the write"
    );
    // Writing again with it supersedes c and a, keeps b.
    c.put(p[0].as_str(), "k", "d", Some(&answered));
    c.settle();
    assert_eq!(values(&c.get("n1", "k")), vec!["b", "d"]);
}

#[test]
fn a_blind_writer_chaining_its_answers_supersedes_only_its_own_writes() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[1].as_str(), "k", "other", None);
    let mut mine = CausalContext::empty();
    for i in 0..40 {
        let at = &p[i % 3];
        let w = put_ctx(&mut c, at, "k", &format!("v{i}"), mine.clone());
        mine = context(&w);
        c.settle();
        assert_eq!(
            values(&c.get(p[0].as_str(), "k")),
            vec!["other", &format!("v{i}")]
        );
    }
}

/// Asserts `response` is a definite `InvalidContext` refusal and that nothing changed anywhere.
fn assert_refused(
    c: &mut Cluster,
    before: &[Option<Object>],
    response: &ClientResponse,
    expected: impl Fn(&ContextError) -> bool,
) {
    match response {
        ClientResponse::Failed(e @ RequestError::InvalidContext(reason)) => {
            assert!(expected(reason), "{reason:?}");
            assert!(!e.is_indeterminate());
            assert_eq!(e.kind(), "invalid_context");
        }
        other => panic!("expected an invalid-context refusal, got {other:?}"),
    }
    c.settle();
    assert_eq!(stored(c, "k"), before, "a refused write changed a replica");
}

#[test]
fn a_context_with_too_many_entries_is_refused_and_nothing_applied() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[0].as_str(), "k", "a", None);
    c.settle();
    let before = stored(&c, "k");
    let sent_before = c.sent.len();
    let mut vv = VersionVector::new();
    for i in 0..=MAX_CONTEXT_ENTRIES {
        vv.witness(&Actor::new(node(&format!("x{i}")), Incarnation::new(1)), 1);
    }
    let w = put_ctx(&mut c, &p[0], "k", "b", CausalContext::from(vv));
    assert_refused(&mut c, &before, &w, |e| {
        *e == ContextError::TooManyEntries {
            entries: MAX_CONTEXT_ENTRIES + 1,
            max: MAX_CONTEXT_ENTRIES,
        }
    });
    assert_eq!(c.sent.len(), sent_before, "nothing was replicated");
}

#[test]
fn contexts_may_grow_a_vector_by_unknown_actors_only_up_to_a_bound() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[0].as_str(), "k", "a", None);
    c.settle();
    let strangers = |from: usize, to: usize| {
        let mut vv = VersionVector::new();
        for i in from..to {
            vv.witness(&Actor::new(node(&format!("x{i}")), Incarnation::new(1)), 1);
        }
        CausalContext::from(vv)
    };
    // The object knows one actor; 63 strangers make 64 entries, the bound: accepted.
    let w = put_ctx(
        &mut c,
        &p[0],
        "k",
        "b",
        strangers(0, MAX_ENTRIES_FROM_CONTEXTS - 1),
    );
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    c.settle();
    let before = stored(&c, "k");
    // One more stranger: refused, wherever it is sent.
    for at in &p {
        let w = put_ctx(&mut c, at, "k", "c", strangers(500, 501));
        assert_refused(&mut c, &before, &w, |e| {
            *e == ContextError::TooManyActors {
                entries: MAX_ENTRIES_FROM_CONTEXTS + 1,
                max: MAX_ENTRIES_FROM_CONTEXTS,
            }
        });
    }
    // A read's context names only known actors: still accepted, and another primary's own
    // actor joining the vector is not a stranger.
    let g = c.get(p[0].as_str(), "k");
    let w = c.put(p[1].as_str(), "k", "d", Some(&context(&g)));
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    c.settle();
    assert_eq!(values(&c.get("n1", "k")), vec!["d"]);
}

#[test]
fn implausible_counters_are_refused_and_nothing_applied() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[0].as_str(), "k", "a", None);
    c.settle();
    let before = stored(&c, "k");
    let other = actor_of(&p[1]);
    for counter in [MAX_PLAUSIBLE_COUNTER + 1, u64::MAX] {
        let mut vv = VersionVector::new();
        vv.witness(&other, counter);
        let w = put_ctx(&mut c, &p[0], "k", "b", CausalContext::from(vv));
        assert_refused(
            &mut c,
            &before,
            &w,
            |e| matches!(e, ContextError::ImplausibleCounter { counter: n, .. } if *n == counter),
        );
        // The same as a listed dot.
        let dotted = CausalContext::empty().with_dot(&Dot {
            actor: other.clone(),
            counter,
        });
        let w = put_ctx(&mut c, &p[0], "k", "b", dotted);
        assert_refused(&mut c, &before, &w, |e| {
            matches!(e, ContextError::ImplausibleCounter { .. })
        });
    }
}

#[test]
fn a_context_naming_a_write_the_coordinator_never_made_is_refused() {
    let mut c = Cluster::new(3);
    let p = c.primaries("k");
    c.put(p[0].as_str(), "k", "a", None);
    c.put(p[0].as_str(), "k", "b", None);
    c.settle();
    let before = stored(&c, "k");
    let own = actor_of(&p[0]);
    // In the vector: the coordinator has made 2 writes of k, the context claims 3 (u64::MAX once
    // made every later dot the same, by a saturating add).
    for counter in [3, MAX_PLAUSIBLE_COUNTER] {
        let mut vv = VersionVector::new();
        vv.witness(&own, counter);
        let w = put_ctx(&mut c, &p[0], "k", "c", CausalContext::from(vv));
        assert_refused(&mut c, &before, &w, |e| {
            *e == ContextError::Unissued { counter, issued: 2 }
        });
    }
    // As a listed dot.
    let dotted = CausalContext::empty().with_dot(&Dot {
        actor: own.clone(),
        counter: 7,
    });
    let w = put_ctx(&mut c, &p[0], "k", "c", dotted);
    assert_refused(&mut c, &before, &w, |e| {
        *e == ContextError::Unissued {
            counter: 7,
            issued: 2,
        }
    });
    // The same context is fine at another primary, which cannot know (it is another actor).
    let mut vv = VersionVector::new();
    vv.witness(&own, 2);
    let w = put_ctx(&mut c, &p[1], "k", "c", CausalContext::from(vv));
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    c.settle();
    assert_eq!(values(&c.get("n1", "k")), vec!["c"]);
}

/// A hostile context: actors of the ring's nodes (their real incarnations or others) and of
/// strangers, counters small, large and extreme, as a vector and as listed dots.
fn hostile_context() -> impl Strategy<Value = CausalContext> {
    let counter = prop_oneof![
        16 => 1..6u64,
        1 => (MAX_PLAUSIBLE_COUNTER - 2)..=(MAX_PLAUSIBLE_COUNTER + 2),
        1 => Just(u64::MAX),
        1 => any::<u64>().prop_map(|n| n.max(1)),
    ];
    let actor = (1..=5u64, prop::bool::weighted(0.7)).prop_map(|(i, real)| {
        let n = node(&format!("n{i}"));
        if real && i <= 3 {
            actor_of(&n)
        } else {
            Actor::new(n, Incarnation::new(i * 7))
        }
    });
    (
        prop::collection::vec((actor.clone(), counter.clone()), 0..6),
        prop::collection::vec((actor, counter), 0..6),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(entries, dots, bloat)| {
            let mut vv = VersionVector::new();
            for (a, n) in entries {
                vv.witness(&a, n);
            }
            if bloat {
                for i in 0..200 {
                    vv.witness(&Actor::new(node(&format!("y{i}")), Incarnation::new(1)), 1);
                }
            }
            let mut ctx = CausalContext::from(vv);
            for (actor, counter) in dots {
                ctx = ctx.with_dot(&Dot { actor, counter });
            }
            ctx
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_contexts_never_panic_and_a_refusal_changes_nothing(
        contexts in prop::collection::vec(hostile_context(), 1..6),
        at in 0..3usize,
    ) {
        let mut c = Cluster::new(3);
        let p = c.primaries("k");
        c.put(p[0].as_str(), "k", "a", None);
        c.put(p[1].as_str(), "k", "b", None);
        c.settle();
        for ctx in contexts {
            let before = stored(&c, "k");
            let w = put_ctx(&mut c, &p[at], "k", "h", ctx.clone());
            c.settle();
            match &w {
                ClientResponse::Written { context } => {
                    prop_assert!(context.len() <= ctx.len() + 1);
                }
                ClientResponse::Failed(RequestError::InvalidContext(_)) => {
                    prop_assert_eq!(&stored(&c, "k"), &before, "refused {:?} changed a replica", ctx);
                }
                other => prop_assert!(false, "{:?} answered {:?}", ctx, other),
            }
            // The key stays readable and writable.
            let g = c.get("n1", "k");
            prop_assert!(matches!(g, ClientResponse::Read { .. }), "{:?}", g);
            let w = c.put(p[0].as_str(), "k", "after", Some(&context(&g)));
            prop_assert!(matches!(w, ClientResponse::Written { .. }), "{:?}", w);
        }
    }
}
