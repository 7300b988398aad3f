//! Objects through rmp-serde: they round-trip, and bytes that break an invariant (or are not an
//! object at all) are refused with an error, never a panic. Objects reach a node from the network
//! and the disk, so decoding is the first line of defence.

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{History, actor, steps};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::Serialize;
use shoal_causality::{Actor, Dot, Object, Sibling};

/// The shape an `Object` encodes as, without its checks, to make invalid bytes.
#[derive(Serialize)]
struct Unchecked {
    vv: Vec<(Actor, u64)>,
    siblings: Vec<(Dot, Sibling)>,
}

fn dot(i: usize, counter: u64) -> Dot {
    Dot {
        actor: actor(i),
        counter,
    }
}

fn value(s: &'static str) -> Sibling {
    Sibling::Value(Bytes::from_static(s.as_bytes()))
}

/// Encodes `raw` both ways rmp-serde can (struct as array, as map) and checks neither decodes.
fn assert_refused(what: &str, raw: &Unchecked) {
    for bytes in [
        rmp_serde::to_vec(raw).unwrap(),
        rmp_serde::to_vec_named(raw).unwrap(),
    ] {
        let decoded = rmp_serde::from_slice::<Object>(&bytes);
        assert!(decoded.is_err(), "{what} decoded: {decoded:?}");
    }
}

/// Checks `object` is what a valid object is: rebuilding it through the checks gives it back.
fn assert_valid(object: &Object) {
    let rebuilt = Object::from_parts(object.version_vector().clone(), object.siblings().to_vec());
    assert_eq!(rebuilt.as_ref(), Ok(object));
}

#[test]
fn the_unchecked_shape_encodes_like_an_object() {
    // Guards the tests below: if `Object`'s encoding changed, the invalid cases would fail to
    // decode for the wrong reason.
    let o = Object::new()
        .update(&Default::default(), value("a"), &actor(0), 8)
        .unwrap();
    let raw = Unchecked {
        vv: o.version_vector().entries().to_vec(),
        siblings: o.siblings().to_vec(),
    };
    assert_eq!(
        rmp_serde::to_vec(&raw).unwrap(),
        rmp_serde::to_vec(&o).unwrap()
    );
    assert_eq!(
        rmp_serde::to_vec_named(&raw).unwrap(),
        rmp_serde::to_vec_named(&o).unwrap()
    );
    assert_eq!(
        rmp_serde::from_slice::<Object>(&rmp_serde::to_vec(&raw).unwrap()).unwrap(),
        o
    );
}

#[test]
fn objects_that_break_an_invariant_are_refused() {
    let vv = vec![(actor(0), 2), (actor(1), 1)];
    assert_refused(
        "unsorted siblings",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(0, 2), value("b")), (dot(0, 1), value("a"))],
        },
    );
    assert_refused(
        "siblings of two actors out of order",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(1, 1), value("b")), (dot(0, 1), value("a"))],
        },
    );
    assert_refused(
        "a duplicated sibling",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(0, 1), value("a")), (dot(0, 1), value("a"))],
        },
    );
    assert_refused(
        "one dot, two values",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(0, 1), value("a")), (dot(0, 1), Sibling::Tombstone)],
        },
    );
    assert_refused(
        "a dot beyond the vector",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(0, 3), value("a"))],
        },
    );
    assert_refused(
        "a dot of an actor the vector does not name",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(2, 1), value("a"))],
        },
    );
    assert_refused(
        "a dot with counter 0",
        &Unchecked {
            vv: vv.clone(),
            siblings: vec![(dot(0, 0), value("a"))],
        },
    );
    assert_refused(
        "an unsorted vector",
        &Unchecked {
            vv: vec![(actor(1), 1), (actor(0), 2)],
            siblings: vec![],
        },
    );
    assert_refused(
        "a vector naming an actor twice",
        &Unchecked {
            vv: vec![(actor(0), 1), (actor(0), 2)],
            siblings: vec![],
        },
    );
    assert_refused(
        "a vector entry of 0",
        &Unchecked {
            vv: vec![(actor(0), 0)],
            siblings: vec![],
        },
    );
}

#[test]
fn an_actor_with_an_invalid_node_id_is_refused() {
    #[derive(Serialize)]
    struct RawActor {
        node: String,
        incarnation: u64,
    }
    for node in ["", "has space", &"x".repeat(65)] {
        let vv = vec![(
            RawActor {
                node: node.to_owned(),
                incarnation: 1,
            },
            1u64,
        )];
        let bytes = rmp_serde::to_vec(&(vv, Vec::<()>::new())).unwrap();
        assert!(
            rmp_serde::from_slice::<Object>(&bytes).is_err(),
            "node id {node:?}"
        );
    }
}

proptest! {
    #![proptest_config(common::config(1024))]

    #[test]
    fn objects_round_trip(steps in steps(30), pick in any::<Index>()) {
        let history = History::run(&steps);
        let object = pick.get(&history.pool);
        let compact = rmp_serde::to_vec(object).unwrap();
        prop_assert_eq!(&rmp_serde::from_slice::<Object>(&compact).unwrap(), object);
        let named = rmp_serde::to_vec_named(object).unwrap();
        prop_assert_eq!(&rmp_serde::from_slice::<Object>(&named).unwrap(), object);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(object) = rmp_serde::from_slice::<Object>(&bytes) {
            assert_valid(&object);
        }
    }

    #[test]
    fn corrupted_objects_are_refused_or_still_valid(
        steps in steps(20),
        pick in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0..3u8), 1..6),
        cut in any::<Index>(),
        truncate in any::<bool>(),
    ) {
        let history = History::run(&steps);
        let mut bytes = rmp_serde::to_vec(pick.get(&history.pool)).unwrap();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes[i] ^= 1 << (byte % 8),
                _ => bytes.insert(i, byte),
            }
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(object) = rmp_serde::from_slice::<Object>(&bytes) {
            assert_valid(&object);
            let again = rmp_serde::to_vec(&object).unwrap();
            prop_assert_eq!(rmp_serde::from_slice::<Object>(&again).unwrap(), object);
        }
    }
}
